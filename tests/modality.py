"""A modality's Modality Performed Procedure Step SCU (DICOM PS3.4 Annex F) for tests: pynetdicom
over a real association (dcmtk has no MPPS SCU). The N-CREATE carries patient attributes, as a
scanner's does, so tests can check radpath keeps none of them."""

from __future__ import annotations

from pydicom import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import ModalityPerformedProcedureStep

PATIENT_NAME = "MPPSPATIENT^SECRET"


class Modality:
    """The MPPS side of a modality: one association per message, as many scanners do."""

    def __init__(self, port: int, ae_title: str = "MODALITY") -> None:
        self.port, self.ae_title = port, ae_title

    def _assoc(self):  # noqa: ANN202
        ae = AE(ae_title=self.ae_title)
        ae.add_requested_context(ModalityPerformedProcedureStep)
        assoc = ae.associate("127.0.0.1", self.port, ae_title="RADPATH")
        assert assoc.is_established
        return assoc

    def create(self, uid: str, *, study_uid: str, accession: str, status: str = "IN PROGRESS") -> int:
        ds = Dataset()
        ds.PatientName, ds.PatientID = PATIENT_NAME, "MPPS-MRN-1"
        ds.PerformedProcedureStepStatus = status
        ds.PerformedProcedureStepID = "PPS1"
        ds.Modality = "CT"
        step = Dataset()
        if study_uid:
            step.StudyInstanceUID = study_uid
        step.AccessionNumber = accession
        ds.ScheduledStepAttributesSequence = [step]
        assoc = self._assoc()
        try:
            status_ds, _ = assoc.send_n_create(ds, ModalityPerformedProcedureStep, uid)
            return int(status_ds.Status)
        finally:
            assoc.release()

    def set(self, uid: str, status: str, instance_uids: list[str]) -> int:
        ds = Dataset()
        ds.PerformedProcedureStepStatus = status
        series = Dataset()
        series.SeriesInstanceUID = "1.2.3"
        series.ReferencedImageSequence = []
        for sop_uid in instance_uids:
            item = Dataset()
            item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
            item.ReferencedSOPInstanceUID = sop_uid
            series.ReferencedImageSequence.append(item)
        ds.PerformedSeriesSequence = [series]
        assoc = self._assoc()
        try:
            status_ds, _ = assoc.send_n_set(ds, ModalityPerformedProcedureStep, uid)
            return int(status_ds.Status)
        finally:
            assoc.release()
