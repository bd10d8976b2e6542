"""An MLServer custom runtime serving one ONNX model with onnxruntime on CPU.

Test infrastructure, not part of radpath: it lets radpath's HTTP inference client talk to a
real KServe / Open Inference Protocol v2 server (Seldon MLServer, installed into its own
virtualenv by scripts/install-inference-server.sh; see tests/inference_server.py). MLServer
imports this module inside that virtualenv, so it must not import radpath.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.codecs.numpy import to_datatype
from mlserver.errors import InferenceError
from mlserver.types import InferenceRequest, InferenceResponse, MetadataTensor


def _tensor(arg: ort.NodeArg) -> MetadataTensor:
    """Model-metadata entry for an ONNX input/output; symbolic dimensions become -1."""
    element = arg.type[len("tensor("):-1]  # "tensor(float)" -> "float"
    dtype = np.dtype({"float": "float32", "double": "float64", "string": "str"}.get(element, element))
    shape = [dim if isinstance(dim, int) else -1 for dim in arg.shape]
    return MetadataTensor(name=arg.name, datatype=to_datatype(dtype), shape=shape)


class OnnxRuntime(MLModel):
    async def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 2
        self._session = ort.InferenceSession(self.settings.parameters.uri, options, providers=["CPUExecutionProvider"])
        # GET /v2/models/{name} reports the graph's own tensors, as Triton does for ONNX models.
        self.settings.inputs = [_tensor(arg) for arg in self._session.get_inputs()]
        self.settings.outputs = [_tensor(arg) for arg in self._session.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        # Every output, unless the request names the ones it wants.
        names = [output.name for output in payload.outputs or self._session.get_outputs()]
        try:
            feeds = {request_input.name: NumpyCodec.decode_input(request_input) for request_input in payload.inputs}
            results = self._session.run(names, feeds)
        except Exception as exc:  # a wrong name, dtype or shape: 400 {"error": ...}, as Triton answers
            raise InferenceError(f"{type(exc).__name__}: {exc}") from exc
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            id=payload.id,
            outputs=[NumpyCodec.encode_output(name, value) for name, value in zip(names, results)],
        )
