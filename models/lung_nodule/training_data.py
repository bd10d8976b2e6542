"""Training data for the lung nodule network: breadth patches plus whole-chest context crops.

Breadth patches (`breadth_phantoms.py`) teach nodule shapes, types and surroundings; crops of
whole synthetic chests (`radpath.synth.chest_ct`, training seeds only) teach what is NOT a
nodule outside the lung (ribs, spine, heart, aorta, diaphragm, air). Both are on the model's
2 mm grid. Deterministic from the seeds; cached as .npz so training can be rerun cheaply.
"""

from __future__ import annotations

from multiprocessing import Pool
from pathlib import Path

import numpy as np

from integrations.inference.lung_nodules import resample_to_spacing
from models.lung_nodule.breadth_phantoms import MODEL_MM, make_patch

BREADTH_SEEDS = range(0, 1600)
DENSE_SEEDS = range(1600, 2400)  # breadth patches with a dense small-vessel field
CHEST_SEEDS = range(9000, 9016)  # radpath.synth.chest_ct training seeds (tests use 7000.., the old evaluation 5000..)
CROPS_PER_CHEST = 40
SIDE = 48


def _breadth(seed: int):
    hu, target, _ = make_patch(seed)
    return hu.astype(np.float16), target


def _chest(seed: int):
    from radpath.synth.chest_ct import make_chest_ct

    ph = make_chest_ct(seed, n_nodules=4)
    coarse = resample_to_spacing(ph.hu.astype(np.float32), ph.spacing_zyx_mm, MODEL_MM)
    target = np.zeros(coarse.shape, np.uint8)
    grid = np.stack(np.meshgrid(*[np.arange(n) * MODEL_MM for n in coarse.shape], indexing="ij"), -1)
    for nod in ph.nodules:
        c = np.array(nod.centre_zyx_vox) * np.array(ph.spacing_zyx_mm)
        inside = np.linalg.norm(grid - c, axis=-1) <= max(nod.diameter_mm / 2.0, 2.0)
        target |= inside.astype(np.uint8)
    rng = np.random.default_rng([seed, 0xC209])
    centres = [np.array(nod.centre_zyx_vox) * np.array(ph.spacing_zyx_mm) / MODEL_MM for nod in ph.nodules]
    out = []
    for k in range(CROPS_PER_CHEST):
        if k < 2 * len(centres):
            c = centres[k % len(centres)] + rng.uniform(-12, 12, 3)
        else:
            c = rng.uniform(0, coarse.shape)
        lo = [int(np.clip(round(ci - SIDE / 2), 0, n - SIDE)) for ci, n in zip(c, coarse.shape)]
        box = tuple(slice(a, a + SIDE) for a in lo)
        out.append((coarse[box].astype(np.float16), target[box]))
    return out


def load(cache: Path, processes: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """(HU patches float16 [N,48,48,48], targets uint8 [N,48,48,48]) from the cache or freshly made."""
    cache.mkdir(parents=True, exist_ok=True)
    parts = []
    for name, make, seeds in (("breadth", _breadth, BREADTH_SEEDS), ("dense", _breadth, DENSE_SEEDS),
                              ("chest", _chest, CHEST_SEEDS)):
        path = cache / f"lung_training_{name}.npz"
        if not path.exists():
            with Pool(processes) as pool:
                made = pool.map(make, seeds, chunksize=max(1, len(seeds) // 40))
            if name == "chest":
                made = [crop for crops in made for crop in crops]
            np.savez(path, hu=np.stack([m[0] for m in made]), target=np.stack([m[1] for m in made]))
        data = np.load(path)
        parts.append((data["hu"], data["target"]))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
