"""Turn a dementia brain MRI assessment into report content: codes, measurements and words.

Findings: intracranial volume, whole brain (volume, parenchymal fraction, hippocampal
asymmetry; neither has a segment) and one per hippocampus (volume, percentile, z-score; SEG segment 1 =
left, 2 = right, matching the label mask of `integrations.inference.brain_volumetry`).
"""

from __future__ import annotations

from pathways import codes
from pathways.dementia_mri import DementiaAssessment, HippocampusAssessment
from pathways.lung_cancer_report import DISCLAIMER
from pathways.report import Finding, Measurement, Qualitative, ReportContent

PATHWAY = "dementia_mri"
SEGMENT_NUMBERS = {"left": 1, "right": 2}  # label values in the SEG label mask

_CATEGORY_DISPLAYS = {
    "no-atrophy": "Hippocampal volumes within normal range for age",
    "hippocampal-atrophy": "Hippocampal atrophy (volume below normal range for age)",
    "norms-not-applicable": "Hippocampal volumes measured; norms not applicable",
}


def _percentile_words(h: HippocampusAssessment) -> str:
    return "percentile not applicable" if h.percentile is None else f"{h.percentile:.1f}th percentile for age"


def _hippocampus_finding(h: HippocampusAssessment) -> Finding:
    measurements = [Measurement(concept=codes.VOLUME, value=round(h.volume_ml, 3), unit=codes.CM3,
                                method=codes.SUM_OF_SEGMENTED_VOXELS)]
    if h.percentile is not None and h.z_score is not None:
        measurements += [
            Measurement(concept=codes.PERCENTILE_RANKING, value=round(h.percentile, 1), unit=codes.PERCENT),
            Measurement(concept=codes.Z_SCORE_OF_MEASUREMENT, value=round(h.z_score, 2), unit=codes.NO_UNITS),
        ]
    side = h.side.capitalize()
    return Finding(
        key=f"hippocampus-{h.side}",
        label=f"{side} hippocampus",
        finding_type=codes.HIPPOCAMPUS,
        site=codes.HIPPOCAMPUS,
        measurements=tuple(measurements),
        qualitative=(Qualitative(concept=codes.LATERALITY, value=codes.LEFT if h.side == "left" else codes.RIGHT),),
        segment_number=SEGMENT_NUMBERS[h.side],
        summary=f"{side} hippocampus {h.volume_ml:.2f} cm3 ({_percentile_words(h)})"
                + ("; below the normal range." if h.atrophy else "."),
    )


def _intracranial_finding(a: DementiaAssessment) -> Finding:
    return Finding(
        key="intracranial",
        label="Intracranial volume",
        finding_type=codes.INTRACRANIAL_STRUCTURE,
        measurements=(Measurement(concept=codes.VOLUME, value=round(a.volumes.intracranial_ml, 1), unit=codes.CM3,
                                  method=codes.SUM_OF_SEGMENTED_VOXELS),),
        summary=f"Intracranial volume {a.volumes.intracranial_ml:.0f} cm3.",
    )


def _brain_finding(a: DementiaAssessment) -> Finding:
    return Finding(
        key="brain",
        label="Whole brain",
        finding_type=codes.BRAIN,
        measurements=(
            Measurement(concept=codes.VOLUME, value=round(a.volumes.brain_ml, 1), unit=codes.CM3,
                        method=codes.SUM_OF_SEGMENTED_VOXELS),
            Measurement(concept=codes.BRAIN_PARENCHYMAL_FRACTION, value=round(a.brain_parenchymal_fraction * 100, 1),
                        unit=codes.PERCENT),
            Measurement(concept=codes.HIPPOCAMPAL_ASYMMETRY_INDEX, value=round(a.asymmetry_percent, 1),
                        unit=codes.PERCENT),
        ),
        summary=_brain_sentence(a),
    )


def _brain_sentence(a: DementiaAssessment) -> str:
    v = a.volumes
    return (f"Whole-brain volume {v.brain_ml:.0f} cm3, hippocampi included"
            f" (brain parenchymal fraction {a.brain_parenchymal_fraction:.1%}); hippocampal asymmetry index"
            f" {a.asymmetry_percent:.1f}%{' (asymmetric, ' + a.smaller_side + ' smaller)' if a.asymmetric else ''}.")


def dementia_report_content(assessment: DementiaAssessment) -> ReportContent:
    """Report content for one brain MRI: brain + two hippocampus findings, percentile conclusion."""
    findings = (_intracranial_finding(assessment), _brain_finding(assessment), *(_hippocampus_finding(h) for h in assessment.hippocampi))
    code = assessment.recommendation_code
    return ReportContent(
        pathway=PATHWAY,
        report_code=codes.MRI_REPORT,
        title="MRI brain: hippocampal and brain volumetry (AI)",
        conclusion=assessment.recommendation,
        conclusion_codes=(codes.dementia_category_code(code, _CATEGORY_DISPLAYS[code]),),
        findings=findings,
        urgent=assessment.urgent,
        text=_narrative(assessment, findings),
    )


def _narrative(a: DementiaAssessment, findings) -> str:  # noqa: ANN001
    lines = ["MRI BRAIN - VOLUMETRY (AI)", "", "FINDINGS:", *(f.summary for f in findings), "",
             "CONCLUSION:", a.recommendation, "",
             f"Method: {a.guideline}.", "", DISCLAIMER]
    return "\n".join(lines)
