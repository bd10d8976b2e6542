"""Ledger operations: each function is one committed unit of work.

Listeners and tasks call these; they own the transactions so that "commit first,
acknowledge second" and "one result, one delivery per destination" hold everywhere.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from integrations.db.engine import session_scope
from integrations.db.order_identity import same_order
from integrations.db.models import (
    AuditEvent,
    Delivery,
    InboundMessage,
    Order,
    PathwayRun,
    Result,
    Series,
    Study,
    column_values,
    utcnow,
)
from pathways.orders import OrderRequest
from integrations.settings import get_settings
from pathways.identifiers import pseudonymous_key
from pathways.registry import Registry

RESULT_NAMESPACE = uuid.UUID("6d1f0a4e-3c59-4d0b-9a57-2f4c1f6b8e21")  # radpath's own namespace


def audit(session: Session, actor: str, action: str, entity_type: str, entity_id: str, **detail: Any) -> None:
    session.add(AuditEvent(**audit_values(actor, action, entity_type, entity_id, **detail)))


def audit_values(actor: str, action: str, entity_type: str, entity_id: str, **detail: Any) -> dict[str, Any]:
    """An audit row's columns (for a Core INSERT on hot paths; `audit` adds the same as an object)."""
    return column_values(AuditEvent, actor=actor, action=action, entity_type=entity_type, entity_id=entity_id,
                         detail=detail)


def patient_key(identifier: str) -> str:
    return pseudonymous_key(get_settings().pseudonym_secret(), "patient", identifier)


def study_key(study_uid: str) -> str:
    return pseudonymous_key(get_settings().pseudonym_secret(), "study", study_uid)


@dataclass(frozen=True)
class OrderOutcome:
    order_id: str
    run_ids: tuple[str, ...]
    duplicate: bool
    eligible: bool


def _age_on(birth: dt.date | None, on: dt.date) -> int | None:
    if birth is None:
        return None
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


def received_message(session: Session, application: str, facility: str, control_id: str) -> InboundMessage | None:
    """The message already received from this sender under this control id (HL7 MSH-3/4/10), if any."""
    return session.exec(
        select(InboundMessage).where(
            InboundMessage.sender_application == application,
            InboundMessage.sender_facility == facility,
            InboundMessage.control_id == control_id,
        )
    ).first()


def order_from_request(parsed: OrderRequest, message_id: str | None) -> Order:
    """The ledger row for an incoming order, whatever front door it came through."""
    return Order(**order_values(parsed, message_id))


def order_values(parsed: OrderRequest, message_id: str | None) -> dict[str, Any]:
    """The columns of that row (for a Core INSERT on the HL7 intake's hot path)."""
    return column_values(
        Order,
        sender=parsed.sender,
        placer_order_number=parsed.placer_order_number,
        placer_system=parsed.placer_system,
        placer_namespace=parsed.placer_namespace,
        filler_order_number=parsed.filler_order_number,
        accession_number=parsed.accession_number,
        patient_key=patient_key(parsed.nhs_number or f"{parsed.local_id_authority}:{parsed.local_patient_id}"),
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


def create_pathway_runs(session: Session, order: Order, registry: Registry, skip: frozenset[str] = frozenset()) -> list[PathwayRun]:
    """One run per pathway claiming the order's procedure and modality (see `pathway_run_values`)."""
    columns = {"id": order.id, "birth_date": order.birth_date, "procedure_code": order.procedure_code,
               "procedure_system": order.procedure_system, "modality": order.modality, "sender": order.sender}
    runs = [PathwayRun(**values) for values in pathway_run_values(columns, registry, skip)]
    session.add_all(runs)
    return runs


def procedure_mapping(registry: Registry, parsed: OrderRequest) -> dict[str, str]:
    """For the audit: the standard concept a local or NICIP procedure code was taken to mean."""
    standard = registry.standard_procedure(parsed.procedure_system, parsed.procedure_code, parsed.sender)
    return {"procedure_means": f"{standard.system}|{standard.code}"} if standard is not None else {}


def pathway_run_values(order: dict[str, Any], registry: Registry, skip: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
    """The run rows for an order's columns: one per pathway claiming its procedure and modality;
    outside a pathway's age range the run is recorded as not eligible, visibly."""
    rows = []
    age = _age_on(order["birth_date"], dt.date.today())
    for spec in registry.match(order["procedure_code"], order["modality"], order["procedure_system"], order["sender"]):
        if spec.name in skip:
            continue
        low, high = spec.eligibility.min_age_years, spec.eligibility.max_age_years
        row = column_values(PathwayRun, order_id=order["id"], pathway=spec.name, pathway_version=spec.version)
        if (low is not None and (age is None or age < low)) or (high is not None and age is not None and age > high):
            row["status"], row["status_reason"] = "not_eligible", "patient age outside the pathway's range"
        rows.append(row)
    return rows


def record_order(parsed: OrderRequest, raw: str, registry: Registry, actor: str = "hl7") -> OrderOutcome:
    """Commit the raw message, the order and its pathway runs; idempotent on resend."""
    with session_scope() as session:
        existing = received_message(session, parsed.sending_application, parsed.sending_facility, parsed.control_id)
        if existing is not None:
            order = session.exec(select(Order).where(Order.message_id == existing.id)).first()
            if order is None:  # the message repeated an order that came through another door
                order = same_order(session, parsed.placer_order_number, parsed.accession_number)
            if order is None:
                raise LookupError("resent message has no order")
            runs = session.exec(select(PathwayRun.id).where(PathwayRun.order_id == order.id)).all()
            return OrderOutcome(order.id, tuple(runs), duplicate=True, eligible=bool(runs))

        message = InboundMessage(
            protocol=parsed.protocol,
            sender_application=parsed.sending_application,
            sender_facility=parsed.sending_facility,
            control_id=parsed.control_id,
            message_type=parsed.message_type,
            raw=raw,
        )
        session.add(message)
        same = same_order(session, parsed.placer_order_number, parsed.accession_number, other_sender=parsed.sender)
        if same is not None:  # the same order via another front door (HL7 and FHIR): one order
            message.status = "duplicate"
            session.flush()
            audit(session, actor, "order.duplicate", "order", same.id, protocol=parsed.protocol, message_id=message.id)
            runs = session.exec(select(PathwayRun.id).where(PathwayRun.order_id == same.id)).all()
            return OrderOutcome(same.id, tuple(runs), duplicate=True, eligible=bool(runs))
        order = order_from_request(parsed, message.id)
        session.add(order)
        runs = create_pathway_runs(session, order, registry)
        if not any(r.status == "waiting" for r in runs):
            order.status = "not_eligible"
        session.flush()
        audit(session, actor, "order.received", "order", order.id, pathways=[r.pathway for r in runs], status=order.status,
              **procedure_mapping(registry, parsed))
        return OrderOutcome(order.id, tuple(r.id for r in runs if r.status == "waiting"), duplicate=False, eligible=order.status != "not_eligible")


def attach_study(study_uid: str, actor: str = "readiness") -> list[str]:
    """Mark a study ready and hand it to the waiting runs of its order (by accession number)."""
    with session_scope() as session:
        study = session.exec(select(Study).where(Study.study_uid == study_uid)).one()
        study.status, study.ready_at = "ready", utcnow()
        runs = session.exec(
            select(PathwayRun)
            .join(Order, Order.id == PathwayRun.order_id)
            .where(Order.accession_number == study.accession_number, PathwayRun.status == "waiting")
        ).all()
        for run in runs:
            run.study_id, run.status = study.id, "ready"
            audit(session, actor, "study.ready", "pathway_run", run.id, study_id=study.id)
        if not runs:
            audit(session, actor, "study.unmatched", "study", study.id)
        return [r.id for r in runs]


@dataclass(frozen=True)
class RunView:
    """What a pathway flow may know about its run: opaque ids and clinical context, no identity."""

    run_id: str
    pathway: str
    pathway_version: str
    status: str
    study_uid: str
    study_key: str
    patient_key: str
    priority: str
    age_years: int | None
    sex: str
    clinical_context: dict[str, Any]
    received_at: dt.datetime
    study_revision: int = 0  # raised by late images under policy "supersede"


def run_view(run_id: str) -> RunView:
    with session_scope() as session:
        run = session.get(PathwayRun, run_id)
        if run is None or run.study_id is None:
            raise LookupError(f"pathway run {run_id} has no study")
        order = session.get(Order, run.order_id)
        study = session.get(Study, run.study_id)
        return RunView(
            run_id=run.id,
            pathway=run.pathway,
            pathway_version=run.pathway_version,
            status=run.status,
            study_uid=study.study_uid,
            study_key=study_key(study.study_uid),
            patient_key=order.patient_key,
            priority=order.priority,
            age_years=_age_on(order.birth_date, order.received_at.date()),
            sex=order.sex,
            clinical_context=dict(order.clinical_context),
            received_at=order.received_at,
            study_revision=study.revision,
        )


def study_series(study_uid: str) -> list[Series]:
    with session_scope() as session:
        study = session.exec(select(Study).where(Study.study_uid == study_uid)).one()
        return list(session.exec(select(Series).where(Series.study_id == study.id)).all())


def set_run_status(run_id: str, status: str, *, reason: str | None = None, flow_run_id: str | None = None) -> None:
    with session_scope() as session:
        run = session.get(PathwayRun, run_id)
        run.status, run.status_reason = status, reason
        if flow_run_id:
            run.flow_run_id = flow_run_id
        if status == "running" and run.started_at is None:
            run.started_at = utcnow()
        if status in {"completed", "failed", "not_eligible", "awaiting_review", "dead_lettered", "rejected"}:
            run.finished_at = utcnow()
        audit(session, "pathway", f"run.{status}", "pathway_run", run_id, reason=reason)


def result_id_for(study_uid: str, pathway: str, model_version: str, study_revision: int = 0) -> str:
    """Deterministic: the same study revision, pathway and model always yield the same result id
    (revision 0 keeps the id results had before revisions existed)."""
    suffix = f"|r{study_revision}" if study_revision else ""
    return str(uuid.uuid5(RESULT_NAMESPACE, f"{study_uid}|{pathway}|{model_version}{suffix}"))


def _identity(study_uid: str, pathway: str, model_version: str, study_revision: int):  # noqa: ANN202
    return select(Result).where(
        Result.study_uid == study_uid,
        Result.pathway == pathway,
        Result.model_version == model_version,
        Result.study_revision == study_revision,
    )


def _supersede_earlier(session: Session, new: Result) -> None:
    """Point every current result of an earlier revision of the study at `new`."""
    earlier = session.exec(
        select(Result).where(
            Result.study_uid == new.study_uid,
            Result.pathway == new.pathway,
            Result.study_revision < new.study_revision,
            Result.superseded_by.is_(None),
        )
    ).all()
    for old in earlier:
        old.superseded_by = new.id
        audit(session, "pathway", "result.superseded", "result", old.id, superseded_by=new.id,
              study_revision=new.study_revision)


def superseded_result(study_uid: str, pathway: str, study_revision: int) -> str | None:
    """The id of the current result a result of `study_revision` will supersede, if any."""
    with session_scope() as session:
        row = session.exec(
            select(Result.id)
            .where(
                Result.study_uid == study_uid,
                Result.pathway == pathway,
                Result.study_revision < study_revision,
                Result.superseded_by.is_(None),
            )
            .order_by(Result.study_revision.desc(), Result.created_at.desc())
        ).first()
        return row


def idempotency_key(result_id: str, destination: str) -> str:
    return hashlib.sha256(f"{result_id}|{destination}".encode()).hexdigest()[:32]


@dataclass(frozen=True)
class DeliveryPlan:
    destination: str
    kind: str
    payloads: Sequence[str]  # file paths of what to send
    held: bool = False  # True: waits for a review decision (pathways/routing.py)


def record_result(
    run_id: str,
    *,
    result_id: str,
    study_uid: str,
    pathway: str,
    model_version: str,
    assessment: dict[str, Any],
    report: dict[str, Any],
    urgent: bool,
    deliveries: Sequence[DeliveryPlan],
    study_revision: int = 0,
    model_name: str | None = None,
    source_series_uid: str | None = None,
) -> tuple[str, list[str], bool]:
    """Commit the result and its outbox rows together; a second call returns what exists.

    A result of a later study revision supersedes the earlier ones in the same transaction.

    Returns (result id, delivery ids, created).
    """
    try:
        with session_scope() as session:
            session.add(
                Result(
                    id=result_id,
                    run_id=run_id,
                    study_uid=study_uid,
                    pathway=pathway,
                    model_version=model_version,
                    assessment=assessment,
                    report=report,
                    urgent=urgent,
                    study_revision=study_revision,
                    model_name=model_name,
                    source_series_uid=source_series_uid,
                )
            )
            session.flush()
            _supersede_earlier(session, session.get(Result, result_id))
            ids = []
            for plan in deliveries:
                row = Delivery(
                    result_id=result_id,
                    destination=plan.destination,
                    kind=plan.kind,
                    idempotency_key=idempotency_key(result_id, plan.destination),
                    payloads=list(plan.payloads),
                    status="held" if plan.held else "pending",
                    next_attempt_at=None if plan.held else utcnow(),
                )
                session.add(row)
                ids.append(row.id)
            audit(session, "pathway", "result.recorded", "result", result_id, run_id=run_id, urgent=urgent)
            return result_id, ids, True
    except IntegrityError:
        with session_scope() as session:
            existing = session.exec(_identity(study_uid, pathway, model_version, study_revision)).one()
            ids = session.exec(select(Delivery.id).where(Delivery.result_id == existing.id)).all()
            audit(session, "pathway", "result.duplicate-suppressed", "result", existing.id, run_id=run_id)
            return existing.id, list(ids), False


def existing_result(
    study_uid: str, pathway: str, model_version: str, study_revision: int = 0
) -> tuple[str, list[str]] | None:
    """(result id, delivery ids) when this study revision already has a result from this model version."""
    with session_scope() as session:
        result = session.exec(_identity(study_uid, pathway, model_version, study_revision)).first()
        if result is None:
            return None
        return result.id, list(session.exec(select(Delivery.id).where(Delivery.result_id == result.id)).all())


def get_delivery(delivery_id: str) -> Delivery:
    with session_scope() as session:
        row = session.get(Delivery, delivery_id)
        if row is None:
            raise LookupError(f"delivery {delivery_id} not found")
        return row


def record_delivery_attempt(delivery_id: str, *, ok: bool, response: str, dead: bool = False, retry_at: dt.datetime | None = None) -> None:
    with session_scope() as session:
        row = session.get(Delivery, delivery_id)
        row.attempts += 1
        row.last_response = response[:2000]
        if ok:
            row.status, row.delivered_at, row.next_attempt_at = "delivered", utcnow(), None
        elif dead:
            row.status, row.next_attempt_at = "dead_letter", None
        else:
            row.next_attempt_at = retry_at
        action = "delivery.delivered" if ok else ("delivery.dead_lettered" if dead else "delivery.failed")
        audit(session, "delivery", action, "delivery", delivery_id, destination=row.destination, attempts=row.attempts)


def result_context(run_id: str, *, result_id: str, model_name: str, model_version: str, source_series_uid: str):  # noqa: ANN201
    """Provenance and identity for output messages. Stays inside the delivery step."""
    from pathways.registry import default_registry
    from pathways.report import Code, PatientIdentity, ResultContext

    systems = {"SCT": "http://snomed.info/sct", "LN": "http://loinc.org"}
    with session_scope() as session:
        run = session.get(PathwayRun, run_id)
        order = session.get(Order, run.order_id)
        study = session.get(Study, run.study_id)
        spec = default_registry().specs.get(run.pathway)
        model = spec.model if spec is not None else None
        return ResultContext(
            result_id=result_id,
            pathway=run.pathway,
            pathway_version=run.pathway_version,
            model_name=model_name,
            model_version=model_version,
            model_sha256=model.sha256 if model is not None and model.name == model_name else "",
            study_uid=study.study_uid,
            source_series_uid=source_series_uid,
            accession_number=order.accession_number,
            placer_order_number=order.placer_order_number,
            placer_system=order.placer_system,
            placer_namespace=order.placer_namespace,
            filler_order_number=order.filler_order_number,
            procedure=Code(
                system=systems.get(order.procedure_system, order.procedure_system),
                code=order.procedure_code,
                display=order.procedure_text or order.procedure_code,
            ),
            standard_procedure=default_registry().standard_procedure(order.procedure_system, order.procedure_code,
                                                                     order.sender),
            patient=PatientIdentity(
                nhs_number=order.nhs_number,
                local_id=order.local_patient_id,
                family_name=order.family_name,
                given_name=order.given_name,
                birth_date=order.birth_date,
                sex=order.sex if order.sex in ("F", "M") else "U",
            ),
            observed_at=utcnow(),
        )
