"""Modality Performed Procedure Steps in the ledger (the only writer of `performed_procedure_step`).

DICOM has no "study complete" message for images, but a modality that supports MPPS (PS3.4
Annex F) says when an acquisition starts (N-CREATE, IN PROGRESS) and ends (N-SET, COMPLETED or
DISCONTINUED), listing the instances it made. Readiness (`integrations.db.studies`) compares
that list with the images received, so a study can be ready seconds after its last image
instead of after the quiet period. Each step change is audited; no patient attribute is kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

from sqlmodel import Session, func, select

from integrations.db.engine import session_scope
from integrations.db.ledger import audit
from integrations.db.models import Instance, PerformedProcedureStep, Series, Study, utcnow
from pathways.readiness import Completion


class StepStatus(StrEnum):
    """Performed Procedure Step Status (0040,0252), PS3.3 C.7.3.1."""

    IN_PROGRESS = "IN PROGRESS"
    COMPLETED = "COMPLETED"
    DISCONTINUED = "DISCONTINUED"


class StepRefused(Exception):
    """An N-CREATE/N-SET the ledger refuses: the DIMSE status to answer (PS3.4 F.7.2, PS3.7 C)
    and why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


NO_SUCH_INSTANCE = 0x0112
DUPLICATE_INSTANCE = 0x0111
INVALID_VALUE = 0x0106
PROCESSING_FAILURE = 0x0110  # PS3.4 F.7.2.2: an N-SET after COMPLETED or DISCONTINUED


def create_step(sop_instance_uid: str, *, status: str, study_uid: str, accession_number: str, calling_ae: str) -> None:
    """Record a new step (N-CREATE). PS3.4 F.7.2.1: it must start IN PROGRESS."""
    if status != StepStatus.IN_PROGRESS:
        raise StepRefused(INVALID_VALUE, f"a new performed procedure step must be IN PROGRESS, not {status!r}")
    with session_scope() as session:
        if session.get(PerformedProcedureStep, sop_instance_uid) is not None:
            raise StepRefused(DUPLICATE_INSTANCE, "this performed procedure step already exists")
        session.add(PerformedProcedureStep(id=sop_instance_uid, status=status, study_uid=study_uid,
                                           accession_number=accession_number, calling_ae=calling_ae))
        audit(session, f"dicom:{calling_ae}", "mpps.created", "performed_procedure_step", sop_instance_uid)


def set_step(sop_instance_uid: str, *, status: str | None, instance_uids: Sequence[str] | None, calling_ae: str) -> bool:
    """Apply an N-SET: a new status and/or the instances made. True when the step just ended."""
    with session_scope() as session:
        step = session.get(PerformedProcedureStep, sop_instance_uid)
        if step is None:
            raise StepRefused(NO_SUCH_INSTANCE, "no such performed procedure step")
        if step.status != StepStatus.IN_PROGRESS:
            raise StepRefused(PROCESSING_FAILURE, f"the performed procedure step is {step.status} and may no longer be updated")
        if status is not None and status not in set(StepStatus):
            raise StepRefused(INVALID_VALUE, f"unknown performed procedure step status {status!r}")
        if instance_uids is not None:
            step.instance_uids = list(dict.fromkeys(instance_uids))
        ended = status in (StepStatus.COMPLETED, StepStatus.DISCONTINUED)
        if status is not None:
            step.status = status
        if ended:
            step.ended_at = utcnow()
            audit(session, f"dicom:{calling_ae}", f"mpps.{status.lower()}", "performed_procedure_step",
                  sop_instance_uid, study_uid=step.study_uid, instances=len(step.instance_uids))
        return ended


def completion(session: Session, study: Study) -> Completion | None:
    """What the study's performed procedure steps say, for readiness; None if it has none."""
    steps = session.exec(select(PerformedProcedureStep).where(PerformedProcedureStep.study_uid == study.study_uid)).all()
    if not steps:
        return None
    listed = sorted({uid for s in steps if s.status == StepStatus.COMPLETED for uid in s.instance_uids})
    received = 0
    if listed:
        received = session.exec(
            select(func.count()).select_from(Instance).join(Series, Series.id == Instance.series_id)
            .where(Series.study_id == study.id, Instance.sop_instance_uid.in_(listed))
        ).one()
    return Completion(
        in_progress=sum(s.status == StepStatus.IN_PROGRESS for s in steps),
        completed=sum(s.status == StepStatus.COMPLETED for s in steps),
        listed=len(listed),
        received=received,
    )
