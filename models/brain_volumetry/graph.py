"""The brain volumetry model's ONNX graph: per-voxel tissue likelihoods times a spatial atlas prior.

Input ``t1`` float32 [1, 1, Z, Y, X]: a T1-weighted volume on the model's template grid
(``TEMPLATE_SHAPE`` at 1 mm, placed by the caller so the head centroid sits at the template's),
intensities divided by the volume's 99th percentile.

Per voxel and per tissue component k (Gaussian intensity model with fitted mean m_k and sd s_k):
``ll_k = -(x - m_k)^2 / (2 s_k^2) - log s_k``, computed as a 1x1x1 Conv over ``[x^2, x]``.
The atlas (fitted component frequencies on a 4 mm grid) is upsampled trilinearly (Resize) and
its log added: ``post = softmax_k(ll_k + log prior_k)`` (Bayes' rule per voxel). A 1x1x1 Conv
sums components into classes, and ArgMax gives the label map (``CLASSES``).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

TEMPLATE_SHAPE = (160, 192, 160)
ATLAS_STEP = 4  # template voxels per atlas cell along each axis
OPSET = 17
# Intensity components (phantom labels in brackets) and the class each belongs to.
COMPONENTS = ("background", "skull", "scalp", "csf", "grey_matter", "white_matter",
              "hippocampus_left", "hippocampus_right")
COMPONENT_LABELS = ((0,), (7,), (8,), (1, 2), (3,), (4,), (5,), (6,))
CLASSES = ("extracranial", "csf", "grey_matter", "white_matter", "hippocampus_left", "hippocampus_right")
COMPONENT_CLASS = (0, 0, 0, 1, 2, 3, 4, 5)
PRIOR_FLOOR = 1e-4


def build_graph(means: np.ndarray, sds: np.ndarray, atlas: np.ndarray, metadata: dict[str, str]) -> onnx.ModelProto:
    """ONNX model from fitted component means/sds (normalised units) and the atlas [K, z, y, x]."""
    k = len(COMPONENTS)
    means, sds = np.asarray(means, np.float64), np.asarray(sds, np.float64)
    weight = np.stack([-1.0 / (2 * sds**2), means / sds**2], axis=1).reshape(k, 2, 1, 1, 1)
    bias = -(means**2) / (2 * sds**2) - np.log(sds)
    to_class = np.zeros((len(CLASSES), k, 1, 1, 1), np.float32)
    for comp, cls in enumerate(COMPONENT_CLASS):
        to_class[cls, comp] = 1.0
    inits = [
        numpy_helper.from_array(weight.astype(np.float32), "ll_weight"),
        numpy_helper.from_array(bias.astype(np.float32), "ll_bias"),
        numpy_helper.from_array(np.maximum(atlas, PRIOR_FLOOR)[None].astype(np.float32), "atlas"),
        numpy_helper.from_array(np.array([1, 1, ATLAS_STEP, ATLAS_STEP, ATLAS_STEP], np.float32), "atlas_scales"),
        numpy_helper.from_array(to_class, "to_class"),
    ]
    nodes = [
        helper.make_node("Mul", ["t1", "t1"], ["t1_sq"]),
        helper.make_node("Concat", ["t1_sq", "t1"], ["features"], axis=1),
        helper.make_node("Conv", ["features", "ll_weight", "ll_bias"], ["log_likelihood"]),
        helper.make_node("Resize", ["atlas", "", "atlas_scales"], ["prior"], mode="linear",
                         coordinate_transformation_mode="half_pixel"),
        helper.make_node("Log", ["prior"], ["log_prior"]),
        helper.make_node("Add", ["log_likelihood", "log_prior"], ["log_joint"]),
        helper.make_node("Softmax", ["log_joint"], ["posterior"], axis=1),
        helper.make_node("Conv", ["posterior", "to_class"], ["class_probability"]),
        helper.make_node("ArgMax", ["class_probability"], ["argmax"], axis=1, keepdims=0),
        helper.make_node("Cast", ["argmax"], ["labels"], to=TensorProto.UINT8),
    ]
    shape = [1, 1, *TEMPLATE_SHAPE]
    graph = helper.make_graph(
        nodes, "brain_volumetry",
        [helper.make_tensor_value_info("t1", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("labels", TensorProto.UINT8, [1, *TEMPLATE_SHAPE])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="radpath")
    model.ir_version = 8
    helper.set_model_props(model, metadata)
    onnx.checker.check_model(model)
    return model
