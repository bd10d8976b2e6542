"""Ledger operations for study readiness: snapshot the ledger, decide, apply, report.

`sweep_readiness()` is what `radpath serve` calls periodically (and after each committed
association): it hands ready studies to waiting runs (accession number + patient cross-check),
records orphans and late images, and only then calls `on_ready` (the event emitter).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from sqlmodel import Session, func, select

from integrations.db.engine import INDEX_LOCK, session_scope
from integrations.db import performed_steps, surveillance
from integrations.db.ledger import audit
from integrations.db.runs import RunStatus, move as move_run
from integrations.db.models import AuditEvent, Order, PathwayRun, Series, Study, as_utc, utcnow
from pathways.readiness import RunSnapshot, StudyDecision, StudySnapshot, StudyStatus, decide_study, due_in, series_infos
from integrations.settings import get_settings
from pathways.registry import Registry, default_registry


@dataclass(frozen=True)
class ReadyStudy:
    """A study handed to runs (opaque ids only): what the `radpath.study.ready` event carries."""

    study_id: str
    run_ids: tuple[str, ...]
    forced: bool = False
    rerun: bool = False
    revision: int = 0


def _runs_for(session: Session, accession: str, **where: object) -> list[tuple[PathwayRun, Order]]:
    if not accession:
        return []
    query = select(PathwayRun, Order).join(Order, Order.id == PathwayRun.order_id).where(Order.accession_number == accession)
    for column, value in where.items():
        query = query.where(getattr(PathwayRun, column) == value)
    return list(session.exec(query).all())


def _snapshot(session: Session, study: Study) -> StudySnapshot:
    series = session.exec(select(Series).where(Series.study_id == study.id)).all()
    waiting = [
        RunSnapshot(run.id, run.pathway, run.status, order.patient_key, run.started_at, order.exam_completed_at)
        for run, order in _runs_for(session, study.accession_number, status=RunStatus.WAITING)
    ]
    attached = session.exec(select(PathwayRun).where(PathwayRun.study_id == study.id)).all()
    return StudySnapshot(
        study_id=study.id,
        status=study.status,
        patient_keys=tuple(study.patient_keys or ()),
        first_received_at=study.first_received_at,
        last_received_at=study.last_received_at,
        series=series_infos(series),
        late_instances=study.late_instances,
        waiting=tuple(waiting),
        attached=tuple(RunSnapshot(r.id, r.pathway, r.status, "", r.started_at) for r in attached),
        completion=performed_steps.completion(session, study),
    )


def _candidates(session: Session) -> list[Study]:
    waiting_accessions = select(Order.accession_number).join(PathwayRun, PathwayRun.order_id == Order.id).where(
        PathwayRun.status == RunStatus.WAITING
    )
    query = select(Study).where(
        (Study.status.in_((StudyStatus.RECEIVING, StudyStatus.ORPHANED))) | (Study.late_instances > 0) | (Study.accession_number.in_(waiting_accessions))
    )
    return list(session.exec(query).all())


def _apply(session: Session, study: Study, decision: StudyDecision, now: dt.datetime) -> ReadyStudy | None:
    attached, forced = [], False
    for d in decision.runs:
        run = session.get(PathwayRun, d.run_id)
        if d.action in ("ready", "force-ready"):
            run.study_id = study.id
            move_run(session, run, RunStatus.READY, actor="readiness", action="study.ready", reason=d.reason,
                     study_id=study.id, forced=d.action == "force-ready")
            surveillance.study_arrived(session, run, study, session.get(Order, run.order_id).patient_key)
            attached.append(run.id)
            forced |= d.action == "force-ready"
        elif run.status_reason != d.reason:
            run.status_reason = d.reason
            if d.action == "patient-mismatch":
                audit(session, "readiness", "study.patient-mismatch", "pathway_run", run.id, study_id=study.id)
    if attached and study.status != StudyStatus.READY:
        study.status, study.ready_at, study.orphaned_at = StudyStatus.READY, now, None
    if decision.orphan:
        study.status, study.orphaned_at = StudyStatus.ORPHANED, now
        audit(session, "readiness", "study.orphaned", "study", study.id)
    if decision.late == "ignore":
        audit(session, "readiness", "study.late-images.ignored", "study", study.id, instances=study.late_instances)
        study.late_instances = 0
    elif decision.late == "rerun":
        study.revision += 1
        audit(session, "readiness", "study.late-images.rerun", "study", study.id, instances=study.late_instances, revision=study.revision)
        study.late_instances = 0
        for run_id in decision.rerun_ids:
            run = session.get(PathwayRun, run_id)
            move_run(session, run, RunStatus.READY, actor="readiness", action="run.rerun", revision=study.revision,
                     reason=f"re-run: images arrived after the run started (revision {study.revision})")
            attached.append(run.id)
    elif decision.late == "none" and study.late_instances and not any(r.status != RunStatus.READY for r in _attached_runs(session, study)):
        study.late_instances = 0  # nothing has read the study yet: the late images are simply part of it
    if not attached:
        return None
    return ReadyStudy(study.id, tuple(attached), forced=forced, rerun=decision.late == "rerun", revision=study.revision)


def _attached_runs(session: Session, study: Study) -> list[PathwayRun]:
    return list(session.exec(select(PathwayRun).where(PathwayRun.study_id == study.id)).all())


def _mark_imageless_runs(session: Session) -> None:
    """Waiting runs whose accession has no images at all say so (an order visible as waiting)."""
    have_images = select(Study.accession_number)
    rows = session.exec(
        select(PathwayRun)
        .join(Order, Order.id == PathwayRun.order_id)
        .where(PathwayRun.status == RunStatus.WAITING, Order.accession_number.not_in(have_images))
    ).all()
    for run in rows:
        if run.status_reason is None:
            run.status_reason = "waiting for images"


def sweep_readiness(
    now: dt.datetime | None = None,
    registry: Registry | None = None,
    on_ready: Callable[[ReadyStudy], None] | None = None,
    on_due: Callable[[float], None] | None = None,
) -> list[ReadyStudy]:
    """Decide and commit readiness for every open study; then call `on_ready` for each, and
    `on_due` with the seconds until a waiting run's quiet period ends (the soonest), if any."""
    now = now or utcnow()
    registry = registry or default_registry()
    settings = get_settings()
    specs = dict(registry.specs)
    ready: list[ReadyStudy] = []
    decisions: list[StudyDecision] = []
    with INDEX_LOCK, session_scope() as session:
        for study in _candidates(session):
            snapshot = _snapshot(session, study)
            decision = decide_study(snapshot, specs, now, settings.dicom_quiet_period_seconds, settings.dicom_orphan_after_seconds)
            decisions.append(decision)
            if (outcome := _apply(session, study, decision, now)) is not None:
                ready.append(outcome)
        _mark_imageless_runs(session)
    for outcome in ready:  # after the commit: an event never announces what the ledger lacks
        if on_ready is not None:
            on_ready(outcome)
    if on_due is not None and (due := due_in(decisions)) is not None:
        on_due(due)
    return ready


def accession_has_images(accession_number: str) -> bool:
    with session_scope() as session:
        return session.exec(select(Study.id).where(Study.accession_number == accession_number)).first() is not None


RETRIEVAL = "order.retrieval"  # the audit action of one order-triggered retrieval from the PACS


def orders_to_retrieve(now: dt.datetime, *, after_s: float, retry_s: float, attempts: int) -> list[tuple[str, str]]:
    """(order id, accession) of orders with a run waiting for images, none of which has come for
    `after_s`, tried fewer than `attempts` times and not in the last `retry_s` (the attempts are
    the order's `order.retrieval` audit events)."""
    have_images = select(Study.accession_number)
    with session_scope() as session:
        rows = session.exec(
            select(Order.id, Order.accession_number).join(PathwayRun, PathwayRun.order_id == Order.id)
            .where(PathwayRun.status == RunStatus.WAITING, Order.accession_number != "",
                   Order.accession_number.not_in(have_images),
                   Order.received_at <= now - dt.timedelta(seconds=after_s)).distinct()
        ).all()
        if not rows:
            return []
        tried = session.exec(select(AuditEvent.entity_id, func.count(), func.max(AuditEvent.at))
                             .where(AuditEvent.action == RETRIEVAL, AuditEvent.entity_id.in_([r[0] for r in rows]))
                             .group_by(AuditEvent.entity_id)).all()
    history = {order_id: (count, last) for order_id, count, last in tried}
    due = []
    for order_id, accession in rows:
        count, last = history.get(order_id, (0, None))
        if count < attempts and (last is None or as_utc(last) <= now - dt.timedelta(seconds=retry_s)):
            due.append((order_id, accession))
    return due



def record_retrieval(order_id: str, *, studies: int = 0, stored: int = 0, error: str | None = None) -> None:
    """One retrieval attempt for an order, audited (what the PACS held; the error, scrubbed)."""
    with session_scope() as session:
        audit(session, "pacs-retrieval", RETRIEVAL, "order", order_id, studies=studies, stored=stored, error=error)
