"""Ledger operations for running the service: leases, re-drive candidates, review, turnaround.

A lease (`claimed_by`, `claimed_until`) is taken by one conditional UPDATE, so of two
reconcilers (or a reconciler and a pathway flow) racing for the same row exactly one wins;
a holder that dies loses its lease when `claimed_until` passes.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, or_, update
from sqlmodel import func, select

from integrations.db.engine import session_scope
from integrations.db.ledger import audit
from integrations.db.runs import REDRIVABLE, RunStatus
from integrations.db.models import (
    REVIEW_OPEN,
    AuditEvent,
    Delivery,
    DeliveryStatus,
    Instance,
    Order,
    PathwayRun,
    RadiologistReport,
    Result,
    ReviewStatus,
    Series,
    Study,
    as_utc,
    delivery_move,
    utcnow,
)
from pathways.orders import urgency

# a preliminary in one of these reached (or is on its way to) its destination: a decision follows it up
SENT_OR_ON_ITS_WAY = (DeliveryStatus.PENDING, DeliveryStatus.DELIVERED, DeliveryStatus.DEAD_LETTER)
REDRIVE_LIMIT = 3  # a run re-driven this often and still failing stays failed for a person to look at


def _claim(model: type, row_id: str, owner: str, lease_seconds: float) -> bool:
    now = utcnow()
    with session_scope() as session:
        claimed = session.exec(
            update(model)
            .where(model.id == row_id)
            .where(or_(model.claimed_until.is_(None), model.claimed_until < now, model.claimed_by == owner))
            .values(claimed_by=owner, claimed_until=now + dt.timedelta(seconds=lease_seconds))
        )
        return claimed.rowcount == 1


def _release(model: type, row_id: str, owner: str) -> None:
    with session_scope() as session:
        session.exec(
            update(model).where(model.id == row_id, model.claimed_by == owner).values(claimed_by=None, claimed_until=None)
        )


def claim_delivery(delivery_id: str, owner: str, lease_seconds: float = 300) -> bool:
    """True when `owner` now holds the delivery (or already did); False: someone else sends it."""
    return _claim(Delivery, delivery_id, owner, lease_seconds)


def release_delivery(delivery_id: str, owner: str) -> None:
    _release(Delivery, delivery_id, owner)


def claim_run(run_id: str, owner: str, lease_seconds: float = 1800) -> bool:
    return _claim(PathwayRun, run_id, owner, lease_seconds)


def release_run(run_id: str, owner: str) -> None:
    _release(PathwayRun, run_id, owner)


def redrive_count(run_id: str) -> int:
    with session_scope() as session:
        return session.exec(
            select(func.count()).where(AuditEvent.entity_id == run_id, AuditEvent.action == "run.redriven")
        ).one()


def runs_to_redrive(*, grace_seconds: float = 60, now: dt.datetime | None = None) -> list[str]:
    """Runs Prefect lost: ready but never started, running whose lease ran out (the process
    died), or failed. A running flow holds its run's lease, so live runs are never listed.

    `grace_seconds`: how long a ready run is left to the event-driven path first. Failed runs
    are re-driven at most `REDRIVE_LIMIT` times.
    """
    now = now or utcnow()
    cutoff = now - dt.timedelta(seconds=grace_seconds)
    with session_scope() as session:
        rows = session.exec(
            select(PathwayRun, Study)
            .join(Study, Study.id == PathwayRun.study_id)
            .where(PathwayRun.status.in_(tuple(REDRIVABLE)))
            .where(or_(PathwayRun.claimed_until.is_(None), PathwayRun.claimed_until < now))
        ).all()
        candidates = [
            run.id
            for run, study in rows
            if run.status != RunStatus.READY or study.ready_at is None or study.ready_at <= cutoff
        ]
    return [r for r in candidates if redrive_count(r) < REDRIVE_LIMIT]


def note_redrive(run_id: str, owner: str, flow_run_id: str | None = None) -> None:
    with session_scope() as session:
        audit(session, owner, "run.redriven", "pathway_run", run_id, flow_run_id=flow_run_id)


def deliveries_due(*, grace_seconds: float = 60, now: dt.datetime | None = None) -> list[str]:
    """Pending deliveries whose next attempt is due, earliest first: the outbox's schedule.

    A row never tried is left `grace_seconds` to the flow that recorded it; a retry is due at
    the time the outbox scheduled (`next_attempt_at`, set by `ledger.record_delivery_attempt`)."""
    now = now or utcnow()
    first_try_due = and_(Delivery.attempts == 0, Delivery.next_attempt_at <= now - dt.timedelta(seconds=grace_seconds))
    retry_due = and_(Delivery.attempts > 0, Delivery.next_attempt_at <= now)
    from integrations.db.deliveries import not_paused  # a paused destination waits (`radpath deliveries pause`)

    with session_scope() as session:
        return list(
            session.exec(
                select(Delivery.id)
                .where(Delivery.status == DeliveryStatus.PENDING, not_paused())
                .where(Delivery.next_attempt_at.is_not(None), or_(first_try_due, retry_due))
                .where(or_(Delivery.claimed_until.is_(None), Delivery.claimed_until < now))
                .order_by(Delivery.next_attempt_at)
            ).all()
        )


@dataclass(frozen=True)
class ResultDeliveries:
    result_id: str
    order_id: str
    pathway: str
    statuses: dict[str, str]  # destination -> status

    def with_status(self, *statuses: str) -> list[str]:
        return [d for d, s in self.statuses.items() if s in statuses]


def result_deliveries(run_id: str) -> ResultDeliveries | None:
    with session_scope() as session:
        result = session.exec(  # the current one: a re-run after late images supersedes the earlier
            select(Result).where(Result.run_id == run_id).order_by(Result.study_revision.desc())
        ).first()
        if result is None:
            return None
        run = session.get(PathwayRun, run_id)
        rows = session.exec(select(Delivery).where(Delivery.result_id == result.id).order_by(Delivery.created_at)).all()
        # A destination's latest row stands (the reviewer's final after its preliminary).
        return ResultDeliveries(result.id, run.order_id, run.pathway, {d.destination: d.status for d in rows})


def delivery_ids(result_id: str, *statuses: str) -> list[str]:
    with session_scope() as session:
        query = select(Delivery.id).where(Delivery.result_id == result_id)
        if statuses:
            query = query.where(Delivery.status.in_(statuses))
        return list(session.exec(query).all())


@dataclass(frozen=True)
class HeldResult:
    """What an amendment at review re-renders from: the recorded result and its held rows."""

    run_id: str
    report: dict[str, Any]
    model_name: str | None  # None: recorded before 0005_result_provenance
    model_version: str
    source_series_uid: str | None
    replaces_final: bool  # it superseded a result already reported
    held_payloads: dict[str, list[str]]  # destination -> payload files
    pathway: str = ""
    sent_payloads: dict[str, list[str]] = field(default_factory=dict)  # destination -> preliminary files sent (or on their way)
    prior_result_id: str | None = None  # the patient's earlier result it was compared with


def held_result(result_id: str) -> HeldResult:
    with session_scope() as session:
        result = session.get(Result, result_id)
        rows = session.exec(select(Delivery).where(Delivery.result_id == result_id)).all()
        held = {d.destination: list(d.payloads) for d in rows if d.status == DeliveryStatus.HELD}
        sent = {d.destination: list(d.payloads) for d in rows
                if d.result_status == "preliminary" and d.status in SENT_OR_ON_ITS_WAY}
        predecessor = session.exec(select(Result.id).where(Result.superseded_by == result_id)).first()
        return HeldResult(result.run_id, result.report, result.model_name, result.model_version, result.source_series_uid,
                          predecessor is not None, held, result.pathway, sent, result.assessment.get("prior_result_id"))


def set_review(result_id: str, status: str, *, reviewer: str | None = None, reason: str | None = None,
               report: dict[str, Any] | None = None, payloads: dict[str, list[str]] | None = None,
               follow_ups: dict[str, list[str]] | None = None, issued: str | None = None) -> None:
    """Record a review decision (or that one is pending); accepted/amended release held rows.

    An amendment brings the amended report and, per held destination, the re-rendered
    payload files: they replace the held rows' payloads in the same transaction.
    `issued`: the result status the decision sends (final or corrected; cancelled on reject).
    `follow_ups`: per destination that already got the preliminary, the files that supersede it:
    a new outbox row each carrying `issued`, in the same transaction as the decision, so the
    decision and what it sends are never apart."""
    from integrations.db.ledger import idempotency_key
    from integrations.db.surveillance import cancel_for_result

    with session_scope() as session:
        for destination, files in (follow_ups or {}).items():
            first = session.exec(select(Delivery).where(Delivery.result_id == result_id, Delivery.destination == destination,
                                                        Delivery.result_status == "preliminary")).one()
            session.add(Delivery(result_id=result_id, destination=destination, kind=first.kind, payloads=list(files),
                                 idempotency_key=idempotency_key(result_id, destination, issued),
                                 result_status=issued, status=DeliveryStatus.PENDING, next_attempt_at=utcnow()))
        result = session.get(Result, result_id)
        result.review_status = status
        if reviewer is not None:
            result.reviewed_by, result.review_reason, result.reviewed_at = reviewer, reason, utcnow()
        if report is not None:
            result.report = report
        release = {ReviewStatus.ACCEPTED: DeliveryStatus.PENDING, ReviewStatus.AMENDED: DeliveryStatus.PENDING,
                   ReviewStatus.REJECTED: DeliveryStatus.REJECTED}.get(ReviewStatus(status))
        if status == ReviewStatus.REJECTED:
            cancel_for_result(session, result_id, "its result was rejected at review", actor=reviewer or "pathway")
        if release:
            for row in session.exec(select(Delivery).where(Delivery.result_id == result_id, Delivery.status == DeliveryStatus.HELD)).all():
                if payloads and row.destination in payloads:
                    row.payloads = list(payloads[row.destination])
                    row.result_status = issued or row.result_status
                row.status = delivery_move(row.status, release)
                row.next_attempt_at = utcnow() if release == DeliveryStatus.PENDING else None
        audit(session, reviewer or "pathway", f"review.{status}", "result", result_id, reason=reason)




@dataclass(frozen=True)
class ReviewItem:
    """One result waiting for a reviewer (opaque ids and clinical content, no identifiers)."""

    result_id: str
    pathway: str
    study_key: str
    conclusion: str
    urgent: bool
    status: str
    waiting_since: dt.datetime


def review_queue() -> list[ReviewItem]:
    """Results whose clinical deliveries wait for a review decision, urgent first, oldest first."""
    from integrations.db.ledger import study_key

    with session_scope() as session:
        rows = session.exec(select(Result).where(Result.review_status.in_(REVIEW_OPEN))).all()
        items = [ReviewItem(r.id, r.pathway, study_key(r.study_uid), r.report.get("conclusion", ""), r.urgent,
                            r.review_status, r.created_at) for r in rows]
    return sorted(items, key=lambda i: (not i.urgent, i.waiting_since))


def review_status(result_id: str) -> str | None:
    """None also for an unknown result id."""
    with session_scope() as session:
        result = session.get(Result, result_id)
        return result.review_status if result else None


def expire_reviews(pathway: str, timeout_seconds: float, now: dt.datetime | None = None) -> list[str]:
    """Pending reviews of `pathway` older than the spec's review timeout become `expired`
    (audited); their deliveries stay held, and a late decision is still accepted."""
    cutoff = (now or utcnow()) - dt.timedelta(seconds=timeout_seconds)
    with session_scope() as session:
        rows = session.exec(
            select(Result).where(Result.pathway == pathway, Result.review_status == ReviewStatus.PENDING, Result.created_at < cutoff)
        ).all()
        for result in rows:
            result.review_status = ReviewStatus.EXPIRED
            audit(session, "reconciler", "review.expired", "result", result.id, timeout_seconds=timeout_seconds)
        return [r.id for r in rows]


def audit_spec_modes(modes: dict[str, str], actor: str = "radpath") -> list[str]:
    """Record each pathway's mode; a change since the last record becomes a `pathway.mode_changed` audit event.

    Returns the pathways whose mode changed (the first record of a pathway counts as a change).
    """
    changed = []
    with session_scope() as session:
        for pathway, mode in modes.items():
            last = session.exec(
                select(AuditEvent)
                .where(AuditEvent.entity_type == "pathway", AuditEvent.entity_id == pathway,
                       AuditEvent.action.in_(("pathway.mode_changed",)))
                .order_by(AuditEvent.id.desc())
            ).first()
            previous = last.detail.get("mode") if last else None
            if previous != mode:
                audit(session, actor, "pathway.mode_changed", "pathway", pathway, mode=mode, previous=previous)
                changed.append(pathway)
    return changed


@dataclass(frozen=True)
class Turnaround:
    pathway: str
    order_received: dt.datetime
    study_ready: dt.datetime | None
    inference_done: dt.datetime | None  # the result was recorded
    delivered: dt.datetime | None  # the last clinical delivery (or evaluation one in shadow)
    lane: str = "routine"  # the order's priority lane (pathways.orders.urgency)
    run_status: str = RunStatus.COMPLETED
    images_complete: dt.datetime | None = None  # the study's last image committed
    reported: dt.datetime | None = None  # the radiologist's signed report received (the evidence loop)


def turnarounds(pathway: str | None = None) -> list[Turnaround]:
    with session_scope() as session:
        query = (
            select(PathwayRun, Order, Study, Result)
            .join(Order, Order.id == PathwayRun.order_id)
            .join(Study, Study.id == PathwayRun.study_id, isouter=True)
            .join(Result, (Result.run_id == PathwayRun.id) & Result.superseded_by.is_(None), isouter=True)
        )
        if pathway:
            query = query.where(PathwayRun.pathway == pathway)
        out = []
        for run, order, study, result in session.exec(query).all():
            delivered = None
            if result is not None:
                times = session.exec(
                    select(Delivery.delivered_at).where(Delivery.result_id == result.id, Delivery.status == DeliveryStatus.DELIVERED)
                ).all()
                pending = session.exec(
                    select(func.count()).where(Delivery.result_id == result.id, Delivery.status != DeliveryStatus.DELIVERED)
                ).one()
                delivered = max(times) if times and not pending else None
            last_image = None
            if study is not None:
                last_image = session.exec(select(func.max(Instance.received_at)).join(Series, Series.id == Instance.series_id)
                                          .where(Series.study_id == study.id)).one()
            reported = session.exec(select(RadiologistReport.received_at).where(RadiologistReport.order_id == order.id)).first()
            out.append(Turnaround(run.pathway, order.received_at, study.ready_at if study else None,
                                  result.created_at if result else None, delivered, urgency(order.priority), run.status,
                                  as_utc(last_image), reported))
        return out



def run_pathways(run_ids) -> list[str]:  # noqa: ANN001 - any iterable of run ids
    ids = list(run_ids)
    if not ids:
        return []
    with session_scope() as session:
        return list(session.exec(select(PathwayRun.pathway).where(PathwayRun.id.in_(ids))).all())


def delivery_destinations(delivery_ids: list[str]) -> list[str]:
    """The destination names of these outbox rows, sorted, each once."""
    with session_scope() as session:
        return sorted(set(session.exec(select(Delivery.destination).where(Delivery.id.in_(delivery_ids))).all()))


def order_lane(order_id: str) -> str:
    """The lane ("routine" or "urgent") of an order's priority: the label SLA clocks match."""
    with session_scope() as session:
        return urgency(session.exec(select(Order.priority).where(Order.id == order_id)).one())


@dataclass(frozen=True)
class DeliveryContext:
    """What an event about one delivery names: its result, order, pathway, pseudonymous study key
    and the order's lane."""

    result_id: str
    order_id: str
    pathway: str
    study_key: str
    lane: str  # the order's priority lane: the label that stops its SLA clock


def delivery_context(delivery_id: str) -> DeliveryContext:
    from integrations.db.ledger import study_key

    with session_scope() as session:
        result_id, order_id, pathway, study_uid, priority = session.exec(
            select(Delivery.result_id, PathwayRun.order_id, PathwayRun.pathway, Result.study_uid, Order.priority)
            .join(Result, Result.id == Delivery.result_id)
            .join(PathwayRun, PathwayRun.id == Result.run_id)
            .join(Order, Order.id == PathwayRun.order_id)
            .where(Delivery.id == delivery_id)
        ).one()
    return DeliveryContext(result_id, order_id, pathway, study_key(study_uid), urgency(priority))


def delivery_run_name(delivery_id: str) -> str:
    """The task-run name of one delivery for ops: destination kind and name, pseudonymous study
    key ("deliver-mllp:ris/S-…"); never a UID or accession."""
    from integrations.db.ledger import study_key

    with session_scope() as session:
        kind, destination, study_uid = session.exec(
            select(Delivery.kind, Delivery.destination, Result.study_uid)
            .join(Result, Result.id == Delivery.result_id).where(Delivery.id == delivery_id)).one()
    return f"deliver-{kind}:{destination}/{study_key(study_uid)}"


def result_fully_delivered(result_id: str) -> bool:
    """Every outbox row of the result delivered (nothing held, pending or dead)."""
    with session_scope() as session:
        statuses = session.exec(select(Delivery.status).where(Delivery.result_id == result_id)).all()
        return bool(statuses) and all(s == DeliveryStatus.DELIVERED for s in statuses)


@dataclass(frozen=True)
class RunOutcome:
    """What became of one pathway run's result (for `radpath demo`'s table; no patient data)."""

    pathway: str
    assessment: dict[str, Any]
    conclusion: str
    urgent: bool
    delivered: int
    deliveries: int
    turnaround_s: float | None  # order received -> last delivery, once every delivery is done


def run_outcome(run_id: str) -> RunOutcome | None:
    """The current result of a run and its deliveries, or None while it has none."""
    with session_scope() as session:
        run = session.get(PathwayRun, run_id)
        if run is None or run.study_id is None:
            return None
        study = session.get(Study, run.study_id)
        result = session.exec(select(Result).where(Result.study_uid == study.study_uid, Result.pathway == run.pathway)
                              .order_by(Result.study_revision.desc())).first()
        if result is None:
            return None
        order = session.get(Order, run.order_id)
        rows = session.exec(select(Delivery).where(Delivery.result_id == result.id)).all()
        delivered = [d for d in rows if d.status == DeliveryStatus.DELIVERED]
        done = bool(rows) and len(delivered) == len(rows)
        return RunOutcome(
            pathway=run.pathway,
            assessment=dict(result.assessment),
            conclusion=result.report.get("conclusion", ""),
            urgent=result.urgent,
            delivered=len(delivered),
            deliveries=len(rows),
            turnaround_s=(max(d.delivered_at for d in delivered) - order.received_at).total_seconds() if done else None,
        )


def status_counts() -> dict[str, dict[str, int]]:
    """Orders, studies, pathway runs and deliveries by status (`radpath status`, the ops tables)."""
    columns = {"orders": Order.status, "studies": Study.status, "pathway runs": PathwayRun.status,
               "deliveries": Delivery.status}
    with session_scope() as session:
        return {title: dict(session.exec(select(column, func.count()).group_by(column)).all())
                for title, column in columns.items()}


@dataclass(frozen=True)
class DeadLetter:
    delivery_id: str
    destination: str
    pathway: str
    attempts: int
    last_response: str


def dead_letters(limit: int = 50) -> list[DeadLetter]:
    with session_scope() as session:
        rows = session.exec(
            select(Delivery, PathwayRun.pathway)
            .join(Result, Result.id == Delivery.result_id)
            .join(PathwayRun, PathwayRun.id == Result.run_id)
            .where(Delivery.status == DeliveryStatus.DEAD_LETTER)
            .order_by(Delivery.created_at.desc())
            .limit(limit)
        ).all()
        return [DeadLetter(d.id, d.destination, p, d.attempts, (d.last_response or "")[:200]) for d, p in rows]


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of the values; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil(n q / 100), at least 1
    return ordered[int(rank) - 1]


def turnaround_table() -> list[dict[str, Any]]:
    """The ledger's turnaround, per pathway and priority lane (see `turnaround_rows`)."""
    return turnaround_rows(turnarounds())


# Each leg of the journey: (name, start, end); the last is the radiologist's report, later.
TURNAROUND_LEGS = (
    ("order→images", "order_received", "images_complete"),
    ("images→ready", "images_complete", "study_ready"),  # the readiness wait: quiet period or completion signal
    ("ready→inference", "study_ready", "inference_done"),
    ("inference→delivered", "inference_done", "delivered"),
    ("order→delivered", "order_received", "delivered"),
    ("delivered→reported", "delivered", "reported"),
)


def turnaround_rows(items: list[Turnaround]) -> list[dict[str, Any]]:
    """Per pathway and lane (pure): p50/p90 minutes of each leg, order received → images complete
    → ready → inference done → delivered → the radiologist's report. A leg's figures come from
    the runs that have both ends; images sent before their order make order→images negative."""
    groups: dict[tuple[str, str], list[Turnaround]] = {}
    for t in items:
        groups.setdefault((t.pathway, t.lane), []).append(t)
    rows = []
    for (pathway, lane), group in sorted(groups.items()):
        row: dict[str, Any] = {"pathway": pathway, "lane": lane, "runs": len(group),
                               "delivered": sum(t.delivered is not None for t in group)}
        for leg, start, end in TURNAROUND_LEGS:
            values = [(getattr(t, end) - getattr(t, start)).total_seconds() / 60 for t in group
                      if getattr(t, start) is not None and getattr(t, end) is not None]
            for q in (50, 90):
                value = percentile(values, q)
                row[f"{leg} p{q} (min)"] = None if value is None else round(value, 2)
        rows.append(row)
    return rows


# Runs whose order no longer waits on a result (they count neither as on time nor as late).
_NO_RESULT_DUE = frozenset({RunStatus.REJECTED, RunStatus.NOT_ELIGIBLE, RunStatus.NOT_MEASURABLE, RunStatus.CANCELLED})


def sla_rows(items: list[Turnaround], target_minutes, now: dt.datetime) -> list[dict[str, Any]]:  # noqa: ANN001
    """Per pathway and lane (pure): the target (`target_minutes(pathway, lane)`), results
    delivered within it and late, open orders past it, and % within target of those due.
    Runs that ended without a result due (rejected, not eligible, not measurable, cancelled)
    are left out."""
    groups: dict[tuple[str, str], list[Turnaround]] = {}
    for t in items:
        if t.run_status not in _NO_RESULT_DUE:
            groups.setdefault((t.pathway, t.lane), []).append(t)
    rows = []
    for (pathway, lane), group in sorted(groups.items()):
        target = dt.timedelta(minutes=target_minutes(pathway, lane))
        delivered = [t for t in group if t.delivered is not None]
        within = sum(1 for t in delivered if t.delivered - t.order_received <= target)
        open_past = sum(1 for t in group if t.delivered is None and now - t.order_received > target)
        due = len(delivered) + open_past  # an open order not yet past its target is neither
        rows.append({"pathway": pathway, "lane": lane, "target (min)": round(target.total_seconds() / 60),
                     "delivered": len(delivered), "within target": within, "late": len(delivered) - within,
                     "open": len(group) - len(delivered), "open past target": open_past,
                     "% within target": round(100 * within / due, 1) if due else None})
    return rows


def sla_table(now: dt.datetime | None = None) -> list[dict[str, Any]]:
    """`sla_rows` over the ledger with the pathway specs' targets."""
    from pathways.registry import default_registry

    registry = default_registry()

    def target(pathway: str, lane: str) -> int:
        return registry.get(pathway).sla.target_minutes(lane) if pathway in registry.specs else 0

    return sla_rows(turnarounds(), target, now or utcnow())


@dataclass(frozen=True)
class OpenWork:
    """One pathway run not finished, at the stage it waits in (`open_work`)."""

    pathway: str
    lane: str
    stage: str
    stage_since: dt.datetime
    study_key: str | None  # None while no images have come
    order_received: dt.datetime
    reason: str | None = None  # the run's status reason (readiness: "quiet for 30 s of 60 s", ...)

    def as_row(self, now: dt.datetime, target_minutes: int | None) -> dict[str, Any]:
        age = (now - self.order_received).total_seconds() / 60
        return {"pathway": self.pathway, "lane": self.lane, "stage": self.stage, "study": self.study_key or "—",
                "in stage (min)": round(max(0.0, (now - self.stage_since).total_seconds() / 60), 1),
                "since order (min)": round(age, 1), "target (min)": target_minutes,
                "past target": "yes" if target_minutes is not None and age > target_minutes else "",
                "detail": self.reason or ""}


# What an open run waits for, by its status (a completed run may still wait for its deliveries).
_STAGES = {RunStatus.WAITING: "waiting for images", RunStatus.READY: "ready, not started",
           RunStatus.RUNNING: "running", RunStatus.AWAITING_REVIEW: "awaiting review",
           RunStatus.FAILED: "failed, to be re-driven", RunStatus.DEAD_LETTERED: "dead-lettered delivery"}


def open_work(limit: int = 200) -> list[OpenWork]:
    """Pathway runs with work left, oldest order first: waiting for images (or still receiving
    them), ready, running, awaiting review, failed, or completed with deliveries pending."""
    from integrations.db.ledger import study_key

    pending_result = select(Delivery.result_id).where(Delivery.status == DeliveryStatus.PENDING)
    with session_scope() as session:
        rows = session.exec(
            select(PathwayRun, Order, Study, Result)
            .join(Order, Order.id == PathwayRun.order_id)
            .join(Study, Study.id == PathwayRun.study_id, isouter=True)
            .join(Result, (Result.run_id == PathwayRun.id) & Result.superseded_by.is_(None), isouter=True)
            .where(or_(PathwayRun.status.in_(list(_STAGES)),
                       and_(PathwayRun.status == RunStatus.COMPLETED, Result.id.in_(pending_result))))
            .order_by(Order.received_at).limit(limit)
        ).all()
        return [OpenWork(run.pathway, urgency(order.priority), *_stage(run, study, result),
                         study_key(study.study_uid) if study is not None else None, order.received_at, run.status_reason)
                for run, order, study, result in rows]


def _stage(run: PathwayRun, study: Study | None, result: Result | None) -> tuple[str, dt.datetime]:
    """What an open run waits in, and since when."""
    status = RunStatus(run.status)
    if status == RunStatus.COMPLETED:  # open only while deliveries are pending
        return "deliveries pending retry", result.created_at
    if status == RunStatus.WAITING:
        return ("receiving images", study.first_received_at) if study is not None else (_STAGES[status], run.created_at)
    if status == RunStatus.READY:
        return _STAGES[status], study.ready_at or run.created_at
    if status == RunStatus.RUNNING:
        return _STAGES[status], run.started_at or run.created_at
    return _STAGES[status], result.created_at if result is not None else run.finished_at or run.created_at


def open_work_table(now: dt.datetime | None = None) -> list[dict[str, Any]]:
    """`open_work` as table rows with the SLA target of each run's pathway and lane."""
    from pathways.registry import default_registry

    registry, now = default_registry(), now or utcnow()
    return [w.as_row(now, registry.get(w.pathway).sla.target_minutes(w.lane) if w.pathway in registry.specs else None)
            for w in open_work()]


@dataclass(frozen=True)
class FoundRun:
    """A pathway run found from an accession number or study key (`radpath runs find`)."""

    run_id: str
    pathway: str
    status: str
    reason: str | None
    study_key: str | None
    flow_run_id: str | None  # the Prefect flow run that last worked on it
    ordered_at: dt.datetime


def find_runs(*, accession: str | None = None, study_key: str | None = None) -> list[FoundRun]:
    """The pathway runs of the order with this accession number, or of the study with this
    pseudonymous key, oldest first. The accession is compared in the ledger and never returned."""
    from integrations.db.ledger import study_key as key_of

    if not (accession or study_key):
        raise ValueError("give an accession number or a study key")
    with session_scope() as session:
        query = (select(PathwayRun, Order.received_at, Study.study_uid)
                 .join(Order, Order.id == PathwayRun.order_id)
                 .join(Study, Study.id == PathwayRun.study_id, isouter=True))
        if accession:
            query = query.where(Order.accession_number == accession)
        if study_key:  # the key is an HMAC of the UID: only runs with a study can match
            query = query.where(PathwayRun.study_id.is_not(None))
        rows = session.exec(query.order_by(Order.received_at)).all()
        found = [FoundRun(run.id, run.pathway, run.status, run.status_reason, key_of(uid) if uid else None,
                          run.flow_run_id, received) for run, received, uid in rows]
    return [f for f in found if not study_key or f.study_key == study_key]


def result_run_id(result_id: str) -> str:
    with session_scope() as session:
        return session.get(Result, result_id).run_id


def run_status(run_id: str) -> str:
    with session_scope() as session:
        return session.get(PathwayRun, run_id).status
