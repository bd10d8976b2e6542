"""Measure echo-lv on held-out synthetic A4C cines with known masks, volumes and EF.

    .venv/bin/python models/echo_lv/evaluate.py        # writes models/echo_lv/metrics.json

Per cine: Dice of the predicted LV cavity against the truth mask (mean over frames), and
EDV/ESV/EF from the predicted masks (single-plane method of discs, pathways.heart_failure)
against the generator's analytic truth. The same volumes from the truth masks give the
measurement method's own error, so model error and method error are told apart.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from integrations.inference.echo_lv import segment_lv
from integrations.inference.onnx_model import file_sha256, load_model
from pathways.heart_failure import assess_echo
from radpath.synth.echo import make_echo

HERE = Path(__file__).resolve().parent
ONNX_PATH = HERE / "echo_lv.onnx"
HELD_OUT_SEEDS = (2001, 2002, 2003, 2004, 2005, 2006)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * np.logical_and(a, b).sum() / total)


def evaluate_cine(seed: int, model) -> dict:  # noqa: ANN001
    ph = make_echo(seed)
    masks = segment_lv(ph.frames, ph.region, ph.cm_per_pixel, model)
    predicted = assess_echo(masks, ph.cm_per_pixel)
    method = assess_echo(ph.lv_masks, ph.cm_per_pixel)
    return {
        "seed": seed,
        "dice_mean": round(float(np.mean([dice(m, t) for m, t in zip(masks, ph.lv_masks, strict=True)])), 4),
        "truth": {"edv_ml": ph.edv_ml, "esv_ml": ph.esv_ml, "ef_percent": round(ph.ef * 100, 2)},
        "model": {"edv_ml": predicted.edv_ml, "esv_ml": predicted.esv_ml, "ef_percent": predicted.ef_percent,
                  "ed_frame": predicted.ed_frame, "es_frame": predicted.es_frame},
        "method_on_truth_masks": {"edv_ml": method.edv_ml, "esv_ml": method.esv_ml, "ef_percent": method.ef_percent},
    }


def main() -> None:
    model = load_model(ONNX_PATH)
    cines = [evaluate_cine(seed, model) for seed in HELD_OUT_SEEDS]
    ef_errors = [abs(c["model"]["ef_percent"] - c["truth"]["ef_percent"]) for c in cines]
    edv_errors = [abs(c["model"]["edv_ml"] - c["truth"]["edv_ml"]) / c["truth"]["edv_ml"] * 100 for c in cines]
    esv_errors = [abs(c["model"]["esv_ml"] - c["truth"]["esv_ml"]) / c["truth"]["esv_ml"] * 100 for c in cines]
    method_ef = [abs(c["method_on_truth_masks"]["ef_percent"] - c["truth"]["ef_percent"]) for c in cines]
    metrics = {
        "model": model.name, "version": model.version, "sha256": file_sha256(ONNX_PATH),
        "held_out_seeds": list(HELD_OUT_SEEDS),
        "dice_mean": round(float(np.mean([c["dice_mean"] for c in cines])), 4),
        "dice_min": round(float(np.min([c["dice_mean"] for c in cines])), 4),
        "ef_mae_points": round(float(np.mean(ef_errors)), 2),
        "ef_max_error_points": round(float(np.max(ef_errors)), 2),
        "edv_mean_abs_error_percent": round(float(np.mean(edv_errors)), 2),
        "esv_mean_abs_error_percent": round(float(np.mean(esv_errors)), 2),
        "method_ef_mae_points_on_truth_masks": round(float(np.mean(method_ef)), 2),
        "cines": cines,
    }
    (HERE / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps({k: v for k, v in metrics.items() if k != "cines"}, indent=2))


if __name__ == "__main__":
    main()
