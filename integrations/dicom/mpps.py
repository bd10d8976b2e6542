"""The Modality Performed Procedure Step SCP (DICOM PS3.4 Annex F): the modality's own word that
an acquisition has ended, and which instances it made.

N-CREATE (status IN PROGRESS) and N-SET (COMPLETED or DISCONTINUED, with the Performed Series
Sequence) are read by pure functions here and recorded by `integrations.db.performed_steps`;
readiness then needs no quiet period for a study whose listed instances have all arrived. Only
UIDs, the accession number and the status are read: none of the MPPS's patient attributes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from pydicom import Dataset
from pydicom.uid import generate_uid
from pynetdicom import evt

from integrations.db import performed_steps
from integrations.db.performed_steps import StepRefused

log = logging.getLogger(__name__)

SUCCESS = 0x0000
MISSING_ATTRIBUTE = 0x0120


@dataclass(frozen=True)
class StepStart:
    """What an N-CREATE says: the step's status and the study it belongs to."""

    status: str
    study_uid: str
    accession_number: str


def read_start(attributes: Dataset) -> StepStart:
    """The N-CREATE attribute list → StepStart (PS3.4 Table F.7.2-1: the Scheduled Step
    Attributes Sequence carries the Study Instance UID and Accession Number)."""
    status = str(attributes.get("PerformedProcedureStepStatus", "")).strip()
    scheduled = attributes.get("ScheduledStepAttributesSequence") or [Dataset()]
    study_uid = str(scheduled[0].get("StudyInstanceUID", "") or "").strip()
    if not status:
        raise StepRefused(MISSING_ATTRIBUTE, "Performed Procedure Step Status (0040,0252) is missing")
    if not study_uid:
        raise StepRefused(MISSING_ATTRIBUTE, "Scheduled Step Attributes Sequence has no Study Instance UID")
    return StepStart(status=status, study_uid=study_uid,
                     accession_number=str(scheduled[0].get("AccessionNumber", "") or "").strip())


def read_instances(modification: Dataset) -> list[str] | None:
    """The SOP Instance UIDs an N-SET's Performed Series Sequence lists (images and non-image
    composites, PS3.4 Table F.7.2-1), or None if the N-SET does not carry the sequence."""
    if "PerformedSeriesSequence" not in modification:
        return None
    uids = []
    for series in modification.PerformedSeriesSequence:
        for keyword in ("ReferencedImageSequence", "ReferencedNonImageCompositeSOPInstanceSequence"):
            uids += [str(item.ReferencedSOPInstanceUID) for item in series.get(keyword) or [] if "ReferencedSOPInstanceUID" in item]
    return uids


def handlers(on_step_ended: Callable[[], None] | None = None) -> list[tuple]:
    """pynetdicom event handlers for N-CREATE and N-SET on the MPPS SOP class."""

    def answered(message: str, record: Callable[[evt.Event], tuple[Dataset, bool]]) -> Callable:
        """One handler: record the message, answer a status (never drop the association)."""

        def handle(event: evt.Event) -> tuple[int, Dataset | None]:
            try:
                reply, ended = record(event)
            except StepRefused as refused:
                log.warning("MPPS %s refused: %s", message, refused.reason)
                return refused.status, None
            except Exception as exc:  # noqa: BLE001 - a status, never a dropped association
                log.warning("MPPS %s failed: %s", message, exc.__class__.__name__)
                return performed_steps.PROCESSING_FAILURE, None
            if ended and on_step_ended is not None:
                try:
                    on_step_ended()
                except Exception:  # the step is recorded; waking the sweep early is only a shortcut
                    log.exception("on_step_ended failed")
            return SUCCESS, reply

        return handle

    def create(event: evt.Event) -> tuple[Dataset, bool]:
        start = read_start(event.attribute_list)
        uid = str(event.request.AffectedSOPInstanceUID or "") or generate_uid()
        performed_steps.create_step(uid, status=start.status, study_uid=start.study_uid,
                                    accession_number=start.accession_number,
                                    calling_ae=event.assoc.requestor.ae_title.strip())
        reply = Dataset()
        if not event.request.AffectedSOPInstanceUID:
            reply.AffectedSOPInstanceUID = uid  # PS3.7 10.1.5.1.4: the SCP names the new instance
        return reply, False

    def set_(event: evt.Event) -> tuple[Dataset, bool]:
        modification = event.modification_list
        status = str(modification.get("PerformedProcedureStepStatus", "") or "").strip() or None
        ended = performed_steps.set_step(str(event.request.RequestedSOPInstanceUID), status=status,
                                         instance_uids=read_instances(modification),
                                         calling_ae=event.assoc.requestor.ae_title.strip())
        return Dataset(), ended

    return [(evt.EVT_N_CREATE, answered("N-CREATE", create)), (evt.EVT_N_SET, answered("N-SET", set_))]
