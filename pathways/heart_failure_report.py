"""Turn heart failure assessments (echo LV function, coronary calcium) into report content.

No patient identity or model provenance here: the SR/FHIR/HL7 builders take those from
`ResultContext`. Codes come from `pathways.codes`, each cited there.
"""

from __future__ import annotations

from pathways import codes
from pathways.coronary_candidates import EXCLUSION_WORDS
from pathways.heart_failure import CalciumAssessment, CalciumLesion, EchoAssessment
from pathways.lung_cancer_report import DISCLAIMER
from pathways.report import Finding, Measurement, ReportContent

ECHO_PATHWAY = "heart_failure_echo"
CALCIUM_PATHWAY = "heart_failure_cardiac_ct"

_EF_DISPLAYS = {
    "reduced": "ESC 2021: LVEF reduced (<= 40%)",
    "mildly-reduced": "ESC 2021: LVEF mildly reduced (41-49%)",
    "preserved": "ESC 2021: LVEF preserved (>= 50%)",
}
_METHOD_CODES = {"method-of-discs": codes.METHOD_OF_DISKS_SINGLE_PLANE, "area-length": codes.AREA_LENGTH_SINGLE_PLANE}
_METHOD_WORDS = {"method-of-discs": "single-plane method of discs", "area-length": "single-plane area-length"}


def _echo_sentence(a: EchoAssessment) -> str:
    if not a.measurable:
        return f"Left ventricle: not measurable ({a.reason})."
    return (
        f"Left ventricle (apical four-chamber, {_METHOD_WORDS[a.method]}): EDV {a.edv_ml:.0f} ml (frame {a.ed_frame + 1}), "
        f"ESV {a.esv_ml:.0f} ml (frame {a.es_frame + 1}), LVEF {a.ef_percent:.0f}%."
    )


def echo_report_content(a: EchoAssessment) -> ReportContent:
    """One LV finding (EF, EDV, ESV, long axis) and the ESC 2021 EF category as the conclusion."""
    findings: tuple[Finding, ...] = ()
    conclusion_codes = ()
    if a.measurable:
        method = _METHOD_CODES[a.method]
        measurements = (
            Measurement(concept=codes.LV_EJECTION_FRACTION, value=round(a.ef_percent, 1), unit=codes.PERCENT, method=method),
            Measurement(concept=codes.LV_END_DIASTOLIC_VOLUME, value=a.edv_ml, unit=codes.ML, method=method),
            Measurement(concept=codes.LV_END_SYSTOLIC_VOLUME, value=a.esv_ml, unit=codes.ML, method=method),
            Measurement(concept=codes.LV_DIASTOLIC_MAJOR_AXIS, value=round(a.long_axis_ed_cm, 1), unit=codes.CM),
        )
        findings = (
            Finding(key="left-ventricle", label="Left ventricle", finding_type=codes.LEFT_VENTRICLE, site=codes.HEART,
                    measurements=measurements, summary=_echo_sentence(a)),
        )
        conclusion_codes = (codes.heart_failure_category_code("esc2021-lvef", a.ef_category, _EF_DISPLAYS[a.ef_category]),)
    lines = ["ECHOCARDIOGRAM - LEFT VENTRICULAR SYSTOLIC FUNCTION (AI)", "", "FINDINGS:", _echo_sentence(a), "",
             "CONCLUSION:", a.recommendation, "",
             "Methods: LV volumes per Lang et al., J Am Soc Echocardiogr 2015;28:1-39; "
             f"EF categories per {a.guideline}.", "", DISCLAIMER]
    return ReportContent(
        pathway=ECHO_PATHWAY, report_code=codes.ECHO_REPORT, title="Echo: LV ejection fraction (AI)",
        conclusion=a.recommendation, conclusion_codes=conclusion_codes, findings=findings, urgent=False,
        text="\n".join(lines),
    )


def _score(value: float) -> Measurement:
    return Measurement(concept=codes.CORONARY_CALCIUM_SCORE, value=round(value, 1), unit=codes.NO_UNITS,
                       method=codes.AGATSTON_METHOD)


def _lesion_finding(lesion: CalciumLesion) -> Finding:
    where = f" ({lesion.vessel})" if lesion.vessel else ""
    return Finding(
        key=f"calcification-{lesion.index}", label=f"Calcification {lesion.index}{where}",
        finding_type=codes.VASCULAR_CALCIFICATION,
        site=codes.CORONARY_VESSELS.get(lesion.vessel or "", codes.CORONARY_ARTERY),
        measurements=(_score(lesion.agatston),), segment_number=lesion.index, centre_xyz_mm=lesion.centre_xyz_mm,
        summary=f"Calcification {lesion.index}{where}: Agatston {lesion.agatston:.1f}, peak {lesion.peak_hu:.0f} HU, "
        f"{len(lesion.slices)} slice(s).",
    )


def _not_scored(a: CalciumAssessment) -> list[str]:
    """The objects >= 130 HU inside the chest that were not scored, for the reader to check: calcium
    of a valve, annulus or myocardium (reportable in its own right, SCCT 2017) and metal."""
    shown = [e for e in a.excluded if e.reason in ("not-epicardial", "metal")]
    if not shown:
        return []
    parts = [f"{EXCLUSION_WORDS[e.reason]} at ({e.centre_xyz_mm[0]:.0f}, {e.centre_xyz_mm[1]:.0f}, "
             f"{e.centre_xyz_mm[2]:.0f}) mm, peak {e.peak_hu:.0f} HU" for e in shown[:10]]
    more = f"; and {len(shown) - 10} more" if len(shown) > 10 else ""
    return ["Not scored as coronary calcium: " + "; ".join(parts) + more + "."]


def calcium_report_content(a: CalciumAssessment) -> ReportContent:
    """Total (and per-vessel, where labelled) Agatston score, one finding per lesion (SEG segments)."""
    findings = [Finding(key="calcium-total", label="Coronary calcium (total)", finding_type=codes.VASCULAR_CALCIFICATION,
                        site=codes.CORONARY_ARTERY, measurements=(_score(a.agatston_total),),
                        summary=f"Total Agatston score {a.agatston_total:.1f} ({a.cac_drs}).")]
    for vessel, score in a.agatston_by_vessel.items():
        findings.append(Finding(key=f"calcium-{vessel}", label=f"Coronary calcium {vessel}",
                                finding_type=codes.VASCULAR_CALCIFICATION, site=codes.CORONARY_VESSELS[vessel],
                                measurements=(_score(score),), summary=f"{vessel}: Agatston {score:.1f}."))
    findings += [_lesion_finding(lesion) for lesion in a.lesions]
    display = f"CAC-DRS {a.cac_drs}" + (f"/N{a.n_vessels}" if a.n_vessels else "")
    per_vessel = (
        "Per vessel: " + ", ".join(f"{v} {s:.1f}" for v, s in a.agatston_by_vessel.items()) + "."
        if a.vessels_labelled else "Per-vessel scores need coronary territory labels, which this study lacks."
    )
    increment = "" if a.standard_increment else (
        f" Non-standard slice increment {a.slice_increment_mm:g} mm: score scaled by {a.increment_factor:g} "
        "to the 3 mm Agatston reference."
    )
    lines = ["CT CORONARY CALCIUM SCORE (AI)", "", "FINDINGS:",
             f"Total Agatston score {a.agatston_total:.1f} in {len(a.lesions)} calcified lesion(s).{increment}",
             per_vessel, *[f.summary for f in findings if f.segment_number], *_not_scored(a), "", "CONCLUSION:",
             a.recommendation, "",
             f"Methods: Agatston et al., J Am Coll Cardiol 1990;15:827-32; {a.guideline}.", "", DISCLAIMER]
    return ReportContent(
        pathway=CALCIUM_PATHWAY, report_code=codes.CT_REPORT, title="CT calcium score: Agatston (AI)",
        conclusion=a.recommendation,
        conclusion_codes=(codes.heart_failure_category_code("cacdrs", a.cac_drs, display),),
        findings=tuple(findings), urgent=False, text="\n".join(lines),
    )
