"""Ledger operations for orders from FHIR: intake (shared with HL7) and cancellation.

New orders go through `ledger.record_order`, the HL7 path, so that "commit before the
answer", idempotent resends and one-order-across-front-doors hold the same way. A
ServiceRequest whose status becomes `revoked` or `entered-in-error` cancels the order the
way an HL7 ORC-1 "CA" does: the order becomes `cancelled` and its pathway runs that have
not started are cancelled; runs already running or finished are left, and say so.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from integrations.db import ledger
from integrations.db.engine import session_scope
from integrations.db.models import InboundMessage, Order, PathwayRun, utcnow
from integrations.db.order_identity import same_order
from pathways.orders import OrderRequest
from pathways.registry import Registry

CANCELLABLE_RUN_STATES = {"waiting", "ready"}


@dataclass(frozen=True)
class CancelOutcome:
    order_id: str | None  # None: no such order
    cancelled_run_ids: tuple[str, ...]
    kept_run_ids: tuple[str, ...]  # running or finished: a cancellation cannot undo them
    duplicate: bool  # this exact cancellation was received before


def cancel_order(parsed: OrderRequest, raw: str, actor: str = "fhir", reason: str = "") -> CancelOutcome:
    """Record the cancelling message and cancel the order it names, in one transaction."""
    with session_scope() as session:
        seen = ledger.received_message(session, parsed.sending_application, parsed.sending_facility, parsed.control_id)
        order = same_order(session, parsed.placer_order_number, parsed.accession_number)
        if order is None:
            return CancelOutcome(None, (), (), duplicate=seen is not None)
        runs = session.exec(select(PathwayRun).where(PathwayRun.order_id == order.id)).all()
        if seen is not None:
            return CancelOutcome(order.id, tuple(r.id for r in runs if r.status == "cancelled"),
                                 tuple(r.id for r in runs if r.status != "cancelled"), duplicate=True)
        message = InboundMessage(
            protocol=parsed.protocol,
            sender_application=parsed.sending_application,
            sender_facility=parsed.sending_facility,
            control_id=parsed.control_id,
            message_type=f"{parsed.message_type}:{parsed.order_control}",
            raw=raw,
        )
        session.add(message)
        cancelled, kept = [], []
        for run in runs:
            if run.status in CANCELLABLE_RUN_STATES:
                run.status, run.status_reason, run.finished_at = "cancelled", reason or "order cancelled", utcnow()
                cancelled.append(run.id)
            elif run.status != "cancelled":
                kept.append(run.id)
        order.status = "cancelled"
        session.flush()
        ledger.audit(session, actor, "order.cancelled", "order", order.id, message_id=message.id,
                     cancelled_runs=cancelled, kept_runs=kept, reason=reason)
        return CancelOutcome(order.id, tuple(cancelled), tuple(kept), duplicate=False)


def record_fhir_order(
    parsed: OrderRequest, raw: str, registry: Registry, actor: str = "fhir", reason: str = ""
) -> ledger.OrderOutcome | CancelOutcome:
    """New order (NW) or cancellation (CA) from a ServiceRequest; committed on return."""
    if parsed.order_control == "CA":
        return cancel_order(parsed, raw, actor=actor, reason=reason)
    try:
        return ledger.record_order(parsed, raw, registry, actor=actor)
    except IntegrityError:  # a changed version of an order this sender sent before
        return _record_repeat(parsed, raw, actor)


def _record_repeat(parsed: OrderRequest, raw: str, actor: str) -> ledger.OrderOutcome:
    """Keep the changed ServiceRequest as received; the order stands as first recorded."""
    with session_scope() as session:
        order = session.exec(
            select(Order).where(Order.sender == parsed.sender, Order.placer_order_number == parsed.placer_order_number)
        ).one()
        message = InboundMessage(
            protocol=parsed.protocol, sender_application=parsed.sending_application,
            sender_facility=parsed.sending_facility, control_id=parsed.control_id,
            message_type=parsed.message_type, raw=raw, status="duplicate",
        )
        session.add(message)
        session.flush()
        ledger.audit(session, actor, "order.update-not-applied", "order", order.id, message_id=message.id)
        runs = session.exec(select(PathwayRun.id).where(PathwayRun.order_id == order.id)).all()
        return ledger.OrderOutcome(order.id, tuple(runs), duplicate=True, eligible=bool(runs))
