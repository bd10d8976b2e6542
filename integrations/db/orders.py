"""The order record: the only writer of `imaging_order` (and of its audit rows), for every door.

HL7 v2 (the MLLP intake), FHIR (the ServiceRequest receiver) and the demo record, cancel and
change orders here, each inside the caller's session: the MLLP listener batches several
messages into one transaction (group commit); the FHIR door commits message and order together.
The caller commits, and only then answers.

One identity rule for every door (`identify`): an incoming order is an order already
recorded when it has the same (sender, placer order number) or the same accession number.
So the same examination sent as FHIR ServiceRequest and as HL7 ORM, or resent, is one order
and one set of pathway runs. Two orders are never merged when they differ in patient
(pseudonymous patient key) or accession number, whatever identifiers they share: such a
message is a `Conflict`, refused by the door (HL7 AE with ERR, FHIR 409) and audited, and the
order already recorded is left as it was. A FHIR `requisition` (a group identifier several
ServiceRequests share) is never an order's identity (see integrations/fhir/servicerequest.py).

Order status changes go through `transition`, which checks the move against `TRANSITIONS`
and writes the audit event. Audit details carry ids, never patient identifiers.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum
from collections.abc import Callable
from typing import Any

from sqlalchemy import and_, insert, or_
from sqlalchemy import select as sa_select
from sqlmodel import Session, select

from integrations.db import messages
from integrations.db.engine import session_scope
from integrations.db import surveillance
from integrations.db.ledger import audit, audit_values, patient_key
from integrations.db.runs import OPEN as OPEN_RUNS, RunStatus, move as move_run
from integrations.db.models import AuditEvent, InboundMessage, Order, PathwayRun, column_values, utcnow
from pathways.orders import OrderRequest, PatientMerge, PatientUpdate, age_on
from pathways.registry import Registry


class OrderStatus(StrEnum):
    """An order's status; the stored strings are the values (no data migration)."""

    RECEIVED = "received"
    NOT_ELIGIBLE = "not_eligible"  # no pathway takes it (visible, not dropped)
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.RECEIVED: frozenset({OrderStatus.NOT_ELIGIBLE, OrderStatus.IN_PROGRESS, OrderStatus.CANCELLED}),
    OrderStatus.NOT_ELIGIBLE: frozenset({OrderStatus.RECEIVED, OrderStatus.CANCELLED}),  # re-matched by a change
    OrderStatus.IN_PROGRESS: frozenset({OrderStatus.COMPLETED, OrderStatus.CANCELLED}),
    OrderStatus.COMPLETED: frozenset(),
    OrderStatus.CANCELLED: frozenset(),
}
CLOSED = (OrderStatus.CANCELLED, OrderStatus.COMPLETED)


class IllegalTransition(ValueError):
    pass


@dataclass(frozen=True)
class OrderOutcome:
    """A new order (NW) as recorded: its id, its waiting runs, whether it was already known."""

    order_id: str
    run_ids: tuple[str, ...]
    duplicate: bool
    eligible: bool


@dataclass(frozen=True)
class OrderChange:
    """A cancellation (CA), change (XO) or status note (SC) applied to an order."""

    order_id: str
    action: str  # cancelled | changed | status-noted
    run_ids: tuple[str, ...]  # runs created, closed or cancelled by the change
    kept_run_ids: tuple[str, ...] = ()  # running or finished: a cancellation cannot undo them
    duplicate: bool = False  # this exact message was received before


@dataclass(frozen=True)
class Conflict:
    """A message naming an order already recorded, but for another patient or accession.

    `field`: the identifier at fault: "placer" (placer order number) or "accession". `text`
    says what is wrong without any patient identifier (safe for an ACK or OperationOutcome)."""

    order_id: str  # the order already recorded (for the audit; not told to the sender)
    field: str
    text: str


def order_values(parsed: OrderRequest, message_id: str | None) -> dict[str, Any]:
    """The columns of an incoming order's row, whatever front door it came through."""
    return column_values(
        Order,
        sender=parsed.sender,
        placer_order_number=parsed.placer_order_number,
        placer_system=parsed.placer_system,
        placer_namespace=parsed.placer_namespace,
        filler_order_number=parsed.filler_order_number,
        accession_number=parsed.accession_number,
        patient_key=patient_key_of(parsed),
        nhs_number=parsed.nhs_number,
        local_patient_id=parsed.local_patient_id,
        family_name=parsed.family_name,
        given_name=parsed.given_name,
        birth_date=parsed.birth_date,
        sex=parsed.sex,
        procedure_code=parsed.procedure_code,
        procedure_system=parsed.procedure_system,
        procedure_text=parsed.procedure_text,
        modality=parsed.modality,
        priority=parsed.priority,
        clinical_indication=parsed.clinical_indication,
        ordering_clinician=parsed.ordering_clinician,
        ordering_location=parsed.ordering_location,
        clinical_context=parsed.clinical_context,
        message_id=message_id,
    )


def patient_key_of(parsed: OrderRequest) -> str:
    """The pseudonymous patient key: from the NHS number, else the local id and its authority."""
    return patient_key(parsed.nhs_number or f"{parsed.local_id_authority}:{parsed.local_patient_id}")


def pathway_run_values(order: dict[str, Any], registry: Registry, skip: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
    """The run rows for an order's columns: one per pathway claiming its procedure and modality;
    outside a pathway's age range the run is recorded as not eligible, visibly."""
    rows = []
    age = age_on(order["birth_date"], dt.date.today())
    for spec in registry.match(order["procedure_code"], order["modality"], order["procedure_system"], order["sender"]):
        if spec.name in skip:
            continue
        low, high = spec.eligibility.min_age_years, spec.eligibility.max_age_years
        row = column_values(PathwayRun, order_id=order["id"], pathway=spec.name, pathway_version=spec.version)
        if (low is not None and (age is None or age < low)) or (high is not None and age is not None and age > high):
            row["status"], row["status_reason"] = RunStatus.NOT_ELIGIBLE.value, "patient age outside the pathway's range"
        rows.append(row)
    return rows


def procedure_mapping(registry: Registry, parsed: OrderRequest) -> dict[str, str]:
    """For the audit: the standard concept a local or NICIP procedure code was taken to mean."""
    standard = registry.standard_procedure(parsed.procedure_system, parsed.procedure_code, parsed.sender)
    return {"procedure_means": f"{standard.system}|{standard.code}"} if standard is not None else {}


# ---------------------------------------------------------------- identity

_IDENTITY_COLUMNS = (Order.id, Order.status, Order.sender, Order.placer_order_number, Order.accession_number,
                     Order.patient_key, Order.received_at)


def identify(session: Session, parsed: OrderRequest, *, new: bool = True) -> str | Conflict | None:
    """The id of the order this message names, a `Conflict`, or None (no such order).

    Same order: the same (sender, placer order number), or the same accession number (across
    doors and senders). Never the same order: another patient; for a new order (`new`), also
    another accession under the same sender's placer number, or placer number and accession
    naming two different orders. A change (XO) may carry a new accession: `new=False` finds
    the order by placer number first and lets the accession differ."""
    session.flush()  # ORM changes of earlier messages in the same group commit go first
    by_placer = and_(Order.sender == parsed.sender, Order.placer_order_number == parsed.placer_order_number)
    rows = session.connection().execute(
        sa_select(*_IDENTITY_COLUMNS).where(or_(by_placer, Order.accession_number == parsed.accession_number))
        .order_by(Order.received_at)
    ).all()
    if not rows:
        return None
    placer = [r for r in rows if r.sender == parsed.sender and r.placer_order_number == parsed.placer_order_number]
    accession = [r for r in rows if r.accession_number == parsed.accession_number]
    key = patient_key_of(parsed)
    if placer:
        row = placer[0]
        if row.patient_key != key:
            return Conflict(row.id, "placer", "placer order number already names an order for another patient")
        if new and row.accession_number != parsed.accession_number:
            return Conflict(row.id, "placer", "placer order number already names an order with another "
                                              "accession number")
    for other in accession:
        if other.patient_key != key:
            return Conflict(other.id, "accession", "accession number already names an order for another patient")
    if new and placer and accession and placer[0].id != accession[0].id:
        return Conflict(accession[0].id, "accession", "accession number already names another order")
    return (placer or accession)[0].id


def _refuse(session: Session, conflict: Conflict, parsed: OrderRequest, message_id: str, actor: str) -> Conflict:
    audit(session, actor, "order.conflict", "order", conflict.order_id, message_id=message_id,
          field=conflict.field, reason=conflict.text, order_control=parsed.order_control, protocol=parsed.protocol)
    return conflict


# ---------------------------------------------------------------- new orders

def record(session: Session, parsed: OrderRequest, message: dict[str, Any], registry: Registry, *,
           actor: str, answer: Callable[[Conflict | None], str] | None = None) -> OrderOutcome | Conflict:
    """A new order (NW) with its pathway runs, inserted with the message that carried it.

    `message`: `messages.message_values(...)`, inserted here so the order can refer to it;
    its `status` and `error` are set to what became of it (accepted | duplicate | rejected),
    and its stored answer (`ack`) to `answer(conflict or None)` when the door gives one. The same order already recorded (see `identify`)
    is not created twice: the message is kept, marked duplicate, and audited. Core INSERTs and
    no ORM objects: this is the HL7 intake's hot path (bench/hl7_intake.py)."""
    found = identify(session, parsed)
    connection = session.connection()
    if answer is not None:
        message["ack"] = answer(found if isinstance(found, Conflict) else None)
    if isinstance(found, Conflict):
        message["status"], message["error"] = "rejected", found.text
        connection.execute(insert(InboundMessage.__table__), [message])
        return _refuse(session, found, parsed, message["id"], actor)
    if found is not None:
        message["status"] = "duplicate"
        connection.execute(insert(InboundMessage.__table__), [message])
        connection.execute(insert(AuditEvent.__table__), [
            audit_values(actor, "order.duplicate", "order", found, message_id=message["id"], protocol=parsed.protocol)])
        return _known(session, found, duplicate=True)
    order = order_values(parsed, message["id"])
    runs = pathway_run_values(order, registry)
    waiting = [r for r in runs if r["status"] == RunStatus.WAITING]
    order["status"] = OrderStatus.RECEIVED.value if waiting else OrderStatus.NOT_ELIGIBLE.value
    reason = None if waiting else ("no pathway claims this procedure and modality" if not runs else "patient not eligible")
    connection.execute(insert(InboundMessage.__table__), [message])
    connection.execute(insert(Order.__table__), [order])
    if runs:
        connection.execute(insert(PathwayRun.__table__), runs)
    connection.execute(insert(AuditEvent.__table__), [
        audit_values(actor, "order.received", "order", order["id"], pathways=[r["pathway"] for r in runs],
                     status=order["status"], reason=reason, protocol=parsed.protocol, **procedure_mapping(registry, parsed))])
    return OrderOutcome(order["id"], tuple(r["id"] for r in waiting), duplicate=False, eligible=bool(waiting))


def _known(session: Session, order_id: str, *, duplicate: bool) -> OrderOutcome:
    connection = session.connection()
    status = connection.execute(sa_select(Order.status).where(Order.id == order_id)).scalar()
    runs = connection.execute(sa_select(PathwayRun.id).where(PathwayRun.order_id == order_id)).scalars().all()
    return OrderOutcome(order_id, tuple(runs), duplicate=duplicate, eligible=status != OrderStatus.NOT_ELIGIBLE)


def replay(session: Session, parsed: OrderRequest) -> OrderOutcome | OrderChange | Conflict | None:
    """What the ledger says now about a message received before (same control id): writes nothing."""
    found = identify(session, parsed, new=parsed.order_control == "NW")
    if found is None or isinstance(found, Conflict):
        return found
    if parsed.order_control == "SC":
        return OrderChange(found, "status-noted", (), duplicate=True)
    if parsed.order_control != "CA":
        return _known(session, found, duplicate=True)
    runs = session.exec(select(PathwayRun).where(PathwayRun.order_id == found)).all()
    return OrderChange(found, "cancelled", tuple(r.id for r in runs if r.status == RunStatus.CANCELLED),
                       tuple(r.id for r in runs if r.status != RunStatus.CANCELLED), duplicate=True)


# ---------------------------------------------------------------- status

def transition(session: Session, order: Order, to: OrderStatus, *, actor: str, action: str, **detail: Any) -> None:
    """Move an order to `to` (staying put is allowed) and audit it as `action`; an illegal move raises."""
    current = OrderStatus(order.status)
    if to != current and to not in TRANSITIONS[current]:
        raise IllegalTransition(f"order {order.id}: {current} -> {to} is not allowed")
    order.status = to.value
    audit(session, actor, action, "order", order.id, status_from=current.value, status=to.value, **detail)


def _order(session: Session, parsed: OrderRequest, message_id: str, actor: str, *, new: bool = False
           ) -> Order | Conflict | None:
    found = identify(session, parsed, new=new)
    if isinstance(found, Conflict):
        return _refuse(session, found, parsed, message_id, actor)
    return session.get(Order, found) if found is not None else None


def cancel(session: Session, parsed: OrderRequest, message_id: str, *, actor: str,
           reason: str = "order cancelled by the placer") -> OrderChange | Conflict | None:
    """CA (HL7 ORC-1) or a ServiceRequest revoked / entered-in-error: the order becomes cancelled
    and its runs not yet started are cancelled; runs already running or finished are kept, and
    say so. None: no such order. A completed order is not cancelled (a Conflict)."""
    order = _order(session, parsed, message_id, actor)
    if order is None or isinstance(order, Conflict):
        return order
    if order.status == OrderStatus.COMPLETED:
        return _refuse(session, Conflict(order.id, "placer", "order already completed; not cancelled"), parsed,
                       message_id, actor)
    runs = session.exec(select(PathwayRun).where(PathwayRun.order_id == order.id)).all()
    cancelled, kept = [], []
    for run in runs:
        if run.status in OPEN_RUNS:
            move_run(session, run, RunStatus.CANCELLED, actor=actor, reason=reason, message_id=message_id)
            cancelled.append(run.id)
        elif run.status != RunStatus.CANCELLED:
            kept.append(run.id)
    transition(session, order, OrderStatus.CANCELLED, actor=actor, action="order.cancelled", message_id=message_id,
               cancelled_runs=cancelled, kept_runs=kept, reason=reason)
    return OrderChange(order.id, "cancelled", tuple(cancelled), tuple(kept))


_CHANGEABLE = ("filler_order_number", "accession_number", "procedure_code", "procedure_system", "procedure_text",
               "modality", "priority", "clinical_indication", "ordering_clinician", "ordering_location")


def change(session: Session, parsed: OrderRequest, message_id: str, registry: Registry, *,
           actor: str) -> OrderChange | Conflict | None:
    """XO: apply the changed order details; pathways are re-matched when the procedure changes."""
    order = _order(session, parsed, message_id, actor)
    if order is None or isinstance(order, Conflict):
        return order
    changed = [name for name in _CHANGEABLE if getattr(parsed, name) and getattr(parsed, name) != getattr(order, name)]
    for name in changed:
        setattr(order, name, getattr(parsed, name))
    touched: list[str] = []
    status = OrderStatus(order.status)
    if status not in CLOSED and {"procedure_code", "modality"} & set(changed):
        claimed = {s.name for s in registry.match(order.procedure_code, order.modality, order.procedure_system, order.sender)}
        existing = session.exec(select(PathwayRun).where(PathwayRun.order_id == order.id)).all()
        for run in existing:
            if run.pathway not in claimed and run.status in OPEN_RUNS:
                move_run(session, run, RunStatus.NOT_ELIGIBLE, actor=actor, message_id=message_id,
                         reason="order changed: procedure no longer claimed")
                touched.append(run.id)
        columns = {"id": order.id, "birth_date": order.birth_date, "procedure_code": order.procedure_code,
                   "procedure_system": order.procedure_system, "modality": order.modality, "sender": order.sender}
        new = [PathwayRun(**values) for values in
               pathway_run_values(columns, registry, skip=frozenset(r.pathway for r in existing))]
        session.add_all(new)
        touched += [r.id for r in new if r.status == RunStatus.WAITING]
        open_runs = [r for r in [*existing, *new] if r.status in OPEN_RUNS]
        status = OrderStatus.RECEIVED if open_runs else OrderStatus.NOT_ELIGIBLE
    transition(session, order, status, actor=actor, action="order.changed", message_id=message_id, fields=changed,
               runs=touched)
    return OrderChange(order.id, "changed", tuple(touched))


def note_status(session: Session, parsed: OrderRequest, message_id: str, *, actor: str) -> OrderChange | Conflict | None:
    """SC: the placer reports a status, audited. "CM" (HL7 table 0038: order is completed, the
    RIS's word that the exam is done) is kept on the order for readiness, the first time only."""
    order = _order(session, parsed, message_id, actor)
    if order is None or isinstance(order, Conflict):
        return order
    audit(session, actor, "order.status-noted", "order", order.id, message_id=message_id, order_status=parsed.order_status)
    if parsed.order_status == EXAM_COMPLETED and order.exam_completed_at is None:
        order.exam_completed_at = utcnow()
        audit(session, actor, "order.exam-completed", "order", order.id, message_id=message_id)
    return OrderChange(order.id, "status-noted", ())


EXAM_COMPLETED = "CM"  # HL7 table 0038 Order status: "Order is completed"


# ---------------------------------------------------------------- patients

def update_patient(session: Session, update: PatientUpdate, message_id: str, *, actor: str) -> list[str]:
    """ADT^A08/A31: refresh demographics on the patient's open orders; returns their ids.
    A death indicator (PID-30 "Y") also cancels the patient's surveillance plans.

    The same hospital number under another NHS number is never merged silently."""
    if update.deceased:
        keys = {patient_key(update.nhs_number)} if update.nhs_number else set()
        if update.local_patient_id:
            keys.add(patient_key(f"{update.local_id_authority}:{update.local_patient_id}"))
        surveillance.cancel_for_patient(session, keys, "the patient is recorded deceased (ADT PID-30)", actor=actor)
    clauses = []
    if update.nhs_number:
        clauses.append(Order.nhs_number == update.nhs_number)
    if update.local_patient_id:
        clauses.append(Order.local_patient_id == update.local_patient_id)
    if not clauses:
        return []
    orders = session.exec(select(Order).where(or_(*clauses), Order.status.not_in([s.value for s in CLOSED]))).all()
    ids = []
    for order in orders:
        if update.nhs_number and order.nhs_number and update.nhs_number != order.nhs_number:
            continue
        order.family_name, order.given_name = update.family_name or order.family_name, update.given_name or order.given_name
        order.birth_date = update.birth_date or order.birth_date
        order.sex = update.sex if update.sex in ("F", "M") else order.sex
        if update.nhs_number and not order.nhs_number:
            order.nhs_number = update.nhs_number
        ids.append(order.id)
    audit(session, actor, "patient.updated", "inbound_message", message_id, orders=ids)
    return ids


def merge_patient(session: Session, merge: PatientMerge, message_id: str, *, actor: str) -> list[str]:
    """ADT^A40: every order of the prior patient (open or closed: a later study's comparison with
    a prior needs the closed ones too) takes the surviving patient's identifiers and key, and so
    do their surveillance plans; then the survivor's demographics refresh the open orders.
    Returns the ids of the orders moved. An unknown prior patient moves nothing (audited)."""
    prior_keys = {patient_key(identifier) for identifier in merge.prior_key_identifiers}
    clauses = [Order.patient_key.in_(prior_keys)]
    if merge.prior_nhs_number:
        clauses.append(Order.nhs_number == merge.prior_nhs_number)
    if merge.prior_local_patient_id:
        clauses.append(Order.local_patient_id == merge.prior_local_patient_id)
    survivor = merge.surviving
    surviving_key = patient_key(survivor.key_identifier)
    moved = []
    for order in session.exec(select(Order).where(or_(*clauses))).all():
        if order.patient_key == surviving_key:
            continue
        prior_keys.add(order.patient_key)  # its plans follow it, however its key was derived
        order.patient_key = surviving_key
        order.nhs_number = survivor.nhs_number or order.nhs_number
        order.local_patient_id = survivor.local_patient_id or order.local_patient_id
        moved.append(order.id)
    surveillance.merge_patient(session, prior_keys, surviving_key, actor=actor)
    audit(session, actor, "patient.merged", "inbound_message", message_id, orders=moved, into=surviving_key)
    update_patient(session, survivor, message_id, actor=actor)
    return moved


def commit_order(order: OrderRequest, raw: str, registry: Registry, *, protocol: str, actor: str, reason: str
                 ) -> OrderOutcome | OrderChange | Conflict | None:
    """Record one order request (or its cancellation, or its exam completed) and its message, in
    one transaction (the FHIR door; HL7 runs the same `record`/`cancel`/`note_status` inside its
    batched commit).

    A resend of the same content (same control id) writes nothing and is answered as before.
    None: a cancellation or status of an order radpath does not hold (nothing is stored)."""
    with session_scope() as session:
        if messages.received_message(session, order.sending_application, order.sending_facility,
                                     order.control_id) is not None:
            return replay(session, order)
        if order.order_control in ("CA", "SC"):
            if identify(session, order, new=False) is None:
                return None
            message = messages.add_message(session, application=order.sending_application,
                                           facility=order.sending_facility, control_id=order.control_id,
                                           message_type=f"{order.message_type}:{order.order_control}", raw=raw,
                                           protocol=protocol)
            change = (cancel(session, order, message.id, actor=actor, reason=reason) if order.order_control == "CA"
                      else note_status(session, order, message.id, actor=actor))
            if isinstance(change, Conflict):
                message.status, message.error = "rejected", change.text
            return change
        values = messages.message_values(application=order.sending_application, facility=order.sending_facility,
                                         control_id=order.control_id, message_type=order.message_type, raw=raw,
                                         protocol=protocol)
        return record(session, order, values, registry, actor=actor)
