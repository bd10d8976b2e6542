"""Record a pathway result: build every output once, then commit result + outbox together."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict

from integrations.db import ledger, ops
from integrations.dicom.seg import build_segmentation
from integrations.dicom.sr import build_measurement_report_sr, predecessor_srs
from integrations.durable import write_durably
from integrations.dicom.volume import source_datasets
from integrations.fhir.report import build_report_bundle
from integrations.hl7.oru import build_oru_r01, default_control_id
from integrations.dicom.summary import build_key_object_selection, build_summary_capture, key_images
from integrations.hl7.priority import build_priority_update, priority_control_id
from integrations.settings import get_settings
from pathways.findings import SeriesRef
from pathways.registry import default_registry
from pathways.routing import route
from pathways.report import ReportContent
from pathways.result_status import ResultStatus, issued_status

OUTPUT_FILES = {
    "dicom-seg": "seg.dcm",
    "dicom-sr": "sr.dcm",
    "dicom-kos": "kos.dcm",
    "dicom-sc": "sc.dcm",
    "fhir-bundle": "report-bundle.json",
    "hl7-oru": "oru-r01.hl7",
}


PRIORITY_UPDATE_FILE = "orm-o01-priority.hl7"  # not a spec format: the RIS destination's `priority_update`
REPORT_MESSAGES = {"fhir-bundle", "hl7-oru"}  # rendered per destination; SR and SEG are shared


class RecordedResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    result_id: str
    delivery_ids: tuple[str, ...]
    created: bool  # False: this study already had a result for this model version


def _dicom_bytes(ds) -> bytes:  # noqa: ANN001
    from io import BytesIO

    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _render_dicom(content, ctx, series, mask_path, out_dir, formats, previous=None) -> dict[str, Path]:  # noqa: ANN001
    """SEG (when there are segments) and SR, shared by every destination that takes them.

    `previous`: the id of the result this one supersedes; its SR (if it made one) becomes the
    new SR's predecessor. SEG has no predecessor attribute: a new SEG simply replaces it.
    """
    files: dict[str, Path] = {}
    if not formats & {"dicom-sr", "dicom-seg", "dicom-kos", "dicom-sc"}:
        return files
    sources = source_datasets(series.series_uid)
    mask = np.load(mask_path) if mask_path else None
    if formats & {"dicom-kos", "dicom-sc"}:
        files |= _render_summary(content, ctx, sources, mask, out_dir, formats)
    seg = None
    if mask is not None and any(f.segment_number for f in content.findings):
        seg = build_segmentation(mask, content, ctx, sources)
        files["dicom-seg"] = out_dir / OUTPUT_FILES["dicom-seg"]
        write_durably(files["dicom-seg"], _dicom_bytes(seg))
    if "dicom-sr" in formats:
        files["dicom-sr"] = out_dir / OUTPUT_FILES["dicom-sr"]
        earlier = predecessor_srs(out_dir.parent / previous / OUTPUT_FILES["dicom-sr"]) if previous else []
        sr = build_measurement_report_sr(content, ctx, sources, seg, predecessors=earlier)
        write_durably(files["dicom-sr"], _dicom_bytes(sr))
    return files


def _render_summary(content, ctx, sources, mask, out_dir: Path, formats) -> dict[str, Path]:  # noqa: ANN001
    """The key images (KOS, when a finding was segmented) and the rendered summary (SC: the first
    key image outlined, else the middle slice) for viewers without SR/SEG support."""
    files: dict[str, Path] = {}
    keys = key_images(mask, content) if mask is not None and mask.shape[0] == len(sources) else []  # slices, not frames
    if "dicom-kos" in formats and keys:
        files["dicom-kos"] = out_dir / OUTPUT_FILES["dicom-kos"]
        key_sources = [sources[i] for i in dict.fromkeys(index for _, index in keys)]
        write_durably(files["dicom-kos"], _dicom_bytes(build_key_object_selection(content, ctx, key_sources)))
    if "dicom-sc" in formats:
        index = keys[0][1] if keys else len(sources) // 2
        outlines = np.where(np.isin(mask[index], [n for n, i in keys if i == index]), mask[index], 0) if keys else None
        files["dicom-sc"] = out_dir / OUTPUT_FILES["dicom-sc"]
        write_durably(files["dicom-sc"], _dicom_bytes(build_summary_capture(content, ctx, sources[index], outlines)))
    return files


def _render_message(fmt: str, content: ReportContent, ctx, destination: str, out_dir: Path,  # noqa: ANN001
                    status: ResultStatus, *, replaces_earlier: bool, reviewer: str | None = None,
                    raise_priority: bool = False) -> Path:
    """The FHIR bundle or ORU^R01 for one destination with one life-cycle status
    (`pathways.result_status`), written durably under out_dir/destination.

    `replaces_earlier`: the destination may hold an earlier report for this order (a
    superseded result): FHIR then updates the same resources in place (conditional update on
    their identifiers). `reviewer`: who accepted it, for a final or corrected status
    (OBR-32 / resultsInterpreter). `raise_priority`: the ORU carries the urgent priority in
    OBR-27 where the RIS takes it there (`priority_update = "oru-obr27"`); the FHIR bundle a
    priority Task where the EHR takes one (`priority_update = "task"`)."""
    path = out_dir / destination / OUTPUT_FILES[fmt]
    if fmt == "fhir-bundle":
        config = get_settings().destination(destination)
        task = getattr(config, "priority_update", "none") == "task" and raise_priority
        bundle = build_report_bundle(content, ctx, status=status.fhir, interpreter=reviewer,
                                     update=replaces_earlier or status not in (ResultStatus.PRELIMINARY, ResultStatus.FINAL),
                                     priority_task=config.urgent_priority if task else None)
        write_durably(path, json.dumps(bundle, indent=2).encode())
    elif fmt == "hl7-oru":
        config = get_settings().destination(destination)
        oru = build_oru_r01(
            content,
            ctx,
            version=config.hl7_version,
            receiving_application=config.receiving_application,
            receiving_facility=config.receiving_facility,
            control_id=default_control_id(ctx.result_id, destination, status),
            status=status,
            interpreter=reviewer,
            priority=config.urgent_priority if raise_priority and config.priority_update == "oru-obr27" else None,
        )
        write_durably(path, oru.encode())
    else:
        raise ValueError(f"no report message for format {fmt}")
    return path


def _priority_update(ctx, destination: str, out_dir: Path) -> Path | None:  # noqa: ANN001
    """The ORM^O01 XO raising the exam's priority, for a RIS that takes it as an order update."""
    config = get_settings().destination(destination)
    if getattr(config, "priority_update", "none") != "orm-xo":
        return None
    message = build_priority_update(ctx, priority=config.urgent_priority, version=config.hl7_version,
                                    receiving_application=config.receiving_application,
                                    receiving_facility=config.receiving_facility,
                                    control_id=priority_control_id(ctx.result_id, destination))
    path = out_dir / destination / PRIORITY_UPDATE_FILE
    write_durably(path, message.encode())
    return path


def _verified_sr(content: ReportContent, ctx, series_uid: str, result_dir: Path, out_dir: Path,  # noqa: ANN001
                 reviewer: str) -> Path:
    """The accepted result's SR: VERIFIED by the reviewer, superseding the preliminary SR."""
    import pydicom

    seg_path = result_dir / OUTPUT_FILES["dicom-seg"]
    seg = pydicom.dcmread(seg_path) if seg_path.is_file() else None
    sr = build_measurement_report_sr(content, ctx, source_datasets(series_uid), seg,
                                     predecessors=predecessor_srs(result_dir / OUTPUT_FILES["dicom-sr"]),
                                     verifier=reviewer, verified_at=dt.datetime.now(dt.timezone.utc))
    path = out_dir / OUTPUT_FILES["dicom-sr"]
    write_durably(path, _dicom_bytes(sr))
    return path


def supersedes_sentence(previous_result_id: str, study_revision: int) -> str:
    """The narrative line a superseding report carries (opaque ids only)."""
    return (
        f"This report supersedes an earlier result for this study (result {previous_result_id}): "
        f"images arrived after that result was produced and the study was analysed again "
        f"(study revision {study_revision})."
    )


@task(name="record-result", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def record_result(
    run_id: str,
    content: ReportContent,
    assessment: BaseModel,
    series: SeriesRef,
    mask_path: str | None,
    model_name: str,
    model_version: str,
) -> RecordedResult:
    """Render SR, SEG, FHIR and ORU for the destinations, then commit result and outbox rows.

    Outputs are deterministic in the result id, so a retry rewrites identical files.
    """
    view = ledger.run_view(run_id)
    spec = default_registry().get(view.pathway)
    revision = view.study_revision
    result_id = ledger.result_id_for(view.study_uid, spec.name, model_version, revision)
    ctx = ledger.result_context(
        run_id, result_id=result_id, model_name=model_name, model_version=model_version, source_series_uid=series.series_uid,
        prior_result_id=getattr(assessment, "prior_result_id", None),
    )
    existing = ledger.existing_result(view.study_uid, spec.name, model_version, revision)
    if existing is not None:  # a re-driven run: the outputs were built and committed before
        return RecordedResult(result_id=existing[0], delivery_ids=tuple(existing[1]), created=False)
    previous = ledger.superseded_result(view.study_uid, spec.name, revision)
    if previous is not None:
        content = content.model_copy(update={"text": f"{content.text}\n\n{supersedes_sentence(previous, revision)}"})
    out_dir = get_settings().data_dir / "results" / result_id
    routing = route(spec)  # shadow: clinical destinations get nothing; qa/review: they are held
    destinations = [d for d in spec.destinations if d.name in routing.planned]
    shared = _render_dicom(content, ctx, series, mask_path, out_dir, {f for d in destinations for f in d.formats}, previous)
    plans = []
    for destination in destinations:
        # Triage reaches the RIS with the unreviewed result, never from shadow or qa mode (where
        # clinical destinations get nothing or are held) nor to an evaluation destination.
        raise_priority = content.urgent and destination.clinical and destination.name not in routing.held
        payloads = [  # a SEG exists only where findings have segments
            str(_render_message(fmt, content, ctx, destination.name, out_dir, ResultStatus.PRELIMINARY,  # unreviewed
                                replaces_earlier=previous is not None, raise_priority=raise_priority)
                if fmt in REPORT_MESSAGES else shared[fmt])
            for fmt in destination.formats
            if fmt in REPORT_MESSAGES or fmt in shared
        ]
        if raise_priority and "hl7-oru" in destination.formats:
            update = _priority_update(ctx, destination.name, out_dir)
            payloads = ([str(update)] if update is not None else []) + payloads  # sent (and ACKed) first
        kind = get_settings().destination(destination.name).kind
        plans.append(ledger.DeliveryPlan(destination=destination.name, kind=kind, payloads=payloads,
                                         held=destination.name in routing.held))
    # The follow-up scan the recommendation calls for opens a surveillance plan; a shadow result is
    # never acted on clinically, so it opens none.
    recommendation = getattr(assessment, "recommendation_code", None)
    follow_up = None if spec.mode == "shadow" else spec.surveillance.follow_up(recommendation)
    result_id, delivery_ids, created = ledger.record_result(
        run_id,
        result_id=result_id,
        study_uid=view.study_uid,
        pathway=spec.name,
        model_version=model_version,
        assessment=assessment.model_dump(mode="json"),
        report=content.model_dump(mode="json"),
        urgent=content.urgent,
        follow_up=follow_up,
        deliveries=plans,
        study_revision=revision,
        model_name=model_name,
        source_series_uid=series.series_uid,
    )
    return RecordedResult(result_id=result_id, delivery_ids=tuple(delivery_ids), created=created)


_FORMAT_OF_FILE = {name: fmt for fmt, name in OUTPUT_FILES.items()}


class AmendedReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    report: dict
    payloads: dict[str, list[str]]  # held destination -> payload files to send instead
    status: ResultStatus = ResultStatus.FINAL  # what the review issues (final, or corrected)
    follow_ups: dict[str, list[str]] = {}  # destination that had the preliminary -> files superseding it


def _follow_up_destinations(pathway: str) -> set[str]:
    """The destinations sent the preliminary that the review's decision must reach too."""
    return set(route(default_registry().get(pathway)).follow_up) if pathway else set()


@task(name="finalise-held-report", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def finalise_held_report(result_id: str, reviewer: str, reason: str, conclusion: str | None = None) -> AmendedReport:
    """A named reviewer accepted (conclusion None) or amended the result: re-render the held
    destinations' report messages (FHIR bundle, ORU^R01) as the reviewed version (final, or
    corrected where it replaces a final result), naming the reviewer (OBR-32,
    resultsInterpreter), under <result>/final/ or <result>/amended/, keeping the
    algorithm's preliminary originals for audit.

    On accept the SR goes as a new, VERIFIED instance naming the reviewer (Verifying Observer),
    with the preliminary SR as its predecessor. On amend the SR and SEG go as recorded
    (UNVERIFIED): they are the algorithm's evidence, with the device as observer, and the
    reviewer did not attest the algorithm's conclusion they replaced. Deterministic in its
    UIDs and control ids: a retry or a resumed flow run rewrites the same instances."""
    held = ops.held_result(result_id)
    if held.model_name is None or held.source_series_uid is None:
        raise ValueError("this result was recorded without provenance (before 0005): reject it")
    content = ReportContent.model_validate(held.report)
    if conclusion is not None:
        content = content.with_reviewed_conclusion(conclusion, reviewer, reason)
    status = issued_status(reviewer=reviewer, replaces_final=held.replaces_final)
    ctx = ledger.result_context(held.run_id, result_id=result_id, model_name=held.model_name,
                                model_version=held.model_version, source_series_uid=held.source_series_uid,
                                prior_result_id=held.prior_result_id)
    result_dir = get_settings().data_dir / "results" / result_id
    out_dir = result_dir / ("final" if conclusion is None else "amended")
    follow_up = _follow_up_destinations(held.pathway)
    sent = {d: files for d, files in held.sent_payloads.items() if d in follow_up}
    verified_sr = None
    if conclusion is None and any(_FORMAT_OF_FILE.get(Path(f).name) == "dicom-sr"
                                  for fs in [*held.held_payloads.values(), *sent.values()] for f in fs):
        verified_sr = _verified_sr(content, ctx, held.source_series_uid, result_dir, out_dir, reviewer)
    payloads = {}
    for destination, files in held.held_payloads.items():
        payloads[destination] = [
            str(_render_message(fmt, content, ctx, destination, out_dir, status, replaces_earlier=held.replaces_final,
                                reviewer=reviewer)) if fmt in REPORT_MESSAGES
            else str(verified_sr) if fmt == "dicom-sr" and verified_sr is not None else f
            for f, fmt in ((f, _FORMAT_OF_FILE.get(Path(f).name)) for f in files)
        ]
    follow_ups = {}
    for destination, files in sent.items():  # what changed since the preliminary: reports, the verified SR
        formats = [_FORMAT_OF_FILE.get(Path(f).name) for f in files]
        changed = [str(_render_message(fmt, content, ctx, destination, out_dir, status, replaces_earlier=True, reviewer=reviewer))
                   for fmt in formats if fmt in REPORT_MESSAGES]
        changed += [str(verified_sr)] if verified_sr is not None and "dicom-sr" in formats else []
        if changed:
            follow_ups[destination] = changed
    return AmendedReport(report=content.model_dump(mode="json"), payloads=payloads, status=status, follow_ups=follow_ups)


@task(name="cancel-sent-reports", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def cancel_sent_reports(result_id: str) -> dict[str, list[str]]:
    """A reviewer rejected a result whose preliminary already went out: per such destination,
    the report messages that withdraw it (ORU^R01 OBR-25/OBX-11 X, FHIR entered-in-error on the
    same resources), under <result>/cancelled/. SR and SEG already in PACS are not withdrawn
    (that needs an IHE IOCM rejection note): the SR says UNVERIFIED and stays the algorithm's."""
    held = ops.held_result(result_id)
    sent = {d: files for d, files in held.sent_payloads.items() if d in _follow_up_destinations(held.pathway)}
    if not sent:
        return {}
    if held.model_name is None or held.source_series_uid is None:
        raise ValueError("this result was recorded without provenance (before 0005)")
    content = ReportContent.model_validate(held.report)
    ctx = ledger.result_context(held.run_id, result_id=result_id, model_name=held.model_name,
                                model_version=held.model_version, source_series_uid=held.source_series_uid,
                                prior_result_id=held.prior_result_id)
    out_dir = get_settings().data_dir / "results" / result_id / "cancelled"
    cancels = {}
    for destination, files in sent.items():
        formats = [_FORMAT_OF_FILE.get(Path(f).name) for f in files]
        messages = [str(_render_message(fmt, content, ctx, destination, out_dir, ResultStatus.CANCELLED, replaces_earlier=True))
                    for fmt in formats if fmt in REPORT_MESSAGES]
        if messages:
            cancels[destination] = messages
    return cancels
