"""Nodule growth between a chest CT and its prior: matching, volume-doubling time, BTS 2015 (pure).

Sources
- Volume-doubling time: VDT = Δt · ln 2 / ln(V2 / V1) (Schwartz 1961, as used by BTS 2015).
- BTS 2015: Callister MEJ, et al. Thorax 2015;70(Suppl 2):ii1-ii54, "Nodule growth" and
  Algorithms 1 and 2. Significant growth is a change in volume of 25 % or more (the
  repeatability limit of volumetry; also NELSON's threshold; cross-checked in Eur Radiol
  2022;32:1957, doi:10.1007/s00330-021-08302-0). Solid nodules (Algorithm 1): VDT ≤ 400 days
  is in the range of lung cancer → biopsy, resection or non-surgical treatment (PET-CT where
  the risk calls for it); VDT 400-600 days → biopsy or continued surveillance by patient
  preference; VDT > 600 days is in the range of benign nodules. Subsolid nodules (Algorithm
  2): growth → consider resection or biopsy.

What growth may do to the result: raise its category (never lower it). A nodule that shrank,
resolved, or is stable keeps the category its size gives; discharge after stability is the
radiologist's decision, not the AI's.

Alignment: the prior and current scans are aligned by translation, the shift of the lungs'
centroid between them (the patient lies differently each time). Rotation and breathing are
not modelled; a nodule is matched to the nearest prior nodule within `match_distance_mm` after
the shift.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pydantic import BaseModel, ConfigDict, Field

from pathways.findings import LungAssessment, Nodule, NoduleGrowth


class GrowthThresholds(BaseModel):
    """The growth rules' thresholds; defaults are BTS 2015's."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    significant_volume_change: float = Field(
        default=0.25, gt=0, description="BTS 2015 'Nodule growth': a volume change of >= 25 % is significant growth")
    vdt_cancer_range_days: float = Field(
        default=400, gt=0, description="BTS 2015 Algorithm 1: VDT <= 400 days -> biopsy, resection or non-surgical treatment")
    vdt_benign_range_days: float = Field(
        default=600, gt=0, description="BTS 2015 Algorithm 1: VDT 400-600 days -> biopsy or continued surveillance "
        "(patient preference); > 600 days: the range of benign nodules")
    match_distance_mm: float = Field(
        default=10.0, gt=0, description="radpath: a nodule matches the nearest prior one within this distance after "
        "aligning the lungs (not a guideline value)")


def volume_doubling_time_days(v1_mm3: float, v2_mm3: float, interval_days: float) -> float | None:
    """VDT = Δt · ln 2 / ln(V2 / V1); negative for a shrinking nodule; None when unchanged."""
    if v1_mm3 <= 0 or v2_mm3 <= 0 or interval_days <= 0:
        raise ValueError("volumes and the interval must be positive")
    if v2_mm3 == v1_mm3:
        return None
    return interval_days * math.log(2) / math.log(v2_mm3 / v1_mm3)


def match_nodules(prior: Sequence[Nodule], current: Sequence[Nodule], shift_xyz_mm: Sequence[float],
                  max_distance_mm: float) -> list[tuple[Nodule | None, Nodule | None]]:
    """(prior, current) pairs: closest pairs first (after moving prior nodules by the shift),
    then unmatched current nodules (new) and unmatched prior ones (resolved)."""
    moved = [tuple(c + d for c, d in zip(p.centre_xyz_mm, shift_xyz_mm)) for p in prior]
    candidates = sorted((math.dist(moved[i], c.centre_xyz_mm), i, j)
                        for i in range(len(prior)) for j, c in enumerate(current))
    used_prior, used_current, pairs = set(), set(), []
    for distance, i, j in candidates:
        if distance <= max_distance_mm and i not in used_prior and j not in used_current:
            used_prior.add(i)
            used_current.add(j)
            pairs.append((prior[i], current[j]))
    pairs += [(None, c) for j, c in enumerate(current) if j not in used_current]
    pairs += [(p, None) for i, p in enumerate(prior) if i not in used_prior]
    return pairs


def assess_growth(prior: Sequence[Nodule], current: Sequence[Nodule], interval_days: float,
                  shift_xyz_mm: Sequence[float], thresholds: GrowthThresholds = GrowthThresholds()) -> list[NoduleGrowth]:
    """Each nodule of either scan: growing, stable, shrinking (a significant change, with its
    VDT), new or resolved."""
    out = []
    for before, after in match_nodules(prior, current, shift_xyz_mm, thresholds.match_distance_mm):
        if before is None:
            out.append(NoduleGrowth(index=after.index, prior_index=None, status="new", volume_mm3=after.volume_mm3,
                                    long_axis_mm=after.long_axis_mm))
            continue
        if after is None:
            out.append(NoduleGrowth(index=None, prior_index=before.index, status="resolved",
                                    prior_volume_mm3=before.volume_mm3, prior_long_axis_mm=before.long_axis_mm))
            continue
        change = (after.volume_mm3 - before.volume_mm3) / before.volume_mm3
        significant = abs(change) >= thresholds.significant_volume_change
        status = ("growing" if change > 0 else "shrinking") if significant else "stable"
        vdt = volume_doubling_time_days(before.volume_mm3, after.volume_mm3, interval_days) if significant else None
        out.append(NoduleGrowth(index=after.index, prior_index=before.index, status=status,
                                prior_volume_mm3=before.volume_mm3, volume_mm3=after.volume_mm3,
                                prior_long_axis_mm=before.long_axis_mm, long_axis_mm=after.long_axis_mm,
                                volume_change=round(change, 4), vdt_days=round(vdt, 1) if vdt is not None else None))
    return out


def growth_action(growth: NoduleGrowth, nodule_type: str, thresholds: GrowthThresholds = GrowthThresholds()
                  ) -> tuple[str, bool] | None:
    """For a growing nodule: (BTS 2015 recommendation sentence, whether the growth is in the range
    of lung cancer, an urgent finding); None for any other status."""
    if growth.status != "growing":
        return None
    t = thresholds
    change = f"volume +{growth.volume_change:.0%}, VDT {growth.vdt_days:.0f} days"
    if nodule_type != "solid":
        return (f"subsolid nodule grew ({change}): consider resection or biopsy (BTS 2015 Algorithm 2)",
                growth.vdt_days <= t.vdt_cancer_range_days)
    if growth.vdt_days <= t.vdt_cancer_range_days:
        return (f"solid nodule grew ({change} <= {t.vdt_cancer_range_days:g}): biopsy, resection or non-surgical "
                "treatment, PET-CT where the risk calls for it (BTS 2015 Algorithm 1)", True)
    if growth.vdt_days <= t.vdt_benign_range_days:
        return (f"solid nodule grew ({change}, {t.vdt_cancer_range_days:g}-{t.vdt_benign_range_days:g}): biopsy or "
                "continued CT surveillance by patient preference (BTS 2015 Algorithm 1)", False)
    return (f"solid nodule grew ({change} > {t.vdt_benign_range_days:g}, the range of benign nodules): continue CT "
            "surveillance (BTS 2015 Algorithm 1)", False)


def compare_with_prior(current: LungAssessment, prior: LungAssessment, prior_study_key: str,
                       thresholds: GrowthThresholds = GrowthThresholds(), *, rank: dict[str, int],
                       prior_result_id: str | None = None, prior_tracking: Mapping[int, str] | None = None
                       ) -> LungAssessment:
    """The current assessment with its comparison: growth per nodule, and a category raised to at
    least clinical review (never lowered) for a growing nodule or a followed-up nodule no longer
    found, urgent where a VDT is in the range of lung cancer. `rank`: the categories' order (pathways.lung_cancer_ct). Unchanged
    where either scan lacks its date or lung centroid: no comparison is claimed.

    `prior_tracking`: the Tracking UID of each prior nodule (by its index); a matched nodule keeps
    its prior's, so the SRs of both studies name it with one UID."""
    if not (current.study_date and prior.study_date and current.lung_centroid_xyz_mm and prior.lung_centroid_xyz_mm):
        return current
    interval = (current.study_date - prior.study_date).days
    if interval <= 0:
        return current
    shift = tuple(c - p for c, p in zip(current.lung_centroid_xyz_mm, prior.lung_centroid_xyz_mm))
    growth = assess_growth([a.nodule for a in prior.nodules], [a.nodule for a in current.nodules], interval, shift,
                           thresholds)
    types = {a.nodule.index: a.nodule.nodule_type for a in current.nodules}
    sentences, reasons = [], []
    for g in growth:
        action = growth_action(g, types.get(g.index, "solid"), thresholds)
        if action:
            sentences.append(f"nodule {g.index}: {action[0]}")
            if action[1]:
                reasons.append(f"nodule {g.index}: grew {g.volume_change:+.0%} in {interval} days, VDT "
                               f"{g.vdt_days:.0f} days <= {thresholds.vdt_cancer_range_days:g} (BTS 2015: the range of lung cancer)")
    # A nodule under surveillance that the AI no longer finds may have resolved (BTS 2015:
    # discharge) or been missed: a radiologist confirms before surveillance ends (hazard H-30).
    prior_category = {a.nodule.index: a.bts_category for a in prior.nodules}
    for g in growth:
        if g.status == "resolved" and rank.get(prior_category.get(g.prior_index, ""), 0) >= rank["ct-12-months"]:
            sentences.append(f"prior nodule {g.prior_index} ({prior_category[g.prior_index]}) not found: resolved, or "
                             "missed by the AI; a radiologist confirms before surveillance ends")
    code = current.recommendation_code
    if sentences and rank[code] < rank["clinical-review"]:
        code = "clinical-review"
    summary = "; ".join(sentences) if sentences else (
        f"no nodule grew significantly (volume change < {thresholds.significant_volume_change:.0%})")
    carried = {g.index: prior_tracking[g.prior_index] for g in growth
               if g.index is not None and g.prior_index is not None and g.prior_index in (prior_tracking or {})}
    nodules = tuple(a.model_copy(update={"tracking_uid": carried[a.nodule.index]}) if a.nodule.index in carried else a
                    for a in current.nodules)
    return current.model_copy(update={
        "nodules": nodules, "prior_result_id": prior_result_id,
        "prior_study_key": prior_study_key, "interval_days": interval, "growth": tuple(growth),
        "recommendation_code": code,
        "recommendation": f"{current.recommendation} Compared with the prior CT {interval} days earlier: {summary}.",
        "urgent": current.urgent or bool(reasons), "urgent_reasons": current.urgent_reasons + tuple(reasons)})
