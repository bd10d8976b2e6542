"""Ledger operations of the HL7 front door, each run inside a caller's session.

The MLLP listener batches several messages into one transaction (group commit), so these
functions take the session rather than opening their own; the caller commits, and only
then acknowledges. Audit details carry ids, never patient identifiers.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from typing import Any

from sqlalchemy import insert
from sqlalchemy import select as sa_select
from sqlmodel import Session, select

from integrations.db.ledger import (
    OrderOutcome,
    audit,
    audit_values,
    create_pathway_runs,
    order_values,
    pathway_run_values,
    procedure_mapping,
)
from integrations.db.models import AuditEvent, Hl7Quarantine, InboundMessage, Order, PathwayRun, column_values
from pathways.orders import OrderRequest
from pathways.registry import Registry

OPEN_RUN_STATES = ("waiting", "ready")
CLOSED_ORDER_STATES = ("cancelled", "completed")


@dataclass(frozen=True)
class PatientUpdate:
    """Demographics from an ADT^A08/A31 (identity data: ledger only, never logs)."""

    nhs_number: str | None
    local_patient_id: str | None
    family_name: str
    given_name: str
    birth_date: dt.date | None
    sex: str


@dataclass(frozen=True)
class OrderChange:
    order_id: str
    action: str  # cancelled | changed | status-noted
    run_ids: tuple[str, ...]  # runs created or closed by the change


def stored_ack(session: Session, application: str, facility: str, control_id: str) -> str | None:
    """Only the ACK stored for that message (one column, no ORM object: asked for every message)."""
    query = sa_select(InboundMessage.ack).where(InboundMessage.sender_application == application,
                                                InboundMessage.sender_facility == facility,
                                                InboundMessage.control_id == control_id)
    return session.connection().execute(query).scalar()


def add_message(session: Session, *, application: str, facility: str, control_id: str, message_type: str,
                raw: str, status: str = "accepted", error: str | None = None) -> InboundMessage:
    message = InboundMessage(**message_values(application=application, facility=facility, control_id=control_id,
                                              message_type=message_type, raw=raw, status=status, error=error))
    session.add(message)
    session.flush()  # rows referring to it (order, quarantine) are inserted after it
    return message


def message_values(*, application: str, facility: str, control_id: str, message_type: str, raw: str,
                   status: str = "accepted", error: str | None = None, ack: str | None = None) -> dict[str, Any]:
    """An inbound HL7 message's columns."""
    return column_values(InboundMessage, protocol="hl7v2", sender_application=application, sender_facility=facility,
                         control_id=control_id, message_type=message_type, raw=raw, status=status, error=error,
                         ack=ack)


def _find_order(session: Session, parsed: OrderRequest) -> Order | None:
    return session.exec(
        select(Order).where(Order.sender == parsed.sender, Order.placer_order_number == parsed.placer_order_number)
    ).first()


def add_order(session: Session, parsed: OrderRequest, message: dict[str, Any], registry: Registry) -> OrderOutcome:
    """A new order (NW) with its pathway runs, inserted with the message that carried it (`message`:
    `message_values`, its ACK included). An order already known by placer number is not created
    twice: the message is kept, marked duplicate. Core INSERTs and no ORM objects, because this
    is the intake's hot path: about 1 ms less per order (bench/hl7_intake.py)."""
    session.flush()  # ORM changes of earlier messages in the same group commit go first
    connection = session.connection()
    existing = connection.execute(sa_select(Order.id, Order.status).where(
        Order.sender == parsed.sender, Order.placer_order_number == parsed.placer_order_number)).first()
    if existing is not None:
        message["status"] = "duplicate"
        connection.execute(insert(InboundMessage.__table__), [message])
        runs = connection.execute(sa_select(PathwayRun.id).where(PathwayRun.order_id == existing.id)).scalars().all()
        connection.execute(insert(AuditEvent.__table__), [
            audit_values("hl7", "order.duplicate-suppressed", "order", existing.id, message_id=message["id"])])
        return OrderOutcome(existing.id, tuple(runs), duplicate=True, eligible=existing.status != "not_eligible")
    order = order_values(parsed, message["id"])
    runs = pathway_run_values(order, registry)
    waiting = [r for r in runs if r["status"] == "waiting"]
    if not waiting:
        order["status"] = "not_eligible"
    reason = None if waiting else ("no pathway claims this procedure and modality" if not runs else "patient not eligible")
    connection.execute(insert(InboundMessage.__table__), [message])
    connection.execute(insert(Order.__table__), [order])
    if runs:
        connection.execute(insert(PathwayRun.__table__), runs)
    connection.execute(insert(AuditEvent.__table__), [
        audit_values("hl7", "order.received", "order", order["id"], pathways=[r["pathway"] for r in runs],
                     status=order["status"], reason=reason, **procedure_mapping(registry, parsed))])
    return OrderOutcome(order["id"], tuple(r["id"] for r in waiting), duplicate=False, eligible=bool(waiting))


def _close_runs(session: Session, order: Order, status: str, reason: str) -> list[str]:
    runs = session.exec(
        select(PathwayRun).where(PathwayRun.order_id == order.id, PathwayRun.status.in_(OPEN_RUN_STATES))
    ).all()
    for run in runs:
        run.status, run.status_reason = status, reason
        run.finished_at = dt.datetime.now(dt.UTC)
    return [r.id for r in runs]


def cancel_order(session: Session, parsed: OrderRequest, message: InboundMessage) -> OrderChange | None:
    """CA: cancel the order and every run not yet started. None when the order is unknown."""
    order = _find_order(session, parsed)
    if order is None:
        return None
    closed = _close_runs(session, order, "cancelled", "order cancelled by the placer (ORC-1 CA)")
    if order.status not in CLOSED_ORDER_STATES:
        order.status = "cancelled"
    audit(session, "hl7", "order.cancelled", "order", order.id, message_id=message.id, runs=closed)
    return OrderChange(order.id, "cancelled", tuple(closed))


_CHANGEABLE = ("filler_order_number", "accession_number", "procedure_code", "procedure_system", "procedure_text",
               "modality", "priority", "clinical_indication", "ordering_clinician", "ordering_location")


def change_order(session: Session, parsed: OrderRequest, message: InboundMessage, registry: Registry) -> OrderChange | None:
    """XO: apply the changed order details; pathways are re-matched when the procedure changes."""
    order = _find_order(session, parsed)
    if order is None:
        return None
    changed = [name for name in _CHANGEABLE if getattr(parsed, name) and getattr(parsed, name) != getattr(order, name)]
    for name in changed:
        setattr(order, name, getattr(parsed, name))
    touched: list[str] = []
    if order.status not in CLOSED_ORDER_STATES and {"procedure_code", "modality"} & set(changed):
        claimed = {s.name for s in registry.match(order.procedure_code, order.modality, order.procedure_system, order.sender)}
        existing = session.exec(select(PathwayRun).where(PathwayRun.order_id == order.id)).all()
        for run in existing:
            if run.pathway not in claimed and run.status in OPEN_RUN_STATES:
                run.status, run.status_reason = "not_eligible", "order changed: procedure no longer claimed"
                touched.append(run.id)
        new = create_pathway_runs(session, order, registry, skip=frozenset(r.pathway for r in existing))
        touched += [r.id for r in new if r.status == "waiting"]
        open_runs = [r for r in [*existing, *new] if r.status in OPEN_RUN_STATES]
        order.status = "received" if open_runs else "not_eligible"
    audit(session, "hl7", "order.changed", "order", order.id, message_id=message.id, fields=changed, runs=touched)
    return OrderChange(order.id, "changed", tuple(touched))


def note_status(session: Session, parsed: OrderRequest, message: InboundMessage) -> OrderChange | None:
    """SC: the placer reports a status; recorded in the audit trail only."""
    order = _find_order(session, parsed)
    if order is None:
        return None
    audit(session, "hl7", "order.status-noted", "order", order.id, message_id=message.id)
    return OrderChange(order.id, "status-noted", ())


def update_patient(session: Session, update: PatientUpdate, message: InboundMessage) -> list[str]:
    """ADT^A08/A31: refresh demographics on the patient's open orders; returns their ids."""
    clauses = []
    if update.nhs_number:
        clauses.append(Order.nhs_number == update.nhs_number)
    if update.local_patient_id:
        clauses.append(Order.local_patient_id == update.local_patient_id)
    if not clauses:
        return []
    from sqlalchemy import or_

    orders = session.exec(select(Order).where(or_(*clauses), Order.status.not_in(CLOSED_ORDER_STATES))).all()
    for order in orders:
        if update.nhs_number and order.nhs_number and update.nhs_number != order.nhs_number:
            continue  # the same hospital number under another NHS number: never merge silently
        order.family_name, order.given_name = update.family_name or order.family_name, update.given_name or order.given_name
        order.birth_date = update.birth_date or order.birth_date
        order.sex = update.sex if update.sex in ("F", "M") else order.sex
        if update.nhs_number and not order.nhs_number:
            order.nhs_number = update.nhs_number
    ids = [o.id for o in orders if not (update.nhs_number and o.nhs_number != update.nhs_number)]
    audit(session, "hl7", "patient.updated", "inbound_message", message.id, orders=ids)
    return ids


def quarantine(session: Session, *, raw: bytes, reason: str, location: str, peer: str,
               control_id: str | None = None, message_id: str | None = None, ack: str | None = None,
               size: int | None = None) -> str:
    """Keep rejected bytes exactly as received (first 64 KiB of an oversized frame)."""
    row = Hl7Quarantine(peer=peer, reason=reason[:500], location=location, control_id=control_id,
                        message_id=message_id, size_bytes=size or len(raw), raw=raw, ack=ack)
    session.add(row)
    audit(session, "hl7", "message.quarantined", "hl7_quarantine", row.id, location=location)
    return row.id
