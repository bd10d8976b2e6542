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
from integrations.db.models import (
    REVIEW_VERIFIED,
    AuditEvent,
    Delivery,
    DeliveryStatus,
    Order,
    PathwayRun,
    Result,
    Series,
    Study,
    column_values,
    delivery_move,
    utcnow,
)
from pathways.orders import age_on
from integrations.delivery.config import RetrySchedule
from integrations.errors import is_transient, masked, peer_of, retry_after_of
from integrations.settings import get_settings
from pathways.identifiers import pseudonymous_key
from pathways.spec import FollowUp

RESULT_NAMESPACE = uuid.UUID("6d1f0a4e-3c59-4d0b-9a57-2f4c1f6b8e21")  # radpath's own namespace


def audit(session: Session, actor: str, action: str, entity_type: str, entity_id: str, **detail: Any) -> None:
    session.add(AuditEvent(**audit_values(actor, action, entity_type, entity_id, **detail)))


def record_audit(actor: str, action: str, entity_type: str, entity_id: str, **detail: Any) -> None:
    """One audit event in its own transaction (an event with no other ledger change: a refused
    connection, a quarantined file). Never patient identifiers in `detail`."""
    with session_scope() as session:
        audit(session, actor, action, entity_type, entity_id, **detail)


def audit_values(actor: str, action: str, entity_type: str, entity_id: str, **detail: Any) -> dict[str, Any]:
    """An audit row's columns (for a Core INSERT on hot paths; `audit` adds the same as an object)."""
    return column_values(AuditEvent, actor=actor, action=action, entity_type=entity_type, entity_id=entity_id,
                         detail=detail)


def patient_key(identifier: str) -> str:
    return pseudonymous_key(get_settings().pseudonym_secret(), "patient", identifier)


def study_key(study_uid: str) -> str:
    return pseudonymous_key(get_settings().pseudonym_secret(), "study", study_uid)


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
            age_years=age_on(order.birth_date, order.received_at.date()),
            sex=order.sex,
            clinical_context=dict(order.clinical_context),
            received_at=order.received_at,
            study_revision=study.revision,
        )


def study_series(study_uid: str) -> list[Series]:
    with session_scope() as session:
        study = session.exec(select(Study).where(Study.study_uid == study_uid)).one()
        return list(session.exec(select(Series).where(Series.study_id == study.id)).all())


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
    from integrations.db.surveillance import cancel_for_result

    for old in earlier:
        old.superseded_by = new.id
        cancel_for_result(session, old.id, "its result was superseded by a later revision of the study", actor="pathway")
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


def idempotency_key(result_id: str, destination: str, result_status: str = "preliminary") -> str:
    """The outbox key: the first row a destination gets for a result keeps the key it always had."""
    suffix = "" if result_status == "preliminary" else f"|{result_status}"
    return hashlib.sha256(f"{result_id}|{destination}{suffix}".encode()).hexdigest()[:32]


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
    follow_up: FollowUp | None = None,
) -> tuple[str, list[str], bool]:
    """Commit the result and its outbox rows together; a second call returns what exists.

    A result of a later study revision supersedes the earlier ones in the same transaction.
    `follow_up`: the follow-up scan its recommendation calls for; its surveillance plan is
    opened in the same transaction (integrations/db/surveillance.py).

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
            recorded = session.get(Result, result_id)
            _supersede_earlier(session, recorded)
            if follow_up is not None:
                from integrations.db.surveillance import open_plan

                open_plan(session, recorded, follow_up)
            ids = []
            for plan in deliveries:
                row = Delivery(
                    result_id=result_id,
                    destination=plan.destination,
                    kind=plan.kind,
                    idempotency_key=idempotency_key(result_id, plan.destination),
                    payloads=list(plan.payloads),
                    status=DeliveryStatus.HELD if plan.held else DeliveryStatus.PENDING,
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


@dataclass(frozen=True)
class AttemptOutcome:
    """What the outbox made of one attempt: the row's status after it and, while pending, when next."""

    status: DeliveryStatus  # delivered | pending | dead_letter
    attempts: int
    next_attempt_at: dt.datetime | None = None
    dead_reason: str | None = None  # "permanent" (the peer refused) | "window" (retried for the whole window)


def record_delivery_attempt(
    delivery_id: str,
    *,
    ok: bool,
    response: str,
    error: BaseException | None = None,
    schedule: RetrySchedule | None = None,
    now: dt.datetime | None = None,
    rand: float | None = None,
) -> AttemptOutcome:
    """Record one attempt and schedule the next: the outbox is the only retry scheduler.

    A success delivers the row. A permanent failure (`error` not transient) dead-letters it at
    once with the peer's words. A transient failure (or `ok=False` without an error) sets
    `next_attempt_at` from the destination's `schedule` (backoff with jitter, capped, a longer
    Retry-After honoured) unless the window since the first attempt has passed: then the row is
    dead-lettered. Every attempt is audited with what the peer said. `now` and `rand` are the
    clock and the jitter draw (tests inject them)."""
    now = now or utcnow()
    schedule = schedule or RetrySchedule()
    transient = error is None or is_transient(error)
    with session_scope() as session:
        row = session.get(Delivery, delivery_id)
        row.attempts += 1
        row.last_response = response[:2000]
        row.first_attempt_at = row.first_attempt_at or now
        due, reason = None, None
        if ok:
            row.status, row.delivered_at = delivery_move(row.status, DeliveryStatus.DELIVERED), now
        elif not transient:
            row.status, reason = delivery_move(row.status, DeliveryStatus.DEAD_LETTER), "permanent"
        else:
            due = schedule.next_attempt_at(failures=row.attempts, first_attempt_at=row.first_attempt_at, now=now,
                                           retry_after_s=retry_after_of(error) if error else None, rand=rand)
            row.status = delivery_move(row.status, DeliveryStatus.PENDING if due else DeliveryStatus.DEAD_LETTER)
            if due is None:
                reason = "window"
        row.next_attempt_at = due
        detail: dict[str, Any] = {"destination": row.destination, "attempts": row.attempts}
        if not ok:
            detail |= {"error": error.__class__.__name__ if error else "failed", "said": masked(response),
                       "peer": peer_of(error) if error else {}}
            detail |= {"next_attempt_at": due.isoformat()} if due else {"dead_reason": reason}
        action = "delivery.delivered" if ok else ("delivery.dead_lettered" if reason else "delivery.failed")
        audit(session, "delivery", action, "delivery", delivery_id, **detail)
        return AttemptOutcome(DeliveryStatus(row.status), row.attempts, due, reason)


def result_context(run_id: str, *, result_id: str, model_name: str, model_version: str, source_series_uid: str,  # noqa: ANN201
                   prior_result_id: str | None = None):
    """Provenance and identity for output messages. Stays inside the delivery step.
    `prior_result_id`: the patient's earlier result the assessment was compared with."""
    from pathways.registry import default_registry
    from pathways.report import Code, PatientIdentity, PriorReport, ResultContext

    systems = {"SCT": "http://snomed.info/sct", "LN": "http://loinc.org"}
    with session_scope() as session:
        run = session.get(PathwayRun, run_id)
        order = session.get(Order, run.order_id)
        study = session.get(Study, run.study_id)
        spec = default_registry().specs.get(run.pathway)
        model = spec.model if spec is not None else None
        prior = session.get(Result, prior_result_id) if prior_result_id else None
        return ResultContext(
            prior_report=PriorReport(result_id=prior.id, study_uid=prior.study_uid,
                                     verified=prior.review_status in REVIEW_VERIFIED) if prior else None,
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
