"""Measure radpath's calcium scoring (Agatston with coronary candidate rules) on held-out CTs.

    python models/coronary_calcium/evaluate.py --studies 60

Studies from `heldout_phantoms.py`, seeds HELDOUT_SEED_START.. (never used to set a rule).
Per study: is it measurable when it should be (120 kVp, no contrast) and refused when it should
not; the CAC-DRS category against the truth; the total within 10 % (within 5 when the truth is
below 50); each plaque with a score found; each distractor left uncounted. Writes metrics.json
and VALIDATION.md next to this file.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from models.coronary_calcium.heldout_phantoms import DISTRACTORS, VESSELS, make_heldout_cardiac_ct  # noqa: E402
from pathways.heart_failure import cac_drs, score_calcium  # noqa: E402

HELDOUT_SEED_START = 73000  # 71000-71039 and 72000-72059 were looked at while the rules were written
TARGETS = {"cac_drs_agreement": 0.95, "score_within_tolerance": 0.90, "distractor_class_left_uncounted": 0.90}
COMMAND = "python models/coronary_calcium/evaluate.py --studies {n}"


def within_tolerance(measured: float, truth: float) -> bool:
    """The issue's target: within 10 % of the truth, or within 5 points when the truth is below 50."""
    return abs(measured - truth) <= (5.0 if truth < 50 else 0.10 * truth)


def evaluate_study(seed: int) -> dict:
    """One held-out study scored through `score_calcium`, compared with its truth."""
    study = make_heldout_cardiac_ct(seed)
    start = time.perf_counter()
    result, mask = score_calcium(study.hu, study.spacing_zyx_mm, study.origin_xyz_mm, kvp_values=study.kvp_values)
    seconds = time.perf_counter() - start
    truth = study.agatston_total
    row = {
        "seed": seed, "expected_measurable": study.expected_measurable, "measurable": result.measurable,
        "acquisition": "contrast" if study.contrast else f"kvp {study.kvp_values[0]:g}" if study.kvp_values else "kvp missing",
        "reason": result.reason, "truth_total": round(truth, 2), "truth_cac_drs": cac_drs(truth), "seconds": round(seconds, 2),
        "distractors": [], "plaques": [],
    }
    if not result.measurable:
        return row
    noise_free = score_calcium(study.hu_noise_free, study.spacing_zyx_mm, study.origin_xyz_mm,
                               kvp_values=study.kvp_values)[0]
    row.update(measured_total=round(result.agatston_total, 2), cac_drs=result.cac_drs,
               within_tolerance=within_tolerance(result.agatston_total, truth),
               noise_free_total=round(noise_free.agatston_total, 2),
               noise_free_within_tolerance=within_tolerance(noise_free.agatston_total, truth))
    for index, plaque in enumerate(study.plaques, start=1):
        found = bool(mask[study.plaque_labels == index].any())
        excluded = [e.reason for e in result.excluded
                    if np.linalg.norm(np.subtract(e.centre_xyz_mm, plaque.centre_xyz_mm)) <= 4.0]
        row["plaques"].append({"vessel": plaque.vessel, "truth": plaque.agatston, "found": found,
                               "excluded_as": excluded[0] if excluded else None})
    for distractor in study.distractors:
        z, y, x = distractor.voxels.T if len(distractor.voxels) else (np.array([], int),) * 3
        counted = bool(len(z) and mask[z, y, x].any())
        row["distractors"].append({"kind": distractor.kind, "counted": counted})
    return row


def summarise(rows: list[dict]) -> dict:
    def rate(values: list[bool]) -> dict:
        return {"n": len(values), "rate": round(sum(values) / len(values), 3) if values else None}

    scored = [r for r in rows if r["expected_measurable"]]
    refused = [r for r in rows if not r["expected_measurable"]]
    agreement = [r["measurable"] and r["cac_drs"] == r["truth_cac_drs"] for r in scored]
    tolerance = [r["measurable"] and r["within_tolerance"] for r in scored]
    plaques = [p for r in scored if r["measurable"] for p in r["plaques"] if p["truth"] > 0]
    distractors = {kind: rate([not d["counted"] for r in scored if r["measurable"] for d in r["distractors"]
                               if d["kind"] == kind]) for kind in DISTRACTORS}
    with_distractor = [r for r in scored if any(d["kind"] != "rib-end" for d in r["distractors"])]
    calcium_free = [r for r in with_distractor if r["truth_total"] == 0]
    excluded_plaques: dict[str, int] = {}
    for p in plaques:
        if not p["found"] and p["excluded_as"]:
            excluded_plaques[p["excluded_as"]] = excluded_plaques.get(p["excluded_as"], 0) + 1
    summary = {
        "studies": len(rows), "seed_start": rows[0]["seed"] if rows else None,
        "expected_measurable": len(scored),
        "wrongly_refused": sum(not r["measurable"] for r in scored),
        "acquisition_refused_correctly": rate([not r["measurable"] for r in refused]),
        "cac_drs_agreement": rate(agreement),
        "cac_drs_agreement_with_a_distractor": rate([r["measurable"] and r["cac_drs"] == r["truth_cac_drs"]
                                                     for r in with_distractor]),
        "calcium_free_with_a_distractor_scored_a0": rate([r["measurable"] and r["cac_drs"] == "A0" for r in calcium_free]),
        "score_within_tolerance": rate(tolerance),
        "score_within_tolerance_noise_free": rate([r["measurable"] and r["noise_free_within_tolerance"] for r in scored]),
        "score_relative_error_median": round(float(np.median([abs(r["measured_total"] - r["truth_total"]) / r["truth_total"]
                                                              for r in scored if r["measurable"] and r["truth_total"] >= 50]
                                                             or [np.nan])), 3),
        "plaques_found": rate([p["found"] for p in plaques]),
        "plaques_found_by_vessel": {v: rate([p["found"] for p in plaques if p["vessel"] == v]) for v in VESSELS},
        "plaques_excluded_as": excluded_plaques,
        "distractor_left_uncounted": distractors,
        "seconds_per_study_median": round(float(np.median([r["seconds"] for r in rows])), 2) if rows else None,
    }
    summary["targets"] = {
        "cac_drs_agreement": TARGETS["cac_drs_agreement"],
        "score_within_tolerance": TARGETS["score_within_tolerance"],
        "distractor_class_left_uncounted": TARGETS["distractor_class_left_uncounted"],
    }
    classes = [d["rate"] for d in distractors.values() if d["rate"] is not None]
    summary["targets_met"] = bool(
        summary["cac_drs_agreement"]["rate"] is not None
        and summary["cac_drs_agreement"]["rate"] >= TARGETS["cac_drs_agreement"]
        and summary["score_within_tolerance"]["rate"] >= TARGETS["score_within_tolerance"]
        and classes and min(classes) >= TARGETS["distractor_class_left_uncounted"]
    )
    return summary


def render(summary: dict) -> str:
    """VALIDATION.md from the metrics document."""
    def pct(block: dict) -> str:
        return "n/a" if block["rate"] is None else f"{block['rate'] * 100:.0f} % (n = {block['n']})"

    lines = [
        "# Coronary calcium scoring: held-out validation", "",
        "radpath's heart-failure cardiac CT pathway scores calcium by rule (Agatston 1990, CAC-DRS 2018), "
        "with no model: `pathways/heart_failure.py` scores, `pathways/coronary_candidates.py` decides which "
        "objects are coronary calcium and which scans can be scored. This page is generated by "
        f"`{COMMAND.format(n=summary['studies'])}` (seeds {summary['seed_start']}..) from `metrics.json`.", "",
        "**Validated on:** synthetic calcium-scoring CTs from `heldout_phantoms.py`, written separately from "
        "`radpath/synth/cardiac_ct.py` and never used to set a threshold; the same engineers wrote the rules "
        "and this generator, so it is a check of the rules against anatomy drawn from the literature, not an "
        "independent test. Seeds 71000-71039 were looked at while the rules were written (the contrast and "
        "metal rules changed after them, and the generator's left main, first drawn through the myocardium, "
        "was put in groove fat); seeds 72000-72059 were the first held-out run, and their two failures (costal "
        "cartilage and a rib beside the lung counted, because lung counted as fat) changed the epicardial rule "
        "to fat only, at 0.3. The figures below are from seeds never looked at before.", "",
        "**Not validated on:** any real patient CT (no public calcium-scoring CT with per-lesion truth could "
        "be used here). Until it is, a trust should run the pathway with review (`review.required: true` in "
        "its spec); the shipped spec does not yet force it (issue 14).", "",
        "| Measure | Held-out | Target |", "|---|---|---|",
        f"| CAC-DRS category agreement | {pct(summary['cac_drs_agreement'])} | >= 95 % |",
        f"| ... in studies with a distractor other than rib ends | {pct(summary['cac_drs_agreement_with_a_distractor'])} | |",
        f"| Calcium-free patients with such a distractor scored A0 | {pct(summary['calcium_free_with_a_distractor_scored_a0'])} | |",
        f"| Total within 10 % (within 5 below 50) | {pct(summary['score_within_tolerance'])} | >= 90 % |",
        f"| ... on the same images without noise (the rules' own error) | {pct(summary['score_within_tolerance_noise_free'])} | |",
        f"| Median relative error of the total (truth >= 50) | {summary['score_relative_error_median'] * 100:.1f} % | |",
        f"| Plaques with a score found | {pct(summary['plaques_found'])} | |",
        f"| Scans not at 120 kVp, no KVP, or with contrast: refused | {pct(summary['acquisition_refused_correctly'])} | 100 % |",
        f"| Scorable scans wrongly refused | {summary['wrongly_refused']} of {summary['expected_measurable']} | 0 |",
    ]
    for kind, block in summary["distractor_left_uncounted"].items():
        lines.append(f"| Distractor left uncounted: {kind} | {pct(block)} | >= 90 % |")
    lines += ["", f"The totals outside the tolerance are mostly image noise (12-24 HU) moving pixels at plaque "
              f"edges across 130 HU: on the same images without noise "
              f"{pct(summary['score_within_tolerance_noise_free'])} are within it. The Agatston definition has no "
              "remedy for noise (repeat scans differ for the same reason), so radpath does not smooth or re-threshold.",
              "", "Plaques found by vessel: " + ", ".join(
        f"{v} {pct(b)}" for v, b in summary["plaques_found_by_vessel"].items()) + ".",
        "Plaques lost to an exclusion rule: " + (", ".join(
            f"{k} {n}" for k, n in summary["plaques_excluded_as"].items()) or "none") + ".",
        f"Median time per study: {summary['seconds_per_study_median']} s.", "",
        f"**Targets met: {'yes' if summary['targets_met'] else 'no'}.**", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=60)
    parser.add_argument("--seed-start", type=int, default=HELDOUT_SEED_START)
    parser.add_argument("--out", type=Path, default=HERE / "metrics.json")
    args = parser.parse_args()
    rows = []
    for seed in range(args.seed_start, args.seed_start + args.studies):
        rows.append(evaluate_study(seed))
        r = rows[-1]
        print(seed, r["acquisition"], r["truth_total"], r.get("measured_total"), r.get("cac_drs"), r["truth_cac_drs"],
              [d["kind"] for d in r["distractors"] if d["counted"]],
              [p["excluded_as"] or "missed" for p in r["plaques"] if not p["found"] and p["truth"] > 0], flush=True)
    summary = summarise(rows)
    args.out.write_text(json.dumps({"summary": summary, "studies": rows}, indent=1) + "\n")
    (args.out.parent / "VALIDATION.md").write_text(render(summary))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
