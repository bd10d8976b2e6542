"""The lung nodule detector's ONNX graph: a Hessian blob filter bank and a logistic layer.

Input ``ct_hu`` float32 [1, 1, Z, Y, X]: CT in Hounsfield units, already resampled by the caller
to an isotropic ``MODEL_SPACING_MM`` grid. Output ``nodule_probability`` float32 [1, 1, Z, Y, X].

Two intensity windows feed two identical blob branches:

- solid window D (HU -900 -> 0, HU -400 -> 1, clipped): lung ~0.1, ground glass (-550 HU) ~0.7,
  soft tissue 1;
- ground-glass window G (HU -800 -> 0, HU -500 -> 1, clipped): lung ~0, ground glass ~0.83,
  soft tissue 1, so a ground-glass nodule's blob response is close to a solid one's.

Per voxel and branch, for each Gaussian scale s (voxels), with D the windowed density:

- H_s = s^2 * Hessian(G_s * D) (scale-normalised, central differences on the smoothed volume);
- invariants I1 = trace, I2 = sum of principal 2x2 minors, I3 = det;
- blob_s = min(relu(-I1)/3, sqrt(relu(I2)/3), cbrt(relu(-I3))). By Descartes' rule of signs the
  three are all positive only when every eigenvalue is negative (a bright blob); then by
  Maclaurin's inequality the minimum is cbrt(-I3), the geometric mean of the eigenvalue
  magnitudes. A tube (one eigenvalue ~0) or a plate scores ~0: vessels are suppressed.
- lung = G_6 * [HU < -500]: the local air fraction, gating out mediastinum, spine and body wall.

Features: solid branch blob_s (5 scales), max_s blob_s, lung, blob_s * lung (5),
max_s blob_s * lung and G_s0 * D; ground-glass branch blob_s * lung (5), max_s blob_s * lung and
G_s0 * G: 21 channels. A 1x1x1 Conv (the logistic layer, weights fitted by ``build_model.py``)
and a Sigmoid give the probability.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MODEL_SPACING_MM = 2.0
SCALES_VOX = (0.75, 1.1, 1.6, 2.4, 3.5)  # Gaussian sigma in model voxels (1.5 to 7 mm)
LUNG_SIGMA_VOX = 6.0
WINDOW_LOW_HU = -900.0
WINDOW_HIGH_HU = -400.0
GLASS_WINDOW_LOW_HU = -800.0  # aerated lung (~-850 HU) -> 0
GLASS_WINDOW_HIGH_HU = -500.0  # ground glass (-750 to -300 HU, Fleischner glossary) -> ~0.8 .. 1
AIR_BELOW_HU = -500.0
FEATURE_NAMES = (
    *(f"blob_s{s}" for s in SCALES_VOX), "blob_max", "lung_fraction",
    *(f"blob_s{s}_x_lung" for s in SCALES_VOX), "blob_max_x_lung", "density_s0",
    *(f"glass_blob_s{s}_x_lung" for s in SCALES_VOX), "glass_blob_max_x_lung", "glass_density_s0",
)
N_FEATURES = len(FEATURE_NAMES)
OPSET = 17


def gaussian_kernel_1d(sigma: float) -> np.ndarray:
    """Sampled, normalised Gaussian, radius ceil(3 sigma)."""
    radius = max(1, int(np.ceil(3.0 * sigma)))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).astype(np.float32)


class _Graph:
    """Tiny helper that names nodes and initialisers uniquely."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def _name(self, stem: str) -> str:
        self._n += 1
        return f"{stem}_{self._n}"

    def const(self, value: np.ndarray | float, stem: str = "c") -> str:
        name = self._name(stem)
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=np.float32), name))
        return name

    def op(self, op_type: str, inputs: list[str], stem: str | None = None, **attrs) -> str:
        out = self._name(stem or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out + "_node", **attrs))
        return out

    def conv_axis(self, x: str, kernel: np.ndarray, axis: int) -> str:
        """1-channel 1D convolution along spatial axis 0 (z), 1 (y) or 2 (x), zero padded."""
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = kernel.size
        w = self.const(kernel.reshape(shape), "k")
        r = kernel.size // 2
        pads = [0, 0, 0, 0, 0, 0]
        pads[axis] = pads[axis + 3] = r
        return self.op("Conv", [x, w], "conv", pads=pads)

    def gaussian(self, x: str, sigma: float) -> str:
        k = gaussian_kernel_1d(sigma)
        for axis in range(3):
            x = self.conv_axis(x, k, axis)
        return x


_D1 = np.array([-0.5, 0.0, 0.5], np.float32)
_D2 = np.array([1.0, -2.0, 1.0], np.float32)


def _blob(g: _Graph, smoothed: str, sigma: float) -> str:
    """Scale-normalised Hessian blob measure of one smoothed volume (see module docstring)."""
    s2 = g.const(sigma * sigma)
    dzz, dyy, dxx = (g.op("Mul", [g.conv_axis(smoothed, _D2, a), s2]) for a in range(3))
    dz, dy = g.conv_axis(smoothed, _D1, 0), g.conv_axis(smoothed, _D1, 1)
    dzy = g.op("Mul", [g.conv_axis(dz, _D1, 1), s2])
    dzx = g.op("Mul", [g.conv_axis(dz, _D1, 2), s2])
    dyx = g.op("Mul", [g.conv_axis(dy, _D1, 2), s2])
    mul, add, sub = (lambda a, b: g.op("Mul", [a, b])), (lambda a, b: g.op("Add", [a, b])), (lambda a, b: g.op("Sub", [a, b]))
    i1 = add(add(dzz, dyy), dxx)
    i2 = sub(add(add(mul(dzz, dyy), mul(dzz, dxx)), mul(dyy, dxx)),
             add(add(mul(dzy, dzy), mul(dzx, dzx)), mul(dyx, dyx)))
    # det = zz(yy xx - yx^2) - zy(zy xx - yx zx) + zx(zy yx - yy zx)
    det = add(sub(mul(dzz, sub(mul(dyy, dxx), mul(dyx, dyx))),
                  mul(dzy, sub(mul(dzy, dxx), mul(dyx, dzx)))),
              mul(dzx, sub(mul(dzy, dyx), mul(dyy, dzx))))
    mean_mag = g.op("Mul", [g.op("Relu", [g.op("Neg", [i1])]), g.const(1.0 / 3.0)])
    quad_mag = g.op("Sqrt", [g.op("Mul", [g.op("Relu", [i2]), g.const(1.0 / 3.0)])])
    geo_mag = g.op("Pow", [g.op("Relu", [g.op("Neg", [det])]), g.const(1.0 / 3.0)])
    return g.op("Min", [mean_mag, quad_mag, geo_mag], "blob")


def _branch(g: _Graph, density: str) -> tuple[list[str], str, str]:
    """(blob per scale, max over scales, finest smoothed density) of one windowed volume."""
    blobs, smoothed, previous, finest = [], density, 0.0, None
    for sigma in SCALES_VOX:
        smoothed = g.gaussian(smoothed, float(np.sqrt(sigma**2 - previous**2)))
        previous = sigma
        finest = finest or smoothed
        blobs.append(_blob(g, smoothed, sigma))
    return blobs, g.op("Max", blobs, "blob_max"), finest


def build_graph(weights: np.ndarray | None, bias: float = 0.0, metadata: dict[str, str] | None = None) -> onnx.ModelProto:
    """The detector; with ``weights=None`` the graph outputs the feature channels instead."""
    g = _Graph()
    low, span = g.const(WINDOW_LOW_HU), g.const(1.0 / (WINDOW_HIGH_HU - WINDOW_LOW_HU))
    zero, one = g.const(0.0), g.const(1.0)
    density = g.op("Clip", [g.op("Mul", [g.op("Sub", ["ct_hu", low]), span]), zero, one], "density")
    air = g.op("Cast", [g.op("Less", ["ct_hu", g.const(AIR_BELOW_HU)])], "air", to=TensorProto.FLOAT)
    lung = g.gaussian(air, LUNG_SIGMA_VOX)

    blobs, blob_max, density_s0 = _branch(g, density)
    gated = [g.op("Mul", [b, lung]) for b in [*blobs, blob_max]]
    glass_low, glass_span = g.const(GLASS_WINDOW_LOW_HU), g.const(1.0 / (GLASS_WINDOW_HIGH_HU - GLASS_WINDOW_LOW_HU))
    glass = g.op("Clip", [g.op("Mul", [g.op("Sub", ["ct_hu", glass_low]), glass_span]), zero, one], "glass")
    glass_blobs, glass_max, glass_s0 = _branch(g, glass)
    glass_gated = [g.op("Mul", [b, lung]) for b in [*glass_blobs, glass_max]]
    features = g.op("Concat", [*blobs, blob_max, lung, *gated, density_s0, *glass_gated, glass_s0],
                    "features", axis=1)

    if weights is None:
        out_name, out = "features", features
        out_shape = [1, N_FEATURES, "z", "y", "x"]
    else:
        w = g.const(np.asarray(weights, np.float32).reshape(1, N_FEATURES, 1, 1, 1), "logistic_w")
        b = g.const(np.array([bias], np.float32), "logistic_b")
        out = g.op("Sigmoid", [g.op("Conv", [features, w, b], "logit")], "prob")
        out_name, out_shape = "nodule_probability", [1, 1, "z", "y", "x"]
    g.nodes.append(helper.make_node("Identity", [out], [out_name], name="output_node"))
    graph = helper.make_graph(
        g.nodes, "lung_nodule_detector",
        [helper.make_tensor_value_info("ct_hu", TensorProto.FLOAT, [1, 1, "z", "y", "x"])],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, out_shape)],
        initializer=g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="radpath models/lung_nodule/build_model.py")
    model.ir_version = 8
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    return model
