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

from pathways.code_map import CODE_MAP, CodeMap, load_code_map
from pathways.codes import LOINC, SNOMED, as_fhir_system
from pathways.model_card import CARD_FILE, ModelCard, load_card
from pathways.report import Code
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
    code_map: CodeMap = field(default_factory=CodeMap)

    def get(self, name: str) -> PathwaySpec:
        return self.specs[name]

    def match(self, procedure_code: str, modality: str, system: str = "", sender: str = "") -> list[PathwaySpec]:
        """The pathways whose eligibility claims this procedure and modality: the code as ordered
        or the standard concept the trust's code map says it means (for this sender)."""
        codes = [(system, procedure_code)]
        standard = self.code_map.standard(system, procedure_code, sender)
        if standard is not None:
            codes.append((standard.system, standard.code))
        return [s for s in self.specs.values() if any(s.claims(c, modality, sys) for sys, c in codes)]

    def standard_procedure(self, system: str, code: str, sender: str = "") -> Code | None:
        """The standard concept for an ordered code: itself when SNOMED CT or LOINC, else the
        code map's entry; None when neither."""
        if as_fhir_system(system) in {SNOMED, LOINC}:
            return None
        return self.code_map.standard(system, code, sender)

    def destination_names(self) -> list[str]:
        """Every destination some pathway delivers to, sorted."""
        return sorted({d.name for spec in self.specs.values() for d in spec.destinations})

    def card(self, name: str) -> ModelCard | None:
        """The model card beside the pathway's model (None: a rules-only pathway)."""
        spec = self.specs[name]
        return None if spec.model is None else load_card(card_path(spec))

    def rules(self, name: str) -> BaseModel:
        """The pathway's thresholds as its typed rules model."""
        spec = self.specs[name]
        return _import(spec.rules_model).model_validate(spec.rules)


def model_path(spec: PathwaySpec) -> Path:
    path = Path(spec.model.path)
    return path if path.is_absolute() else PROJECT_ROOT / path


def card_path(spec: PathwaySpec) -> Path:
    """A model's card lives beside its file: models/<model>/card.yaml."""
    return model_path(spec).with_name(CARD_FILE)


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
    if path is not None:
        errors.extend(_card_errors(spec))
    names = [d.name for d in spec.destinations]
    if len(names) != len(set(names)):
        errors.append("destinations: names repeat")
    if spec.mode == "shadow" and all(d.clinical for d in spec.destinations):
        errors.append("mode: a shadow pathway needs an evaluation destination (clinical: false)")
    if spec.mode == "qa" and all(not d.clinical for d in spec.destinations):
        errors.append("mode: a qa pathway holds clinical destinations for review, and has none")
    return errors


def _card_errors(spec: PathwaySpec) -> list[str]:
    """Every model needs a readable card naming it: its input domain and output ranges gate results."""
    path = card_path(spec)
    try:
        card = load_card(path)
    except OSError:
        return [f"model: no model card {path.name} beside {spec.model.path}"]
    except yaml.YAMLError as exc:
        return [f"model card: not valid YAML ({exc.__class__.__name__})"]
    except ValidationError as exc:
        return [f"model card: {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
    if card.model != spec.model.name:
        return [f"model card: names model {card.model}, the spec names {spec.model.name}"]
    return []


def load_registry(paths: Iterable[Path] | None = None, code_map: Path | None = None) -> Registry:
    """Load and cross-check specs (default: every YAML in `specs_dir()`) and the trust's code map
    (default: `code_map_path()`); raise all errors at once."""
    paths = sorted(paths) if paths is not None else sorted(specs_dir().glob("*.yaml"))
    registry, errors = Registry(), []
    code_map = code_map or code_map_path()
    try:
        registry.code_map = load_code_map(code_map)
    except (yaml.YAMLError, OSError) as exc:
        errors.append(f"{code_map.name}: cannot be read ({exc.__class__.__name__})")
    except ValidationError as exc:
        errors.extend(f"{code_map.name}: {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
    errors.extend(f"{code_map.name}: {e}" for e in registry.code_map.problems())
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
    errors.extend(f"{code_map.name}: {e}" for e in _unclaimed_targets(registry))
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


def _unclaimed_targets(registry: Registry) -> list[str]:
    """A mapping to a concept no pathway claims is a typo, or a pathway that is not installed."""
    if not registry.specs:  # validating a code map alone says nothing about claims
        return []
    claimed = {(as_fhir_system(c.system), c.code) for s in registry.specs.values() for c in s.eligibility.procedure_codes}
    return [f"{m.ordered.system} {m.ordered.code} maps to {m.means.code}, which no pathway claims"
            for m in registry.code_map.mappings if (as_fhir_system(m.means.system), m.means.code) not in claimed]


def code_map_path() -> Path:
    """The trust's code map: RADPATH_CODE_MAP, else the shipped one (no mappings)."""
    chosen = os.environ.get("RADPATH_CODE_MAP")
    if chosen and not Path(chosen).is_file():
        raise RegistryError([f"RADPATH_CODE_MAP={chosen}: no such file"])
    return Path(chosen or CODE_MAP)


def specs_dir() -> Path:
    """Where the specs live: RADPATH_PATHWAYS_DIR (a trust's own folder of specs), else the
    specs shipped in pathways/specs."""
    chosen = os.environ.get("RADPATH_PATHWAYS_DIR")
    if not chosen:
        return SPECS_DIR
    if not Path(chosen).is_dir():  # never fall back to the shipped specs: the trust chose its own
        raise RegistryError([f"RADPATH_PATHWAYS_DIR={chosen}: no such folder"])
    if not any(Path(chosen).glob("*.yaml")):
        raise RegistryError([f"RADPATH_PATHWAYS_DIR={chosen}: no pathway specs (*.yaml) in it"])
    return Path(chosen)


@functools.lru_cache(maxsize=1)
def default_registry() -> Registry:
    """The specs in `specs_dir()`, loaded once per process."""
    return load_registry(specs_dir().glob("*.yaml"))
