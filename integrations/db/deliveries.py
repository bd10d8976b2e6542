"""Operator actions on the outbox: list, re-queue, discard, pause and resume (issue 22).

The only writer of these operator transitions; each is audited with the operator's name.
Status changes are conditional UPDATEs (`WHERE status IN ...`), so two operators re-queueing
the same dead letter re-queue it once, and a row a sender holds is never changed under it.

A re-queued row is `pending` and due now; the outbox (`ops.deliveries_due`, the reconciler's
pass) then sends it once under its lease, like any due row. Its attempt count and the audit
trail of earlier attempts are kept; `first_attempt_at` is cleared so its dead-letter window
(RetrySchedule.window_s) starts again at the next attempt: re-queueing after the peer is fixed
gets a full window, not an immediate dead letter.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import delete, update
from sqlmodel import select

from integrations.db.engine import session_scope
from integrations.db.ledger import audit, study_key
from integrations.db.models import (
    Delivery,
    DeliveryStatus,
    DestinationPause,
    Order,
    PathwayRun,
    Result,
    may_move_from,
    utcnow,
)

REQUEUEABLE = may_move_from(DeliveryStatus.PENDING, DeliveryStatus.DEAD_LETTER)
DISCARDABLE = may_move_from(DeliveryStatus.DISCARDED, DeliveryStatus.DEAD_LETTER)


@dataclass(frozen=True)
class DeliveryRow:
    """One outbox row as ops see it: pseudonymous keys, the peer's last words (truncated)."""

    delivery_id: str
    destination: str
    pathway: str
    study_key: str
    status: str
    result_status: str
    attempts: int
    last_response: str


@dataclass(frozen=True)
class Selection:
    """Which outbox rows an operator means. At least one criterion is required to act."""

    delivery_ids: tuple[str, ...] = ()
    destination: str | None = None
    study_key: str | None = None
    accession: str | None = None

    @property
    def empty(self) -> bool:
        return not (self.delivery_ids or self.destination or self.study_key or self.accession)


def _selected(session, selection: Selection, statuses: tuple[str, ...] | None) -> list[tuple[Delivery, str, str]]:
    """(row, pathway, study key) for the rows matching the selection (and statuses)."""
    query = (select(Delivery, Result.pathway, Result.study_uid)
             .join(Result, Result.id == Delivery.result_id))
    if statuses:
        query = query.where(Delivery.status.in_(statuses))
    if selection.delivery_ids:
        query = query.where(Delivery.id.in_(selection.delivery_ids))
    if selection.destination:
        query = query.where(Delivery.destination == selection.destination)
    if selection.accession:  # order by accession → its runs → their results' rows
        query = (query.join(PathwayRun, PathwayRun.id == Result.run_id)
                 .join(Order, Order.id == PathwayRun.order_id)
                 .where(Order.accession_number == selection.accession))
    rows = session.exec(query.order_by(Delivery.created_at)).all()
    out = [(d, pathway, study_key(uid)) for d, pathway, uid in rows]
    if selection.study_key:  # the key is an HMAC of the UID: compare after keying
        out = [r for r in out if r[2] == selection.study_key]
    return out


def list_deliveries(selection: Selection, statuses: tuple[str, ...] | None = (DeliveryStatus.DEAD_LETTER,)) -> list[DeliveryRow]:
    with session_scope() as session:
        return [DeliveryRow(d.id, d.destination, pathway, key, d.status, d.result_status, d.attempts,
                            (d.last_response or "")[:200])
                for d, pathway, key in _selected(session, selection, statuses)]


def requeue(selection: Selection, actor: str, reason: str = "") -> list[str]:
    """Dead letters selected → pending, due now, window restarted. Returns the ids re-queued."""
    if selection.empty:
        raise ValueError("select deliveries to re-queue (ids, destination, study key or accession)")
    now = utcnow()
    done = []
    with session_scope() as session:
        for row, _, _ in _selected(session, selection, REQUEUEABLE):
            changed = session.exec(
                update(Delivery).where(Delivery.id == row.id, Delivery.status.in_(REQUEUEABLE))
                .values(status=DeliveryStatus.PENDING, next_attempt_at=now, first_attempt_at=None)
            )
            if changed.rowcount == 1:
                audit(session, actor, "delivery.requeued", "delivery", row.id, destination=row.destination,
                      previous=row.status, attempts=row.attempts, reason=reason)
                done.append(row.id)
    return done


def discard(selection: Selection, actor: str, reason: str) -> list[str]:
    """Dead letters selected → discarded (terminal: ops decided not to send). A reason is required."""
    if selection.empty:
        raise ValueError("select deliveries to discard (ids, destination, study key or accession)")
    if not reason.strip():
        raise ValueError("say why the deliveries are discarded (--reason)")
    done = []
    with session_scope() as session:
        for row, _, _ in _selected(session, selection, DISCARDABLE):
            changed = session.exec(
                update(Delivery).where(Delivery.id == row.id, Delivery.status.in_(DISCARDABLE))
                .values(status=DeliveryStatus.DISCARDED, next_attempt_at=None)
            )
            if changed.rowcount == 1:
                audit(session, actor, "delivery.discarded", "delivery", row.id, destination=row.destination,
                      attempts=row.attempts, reason=reason)
                done.append(row.id)
    return done


def paused_destinations() -> dict[str, DestinationPause]:
    with session_scope() as session:
        return {p.destination: p for p in session.exec(select(DestinationPause)).all()}


def is_paused(destination: str) -> bool:
    with session_scope() as session:
        return session.get(DestinationPause, destination) is not None


def pause(destination: str, actor: str, reason: str = "") -> bool:
    """Stop the outbox attempting `destination`; False when it was already paused."""
    with session_scope() as session:
        if session.get(DestinationPause, destination) is not None:
            return False
        session.add(DestinationPause(destination=destination, paused_by=actor, reason=reason))
        audit(session, actor, "destination.paused", "destination", destination, reason=reason)
        return True


def resume(destination: str, actor: str, reason: str = "", now: dt.datetime | None = None) -> int | None:
    """Let the outbox attempt `destination` again. The pending rows' dead-letter windows move on
    by the time paused (a pause never expires a delivery). Returns how many rows wait to be
    sent, None when the destination was not paused."""
    now = now or utcnow()
    with session_scope() as session:
        paused = session.get(DestinationPause, destination)
        if paused is None:
            return None
        held_for = now - paused.paused_at
        rows = session.exec(select(Delivery).where(Delivery.destination == destination,
                                                   Delivery.status == DeliveryStatus.PENDING)).all()
        for row in rows:
            if row.first_attempt_at is not None:
                row.first_attempt_at = row.first_attempt_at + held_for
        session.exec(delete(DestinationPause).where(DestinationPause.destination == destination))
        audit(session, actor, "destination.resumed", "destination", destination, reason=reason,
              paused_seconds=round(held_for.total_seconds()), waiting=len(rows))
        return len(rows)


def not_paused():
    """`Delivery.destination` is not paused (for `ops.deliveries_due`)."""
    return Delivery.destination.not_in(select(DestinationPause.destination))


def delivered_receipts(kind: str, destination: str | None = None) -> list[tuple[str, str]]:
    """(destination, the peer's receipt) for every delivered outbox row of a kind, oldest first."""
    with session_scope() as session:
        query = select(Delivery.destination, Delivery.last_response).where(Delivery.kind == kind,
                                                                           Delivery.status == DeliveryStatus.DELIVERED)
        if destination:
            query = query.where(Delivery.destination == destination)
        return [(name, receipt or "") for name, receipt in session.exec(query.order_by(Delivery.delivered_at)).all()]
