"""The ledger: the durable record of orders, studies, runs, results, deliveries and audit.

Unique constraints carry idempotency: (sender, placer order number) for orders,
(sending application, facility, control id) for inbound messages, (study UID, pathway,
model version, study revision) for results, (result, destination) and the idempotency key for deliveries.
Every schema change is an Alembic migration in `integrations/db/migrations/versions/`.
"""

from __future__ import annotations

import datetime as dt
import uuid
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, DateTime, LargeBinary, String, Text, TypeDecorator, UniqueConstraint
from pydantic_core import PydanticUndefined
from sqlmodel import Field, SQLModel

from pathways.readiness import StudyStatus


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def as_utc(when: dt.datetime | None) -> dt.datetime | None:
    """A naive datetime read back from an aggregate (max, count…) as UTC: SQL aggregates lose the
    UTCDateTime column type, so SQLite hands them back naive."""
    return when if when is None or when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


class DeliveryStatus(StrEnum):
    """An outbox row's status; the stored strings are the values."""

    HELD = "held"  # waits for the reviewer's decision (its result is gated)
    PENDING = "pending"  # due for its first or next attempt
    DELIVERED = "delivered"  # the peer accepted it (terminal)
    DEAD_LETTER = "dead_letter"  # refused for good, or retried for the destination's whole window
    REJECTED = "rejected"  # held, and the reviewer rejected its result: never sent (terminal)
    DISCARDED = "discarded"  # a dead letter ops decided not to send (terminal)


DELIVERY_MOVES: dict[DeliveryStatus, frozenset[DeliveryStatus]] = {
    DeliveryStatus.HELD: frozenset({DeliveryStatus.PENDING, DeliveryStatus.REJECTED}),  # the review decision
    DeliveryStatus.PENDING: frozenset({DeliveryStatus.PENDING, DeliveryStatus.DELIVERED, DeliveryStatus.DEAD_LETTER}),
    DeliveryStatus.DEAD_LETTER: frozenset({DeliveryStatus.PENDING, DeliveryStatus.DISCARDED}),  # ops re-queue or discard
    DeliveryStatus.DELIVERED: frozenset(),
    DeliveryStatus.REJECTED: frozenset(),
    DeliveryStatus.DISCARDED: frozenset(),
}


def delivery_move(current: str, to: DeliveryStatus) -> DeliveryStatus:
    """`to`, if an outbox row in `current` may move there (DELIVERY_MOVES); else ValueError.
    Every writer of `Delivery.status` goes through this check (or derives its WHERE from it)."""
    if to not in DELIVERY_MOVES[DeliveryStatus(current)]:
        raise ValueError(f"an outbox row cannot move from {current} to {to}")
    return to


def may_move_from(to: DeliveryStatus, *candidates: DeliveryStatus) -> tuple[DeliveryStatus, ...]:
    """Those of `candidates` from which an outbox row may move to `to` (for conditional UPDATEs)."""
    allowed = tuple(c for c in candidates if to in DELIVERY_MOVES[c])
    if allowed != candidates:
        raise ValueError(f"not every one of {candidates} may move to {to}")
    return allowed


class ReviewStatus(StrEnum):
    """A gated result's review status (None when the pathway's mode does not gate it)."""

    PENDING = "pending"  # waiting for a reviewer; its clinical deliveries are held
    EXPIRED = "expired"  # waited past the spec's timeout: still held, a late decision is accepted
    ACCEPTED = "accepted"
    AMENDED = "amended"  # accepted with the reviewer's conclusion
    REJECTED = "rejected"  # nothing clinical delivered


REVIEW_OPEN = (ReviewStatus.PENDING, ReviewStatus.EXPIRED)  # decisions still possible
REVIEW_VERIFIED = (ReviewStatus.ACCEPTED, ReviewStatus.AMENDED)  # a radiologist stood behind it


def new_id() -> str:
    return str(uuid.uuid4())


def column_values(model: type[SQLModel], **values: Any) -> dict[str, Any]:
    """A row of `model` for a Core INSERT, with the model's defaults filled in as the ORM would.

    Hot paths (HL7 intake) insert rows without building ORM objects: constructing a SQLModel and
    flushing it costs about a millisecond more per order than the INSERT itself. A primary key
    left to the database (None) is omitted."""
    row = {}
    for name, info in model.model_fields.items():
        if name in values:
            row[name] = values[name]
        elif info.default_factory is not None:
            row[name] = info.default_factory()
        elif info.default is not PydanticUndefined and not (info.default is None and name == "id"):
            row[name] = info.default
    unknown = set(values) - set(row)
    if unknown:
        raise TypeError(f"{model.__name__} has no column {sorted(unknown)}")
    return row


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC timestamps on every backend (SQLite keeps no zone of its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the ledger; use UTC-aware datetimes")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value


def _ts(nullable: bool = False) -> Any:
    """A UTC timestamp column: set to now on creation unless nullable."""
    column = Column(UTCDateTime(), nullable=nullable)
    if nullable:
        return Field(default=None, sa_column=column)
    return Field(default_factory=utcnow, sa_column=column)


class InboundMessage(SQLModel, table=True):
    """Every inbound message as received (raw), with the answer radpath gave."""

    __tablename__ = "inbound_message"
    __table_args__ = (UniqueConstraint("sender_application", "sender_facility", "control_id"),)

    id: str = Field(default_factory=new_id, primary_key=True)
    protocol: str  # "hl7v2" | "fhir"
    sender_application: str
    sender_facility: str
    control_id: str
    message_type: str = ""
    raw: str = Field(sa_column=Column(Text, nullable=False))
    ack: str | None = Field(default=None, sa_column=Column(Text))
    status: str = "accepted"  # accepted | rejected | quarantined | duplicate (order came another way)
    error: str | None = None
    received_at: dt.datetime = _ts()


class Order(SQLModel, table=True):
    """An imaging order (from HL7 ORM/OMI or a FHIR ServiceRequest)."""

    __tablename__ = "imaging_order"
    __table_args__ = (UniqueConstraint("sender", "placer_order_number"),)

    id: str = Field(default_factory=new_id, primary_key=True)
    sender: str
    placer_order_number: str
    placer_namespace: str = ""  # HL7 EI-2 of the placer order number, echoed in ORU (0006_placer_system)
    placer_system: str = ""  # the identifier system the placer issued the number under (0006_placer_system)
    filler_order_number: str | None = None
    accession_number: str = Field(index=True)
    patient_key: str = Field(index=True)  # pseudonymous; safe to show
    nhs_number: str | None = None
    local_patient_id: str | None = None
    family_name: str = ""
    given_name: str = ""
    birth_date: dt.date | None = None
    sex: str = "U"
    procedure_code: str
    procedure_system: str = ""
    procedure_text: str = ""
    modality: str = ""
    priority: str = "routine"  # routine | urgent | asap | stat (FHIR request-priority words)
    clinical_indication: str = ""
    ordering_clinician: str = ""  # ORC-12 / OBR-16 (id^family^given); added by 0002_hl7
    ordering_location: str = ""  # PV1-3 point of care; added by 0002_hl7
    clinical_context: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    status: str = "received"  # received | not_eligible | cancelled | in_progress | completed
    message_id: str | None = Field(default=None, foreign_key="inbound_message.id")
    received_at: dt.datetime = _ts()
    # The RIS said the exam is done (HL7 ORC-5 "CM"; 0014_completion_signals): readiness then
    # needs only the spec's shorter `completed_quiet_seconds` of silence.
    exam_completed_at: dt.datetime | None = _ts(nullable=True)


class Hl7Quarantine(SQLModel, table=True):
    """Inbound HL7 bytes radpath rejected, exactly as received, for operations to inspect."""

    __tablename__ = "hl7_quarantine"

    id: str = Field(default_factory=new_id, primary_key=True)
    received_at: dt.datetime = _ts()
    peer: str = ""
    reason: str
    location: str = ""  # the HL7 field named in the ERR segment, e.g. "PID-3"
    control_id: str | None = None
    message_id: str | None = Field(default=None, foreign_key="inbound_message.id")
    size_bytes: int = 0
    raw: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    ack: str | None = Field(default=None, sa_column=Column(Text))


class Study(SQLModel, table=True):
    __tablename__ = "study"

    id: str = Field(default_factory=new_id, primary_key=True)
    study_uid: str = Field(unique=True)
    accession_number: str = Field(default="", index=True)
    patient_key: str = Field(default="", index=True)
    status: str = StudyStatus.RECEIVING  # pathways.readiness.StudyStatus
    first_received_at: dt.datetime = _ts()
    last_received_at: dt.datetime = _ts()
    ready_at: dt.datetime | None = _ts(nullable=True)
    # DICOM front door (0002_dicom): every pseudonymous patient key the images carry (NHS
    # number, issuer-qualified and bare local id), images that came after readiness, and how
    # often late images made the study ready again.
    patient_keys: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False, server_default="[]"))
    late_instances: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    revision: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    orphaned_at: dt.datetime | None = _ts(nullable=True)


class Series(SQLModel, table=True):
    __tablename__ = "series"

    id: str = Field(default_factory=new_id, primary_key=True)
    study_id: str = Field(foreign_key="study.id", index=True)
    series_uid: str = Field(unique=True)
    modality: str = ""
    series_number: int | None = None
    description: str = ""
    body_part: str = ""
    slice_thickness_mm: float | None = None
    orientation: str = ""  # ImageOrientationPatient as "r1\\r2\\r3\\c1\\c2\\c3"
    image_type: str = ""
    n_instances: int = 0


class Instance(SQLModel, table=True):
    __tablename__ = "instance"

    id: str = Field(default_factory=new_id, primary_key=True)
    series_id: str = Field(foreign_key="series.id", index=True)
    sop_instance_uid: str = Field(unique=True)
    sop_class_uid: str
    instance_number: int | None = None
    position_z_mm: float | None = None  # along the slice normal, for ordering
    path: str  # relative to the image store
    sha256: str
    size_bytes: int
    received_at: dt.datetime = _ts()


class PathwayRun(SQLModel, table=True):
    """One pathway applied to one order: waiting for images, then run, then done."""

    __tablename__ = "pathway_run"
    __table_args__ = (UniqueConstraint("order_id", "pathway"),)

    id: str = Field(default_factory=new_id, primary_key=True)
    order_id: str = Field(foreign_key="imaging_order.id", index=True)
    study_id: str | None = Field(default=None, foreign_key="study.id")
    pathway: str
    pathway_version: str
    status: str = "waiting"  # integrations.db.runs.RunStatus; changed only by runs.move (legal moves, audited)
    status_reason: str | None = None
    flow_run_id: str | None = None
    # Reconciler lease (0003_ops): whoever holds an unexpired claim re-drives this run alone.
    claimed_by: str | None = None
    claimed_until: dt.datetime | None = _ts(nullable=True)
    created_at: dt.datetime = _ts()
    started_at: dt.datetime | None = _ts(nullable=True)
    finished_at: dt.datetime | None = _ts(nullable=True)


class Result(SQLModel, table=True):
    """A pathway's outcome for one study revision and model version: at most one, ever.

    Late images (policy "supersede") raise the study's revision; the re-run's result is a new
    row and the previous one points at it through `superseded_by` (0004_supersede)."""

    __tablename__ = "result"
    __table_args__ = (
        UniqueConstraint("study_uid", "pathway", "model_version", "study_revision", name="uq_result_identity"),
    )

    id: str = Field(default_factory=new_id, primary_key=True)
    run_id: str = Field(foreign_key="pathway_run.id", index=True)
    study_uid: str
    pathway: str
    model_version: str
    assessment: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    report: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    urgent: bool = False
    review_status: str | None = None  # ReviewStatus (0003_ops); None when not gated
    reviewed_by: str | None = None
    review_reason: str | None = Field(default=None, sa_column=Column(Text))  # TEXT, as 0003_ops made it
    reviewed_at: dt.datetime | None = _ts(nullable=True)
    study_revision: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    superseded_by: str | None = None  # the result of a later study revision
    model_name: str | None = None  # provenance for re-rendering at review (0005_result_provenance)
    source_series_uid: str | None = None
    created_at: dt.datetime = _ts()


class Delivery(SQLModel, table=True):
    """The outbox: one row per result, destination and result status; each delivered exactly once.

    A destination gets a second row for the same result only along the life cycle: the
    reviewer's final (or a cancellation) after the preliminary it already received."""

    __tablename__ = "delivery"
    __table_args__ = (UniqueConstraint("result_id", "destination", "result_status", name="uq_delivery_result_destination_status"),)

    id: str = Field(default_factory=new_id, primary_key=True)
    result_id: str = Field(foreign_key="result.id", index=True)
    destination: str
    kind: str  # file-drop | mllp | fhir | dicom ...
    idempotency_key: str = Field(unique=True)
    payloads: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    status: str = Field(default=DeliveryStatus.PENDING, index=True)  # DeliveryStatus; changed only through delivery_move
    # What the payloads carry (pathways.result_status): preliminary | final | corrected | cancelled
    result_status: str = Field(default="preliminary", sa_column_kwargs={"server_default": "preliminary"})
    attempts: int = 0
    claimed_by: str | None = None  # reconciler lease (0003_ops)
    claimed_until: dt.datetime | None = _ts(nullable=True)
    next_attempt_at: dt.datetime | None = _ts(nullable=True)  # due time of the next try (the outbox's schedule)
    first_attempt_at: dt.datetime | None = _ts(nullable=True)  # start of the dead-letter window (0008)
    last_response: str | None = None
    created_at: dt.datetime = _ts()
    delivered_at: dt.datetime | None = _ts(nullable=True)


class DestinationPause(SQLModel, table=True):
    """A destination ops paused (0009_destination_pause): the outbox does not attempt it."""

    __tablename__ = "destination_pause"

    destination: str = Field(primary_key=True)
    paused_at: dt.datetime = _ts()
    paused_by: str
    reason: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))


class PeerHealth(SQLModel, table=True):
    """The last health check of a front door or a destination (0011_peer_health), written only
    by `integrations.db.health.record_check`: the serve loop's probes and each delivery attempt."""

    __tablename__ = "peer_health"

    name: str = Field(primary_key=True)  # "door:mllp", "destination:ris"
    state: str  # up | down
    since: dt.datetime = _ts()  # when the current state began
    checked_at: dt.datetime = _ts()
    last_up_at: dt.datetime | None = _ts(nullable=True)
    last_down_at: dt.datetime | None = _ts(nullable=True)
    detail: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))  # scrubbed


class AuditEvent(SQLModel, table=True):
    """Who did what to which record. Details carry ids, never patient identifiers."""

    __tablename__ = "audit_event"

    id: int | None = Field(default=None, primary_key=True)
    at: dt.datetime = _ts()
    actor: str
    action: str
    entity_type: str
    entity_id: str
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    # The hash chain (0010_audit_chain): set when sealed (integrations/db/audit.py), never before.
    seq: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True, unique=True, index=True))
    chain: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))


class SurveillancePlan(SQLModel, table=True):
    """A follow-up scan a result recommended (0012_surveillance), written only by
    `integrations.db.surveillance`: opened with the result, received when a later study of the
    same patient reaches a run of the same pathway, cancelled when the result is rejected or
    superseded. Past `overdue_at` with no study, the failsafe alerts, and again every
    `surveillance.realert_days` while it stays overdue (`alerted_at`: the last alert)."""

    __tablename__ = "surveillance_plan"

    id: str = Field(default_factory=new_id, primary_key=True)
    result_id: str = Field(foreign_key="result.id", unique=True)  # the result that recommended it
    patient_key: str = Field(index=True)  # pseudonymous
    pathway: str
    recommendation_code: str  # e.g. "ct-3-months" (the spec's surveillance.follow_up_days)
    baseline_at: dt.datetime = _ts()  # when the baseline study arrived
    due_at: dt.datetime = _ts()
    overdue_at: dt.datetime = _ts()  # due_at + the spec's grace period
    status: str = Field(default="due", index=True)  # due | received | cancelled
    closed_at: dt.datetime | None = _ts(nullable=True)
    closed_by_run_id: str | None = None  # the pathway run of the follow-up study
    close_reason: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    alerted_at: dt.datetime | None = _ts(nullable=True)  # the failsafe's last alert
    created_at: dt.datetime = _ts()


class RadiologistReport(SQLModel, table=True):
    """The radiologist's signed report of an order's exam (0013_radiologist_report), written only
    by `integrations.db.radiologist_reports`: one per order, replaced by a correction. Each of the
    order's pathways that can read reports keeps its reading (`readings`: pathway -> reading); the
    report's text goes after `Settings.report_text_retention_days`, the readings stay."""

    __tablename__ = "radiologist_report"

    id: str = Field(default_factory=new_id, primary_key=True)
    order_id: str = Field(foreign_key="imaging_order.id", unique=True)
    message_id: str  # the inbound message of the latest version
    result_status: str  # final | corrected
    corrections: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    readings: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    text: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    text_purged_at: dt.datetime | None = _ts(nullable=True)
    reported_at: dt.datetime | None = _ts(nullable=True)
    received_at: dt.datetime = _ts()


class PerformedProcedureStep(SQLModel, table=True):
    """A modality's Modality Performed Procedure Step (DICOM PS3.4 Annex F; 0014_completion_signals),
    written only by `integrations.db.performed_steps`: its SOP Instance UID, the study it belongs
    to, its status, and on completion the instances it says it made, which readiness compares
    with the images received. No patient attribute of the MPPS is kept."""

    __tablename__ = "performed_procedure_step"

    id: str = Field(primary_key=True)  # the MPPS SOP Instance UID
    study_uid: str = Field(default="", index=True)
    accession_number: str = Field(default="", index=True)
    status: str  # IN PROGRESS | COMPLETED | DISCONTINUED (PS3.3 C.7.3.1, (0040,0252))
    instance_uids: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False, server_default="[]"))
    calling_ae: str = ""
    created_at: dt.datetime = _ts()
    ended_at: dt.datetime | None = _ts(nullable=True)
