"""Growth against the prior scan, measured on synthetic follow-up pairs with known truth.

For each seed: the baseline chest CT (`make_chest_ct(seed)`) and its follow-up
(`make_follow_up_ct`): every nodule's volume multiplied by a ratio drawn from a set that spans
shrinking, stable, slow and fast growth (true VDT from the drawn voxels), sometimes one nodule
resolved and one new, the patient shifted by up to 25 mm. The detector runs on both; the
pathway's own steps (lung centroid, `assess_lung_study`, `compare_to_prior`) compare them.

Reported: how many true baseline-follow-up pairs that the detector found on both scans were
matched correctly, wrong matches, the status agreement (growing / stable / shrinking by the
25 % rule, on the truth's volumes), and the VDT error of growing nodules.

    python models/lung_nodule/evaluate_growth.py --pairs 12 --out models/lung_nodule/growth_metrics.json

Caveat: the follow-up is the same image except the nodules, the noise and a translation: no
rotation, breathing or different reconstruction, so matching here is easier than on patients.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

RATIOS = (0.6, 1.0, 1.1, 1.5, 2.0, 3.0)  # follow-up volume / baseline volume
SEED_START = 81000  # never used by a test or to fit anything


def _assess(phantom, model, when: dt.date):  # noqa: ANN001, ANN202
    from integrations.inference.lung_nodules import detect_nodules
    from pathways.findings import PatientContext
    from pathways.lung_cancer_ct import assess_lung_study
    from pathways.lung_nodule_measurement import lung_centroid_xyz_mm

    nodules, _ = detect_nodules(phantom.hu, phantom.spacing_zyx_mm, phantom.origin_xyz_mm, model)
    assessment = assess_lung_study(nodules, PatientContext(age_years=65, sex="F"))
    centroid = lung_centroid_xyz_mm(phantom.hu, phantom.spacing_zyx_mm, phantom.origin_xyz_mm)
    return assessment.model_copy(update={"study_date": when, "lung_centroid_xyz_mm": centroid})


def _found(truth, nodules) -> int | None:  # noqa: ANN001
    """The index of the detection that is this truth nodule (within max(radius, 5 mm)), if any."""
    best = min(nodules, key=lambda n: math.dist(n.centre_xyz_mm, truth.centre_xyz_mm), default=None)
    if best is not None and math.dist(best.centre_xyz_mm, truth.centre_xyz_mm) <= max(truth.diameter_mm / 2, 5.0):
        return best.index
    return None


def evaluate(n_pairs: int, model_path: Path, days: int = 91) -> dict:
    from integrations.inference.onnx_model import load_model
    from pathways.lung_cancer_ct import compare_to_prior
    from radpath.synth.chest_ct import make_chest_ct, make_follow_up_ct

    model = load_model(model_path)
    pairs_found = matched = wrong = status_agree = status_total = 0
    vdt_errors, seconds = [], []
    for k in range(n_pairs):
        seed = SEED_START + k
        rng = np.random.default_rng([seed, 0x6F])
        count = int(rng.integers(1, 4))
        baseline = make_chest_ct(seed, n_nodules=count)
        ratios = {n.index: float(rng.choice(RATIOS)) for n in baseline.nodules}
        if len(ratios) > 1 and rng.random() < 0.3:
            ratios[max(ratios)] = 0.0  # resolved
        shift = tuple(float(v) for v in rng.uniform(-25, 25, 3))
        follow = make_follow_up_ct(seed, ratios, new_nodules=int(rng.random() < 0.3), shift_xyz_mm=shift, n_nodules=count)
        start = time.perf_counter()
        prior = _assess(baseline, model, dt.date(2026, 1, 5))
        current = _assess(follow, model, dt.date(2026, 1, 5) + dt.timedelta(days=days))
        compared = compare_to_prior(current, prior, "S-prior")
        seconds.append(time.perf_counter() - start)
        by_prior = {g.prior_index: g for g in compared.growth if g.prior_index is not None}
        after = {n.index: n for n in follow.nodules}
        for truth in baseline.nodules:
            if truth.index not in after:
                continue
            i, j = _found(truth, [a.nodule for a in prior.nodules]), _found(after[truth.index], [a.nodule for a in current.nodules])
            if i is None or j is None:
                continue
            pairs_found += 1
            g = by_prior.get(i)
            if g is None or g.index != j:
                wrong += g is not None and g.index is not None
                continue
            matched += 1
            change = after[truth.index].volume_mm3 / truth.volume_mm3 - 1
            true_status = "stable" if abs(change) < 0.25 else "growing" if change > 0 else "shrinking"
            status_total += 1
            status_agree += g.status == true_status
            if true_status == "growing" and g.vdt_days:
                true_vdt = days * math.log(2) / math.log(1 + change)
                vdt_errors.append(abs(g.vdt_days - true_vdt) / true_vdt)
    return {
        "pairs": n_pairs, "seed_start": SEED_START, "interval_days": days,
        "nodule_pairs_detected_on_both_scans": pairs_found,
        "matched_correctly": matched, "matched_wrongly": wrong,
        "match_rate": round(matched / pairs_found, 3) if pairs_found else None,
        "status_agreement": round(status_agree / status_total, 3) if status_total else None,
        "growing_nodules_with_vdt": len(vdt_errors),
        "vdt_relative_error_median": round(statistics.median(vdt_errors), 3) if vdt_errors else None,
        "vdt_relative_error_max": round(max(vdt_errors), 3) if vdt_errors else None,
        "seconds_per_pair_median": round(statistics.median(seconds), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=12)
    parser.add_argument("--model", type=Path, default=ROOT / "models/lung_nodule/lung_nodule_detector.onnx")
    parser.add_argument("--out", type=Path, default=ROOT / "models/lung_nodule/growth_metrics.json")
    args = parser.parse_args()
    metrics = evaluate(args.pairs, args.model)
    args.out.write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
