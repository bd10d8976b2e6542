"""Turn a lung nodule assessment into report content: codes, measurements and words.

No patient identity and no model provenance here: the SR/FHIR/HL7 builders take those
from `ResultContext`.
"""

from __future__ import annotations

from pathways import codes
from pathways.findings import LungAssessment, NoduleAssessment, NoduleGrowth
from pathways.lung_cancer_ct import NO_NODULE_DETECTED
from pathways.report import Code, Finding, Measurement, Qualitative, ReportContent

PATHWAY = "lung_cancer_ct"

_LOBE_WORDS = {
    "RUL": "right upper lobe",
    "RML": "right middle lobe",
    "RLL": "right lower lobe",
    "LUL": "left upper lobe",
    "LLL": "left lower lobe",
}

# Short, stable displays for the BTS 2015 category codes of pathways.lung_cancer_ct
_CATEGORY_DISPLAYS = {
    "no-follow-up": "BTS 2015: no nodule follow-up",
    "ct-12-months": "BTS 2015: CT surveillance at 12 months",
    "ct-3-months": "BTS 2015: CT surveillance at 3 months",
    "clinical-review": "BTS 2015: clinical review",
    "pet-ct": "BTS 2015: PET-CT and risk assessment",
    "mass": "Mass: suspected lung cancer referral (NICE NG12)",
}

DISCLAIMER = (
    "This report was produced automatically by an AI reference model running in radpath. "
    "It is not a medical device and has not been reviewed by a radiologist; it must not be "
    "used for clinical decisions without review by a qualified clinician."
)


def _percent(probability: float) -> str:
    return f"{probability * 100:.1f}%"


def nodule_key(index: int) -> str:
    """The finding key of nodule `index` (its SEG segment's tracking id)."""
    return f"nodule-{index}"


def _nodule_finding(item: NoduleAssessment) -> Finding:
    n = item.nodule
    measurements = [
        Measurement(concept=codes.LONG_AXIS, value=round(n.long_axis_mm, 1), unit=codes.MM),
        Measurement(concept=codes.SHORT_AXIS, value=round(n.short_axis_mm, 1), unit=codes.MM),
        Measurement(
            concept=codes.VOLUME,
            value=round(n.volume_mm3, 1),
            unit=codes.MM3,
            method=codes.SUM_OF_SEGMENTED_VOXELS,
        ),
    ]
    if item.brock_probability is not None:
        measurements.append(
            Measurement(
                concept=codes.PROBABILITY_OF_CANCER,
                value=round(item.brock_probability * 100, 1),
                unit=codes.PERCENT,
                method=codes.BROCK_MODEL,
            )
        )
    qualitative = (
        Qualitative(concept=codes.ATTENUATION_CHARACTERISTIC, value=codes.NODULE_TYPES[n.nodule_type]),
        Qualitative(concept=codes.SPICULATED, value=codes.YES if n.spiculated else codes.NO),
    )
    return Finding(
        key=nodule_key(n.index),
        label=f"Nodule {n.index}",
        finding_type=codes.NODULE,
        site=codes.LOBES[n.lobe],
        measurements=tuple(measurements),
        qualitative=qualitative,
        segment_number=n.index,
        summary=_nodule_sentence(item),
        centre_xyz_mm=n.centre_xyz_mm,
        tracking_uid=item.tracking_uid,
    )


def _nodule_sentence(item: NoduleAssessment) -> str:
    n = item.nodule
    margin = "spiculated" if n.spiculated else "non-spiculated"
    text = (
        f"Nodule {n.index}: {n.nodule_type} {margin} nodule in the {_LOBE_WORDS[n.lobe]}, "
        f"{n.long_axis_mm:.1f} x {n.short_axis_mm:.1f} mm (long x short axis, mean "
        f"{n.mean_diameter_mm:.1f} mm), volume {n.volume_mm3:.0f} mm3."
    )
    if item.brock_probability is not None:
        text += f" Brock malignancy probability {_percent(item.brock_probability)}."
    return text + f" {item.recommendation}"


def _growth_sentence(g: NoduleGrowth) -> str:
    if g.status == "new":
        return f"Nodule {g.index}: new since the prior CT ({g.volume_mm3:.0f} mm3)."
    if g.status == "resolved":
        return f"Prior nodule {g.prior_index}: not seen on this CT (resolved, or missed by the AI)."
    change = f"{g.prior_volume_mm3:.0f} -> {g.volume_mm3:.0f} mm3 ({g.volume_change:+.0%})"
    if g.status == "stable":
        return f"Nodule {g.index} (prior nodule {g.prior_index}): {change}, no significant change in volume."
    return f"Nodule {g.index} (prior nodule {g.prior_index}): {change}, {g.status}; volume-doubling time {g.vdt_days:.0f} days."


def lung_report_content(assessment: LungAssessment) -> ReportContent:
    """Report content for one chest CT: one finding per nodule, BTS 2015 conclusion."""
    findings = tuple(_nodule_finding(item) for item in assessment.nodules)
    conclusion = assessment.recommendation
    conclusion_codes: tuple[Code, ...] = (_conclusion_code(assessment.recommendation_code),)
    return ReportContent(
        pathway=PATHWAY,
        report_code=codes.CT_CHEST_REPORT,
        title="CT chest: pulmonary nodule assessment (AI)",
        conclusion=conclusion,
        conclusion_codes=conclusion_codes,
        findings=findings,
        urgent=assessment.urgent,
        text=_narrative(assessment),
    )


def _conclusion_code(category: str) -> Code:
    """The coded conclusion: a BTS 2015 category, or "no nodule detected by the AI" (never a
    BTS category: with no detection the AI recommends nothing, hazard H-11)."""
    if category == NO_NODULE_DETECTED:
        return codes.NO_NODULE_DETECTED_BY_AI
    return codes.bts_category_code(category, _CATEGORY_DISPLAYS.get(category, f"BTS 2015: {category}"))


def _narrative(assessment: LungAssessment) -> str:
    lines = ["CT CHEST - PULMONARY NODULE ASSESSMENT (AI)", "", "FINDINGS:"]
    if not assessment.nodules:
        lines.append("No pulmonary nodule was detected by the AI. The AI can miss nodules: this is not an all-clear.")
    for item in assessment.nodules:
        lines.append(_nodule_sentence(item))
    if assessment.prior_study_key:
        lines += ["", f"COMPARISON: prior chest CT {assessment.prior_study_key}, {assessment.interval_days} days earlier"
                      " (aligned on the lungs; volumes by the same AI)."]
        lines += [_growth_sentence(g) for g in assessment.growth] or ["No nodule on either scan."]
    lines += ["", "CONCLUSION:"]
    if assessment.urgent:
        reasons = "; ".join(assessment.urgent_reasons) or "see findings"
        lines.append(f"URGENT: clinical review recommended ({reasons}).")
    if assessment.recommendation_code == NO_NODULE_DETECTED:
        lines.append(f"AI result: {assessment.recommendation}")
    else:
        lines.append(f"Recommendation: {assessment.recommendation}")
    lines += [
        "",
        f"Guideline: {assessment.guideline}. Malignancy probability: Brock model "
        "(McWilliams et al., N Engl J Med 2013;369:910-9).",
        "",
        DISCLAIMER,
    ]
    return "\n".join(lines)
