"""Measure echo-lv on held-out synthetic A4C cines with known masks, volumes and EF.

    .venv/bin/python models/echo_lv/evaluate.py                # writes models/echo_lv/metrics.json
    .venv/bin/python models/echo_lv/evaluate.py --heldout 24   # and the held-out protocol (its "heldout" key)

Per cine: Dice of the predicted LV cavity against the truth mask (mean over frames), and
EDV/ESV/EF from the predicted masks (single-plane method of discs, pathways.heart_failure)
against the generator's analytic truth. The same volumes from the truth masks give the
measurement method's own error, so model error and method error are told apart.

`--heldout N` runs the held-out protocol: cines from `heldout_cines.py`, a generator written
apart from the training one, through the pathway's own steps (segment_lv, assess_lv_function,
the card's output ranges). Measured: LV found (a measurable, plausible answer), EF error, ESC
2021 class agreement (a cine not measured counts as not agreeing), against the issue's targets.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

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


HELDOUT_SEED_START = 41000
HELDOUT_TARGETS = {"lv_found": 0.95, "ef_mae_points": 5.0, "esc_class_agreement": 0.90}


def evaluate_heldout(n: int, model, seed_start: int = HELDOUT_SEED_START) -> dict:  # noqa: ANN001
    """The held-out protocol on n cines from the separately written generator (module docstring)."""
    from models.echo_lv.heldout_cines import make_heldout_cine
    from pathways.heart_failure import classify_lvef
    from pathways.model_card import load_card, output_problems

    card = load_card(HERE / "card.yaml")
    rows = []
    for seed in range(seed_start, seed_start + n):
        cine = make_heldout_cine(seed)
        masks = segment_lv(cine.frames, cine.region, cine.cm_per_pixel, model)
        a = assess_echo(masks, cine.cm_per_pixel)
        problems = output_problems(card, a.model_dump(include={"edv_ml", "esv_ml", "ef_percent", "long_axis_ed_cm"})) \
            if a.measurable else []
        measured = a.measurable and not problems
        lv_frames = int(sum(m.any() for m in masks))
        rows.append({
            "seed": seed, "truth_ef": cine.ef_percent, "truth_edv_ml": cine.edv_ml, "truth_class": classify_lvef(cine.ef_percent),
            "lv_on_left": cine.lv_on_left, "frames_with_lv": lv_frames, "n_frames": len(masks),
            "dice_mean": round(float(np.mean([dice(m, t) for m, t in zip(masks, cine.lv_masks, strict=True)])), 4),
            "measured": measured, "reason": a.reason or "; ".join(problems),
            "ef": a.ef_percent if measured else None, "edv_ml": a.edv_ml if measured else None,
            "class": a.ef_category if measured else None,
        })
        print(seed, rows[-1]["truth_ef"], rows[-1]["ef"], rows[-1]["dice_mean"], rows[-1]["reason"][:80], flush=True)
    measured = [r for r in rows if r["measured"]]
    summary = {
        "generator": "models/echo_lv/heldout_cines.py", "seeds": [seed_start, seed_start + n - 1], "cines": n,
        "lv_found": round(len(measured) / n, 3),
        "dice_mean": round(float(np.mean([r["dice_mean"] for r in rows])), 3),
        "ef_mae_points": round(float(np.mean([abs(r["ef"] - r["truth_ef"]) for r in measured])), 2) if measured else None,
        "esc_class_agreement": round(sum(r["class"] == r["truth_class"] for r in rows) / n, 3),
        "esc_class_agreement_when_measured": round(sum(r["class"] == r["truth_class"] for r in measured) / len(measured), 3)
        if measured else None,
        "targets": HELDOUT_TARGETS,
        "command": f"python models/echo_lv/evaluate.py --heldout {n}",
        "rows": rows,
    }
    summary["targets_met"] = bool(
        summary["lv_found"] >= HELDOUT_TARGETS["lv_found"] and summary["ef_mae_points"] is not None
        and summary["ef_mae_points"] <= HELDOUT_TARGETS["ef_mae_points"]
        and summary["esc_class_agreement"] >= HELDOUT_TARGETS["esc_class_agreement"])
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heldout", type=int, default=0, help="also run the held-out protocol on this many cines")
    parser.add_argument("--model", type=Path, default=ONNX_PATH)
    parser.add_argument("--out", type=Path, default=HERE / "metrics.json")
    args = parser.parse_args()
    model = load_model(args.model)
    if args.heldout:
        heldout = evaluate_heldout(args.heldout, model)
        document = json.loads(args.out.read_text()) if args.out.exists() else {}
        document["heldout"] = heldout
        args.out.write_text(json.dumps(document, indent=2) + "\n")
        print(json.dumps({k: v for k, v in heldout.items() if k != "rows"}, indent=2))
        return
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
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    if "heldout" in previous:
        metrics["heldout"] = previous["heldout"]
    args.out.write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps({k: v for k, v in metrics.items() if k != "cines"}, indent=2))


if __name__ == "__main__":
    main()
