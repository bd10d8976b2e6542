"""DICOM Comprehensive 3D SR: a TID 1500 Measurement Report of any `ReportContent`.

Each finding becomes a TID 1411 volumetric measurement group, located by its SEG segment
when a SEG is given, else by a 3D point at its centre, else (no location known) a TID 1501
group. The report-level conclusion and urgent flag form one more TID 1501 group. The
observer is the AI model (a device). Patient and study attributes are copied by highdicom
from the source images; UIDs and dates come from the result, so a rebuild is identical.
An SR that supersedes an earlier one names it in the Predecessor Documents Sequence; one
compared with the patient's earlier result names that result's SR in the Pertinent Other
Evidence Sequence, and a finding matched to an earlier one keeps its Tracking UID.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.uid import Comprehensive3DSRStorage
from pydicom.sr.codedict import codes as dicom_codes

from integrations.dicom.coding import (
    algorithm_equipment,
    coded_concept,
    coding_scheme_items,
    is_local,
    dicom_date_time,
    pin_timestamps,
)
from integrations.dicom.seg import MANUFACTURER, tracking_uid
from integrations.uids import result_uid, uid_from_name
from pathways import codes
from pathways.report import Code, Finding, PriorReport, ReportContent, ResultContext

SR_SERIES_NUMBER = 9901


def _device_observer(ctx: ResultContext) -> hd.sr.ObservationContext:
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=uid_from_name(f"device/{ctx.model_name}/{ctx.model_version}"),
        name=ctx.model_name[:64],
        manufacturer_name=MANUFACTURER,
        model_name=f"{ctx.model_name} {ctx.model_version}"[:64],
    )
    return hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=dicom_codes.cid270.Device,
            observer_identifying_attributes=device,
        )
    )


def _measurements(finding: Finding) -> list[hd.sr.Measurement]:
    """TID 300 measurements of the finding's standard-coded concepts.

    A method with no standard code (the Brock model) is named by TID 4019 Algorithm
    Identification, the row TID 300 has for "which algorithm computed this value".
    """
    return [
        hd.sr.Measurement(
            name=coded_concept(m.concept),
            value=m.value,
            unit=coded_concept(m.unit),
            method=coded_concept(m.method) if m.method and not is_local(m.method) else None,
            algorithm_id=_method_algorithm(m.method) if m.method and is_local(m.method) else None,
        )
        for m in finding.measurements
        if not is_local(m.concept)
    ]


def _method_algorithm(method: Code) -> hd.sr.AlgorithmIdentification:
    return hd.sr.AlgorithmIdentification(name=method.display[:64], version=codes.LOCAL_METHOD_VERSIONS[method.code])


def _qualitative(finding: Finding) -> list[hd.sr.QualitativeEvaluation]:
    return [
        hd.sr.QualitativeEvaluation(name=coded_concept(q.concept), value=coded_concept(q.value))
        for q in finding.qualitative
        if not (is_local(q.concept) or is_local(q.value))
    ]


def _number(value: float) -> str:
    return f"{value:.4g}"


def _texts(name: Code, statements: Sequence[str]) -> list[hd.sr.TextContentItem]:
    """TEXT qualitative evaluations (TID 1501 allows TEXT beside CODE) for concepts that have
    no standard code: the words a reader sees, with no private coding scheme in the SR."""
    return [
        hd.sr.TextContentItem(
            name=coded_concept(name), value=text[:1024], relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
        )
        for text in statements
    ]


def _local_statements(finding: Finding) -> list[str]:
    """The finding's measurements and evaluations that carry a radpath local code, as text."""
    said = [
        f"{m.concept.display}: {_number(m.value)}" + ("" if m.unit == codes.NO_UNITS else f" {m.unit.code}")
        for m in finding.measurements
        if is_local(m.concept)
    ]
    return said + [
        f"{q.concept.display}: {q.value.display}"
        for q in finding.qualitative
        if is_local(q.concept) or is_local(q.value)
    ]


def _with_texts(group, texts: list[hd.sr.TextContentItem]):  # noqa: ANN001, ANN202
    """Add TEXT items to a TID 1501/1411 group's container (highdicom takes CODE ones only)."""
    group[0].ContentSequence.extend(texts)
    return group


def _referenced_segment(seg: pydicom.Dataset, segment_number: int) -> hd.sr.ReferencedSegment:
    """Reference one segment of the SEG by its number (TID 1411 "Referenced Segment").

    Built directly rather than with highdicom's `ReferencedSegment.from_segmentation`, which
    fails on a single-segment SEG (its segment identification sits in the shared functional
    groups) and adds ReferencedFrameNumber, which dciodvfy rejects beside
    ReferencedSegmentNumber.
    """
    return hd.sr.ReferencedSegment(
        sop_class_uid=seg.SOPClassUID,
        sop_instance_uid=seg.SOPInstanceUID,
        segment_number=segment_number,
        source_series=hd.sr.SourceSeriesForSegmentation(seg.ReferencedSeriesSequence[0].SeriesInstanceUID),
    )


def _finding_group(
    finding: Finding,
    ctx: ResultContext,
    algorithm: hd.sr.AlgorithmIdentification,
    seg: pydicom.Dataset | None,
    frame_of_reference_uid: str,
):
    common = dict(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=tracking_uid(ctx.result_id, finding.key, finding.tracking_uid), identifier=finding.label
        ),
        finding_type=coded_concept(finding.finding_type),
        algorithm_id=algorithm,
        finding_sites=[hd.sr.FindingSite(coded_concept(finding.site))] if finding.site else None,
        measurements=_measurements(finding) or None,
        qualitative_evaluations=_qualitative(finding) or None,
    )
    texts = _texts(codes.FINDING, _local_statements(finding))
    if seg is not None and finding.segment_number is not None:
        group = hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            referenced_segment=_referenced_segment(seg, finding.segment_number),
            **common,
        )
        return _with_texts(group, texts)
    if finding.centre_xyz_mm is not None:
        surface = hd.sr.VolumeSurface(
            graphic_type=hd.sr.GraphicTypeValues3D.POINT,
            graphic_data=np.array([finding.centre_xyz_mm], dtype=float),
            frame_of_reference_uid=frame_of_reference_uid,
            source_series=hd.sr.SourceSeriesForSegmentation(ctx.source_series_uid),
        )
        group = hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            referenced_volume_surface=surface, **common
        )
        return _with_texts(group, texts)
    return _with_texts(hd.sr.MeasurementsAndQualitativeEvaluations(**common), texts)


def _conclusion_group(content: ReportContent, ctx: ResultContext, algorithm):
    """The report's recommendations and its urgent flag (TID 1501).

    Standard-coded recommendations are CODE items; radpath's local categories (BTS, ESC,
    CAC-DRS, dementia) and the urgent flag are TEXT Recommendation items with their words.
    """
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=tracking_uid(ctx.result_id, "conclusion"), identifier="Conclusion"
        ),
        algorithm_id=algorithm,
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(name=coded_concept(codes.RECOMMENDATION), value=coded_concept(c))
            for c in content.conclusion_codes
            if not is_local(c)
        ] or None,
    )
    urgent = f"{codes.URGENT_REVIEW.display}: {(codes.YES if content.urgent else codes.NO).display}"
    local = [c.display for c in content.conclusion_codes if is_local(c)]
    return _with_texts(group, _texts(codes.RECOMMENDATION, [*local, urgent]))


def _codes_used(content: ReportContent) -> list[Code]:
    used = list(content.conclusion_codes)
    for f in content.findings:
        used += [f.finding_type, *([f.site] if f.site else [])]
        used += [c for m in f.measurements for c in (m.concept, m.unit, m.method) if c]
        used += [c for q in f.qualitative for c in (q.concept, q.value)]
    return [c for c in used if not is_local(c)]


def _procedure(content: ReportContent, ctx: ResultContext) -> Code:
    """The ordered procedure where its code system has a DICOM designator, else the standard
    concept the trust's code map gives it, else the report code."""
    if ctx.standard_procedure is not None:
        return ctx.standard_procedure
    if codes.is_dicom_codable(ctx.procedure.system):
        return ctx.procedure.model_copy(update={"system": codes.as_fhir_system(ctx.procedure.system)})
    return content.report_code


def predecessor_srs(path: Path) -> list[pydicom.Dataset]:
    """The earlier SR at `path` as a one-item list for `predecessors`, or [] if there is none.

    An earlier result that went to no SR destination left no SR file: the new SR then simply
    has no Predecessor Documents Sequence (there is no earlier SR for a PACS to replace).
    """
    if not path.is_file():
        return []
    return [pydicom.dcmread(path, stop_before_pixels=True)]


def sr_uids(result_id: str, *, verified: bool) -> tuple[str, str]:
    """The Series and SOP Instance UIDs of a result's SR, preliminary or verified."""
    return result_uid(result_id, "sr-series"), result_uid(result_id, "sr-instance/verified" if verified else "sr-instance")


def _prior_sr(prior: PriorReport) -> pydicom.Dataset:
    """The identity of the earlier result's SR, as evidence (Hierarchical SOP Instance Reference)."""
    ref = pydicom.Dataset()
    ref.StudyInstanceUID = prior.study_uid
    ref.SeriesInstanceUID, ref.SOPInstanceUID = sr_uids(prior.result_id, verified=prior.verified)
    ref.SOPClassUID = Comprehensive3DSRStorage
    return ref


def build_measurement_report_sr(
    content: ReportContent,
    ctx: ResultContext,
    source_datasets: Sequence[pydicom.Dataset],
    seg: pydicom.Dataset | None = None,
    predecessors: Sequence[pydicom.Dataset] = (),
    *,
    verifier: str | None = None,
    verified_at: dt.datetime | None = None,
) -> pydicom.Dataset:
    """A Comprehensive 3D SR (TID 1500) of `content`, referencing the source series and SEG.

    Unreviewed (`verifier` None): Preliminary Flag PRELIMINARY, Verification Flag UNVERIFIED.
    Accepted by a named reviewer: a new SR instance (its own SOP Instance UID, derived from the
    result and "verified"), FINAL and VERIFIED, with the Verifying Observer Sequence (name,
    organization = the sending facility, Verification DateTime = the review time); the caller
    passes the preliminary SR as its predecessor (PS3.3 C.17.2, SR Document General Module).

    `source_datasets` may be headers only (read with `stop_before_pixels=True`).
    `predecessors`: the earlier SR(s) this one supersedes; they go into the Predecessor
    Documents Sequence (0040,A360), DICOM PS3.3 Table C.17-2 (SR Document General Module):
    "SR SOP Instances ... whose content has been wholly or partially included in this document
    with or without modification", as Hierarchical SOP Instance References (study, series,
    SOP class and instance UIDs). This SR keeps its own UIDs, derived from its result id.
    """
    if not source_datasets:
        raise ValueError("an SR needs the source images it reports on")
    algorithm = hd.sr.AlgorithmIdentification(name=ctx.model_name[:64], version=ctx.model_version[:64])
    # US cines have no Frame of Reference; only 3D point locations (CT/MR findings) need one
    frame_of_reference_uid = source_datasets[0].get("FrameOfReferenceUID")
    groups = [_finding_group(f, ctx, algorithm, seg, frame_of_reference_uid) for f in content.findings]
    groups.append(_conclusion_group(content, ctx, algorithm))
    report = hd.sr.MeasurementReport(
        observation_context=_device_observer(ctx),
        procedure_reported=coded_concept(_procedure(content, ctx)),
        imaging_measurements=groups,
        title=coded_concept(codes.IMAGING_MEASUREMENT_REPORT),
    )
    evidence = list(source_datasets) + ([seg] if seg is not None else [])
    if ctx.prior_report is not None:  # another study: highdicom lists it as Pertinent Other Evidence
        evidence.append(_prior_sr(ctx.prior_report))
    when_date, when_time = dicom_date_time(ctx.observed_at)
    series_uid, instance_uid = sr_uids(ctx.result_id, verified=verifier is not None)
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=report,
        series_instance_uid=series_uid,
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=instance_uid,
        instance_number=2 if verifier else 1,
        manufacturer=MANUFACTURER,
        # PS3.3 Table C.17-2: Completion Flag COMPLETE; Preliminary Flag PRELIMINARY and
        # Verification Flag UNVERIFIED until a named reviewer accepts (pathways.result_status),
        # for first and superseding SRs alike: supersession is carried by the Predecessor
        # Documents Sequence alone.
        is_complete=True,
        is_final=verifier is not None,
        is_verified=verifier is not None,
        verifying_observer_name=_person_name(verifier) if verifier else None,
        verifying_organization=(ctx.sending_facility or "radpath")[:64] if verifier else None,
        series_description=f"AI measurements: {content.title}"[:64],
        content_date=when_date,
        content_time=when_time,
        series_date=when_date,
        series_time=when_time,
        coding_schemes=coding_scheme_items([*_codes_used(content), _procedure(content, ctx)]),
        previous_versions=list(predecessors) or None,
        contributing_equipment=[algorithm_equipment(ctx)],  # IHE AIR: the algorithm, named
    )
    if verifier:
        (observer,) = sr.VerifyingObserverSequence
        observer.VerificationDateTime = (verified_at or ctx.observed_at).astimezone(dt.timezone.utc).strftime("%Y%m%d%H%M%S")
    return pin_timestamps(sr, ctx.observed_at)


def _person_name(name: str) -> str:
    """A reviewer's name as typed, as DICOM PN: the whole name in the family-name component
    (radpath does not guess which word is the family name)."""
    return name.replace("^", " ").replace("\\", " ").strip()[:60] + "^"
