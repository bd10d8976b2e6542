"""The HL7 v2.4 ORM^O01 (new order) a RIS would send for each synthetic study, built with hl7apy.

Segments: MSH, PID (NHS number type NH + hospital number type MR), PV1, ORC (NW), OBR, and for
chest CT two OBX answers used by the Brock model (family history of lung cancer, emphysema),
coded Y/N from HL7 table 0136. ER7 with carriage-return segment separators.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from hl7apy.core import Field, Message

from radpath.synth.patients import SyntheticPatient

SENDING_APPLICATION = "SYNTH_RIS"
SENDING_FACILITY = "RXX01"


@dataclass(frozen=True)
class Procedure:
    code: str
    text: str
    modality: str  # OBR-24 diagnostic service section
    system: str = "SCT"


# SNOMED CT procedure codes. 169069000 from the radpath brief (SNOMED CT "Computed tomography of
# chest"); 816077007 "Magnetic resonance imaging of brain" (SNOMED CT International);
# 433236007 "Transthoracic echocardiography" and 426005005 "Cardiac CT for calcium scoring" from
# DICOM PS3.16 CID 3757 "Cardiac Diagnostic Procedure".
PROCEDURES = {
    "chest-ct": Procedure("169069000", "Computed tomography of chest", "CT"),
    "brain-mri": Procedure("816077007", "Magnetic resonance imaging of brain", "MR"),
    "echo": Procedure("433236007", "Transthoracic echocardiography", "US"),
    "cardiac-ct": Procedure("426005005", "Cardiac CT for calcium scoring", "CT"),
}
YES_NO = {True: "Y^Yes^HL70136", False: "N^No^HL70136"}  # HL7 table 0136


@dataclass(frozen=True)
class Order:
    kind: str
    placer_order_number: str
    accession_number: str
    ordered_at: datetime
    priority: str  # S (stat) | A (ASAP) | R (routine), HL7 table 0027
    clinical_info: str
    reason: str
    ordering_provider: str = "C1234567^JONES^ALAN^^^DR"
    family_history_lung_cancer: bool | None = None
    emphysema: bool | None = None


def _field(name: str, value: str) -> Field:
    f = Field(name, version="2.4")
    f.value = value
    return f


def build_orm(patient: SyntheticPatient, order: Order) -> str:
    """The ORM^O01 NW message for an order, as ER7 text with \\r separators."""
    proc = PROCEDURES[order.kind]
    stamp = order.ordered_at.strftime("%Y%m%d%H%M%S")
    msg = Message("ORM_O01", version="2.4")
    msh = msg.msh
    msh.msh_3, msh.msh_4 = SENDING_APPLICATION, SENDING_FACILITY
    msh.msh_5, msh.msh_6 = "RADPATH", SENDING_FACILITY
    msh.msh_7 = stamp
    msh.msh_9 = "ORM^O01^ORM_O01"
    msh.msh_10 = f"{order.accession_number}-NW"  # deterministic, one per order
    msh.msh_11, msh.msh_12 = "P", "2.4"

    patient_group = msg.add_group("ORM_O01_PATIENT")
    pid = patient_group.add_segment("PID")
    pid.pid_1 = "1"
    pid.add(_field("PID_3", f"{patient.nhs_number}^^^NHS^NH"))
    pid.add(_field("PID_3", f"{patient.hospital_number}^^^{SENDING_FACILITY}^MR"))
    pid.pid_5 = f"{patient.family_name}^{patient.given_name}"
    pid.pid_7 = patient.birth_date.strftime("%Y%m%d")
    pid.pid_8 = patient.sex
    pv1 = patient_group.add_group("ORM_O01_PATIENT_VISIT").add_segment("PV1")
    pv1.pv1_1, pv1.pv1_2, pv1.pv1_3 = "1", "O", f"RADIOLOGY^^^{SENDING_FACILITY}"

    order_group = msg.add_group("ORM_O01_ORDER")
    orc = order_group.add_segment("ORC")
    orc.orc_1 = "NW"
    orc.orc_2 = f"{order.placer_order_number}^OCS"
    orc.orc_3 = f"{order.accession_number}^{SENDING_APPLICATION}"
    orc.orc_7 = f"1^^^{stamp}^^{order.priority}"
    orc.orc_9 = stamp
    orc.orc_12 = order.ordering_provider
    detail = order_group.add_group("ORM_O01_ORDER_DETAIL")
    obr = detail.add_group("ORM_O01_CHOICE").add_segment("OBR")
    obr.obr_1 = "1"
    obr.obr_2 = f"{order.placer_order_number}^OCS"
    obr.obr_3 = f"{order.accession_number}^{SENDING_APPLICATION}"
    obr.obr_4 = f"{proc.code}^{proc.text}^{proc.system}"
    obr.obr_13 = order.clinical_info
    obr.obr_16 = order.ordering_provider
    obr.obr_18 = order.accession_number
    obr.obr_24 = proc.modality
    obr.obr_27 = f"1^^^{stamp}^^{order.priority}"
    obr.obr_31 = f"^{order.reason}"
    if order.kind == "chest-ct":
        answers = (("FHLC^Family history of lung cancer^L", order.family_history_lung_cancer),
                   ("EMPH^Emphysema^L", order.emphysema))
        for set_id, (question, answer) in enumerate(answers, start=1):
            obx = detail.add_group("ORM_O01_OBSERVATION").add_segment("OBX")
            obx.obx_1, obx.obx_2, obx.obx_3 = str(set_id), "CE", question
            obx.obx_5 = YES_NO[bool(answer)]
            obx.obx_11 = "F"
    return msg.to_er7()
