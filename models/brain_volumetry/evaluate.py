"""Evaluate the brain volumetry model on held-out synthetic brains; writes metrics.json.

    python models/brain_volumetry/evaluate.py

Seeds 5000.. (disjoint from training 3000.. and tests 7000..), atrophy spread over 0..1.
Dice and signed relative volume error per structure against the phantoms' label maps.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from integrations.inference.brain_volumetry import measure_brain  # noqa: E402
from integrations.inference.onnx_model import load_model  # noqa: E402
from radpath.synth.brain_mri import make_brain_mri  # noqa: E402

HERE = Path(__file__).resolve().parent
EVAL_SEEDS = tuple(range(5000, 5006))
STRUCTURES = {  # name: (model classes, phantom labels, measured attribute, truth attribute)
    "intracranial": ((1, 2, 3, 4, 5), (1, 2, 3, 4, 5, 6), "intracranial_ml", "intracranial_volume_ml"),
    "whole_brain": ((2, 3, 4, 5), (3, 4, 5, 6), "brain_ml", "brain_volume_ml"),
    "hippocampus_left": ((4,), (5,), "hippocampus_left_ml", "hippocampus_left_ml"),
    "hippocampus_right": ((5,), (6,), "hippocampus_right_ml", "hippocampus_right_ml"),
}


def main() -> None:
    path = HERE / "brain_volumetry.onnx"
    model = load_model(path)
    rows = {name: {"dice": [], "volume_error": []} for name in STRUCTURES}
    seconds = []
    for i, seed in enumerate(EVAL_SEEDS):
        ph = make_brain_mri(seed, atrophy=i / (len(EVAL_SEEDS) - 1))
        start = time.perf_counter()
        got = measure_brain(ph.t1, ph.spacing_zyx_mm, model)
        seconds.append(time.perf_counter() - start)
        for name, (classes, labels, measured, truth) in STRUCTURES.items():
            a, b = np.isin(got.labels, classes), np.isin(ph.labels, labels)
            rows[name]["dice"].append(2 * float((a & b).sum()) / float(a.sum() + b.sum()))
            rows[name]["volume_error"].append((getattr(got, measured) - getattr(ph, truth)) / getattr(ph, truth))
    metrics = {
        "model_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "eval_seeds": list(EVAL_SEEDS),
        "seconds_per_volume_mean": round(float(np.mean(seconds)), 2),
        "structures": {
            name: {"dice_min": round(min(r["dice"]), 4), "dice_mean": round(float(np.mean(r["dice"])), 4),
                   "volume_error_max_abs_percent": round(100 * max(abs(v) for v in r["volume_error"]), 3),
                   "volume_error_mean_percent": round(100 * float(np.mean(r["volume_error"])), 3)}
            for name, r in rows.items()
        },
    }
    (HERE / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
