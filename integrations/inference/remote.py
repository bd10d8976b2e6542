"""Run a pathway's model on a remote Open Inference Protocol server (KServe v2 REST) over HTTP.

`open_model` is what inference tasks call: the spec's ONNX file is always opened and checked
against its sha256 (it names the model, and its metadata — input grid, cut-offs — drive the
pre- and post-processing); where the trust configured an inference service for that model,
`run` goes to the server instead of onnxruntime. Before the first request the server's model
metadata must declare the same inputs and outputs (names and datatypes) as the file, so a
different model behind the URL is refused rather than trusted.

Wire format (OIP "Inference Request JSON Object"): each tensor as name, shape, datatype and
row-major flat data. Tensors carry pixel values only, never patient identifiers.
"""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import numpy as np
import orjson

from integrations.errors import PermanentError, TransientError
from integrations.inference.config import InferenceService
from integrations.inference.onnx_model import OnnxModel, load_model

# OIP tensor datatypes <-> numpy (Open Inference Protocol, "Tensor Data Types")
DATATYPES = {"BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
             "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64, "FP16": np.float16,
             "FP32": np.float32, "FP64": np.float64}
_BY_NUMPY = {np.dtype(t): name for name, t in DATATYPES.items()}
# onnxruntime's type names for the same
_ONNX_TYPES = {"tensor(bool)": "BOOL", "tensor(uint8)": "UINT8", "tensor(uint16)": "UINT16", "tensor(uint32)": "UINT32",
               "tensor(uint64)": "UINT64", "tensor(int8)": "INT8", "tensor(int16)": "INT16", "tensor(int32)": "INT32",
               "tensor(int64)": "INT64", "tensor(float16)": "FP16", "tensor(float)": "FP32", "tensor(double)": "FP64"}


class RemoteModel:
    """The spec's model, run by a remote server; everything else (name, version, sha256,
    metadata) is the local file's, as for an `OnnxModel`."""

    def __init__(self, local: OnnxModel, service: InferenceService, spec_name: str):
        self.local, self.service = local, service
        self.remote_name = service.model or spec_name
        base = f"{service.url.rstrip('/')}/v2/models/{self.remote_name}"
        self.model_url = f"{base}/versions/{service.version}" if service.version else base
        self._checked = False
        self._lock = threading.Lock()

    name = property(lambda self: self.local.name)
    version = property(lambda self: self.local.version)
    sha256 = property(lambda self: self.local.sha256)
    metadata = property(lambda self: self.local.metadata)
    input_names = property(lambda self: self.local.input_names)
    output_names = property(lambda self: self.local.output_names)

    def signature(self) -> dict[str, dict[str, str]]:
        """{"inputs"|"outputs": {name: OIP datatype}} of the local file."""
        session = self.local.session
        return {kind: {t.name: _ONNX_TYPES.get(t.type, t.type) for t in tensors}
                for kind, tensors in (("inputs", session.get_inputs()), ("outputs", session.get_outputs()))}

    def check_contract(self) -> None:
        """The inputs and outputs the server's model metadata (GET <model url>) declares must be
        the file's (a server that declares none is taken at its word)."""
        declared = self._call("GET", self.model_url)
        served = {kind: {t["name"]: t.get("datatype") for t in declared.get(kind) or []} for kind in ("inputs", "outputs")}
        expected = self.signature()
        for kind in ("inputs", "outputs"):
            if served[kind] and served[kind] != expected[kind]:
                raise PermanentError(f"inference service model {self.remote_name} declares {kind} {served[kind]}, "
                                     f"the spec's model file {expected[kind]}: refusing to use it")

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One OIP inference request; returns every output by name, as onnxruntime would."""
        missing = set(self.input_names) - set(inputs)
        if missing:
            raise ValueError(f"model {self.name} needs inputs {sorted(missing)}")
        with self._lock:
            if not self._checked:
                self.check_contract()
                self._checked = True
        body = {"inputs": [_tensor(name, np.ascontiguousarray(array)) for name, array in inputs.items()],
                "outputs": [{"name": name} for name in self.output_names]}
        answer = self._call("POST", f"{self.model_url}/infer", orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY))
        outputs = {t["name"]: _array(t) for t in answer.get("outputs") or []}
        missing = set(self.output_names) - set(outputs)
        if missing:
            raise PermanentError(f"inference service answered without outputs {sorted(missing)}")
        return {name: outputs[name] for name in self.output_names}

    def _call(self, method: str, url: str, content: bytes | None = None) -> dict:
        headers = {**self.service.headers(), **({"Content-Type": "application/json"} if content else {})}
        try:
            response = httpx.request(method, url, content=content, headers=headers, timeout=self.service.timeout_seconds)
        except httpx.TransportError as exc:  # refused, reset, timed out: the next try may work
            raise TransientError(f"inference service unreachable ({exc.__class__.__name__})") from None
        if response.status_code in (408, 429) or response.status_code >= 500:
            raise TransientError(f"inference service answered {response.status_code}")
        if response.status_code >= 400:
            raise PermanentError(f"inference service refused the request ({response.status_code}): "
                                 f"{_error_text(response)}")
        return orjson.loads(response.content)


def _tensor(name: str, array: np.ndarray) -> dict:
    if array.dtype not in _BY_NUMPY:
        raise ValueError(f"input {name}: dtype {array.dtype} has no Open Inference Protocol datatype")
    return {"name": name, "shape": list(array.shape), "datatype": _BY_NUMPY[array.dtype], "data": array.ravel()}


def _array(tensor: dict) -> np.ndarray:
    try:
        dtype = DATATYPES[tensor["datatype"]]
    except KeyError:
        raise PermanentError(f"inference service output {tensor.get('name')}: datatype {tensor.get('datatype')} "
                             "not supported") from None
    return np.asarray(tensor["data"], dtype=dtype).reshape(tensor["shape"])


def _error_text(response: httpx.Response) -> str:
    try:
        return str(orjson.loads(response.content).get("error", ""))[:300]
    except (orjson.JSONDecodeError, AttributeError):
        return response.text[:300]


_REMOTE: dict[tuple[str, str], RemoteModel] = {}
_REMOTE_LOCK = threading.Lock()


def open_model(spec_name: str, path: str | Path, sha256: str,
               services: dict[str, InferenceService]) -> OnnxModel | RemoteModel:
    """The spec's model (`model.name`, `.path`, `.sha256`), checked against its sha256; run
    remotely where the trust configured a service for that name, else by onnxruntime here."""
    local = load_model(path, expected_sha256=sha256)
    service = services.get(spec_name)
    if service is None:
        return local
    key = (spec_name, local.sha256, service.model_dump_json())
    with _REMOTE_LOCK:
        if key not in _REMOTE:
            _REMOTE[key] = RemoteModel(local, service, spec_name)
        return _REMOTE[key]
