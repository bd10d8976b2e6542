"""An incoming imaging order, the same whatever front door it came through."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class OrderRequest:
    """An imaging order as any front door received it (HL7 v2 or FHIR), before the ledger.

    Carries patient identity: it goes to the ledger, never to logs or Prefect.
    """

    sending_application: str
    sending_facility: str
    control_id: str
    message_type: str
    order_control: str  # NW | CA | XO | SC ...
    placer_order_number: str
    filler_order_number: str | None
    accession_number: str
    nhs_number: str | None
    local_patient_id: str | None
    local_id_authority: str | None
    family_name: str
    given_name: str
    birth_date: dt.date | None
    sex: str
    procedure_code: str
    procedure_system: str
    procedure_text: str
    modality: str
    priority: str
    clinical_indication: str
    clinical_context: dict[str, Any] = field(default_factory=dict)
    protocol: str = "hl7v2"  # hl7v2 | fhir
    ordering_clinician: str = ""  # e.g. HL7 ORC-12 "id^family^given"
    ordering_location: str = ""  # e.g. HL7 PV1-3 point of care
    placer_system: str = ""  # identifier system of the placer order number (FHIR URI), if the order names one
    placer_namespace: str = ""  # HL7 v2 EI-2 namespace of the placer order number
    order_status: str = ""  # HL7 ORC-5 (table 0038), e.g. "CM" the exam is completed

    @property
    def sender(self) -> str:
        return f"{self.sending_application}^{self.sending_facility}"


@dataclass(frozen=True)
class PatientUpdate:
    """Demographics from an ADT^A08/A31 (identity data: ledger only, never logs)."""

    nhs_number: str | None
    local_patient_id: str | None
    family_name: str
    given_name: str
    birth_date: dt.date | None
    sex: str
    local_id_authority: str | None = None
    deceased: bool = False  # PID-30 Patient Death Indicator "Y" (HL7 table 0136)

    @property
    def key_identifier(self) -> str:
        """What the pseudonymous patient key is derived from (as for an order): the NHS number,
        else the authority-qualified local id."""
        return self.nhs_number or f"{self.local_id_authority}:{self.local_patient_id}"


@dataclass(frozen=True)
class PatientMerge:
    """ADT^A40 (merge patient - patient identifier list): the prior patient's records become the
    surviving patient's (identity data: ledger only, never logs)."""

    surviving: PatientUpdate  # PID: the identifiers that survive, and their demographics
    prior_nhs_number: str | None  # MRG-1: the identifiers that are retired
    prior_local_patient_id: str | None
    prior_local_id_authority: str | None = None

    @property
    def prior_key_identifiers(self) -> set[str]:
        keys = {self.prior_nhs_number} if self.prior_nhs_number else set()
        if self.prior_local_patient_id:
            keys.add(f"{self.prior_local_id_authority}:{self.prior_local_patient_id}")
        return keys


URGENT_PRIORITIES = ("urgent", "asap", "stat")


LANES = ("routine", "urgent")  # the queues (and SLA targets) an order's priority maps to


def urgency(priority: str) -> str:
    """The queue an order's priority goes to: `urgent` (stat, asap, urgent) or `routine`."""
    return "urgent" if priority in URGENT_PRIORITIES else "routine"


def age_on(birth: dt.date | None, on: dt.date) -> int | None:
    """Age in whole years on a date (None without a birth date)."""
    if birth is None:
        return None
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))
