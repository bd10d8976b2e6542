"""Patient identifier rules (pure).

NHS number: 10 digits, the last a modulus-11 check digit. Source: NHS Data Model and
Dictionary, "NHS Number" attribute — weights 10..2 on digits 1-9, check = 11 - (sum mod 11);
11 becomes 0 and 10 makes the number invalid. Numbers 999 000 0000 - 999 999 9999 are
reserved for testing and are never issued to real patients (NHS Digital test data guidance).
"""

from __future__ import annotations

NHS_NUMBER_SYSTEM = "https://fhir.nhs.uk/Id/nhs-number"  # UK Core identifier system
TEST_RANGE = (9990000000, 9999999999)


def nhs_check_digit(first_nine: str) -> int | None:
    """Modulus-11 check digit for the first nine digits; None where no valid number exists."""
    if len(first_nine) != 9 or not first_nine.isdigit():
        raise ValueError("an NHS number stem is nine digits")
    total = sum(int(d) * w for d, w in zip(first_nine, range(10, 1, -1)))
    check = 11 - (total % 11)
    if check == 11:
        return 0
    if check == 10:
        return None
    return check


def normalise_nhs_number(value: str) -> str:
    """Strip the spaces and hyphens people write NHS numbers with."""
    return "".join(ch for ch in value if ch not in " -")


def is_valid_nhs_number(value: str) -> bool:
    """True for a 10-digit NHS number whose check digit is right."""
    digits = normalise_nhs_number(value)
    if len(digits) != 10 or not digits.isdigit():
        return False
    return nhs_check_digit(digits[:9]) == int(digits[9])


def is_test_nhs_number(value: str) -> bool:
    """True for a valid number from the reserved 999 test range."""
    digits = normalise_nhs_number(value)
    return is_valid_nhs_number(digits) and TEST_RANGE[0] <= int(digits) <= TEST_RANGE[1]


def pseudonymous_key(secret: bytes, kind: str, value: str, length: int = 12) -> str:
    """A stable, non-reversible key (HMAC-SHA256) for showing a patient or study to ops.

    `kind` separates namespaces ("patient", "study") so keys cannot be correlated across them.
    """
    import hashlib
    import hmac

    digest = hmac.new(secret, f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()
    prefix = {"patient": "P", "study": "S", "order": "O"}.get(kind, "X")
    return f"{prefix}-{digest[:length]}"
