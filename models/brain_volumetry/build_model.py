"""Build the brain volumetry model: Gaussian tissue intensities + a spatial atlas, fitted on phantoms.

    python models/brain_volumetry/build_model.py

Deterministic: synthetic T1 brains (radpath.synth.brain_mri) from TRAIN_SEEDS, with atrophy
spread evenly over 0..1 (disjoint from the evaluation seeds in evaluate.py and the test seeds).
Fitted from their known label maps, after the same normalisation and head-centroid placement the
inference adapter applies: each component's intensity mean and sd (maximum likelihood) and the
atlas, the component frequencies per 4 mm cell, lightly smoothed. Writes brain_volumetry.onnx.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import onnx  # noqa: E402
from scipy import ndimage as ndi  # noqa: E402

from integrations.inference.brain_volumetry import head_centroid, normalise, place  # noqa: E402
from models.brain_volumetry.graph import (  # noqa: E402
    ATLAS_STEP,
    CLASSES,
    COMPONENT_LABELS,
    COMPONENTS,
    TEMPLATE_SHAPE,
    build_graph,
)

HERE = Path(__file__).resolve().parent
MODEL_PATH = HERE / "brain_volumetry.onnx"
VERSION = "1.0.0"
TRAIN_SEEDS = tuple(range(3000, 3010))  # evaluate.py uses 5000.., tests use 7000..
ATLAS_SMOOTHING_CELLS = 0.75  # Gaussian sigma (atlas cells) so unseen sizes keep some prior
METADATA = {
    "name": "radpath-brain-volumetry",
    "version": VERSION,
    "intended_use": ("Reference model for the radpath demo and tests: intracranial, whole-brain and "
                     "left/right hippocampal segmentation of a 3D T1-weighted brain MRI. NOT a medical "
                     "device; built and evaluated only on synthetic phantoms."),
    "input": "t1 float32 [1,1,160,192,160]: T1 / its 99th percentile, 1 mm grid, head centroid at template_head_centroid_zyx",
    "output": "labels uint8 [1,160,192,160]: " + ", ".join(f"{i} {c}" for i, c in enumerate(CLASSES)),
    "input_spacing_mm": "1.0",
    "template_shape_zyx": ",".join(str(n) for n in TEMPLATE_SHAPE),
}


def training_phantoms():
    from radpath.synth.brain_mri import make_brain_mri

    for i, seed in enumerate(TRAIN_SEEDS):
        yield make_brain_mri(seed, atrophy=i / (len(TRAIN_SEEDS) - 1))


def _component_map(labels: np.ndarray) -> np.ndarray:
    lut = np.zeros(256, np.uint8)
    for comp, phantom_labels in enumerate(COMPONENT_LABELS):
        lut[list(phantom_labels)] = comp
    return lut[labels]


def fit() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(means, sds, atlas [K, cells...], template head centroid) from the training phantoms."""
    k = len(COMPONENTS)
    phantoms = []
    for ph in training_phantoms():
        norm = normalise(ph.t1)
        phantoms.append((norm, _component_map(ph.labels), head_centroid(norm)))
    centroid = np.mean([c for _, _, c in phantoms], axis=0)
    sums, sq, n = np.zeros(k), np.zeros(k), np.zeros(k)
    cells = tuple(s // ATLAS_STEP for s in TEMPLATE_SHAPE)
    counts = np.zeros((k, *cells))
    for norm, comp, own in phantoms:
        flat_c, flat_x = comp.ravel(), norm.ravel().astype(np.float64)
        n += np.bincount(flat_c, minlength=k)
        sums += np.bincount(flat_c, weights=flat_x, minlength=k)
        sq += np.bincount(flat_c, weights=flat_x**2, minlength=k)
        shift = tuple(int(v) for v in np.rint(centroid - own))
        placed = place(comp, shift, TEMPLATE_SHAPE)
        inside = place(np.ones(comp.shape, bool), shift, TEMPLATE_SHAPE)
        blocks = placed.reshape(cells[0], ATLAS_STEP, cells[1], ATLAS_STEP, cells[2], ATLAS_STEP)
        weight = inside.reshape(blocks.shape)
        for c in range(k):
            counts[c] += ((blocks == c) & weight).sum(axis=(1, 3, 5))
        counts[0] += (~weight).sum(axis=(1, 3, 5))  # outside the field of view: background
    means = sums / n
    sds = np.sqrt(sq / n - means**2)
    counts = np.stack([ndi.gaussian_filter(c, ATLAS_SMOOTHING_CELLS, mode="nearest") for c in counts])
    atlas = counts / counts.sum(axis=0, keepdims=True)
    return means, sds, atlas, centroid


def main() -> None:
    start = time.perf_counter()
    means, sds, atlas, centroid = fit()
    metadata = dict(METADATA, template_head_centroid_zyx=",".join(f"{v:.3f}" for v in centroid),
                    training_seeds=f"{TRAIN_SEEDS[0]}-{TRAIN_SEEDS[-1]}",
                    component_means=",".join(f"{v:.4f}" for v in means),
                    component_sds=",".join(f"{v:.4f}" for v in sds))
    model = build_graph(means, sds, atlas, metadata)
    MODEL_PATH.write_bytes(model.SerializeToString())
    onnx.checker.check_model(str(MODEL_PATH))
    import hashlib

    print(f"wrote {MODEL_PATH.name} ({MODEL_PATH.stat().st_size / 1e6:.2f} MB) in {time.perf_counter() - start:.1f} s")
    print("sha256", hashlib.sha256(MODEL_PATH.read_bytes()).hexdigest())
    for name, m, s in zip(COMPONENTS, means, sds):
        print(f"  {name:18s} mean {m:.3f} sd {s:.3f}")


if __name__ == "__main__":
    main()
