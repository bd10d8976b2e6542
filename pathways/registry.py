"""Every pathway spec, loaded and cross-checked at once; all errors reported together."""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib
import importlib.util
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError

from pathways.spec import PathwaySpec

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SPECS_DIR = Path(__file__).with_name("specs")


class RegistryError(Exception):
    def __init__(self, errors: Sequence[str]):
        self.errors = list(errors)
        super().__init__("pathway specs are invalid:\n" + "\n".join(f"- {e}" for e in self.errors))


@dataclass
class Registry:
    specs: dict[str, PathwaySpec] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)

    def get(self, name: str) -> PathwaySpec:
        return self.specs[name]

    def match(self, procedure_code: str, modality: str) -> list[PathwaySpec]:
        """The pathways whose eligibility claims this procedure and modality."""
        return [s for s in self.specs.values() if s.claims(procedure_code, modality)]

    def rules(self, name: str) -> BaseModel:
        """The pathway's thresholds as its typed rules model."""
        spec = self.specs[name]
        return _import(spec.rules_model).model_validate(spec.rules)


def model_path(spec: PathwaySpec) -> Path:
    path = Path(spec.model.path)
    return path if path.is_absolute() else PROJECT_ROOT / path


@functools.lru_cache(maxsize=32)
def _sha256(path: Path, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    return _sha256(path, path.stat().st_mtime_ns)


def _import(target: str):  # noqa: ANN202
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def _check_callable_defined(target: str) -> str | None:
    """Check that module:function exists without importing it (flows import Prefect)."""
    module, _, attr = target.partition(":")
    if not attr:
        return f"'{target}' is not module:function"
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        return f"module {module} not found"
    tree = ast.parse(Path(spec.origin).read_text())
    names = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    return None if attr in names else f"{module} defines no function {attr}"


def check_spec(spec: PathwaySpec) -> list[str]:
    """Errors in one spec that its schema alone cannot see."""
    errors = []
    if problem := _check_callable_defined(spec.flow):
        errors.append(f"flow: {problem}")
    try:
        _import(spec.rules_model).model_validate(spec.rules)
    except (ImportError, AttributeError) as exc:
        errors.append(f"rules_model: {exc}")
    except ValidationError as exc:
        errors.extend(f"rules.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
    path = model_path(spec) if spec.model is not None else None  # None: a rules-only pathway
    if path is not None and not path.exists():
        errors.append(f"model: file {spec.model.path} not found")
    elif path is not None and file_sha256(path) != spec.model.sha256:
        errors.append(f"model: sha256 of {spec.model.path} does not match the spec")
    names = [d.name for d in spec.destinations]
    if len(names) != len(set(names)):
        errors.append("destinations: names repeat")
    if spec.mode == "shadow" and all(d.clinical for d in spec.destinations):
        errors.append("mode: a shadow pathway needs an evaluation destination (clinical: false)")
    if spec.mode == "qa" and all(not d.clinical for d in spec.destinations):
        errors.append("mode: a qa pathway holds clinical destinations for review, and has none")
    return errors


def load_registry(paths: Iterable[Path] | None = None) -> Registry:
    """Load and cross-check specs (default: every YAML in pathways/specs); raise all errors at once."""
    paths = sorted(paths) if paths is not None else sorted(specs_dir().glob("*.yaml"))
    registry, errors = Registry(), []
    for path in paths:
        try:
            spec = PathwaySpec.model_validate(yaml.safe_load(path.read_text()))
        except yaml.YAMLError as exc:
            errors.append(f"{path.name}: not valid YAML ({exc.__class__.__name__})")
            continue
        except ValidationError as exc:
            errors.extend(f"{path.name}: {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            continue
        if spec.name in registry.specs:
            errors.append(f"{path.name}: pathway name {spec.name} also in {registry.files[spec.name].name}")
            continue
        errors.extend(f"{path.name}: {e}" for e in check_spec(spec))
        registry.specs[spec.name] = spec
        registry.files[spec.name] = path
    errors.extend(_overlaps(registry))
    if errors:
        raise RegistryError(errors)
    return registry


def _overlaps(registry: Registry) -> list[str]:
    claimed: dict[tuple[str, str], str] = {}
    errors = []
    for spec in registry.specs.values():
        for code in spec.eligibility.procedure_codes:
            for modality in spec.eligibility.modalities:
                key = (code.code, modality)
                if key in claimed and claimed[key] != spec.name:
                    errors.append(f"eligibility: {code.code}/{modality} claimed by both {claimed[key]} and {spec.name}")
                claimed.setdefault(key, spec.name)
    return errors


def specs_dir() -> Path:
    """Where the specs live: RADPATH_PATHWAYS_DIR (a trust's own folder of specs), else the
    specs shipped in pathways/specs."""
    return Path(os.environ.get("RADPATH_PATHWAYS_DIR") or SPECS_DIR)


@functools.lru_cache(maxsize=1)
def default_registry() -> Registry:
    """The specs in `specs_dir()`, loaded once per process."""
    return load_registry(specs_dir().glob("*.yaml"))
