"""What a pathway reports, independent of the wire format.

Each pathway turns its assessment into a `ReportContent`; the SR, SEG, FHIR and HL7
builders in `integrations/` render any `ReportContent`, so a new pathway brings codes
and words, never a new message builder. `ResultContext` carries the identities the
clinical systems need (patient, order, study); it is built from the ledger inside the
delivery step and never travels through Prefect.
"""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict

from pathways.findings import Sex


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Code(_Frozen):
    """A coded concept. `system` is the FHIR system URI (LOINC, SNOMED CT, DCM, UCUM, ...)."""

    system: str
    code: str
    display: str


class Measurement(_Frozen):
    concept: Code
    value: float
    unit: Code  # UCUM, system "http://unitsofmeasure.org"
    # Optional coded derivation/method (e.g. "longest axial diameter")
    method: Code | None = None


class Qualitative(_Frozen):
    concept: Code
    value: Code


class Finding(_Frozen):
    key: str  # stable within the result, e.g. "nodule-1"
    label: str
    finding_type: Code
    site: Code | None = None
    measurements: tuple[Measurement, ...] = ()
    qualitative: tuple[Qualitative, ...] = ()
    segment_number: int | None = None  # 1-based segment in the SEG, where one exists
    summary: str = ""
    # Centre in patient coordinates (LPS, mm), where known: lets the SR point at the finding
    # when no SEG exists
    centre_xyz_mm: tuple[float, float, float] | None = None
    # The Tracking UID this finding had on an earlier study of the patient (TID 1500 allows it
    # to be reused); None: a new finding, whose UID is derived from the result and its key.
    tracking_uid: str | None = None


class ReportContent(_Frozen):
    pathway: str
    report_code: Code  # the modality's LOINC report code (SR Procedure Reported fallback); messages say codes.AI_IMAGING_RESULT
    title: str
    conclusion: str
    conclusion_codes: tuple[Code, ...] = ()
    findings: tuple[Finding, ...] = ()
    urgent: bool = False
    text: str  # the full narrative report, plain text

    def with_reviewed_conclusion(self, conclusion: str, reviewer: str, reason: str) -> ReportContent:
        """A reviewer's conclusion replaces the algorithm's. The coded conclusion goes (it
        coded the algorithm's words, not the reviewer's); the narrative opens with the
        reviewer's conclusion, who gave it and why, then keeps the algorithm's report below.
        Findings (the measurements) stand."""
        why = f" ({reason.strip()})" if reason.strip() else ""
        text = (f"Conclusion amended at clinical review by {reviewer}{why}: {conclusion.strip()}\n\n"
                f"Report as produced by the algorithm (its conclusion is replaced by the one above):\n{self.text}")
        return self.model_copy(update={"conclusion": conclusion.strip(), "conclusion_codes": (), "text": text})


class PatientIdentity(_Frozen):
    """Patient identity for clinical destinations only. Never logged, never given to Prefect."""

    nhs_number: str | None = None
    local_id: str | None = None
    local_id_authority: str | None = None
    family_name: str = ""
    given_name: str = ""
    birth_date: dt.date | None = None
    sex: Sex = "U"


class PriorReport(_Frozen):
    """The patient's earlier result this one was compared with (issue 17): the new SR lists that
    result's SR in its Pertinent Other Evidence Sequence (PS3.3 C.17.2)."""

    result_id: str
    study_uid: str
    verified: bool  # accepted or amended at review: its SR is the verified instance


class ResultContext(_Frozen):
    """Everything about a result's provenance that output messages must carry."""

    result_id: str  # uuid; drives deterministic UIDs, message ids and identifiers
    pathway: str
    pathway_version: str
    model_name: str
    model_version: str
    model_sha256: str = ""  # the model file's sha256 (spec / model card); "" for a rules-only pathway
    study_uid: str
    source_series_uid: str
    accession_number: str
    placer_order_number: str
    placer_system: str = ""  # the placer's identifier system (FHIR URI), when the order named one
    placer_namespace: str = ""  # HL7 v2 EI-2 of the placer order number, when the order named one
    filler_order_number: str | None = None
    procedure: Code  # as ordered (echoed to the RIS)
    standard_procedure: Code | None = None  # what a local or NICIP `procedure` means (the trust's code map)
    patient: PatientIdentity
    observed_at: dt.datetime  # when the result was produced (UTC)
    sending_application: str = "RADPATH"
    sending_facility: str = "RADPATH"
    prior_report: PriorReport | None = None
