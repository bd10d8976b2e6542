"""The status a result carries to each destination, and what each message format calls it (pure).

One life cycle, four states:

- `preliminary`: the algorithm's output, not reviewed by a clinician. Every unreviewed result
  goes out as this, whatever the mode (shadow, qa, clinical) and whether or not it supersedes
  an earlier one.
- `final`: a named reviewer accepted (or amended) it.
- `corrected`: a reviewed result that replaces one already sent as final.
- `cancelled`: a reviewer rejected it; the destination must withdraw what it filed.

Names in each standard:
- HL7 v2 OBR-25 (table 0123) and OBX-11 (table 0085), the same letters in v2.4 and v2.5.1:
  P = preliminary, F = final, C = correction (replaces a final result),
  X = 0123 "No results available; Order canceled" / 0085 "Results cannot be obtained".
- FHIR R4 DiagnosticReport.status (diagnostic-report-status) and Observation.status
  (observation-status): preliminary, final, amended, entered-in-error. "amended" rather than
  "corrected": a superseding result is a new analysis, not the fix of a typing error.
- DICOM SR Verification Flag (PS3.3 C.17.2): UNVERIFIED for preliminary, VERIFIED (with
  Verifying Observer and Verification DateTime) for final and corrected.
"""

from __future__ import annotations

from enum import StrEnum


class ResultStatus(StrEnum):
    PRELIMINARY = "preliminary"
    FINAL = "final"
    CORRECTED = "corrected"
    CANCELLED = "cancelled"

    @property
    def hl7(self) -> str:
        return _HL7[self]

    @property
    def fhir(self) -> str:
        return _FHIR[self]

    @property
    def reviewed(self) -> bool:
        return self in (ResultStatus.FINAL, ResultStatus.CORRECTED)


_HL7 = {ResultStatus.PRELIMINARY: "P", ResultStatus.FINAL: "F", ResultStatus.CORRECTED: "C", ResultStatus.CANCELLED: "X"}
_FHIR = {ResultStatus.PRELIMINARY: "preliminary", ResultStatus.FINAL: "final",
         ResultStatus.CORRECTED: "amended", ResultStatus.CANCELLED: "entered-in-error"}


def issued_status(*, reviewer: str | None, replaces_final: bool) -> ResultStatus:
    """The status a result goes out with: preliminary unless a named reviewer accepted it.

    Superseding a result does not make an unreviewed one final: it goes as preliminary again
    (the earlier one's final, if any, came from a reviewer and stands until this one is reviewed)."""
    if not (reviewer and reviewer.strip()):
        return ResultStatus.PRELIMINARY
    return ResultStatus.CORRECTED if replaces_final else ResultStatus.FINAL
