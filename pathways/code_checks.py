"""Is a procedure code a well-formed code of the coding system it names (OBR-4.3)?

A code that breaks its system's own rules is bad input (AE, ERR naming OBR-4); a well-formed
code that no pathway claims is a valid order that is simply not eligible.

- SNOMED CT ("SCT", HL7 table 0396): SNOMED CT Technical Implementation Guide, section
  "SCTID" — 6 to 18 digits, no leading zero, the last digit a Verhoeff check digit, the two
  before it the partition identifier ("00" or "10" for a concept).
- LOINC ("LN"): LOINC Users' Guide, "Calculating Mod 10 check digits" — the part after the
  hyphen is the mod-10 (Luhn) check digit of the part before it.
- Any other system (local "L", "99xxx", NICIP…): a non-empty code of at most 64 characters.
"""

from __future__ import annotations

from pathways.codes import LOINC, SNOMED, as_fhir_system

# Verhoeff's dihedral-group tables (J. Verhoeff, "Error detecting decimal codes", 1969)
_D = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 2, 3, 4, 0, 6, 7, 8, 9, 5], [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
    [3, 4, 0, 1, 2, 8, 9, 5, 6, 7], [4, 0, 1, 2, 3, 9, 5, 6, 7, 8], [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
    [6, 5, 9, 8, 7, 1, 0, 4, 3, 2], [7, 6, 5, 9, 8, 2, 1, 0, 4, 3], [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
    [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
]
_P = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 5, 7, 6, 2, 8, 3, 0, 9, 4], [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
    [8, 9, 1, 6, 0, 4, 3, 5, 2, 7], [9, 4, 5, 3, 1, 2, 6, 8, 7, 0], [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
    [2, 7, 9, 3, 8, 0, 6, 4, 1, 5], [7, 0, 4, 6, 9, 1, 3, 2, 5, 8],
]
_INV = [0, 4, 3, 2, 1, 5, 9, 8, 7, 6]
SNOMED_CONCEPT_PARTITIONS = {"00", "10"}


def verhoeff_check_digit(digits: str) -> int:
    c = 0
    for i, ch in enumerate(reversed(digits)):
        c = _D[c][_P[(i + 1) % 8][int(ch)]]
    return _INV[c]


def is_valid_verhoeff(digits: str) -> bool:
    c = 0
    for i, ch in enumerate(reversed(digits)):
        c = _D[c][_P[i % 8][int(ch)]]
    return c == 0


def is_snomed_concept_id(code: str) -> bool:
    return (
        code.isdigit() and code.isascii() and 6 <= len(code) <= 18 and not code.startswith("0")
        and code[-3:-1] in SNOMED_CONCEPT_PARTITIONS and is_valid_verhoeff(code)
    )


def luhn_check_digit(digits: str) -> int:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d // 10 + d % 10
    return (10 - total % 10) % 10


def is_loinc_code(code: str) -> bool:
    body, _, check = code.partition("-")
    return (body.isdigit() and body.isascii() and check.isdigit() and len(check) == 1
            and 1 <= len(body) <= 7 and luhn_check_digit(body) == int(check))


def procedure_code_problem(code: str, system: str) -> str | None:
    """None when the code is well formed for its system; otherwise why not (no patient data)."""
    legacy = system.strip().upper() in {"SNM", "SNM3"}  # SNOMED's pre-CT codes ("T-28000"): not SCTIDs
    code, system = code.strip(), as_fhir_system(system.strip()) if system.strip() and not legacy else ""
    if not code:
        return "procedure code missing"
    if system == SNOMED:
        return None if is_snomed_concept_id(code) else "not a valid SNOMED CT concept id (check digit or partition)"
    if system == LOINC:
        return None if is_loinc_code(code) else "not a valid LOINC code (check digit)"
    if len(code) > 64:
        return "procedure code longer than 64 characters"
    return None
