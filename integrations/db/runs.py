"""Pathway runs: their statuses, the legal moves between them, and the one function that makes a move.

Every change of a run's status in radpath goes through `move` (inside another unit of work: an
order's cancellation, the readiness sweep) or `set_status` (its own transaction: the flows). Each
checks the move is legal and audits it, so the audit trail holds every status a run has had.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Any

from sqlalchemy import or_, update
from sqlmodel import Session, select

from integrations.db.engine import session_scope
from integrations.db.ledger import audit
from integrations.db.models import PathwayRun, utcnow


class RunStatus(StrEnum):
    """A pathway run's status; the stored strings are the values (no data migration)."""

    WAITING = "waiting"  # for its images
    READY = "ready"  # images attached; not started
    RUNNING = "running"
    AWAITING_REVIEW = "awaiting_review"
    COMPLETED = "completed"  # every delivery sent, or left to the outbox ("deliveries pending retry")
    REJECTED = "rejected"  # by the reviewer: nothing clinical delivered
    DEAD_LETTERED = "dead_lettered"
    FAILED = "failed"  # the flow failed or crashed; the reconciler may re-drive it
    NOT_ELIGIBLE = "not_eligible"  # the study holds nothing the pathway can use, or the order changed
    NOT_MEASURABLE = "not_measurable"  # doubtful input or an implausible model answer: no conclusion
    CANCELLED = "cancelled"  # the order was cancelled before the run started


OPEN = frozenset({RunStatus.WAITING, RunStatus.READY})  # an order's cancellation or change may still stop these
REDRIVABLE = frozenset({RunStatus.READY, RunStatus.RUNNING, RunStatus.FAILED})  # what the reconciler re-drives
# A run in one of these has nothing left to do for its order (dead letters and failures still do).
DONE = frozenset({RunStatus.COMPLETED, RunStatus.REJECTED, RunStatus.NOT_ELIGIBLE, RunStatus.NOT_MEASURABLE,
                  RunStatus.CANCELLED})
FINISHED = frozenset({
    RunStatus.AWAITING_REVIEW, RunStatus.COMPLETED, RunStatus.REJECTED, RunStatus.DEAD_LETTERED, RunStatus.FAILED,
    RunStatus.NOT_ELIGIBLE, RunStatus.NOT_MEASURABLE, RunStatus.CANCELLED,
})

_LATE_IMAGES_RERUN = RunStatus.READY  # a run that read the study is run again on its next revision
TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    RunStatus.WAITING: frozenset({RunStatus.READY, RunStatus.CANCELLED, RunStatus.NOT_ELIGIBLE}),
    RunStatus.READY: frozenset({RunStatus.RUNNING, RunStatus.CANCELLED, RunStatus.NOT_ELIGIBLE}),
    RunStatus.RUNNING: frozenset({
        RunStatus.AWAITING_REVIEW, RunStatus.COMPLETED, RunStatus.DEAD_LETTERED, RunStatus.FAILED,
        RunStatus.NOT_ELIGIBLE, RunStatus.NOT_MEASURABLE,
    }),
    RunStatus.FAILED: frozenset({RunStatus.RUNNING, _LATE_IMAGES_RERUN}),
    RunStatus.COMPLETED: frozenset({_LATE_IMAGES_RERUN, RunStatus.DEAD_LETTERED}),  # a reviewed final dead-lettered
    RunStatus.NOT_ELIGIBLE: frozenset({_LATE_IMAGES_RERUN}),
    RunStatus.NOT_MEASURABLE: frozenset({_LATE_IMAGES_RERUN}),
    RunStatus.AWAITING_REVIEW: frozenset({RunStatus.COMPLETED, RunStatus.REJECTED, RunStatus.DEAD_LETTERED}),
    RunStatus.REJECTED: frozenset(),
    RunStatus.DEAD_LETTERED: frozenset(),
    RunStatus.CANCELLED: frozenset(),
}


class IllegalRunTransition(ValueError):
    """A status change the run's life cycle does not allow (a bug, never silently applied)."""


def move(session: Session, run: PathwayRun, to: RunStatus, *, actor: str, reason: str | None = None,
         action: str | None = None, **detail: Any) -> None:
    """Move `run` to `to` (staying put is allowed: a re-drive, a new reason) and audit it as
    `action` (default `run.<status>`) with the status it came from. An illegal move raises."""
    current = RunStatus(run.status)
    if to != current and to not in TRANSITIONS[current]:
        raise IllegalRunTransition(f"pathway run {run.id}: {current} -> {to} is not allowed")
    now = utcnow()
    run.status, run.status_reason = to.value, reason
    if to == RunStatus.READY:
        run.started_at = run.finished_at = None
    elif to == RunStatus.RUNNING and run.started_at is None:
        run.started_at = now
    elif to in FINISHED:
        run.finished_at = now
    audit(session, actor, action or f"run.{to.value}", "pathway_run", run.id, status_from=current.value,
          reason=reason, **detail)
    if to != current:
        _follow_order(session, run, to, actor)


def _follow_order(session: Session, run: PathwayRun, to: RunStatus, actor: str) -> None:
    """The order follows its runs: in progress once one starts, completed once every run is done."""
    from integrations.db.models import Order
    from integrations.db.orders import OrderStatus, transition

    order = session.get(Order, run.order_id)
    if to == RunStatus.RUNNING and order.status == OrderStatus.RECEIVED:
        transition(session, order, OrderStatus.IN_PROGRESS, actor=actor, action="order.in_progress", run_id=run.id)
    elif to in DONE and order.status == OrderStatus.IN_PROGRESS:
        others = session.exec(select(PathwayRun.status).where(PathwayRun.order_id == order.id,
                                                              PathwayRun.id != run.id)).all()
        if all(RunStatus(s) in DONE for s in others):
            transition(session, order, OrderStatus.COMPLETED, actor=actor, action="order.completed", run_id=run.id)


def set_status(run_id: str, to: RunStatus, *, reason: str | None = None, flow_run_id: str | None = None,
               actor: str = "pathway") -> None:
    """`move` in its own transaction (a pathway flow's start and ending, a review's outcome)."""
    with session_scope() as session:
        run = session.get(PathwayRun, run_id)
        if flow_run_id:
            run.flow_run_id = flow_run_id
        move(session, run, RunStatus(to), actor=actor, reason=reason)


class Start(StrEnum):
    STARTED = "started"
    HELD_ELSEWHERE = "held-elsewhere"  # another live flow run (or the reconciler) holds the lease
    FINISHED = "finished"  # nothing to re-drive: a repeated trigger, or a run that ended meanwhile


def start(run_id: str, owner: str, lease_seconds: float, *, flow_run_id: str, handed_from: str | None = None) -> Start:
    """Claim a run for `owner` and mark it running, in one transaction, only while it is still to be
    done (ready, running with a lapsed lease, failed). `handed_from`: the reconciler that claimed
    it passes its lease on. A repeated trigger for a finished run starts nothing."""
    now = utcnow()
    claimable = (PathwayRun.claimed_by == handed_from if handed_from else
                 or_(PathwayRun.claimed_until.is_(None), PathwayRun.claimed_until < now, PathwayRun.claimed_by == owner))
    with session_scope() as session:
        claimed = session.exec(
            update(PathwayRun)
            .where(PathwayRun.id == run_id, claimable, PathwayRun.status.in_(tuple(REDRIVABLE)))
            .values(claimed_by=owner, claimed_until=now + dt.timedelta(seconds=lease_seconds))
        ).rowcount == 1
        run = session.get(PathwayRun, run_id)
        if not claimed:
            return Start.FINISHED if RunStatus(run.status) not in REDRIVABLE else Start.HELD_ELSEWHERE
        run.flow_run_id = flow_run_id
        move(session, run, RunStatus.RUNNING, actor="pathway")
    return Start.STARTED


def fail_if_held(run_id: str, owner: str, reason: str) -> bool:
    """A flow run that failed or crashed marks its run failed and gives up its lease, in one
    transaction, only while it still holds the lease: a flow refused the run (another live flow
    run holds it) never marks that other flow's run failed. True when it did."""
    with session_scope() as session:
        run = session.get(PathwayRun, run_id)
        if run is None or run.claimed_by != owner:
            return False
        if run.status == RunStatus.RUNNING:  # a run not yet started stays ready for the reconciler
            move(session, run, RunStatus.FAILED, actor="pathway", reason=reason)
        run.claimed_by = run.claimed_until = None
        return True
