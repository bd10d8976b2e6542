"""Evaluate the lung nodule detector on held-out synthetic chest CTs with known truth.

    python models/lung_nodule/evaluate.py --studies 30

Seeds EVAL_SEED_START.. (disjoint from build_model.TRAIN_SEEDS and the test seeds). A detection
matches a truth nodule when its centre lies within max(truth radius, 5 mm); each is used once
(closest pairs first). Writes metrics.json next to this file and re-renders MODEL_CARD.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
EVAL_SEED_START = 5000
MATCH_MIN_MM = 5.0
SIZE_BANDS = (("<5mm", 0.0, 5.0), ("5-8mm", 5.0, 8.0), (">=8mm", 8.0, np.inf))


def match(phantom, detections) -> tuple[list[tuple[object, object | None]], list[object]]:
    """([(truth, detection or None)], unmatched detections); detections need ``centre_xyz_mm``."""
    pairs = []
    for ti, t in enumerate(phantom.nodules):
        for di, d in enumerate(detections):
            dist = float(np.linalg.norm(np.subtract(t.centre_xyz_mm, d.centre_xyz_mm)))
            if dist <= max(t.diameter_mm / 2.0, MATCH_MIN_MM):
                pairs.append((dist, ti, di))
    used_t, used_d, matched = set(), set(), {}
    for _, ti, di in sorted(pairs):
        if ti not in used_t and di not in used_d:
            used_t.add(ti)
            used_d.add(di)
            matched[ti] = detections[di]
    result = [(t, matched.get(i)) for i, t in enumerate(phantom.nodules)]
    return result, [d for i, d in enumerate(detections) if i not in used_d]


def _rate(hits: list[bool]) -> dict:
    return {"n": len(hits), "sensitivity": (sum(hits) / len(hits)) if hits else None}


def summarise(rows: list[dict], n_studies: int, false_positives: int, seconds: list[float]) -> dict:
    """Aggregate per-truth rows (see evaluate()) into the metrics document."""
    hit = [r["detected"] for r in rows]
    matched = [r for r in rows if r["detected"]]

    def mean(values):
        return float(np.mean(values)) if values else None

    return {
        "studies": n_studies,
        "truth_nodules": len(rows),
        "sensitivity": _rate(hit),
        "sensitivity_ge5mm": _rate([r["detected"] for r in rows if r["diameter_mm"] >= 5.0]),
        "sensitivity_by_type": {k: _rate([r["detected"] for r in rows if r["type"] == k])
                                for k in ("solid", "part-solid", "ground-glass")},
        "sensitivity_by_size": {name: _rate([r["detected"] for r in rows if lo <= r["diameter_mm"] < hi])
                                for name, lo, hi in SIZE_BANDS},
        "false_positives": false_positives,
        "false_positives_per_scan": false_positives / max(n_studies, 1),
        "long_axis_mae_mm": mean([abs(r["long_axis_mm"] - r["diameter_mm"]) for r in matched]),
        "mean_diameter_mae_mm": mean([abs(r["mean_diameter_mm"] - r["diameter_mm"]) for r in matched]),
        "volume_mean_abs_relative_error": mean([abs(r["volume_mm3"] - r["true_volume_mm3"]) / r["true_volume_mm3"]
                                                for r in matched]),
        "type_accuracy": mean([r["pred_type"] == r["type"] for r in matched]),
        "spiculation_accuracy": mean([r["pred_spiculated"] == r["spiculated"] for r in matched]),
        "lobe_accuracy": mean([r["pred_lobe"] == r["lobe"] for r in matched]),
        "seconds_per_study_mean": mean(seconds),
        "seconds_per_study_max": float(max(seconds)) if seconds else None,
    }


def evaluate(n_studies: int, model_path: Path) -> dict:
    from integrations.inference.lung_nodules import detect_nodules
    from integrations.inference.onnx_model import load_model
    from radpath.synth.chest_ct import make_chest_ct

    model = load_model(model_path)
    rows, false_positives, seconds = [], 0, []
    for seed in range(EVAL_SEED_START, EVAL_SEED_START + n_studies):
        phantom = make_chest_ct(seed)
        t0 = time.perf_counter()
        nodules, _ = detect_nodules(phantom.hu, phantom.spacing_zyx_mm, phantom.origin_xyz_mm, model)
        seconds.append(time.perf_counter() - t0)
        pairs, fps = match(phantom, nodules)
        false_positives += len(fps)
        for t, d in pairs:
            row = {"seed": seed, "diameter_mm": t.diameter_mm, "true_volume_mm3": t.volume_mm3,
                   "type": t.nodule_type, "spiculated": t.spiculated, "lobe": t.lobe, "detected": d is not None}
            if d is not None:
                row.update(long_axis_mm=d.long_axis_mm, mean_diameter_mm=d.mean_diameter_mm, volume_mm3=d.volume_mm3,
                           pred_type=d.nodule_type, pred_spiculated=d.spiculated, pred_lobe=d.lobe)
            rows.append(row)
        print(f"seed {seed}: {len(phantom.nodules)} truth, {len(nodules)} detected, {len(fps)} FP, "
              f"{seconds[-1]:.1f} s", flush=True)
    metrics = summarise(rows, n_studies, false_positives, seconds)
    metrics.update(model=model.name, version=model.version, sha256=model.sha256,
                   seeds=f"{EVAL_SEED_START}-{EVAL_SEED_START + n_studies - 1}", per_nodule=rows)
    return metrics


HELDOUT_SEED_START = 31000
FROC_FP_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)  # LUNA16 CPM operating points (FP per scan)
FROC_LOGIT_BELOW = 4.0  # FROC candidates: probability down to 4 logits below the operating point
HELDOUT_SIZE_BANDS = (("4-6mm", 0.0, 6.0), ("6-10mm", 6.0, 10.0), ("10-20mm", 10.0, 20.0), (">=20mm", 20.0, np.inf))


def froc(scans: list[tuple[object, list]], rates=FROC_FP_RATES) -> dict:
    """Sensitivity at each false-positive rate, and the LUNA16 CPM (their mean).

    ``scans``: (phantom, detections with ``confidence`` and ``centre_xyz_mm``). At each threshold
    (every distinct confidence) detections at or above it are matched afresh.
    """
    n_truth = sum(len(p.nodules) for p, _ in scans)
    thresholds = sorted({d.confidence for _, ds in scans for d in ds}, reverse=True)
    curve = [(0.0, 0.0)]
    for t in thresholds:
        hits = fps = 0
        for phantom, ds in scans:
            pairs, unmatched = match(phantom, [d for d in ds if d.confidence >= t])
            hits += sum(d is not None for _, d in pairs)
            fps += len(unmatched)
        curve.append((fps / len(scans), hits / max(n_truth, 1)))
    at = {str(r): max((s for f, s in curve if f <= r), default=0.0) for r in rates}
    return {"sensitivity_at_fp_per_scan": at, "cpm": float(np.mean(list(at.values()))),
            "curve": [{"fp_per_scan": f, "sensitivity": s} for f, s in curve]}


def heldout_chest(seed: int, cache: Path | None = None):
    """A held-out chest, from `cache` (pickled) when given: generating one takes ~40 s."""
    import pickle

    from models.lung_nodule.heldout_phantoms import make_heldout_ct

    if cache is None:
        return make_heldout_ct(seed)
    path = cache / f"heldout-{seed}.pickle"
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pickle.dumps(make_heldout_ct(seed)))
    return pickle.loads(path.read_bytes())


def evaluate_heldout(n_studies: int, model_path: Path, seed_start: int = HELDOUT_SEED_START,
                     cache: Path | None = None) -> dict:
    """The held-out protocol: chests from heldout_phantoms.py, FROC/CPM plus per-class figures."""
    from integrations.inference.lung_nodules import find_nodules
    from integrations.inference.onnx_model import load_model

    model = load_model(model_path)
    operating = float(model.metadata.get("operating_threshold", 0.5))
    floor = float(1.0 / (1.0 + np.exp(FROC_LOGIT_BELOW - np.log(operating / (1.0 - operating)))))
    scans, rows, seconds, fp_total = [], [], [], 0
    for seed in range(seed_start, seed_start + n_studies):
        phantom = heldout_chest(seed, cache)
        t0 = time.perf_counter()
        found = find_nodules(phantom.hu, phantom.spacing_zyx_mm, phantom.origin_xyz_mm, model,
                             threshold=floor)
        seconds.append(time.perf_counter() - t0)
        scans.append((phantom, found))
        pairs, fps = match(phantom, [d for d in found if d.confidence >= operating])
        fp_total += len(fps)
        for t, d in pairs:
            row = {"seed": seed, "diameter_mm": t.diameter_mm, "true_volume_mm3": t.volume_mm3, "type": t.nodule_type,
                   "shape": t.shape, "contact": t.contact, "detected": d is not None}
            if d is not None:
                m = d.measurement
                row.update(long_axis_mm=round(m.long_axis_mm, 2), volume_mm3=round(m.volume_mm3, 1), pred_type=m.nodule_type)
            rows.append(row)
        print(f"held-out seed {seed}: {len(phantom.nodules)} truth, {sum(d is not None for _, d in pairs)} found,"
              f" {len(fps)} FP at the operating point, {seconds[-1]:.1f} s", flush=True)
    matched = [r for r in rows if r["detected"]]

    def by(key, values):
        return {v: _rate([r["detected"] for r in rows if r[key] == v]) for v in values}

    types = ("solid", "part-solid", "ground-glass")
    return {
        "protocol": "held-out: models/lung_nodule/heldout_phantoms.py (never used for fitting or thresholds)",
        "model": model.name, "version": model.version, "sha256": model.sha256,
        "seeds": f"{seed_start}-{seed_start + n_studies - 1}", "studies": n_studies, "truth_nodules": len(rows),
        "operating_threshold": operating,
        "sensitivity": _rate([r["detected"] for r in rows]),
        "sensitivity_ge6mm": _rate([r["detected"] for r in rows if r["diameter_mm"] >= 6.0]),
        "false_positives_per_scan": fp_total / max(n_studies, 1),
        "sensitivity_by_size": {name: _rate([r["detected"] for r in rows if lo <= r["diameter_mm"] < hi])
                                for name, lo, hi in HELDOUT_SIZE_BANDS},
        "sensitivity_by_type": by("type", types),
        "sensitivity_by_shape": by("shape", ("sphere", "ellipsoid")),
        "sensitivity_by_contact": by("contact", ("free", "juxtapleural", "vessel-crossing")),
        "froc": froc(scans),
        "long_axis_mae_mm": float(np.mean([abs(r["long_axis_mm"] - r["diameter_mm"]) for r in matched])) if matched else None,
        "volume_mean_abs_relative_error": (float(np.mean([abs(r["volume_mm3"] - r["true_volume_mm3"]) / r["true_volume_mm3"]
                                                          for r in matched])) if matched else None),
        "type_confusion": {t: {p: sum(1 for r in matched if r["type"] == t and r["pred_type"] == p) for p in types} for t in types},
        "seconds_per_study_median": float(np.median(seconds)) if seconds else None,
        "per_nodule": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=30)
    parser.add_argument("--heldout", type=int, default=0, help="also run the held-out protocol on this many chests")
    parser.add_argument("--cache", type=Path, default=None, help="keep generated held-out chests here")
    parser.add_argument("--model", type=Path, default=HERE / "lung_nodule_detector.onnx")
    parser.add_argument("--out", type=Path, default=HERE / "metrics.json")
    args = parser.parse_args()
    metrics = evaluate(args.studies, args.model) if args.studies else json.loads(args.out.read_text()) if args.out.exists() else {}
    if args.heldout:
        metrics["heldout"] = evaluate_heldout(args.heldout, args.model, cache=args.cache)
    args.out.write_text(json.dumps(metrics, indent=2) + "\n")
    from models.lung_nodule import card

    card.main()
    summary = {k: v for k, v in metrics.items() if k != "per_nodule"}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
