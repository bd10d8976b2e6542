"""Run a checksummed ONNX model with onnxruntime (CPU), one cached session per file per process."""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort


class ModelChecksumError(ValueError):
    """The model file on disk is not the one the pathway spec (or model card) names."""


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class OnnxModel:
    """A loaded model: its session, checksum and the metadata written at build time."""

    path: Path
    sha256: str
    session: ort.InferenceSession = field(repr=False, compare=False)
    metadata: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def name(self) -> str:
        return self.metadata.get("name", self.path.stem)

    @property
    def version(self) -> str:
        return self.metadata.get("version", "unknown")

    @property
    def intended_use(self) -> str:
        return self.metadata.get("intended_use", "")

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.session.get_inputs()]

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.session.get_outputs()]

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the graph; returns every output by name."""
        missing = set(self.input_names) - set(inputs)
        if missing:
            raise ValueError(f"model {self.name} needs inputs {sorted(missing)}")
        outputs = self.session.run(self.output_names, inputs)
        return dict(zip(self.output_names, outputs, strict=True))


_CACHE: dict[tuple[str, int], OnnxModel] = {}
_LOCK = threading.Lock()


def load_model(path: str | Path, expected_sha256: str | None = None, *, intra_op_threads: int = 2) -> OnnxModel:
    """Load (once per process) an ONNX model, refusing it if its sha256 is not the expected one.

    The checksum is verified on every call, so a file swapped on disk is caught even when a
    session for that path is already cached.
    """
    resolved = Path(path).resolve()
    actual = file_sha256(resolved)
    if expected_sha256 is not None and actual.lower() != expected_sha256.strip().lower():
        raise ModelChecksumError(
            f"model file {resolved.name} has sha256 {actual}, expected {expected_sha256}: refusing to run it"
        )
    key = (str(resolved), intra_op_threads)
    with _LOCK:
        cached = _CACHE.get(key)
        if cached is not None and cached.sha256 == actual:
            return cached
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(resolved), sess_options=options, providers=["CPUExecutionProvider"])
        metadata = dict(session.get_modelmeta().custom_metadata_map)
        model = OnnxModel(path=resolved, sha256=actual, session=session, metadata=metadata)
        _CACHE[key] = model
        return model
