"""Deterministic synthetic patients and order identifiers (no real person can match them).

NHS numbers come only from the range reserved for testing (999 000 0000 - 999 999 9999, see
``pathways.identifiers``) and carry a valid modulus-11 check digit.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date, timedelta

import numpy as np

from pathways.identifiers import nhs_check_digit

TRUST_CODE = "RXX"  # fictitious NHS trust organisation code ("RXX01" is its site)
FAMILY_NAMES = ("SMITH", "JONES", "TAYLOR", "BROWN", "WILLIAMS", "WILSON", "JOHNSON", "DAVIES",
                "PATEL", "ROBINSON", "WRIGHT", "THOMPSON", "EVANS", "WALKER", "WHITE", "ROBERTS",
                "GREEN", "HALL", "KHAN", "CLARKE", "HUGHES", "EDWARDS", "OKAFOR", "NOWAK")
GIVEN_NAMES = {
    "F": ("MARGARET", "SUSAN", "PATRICIA", "ELIZABETH", "JEAN", "AMINA", "SARAH", "JOAN",
          "HELEN", "PRIYA", "CAROL", "ANNE", "GRACE", "BRIDGET"),
    "M": ("JOHN", "DAVID", "MICHAEL", "PETER", "ROBERT", "JAMES", "MOHAMMED", "WILLIAM",
          "ALAN", "RAJESH", "GEORGE", "PAUL", "KEITH", "TOMASZ"),
}


@dataclass(frozen=True)
class SyntheticPatient:
    nhs_number: str  # 10 digits, test range, valid check digit
    hospital_number: str  # local MRN issued by the trust ("MR" in HL7 terms)
    family_name: str
    given_name: str
    birth_date: date
    sex: str  # "F" | "M"

    def age_on(self, day: date) -> int:
        """Completed years on a day."""
        before_birthday = (day.month, day.day) < (self.birth_date.month, self.birth_date.day)
        return day.year - self.birth_date.year - int(before_birthday)

    @property
    def dicom_name(self) -> str:
        return f"{self.family_name}^{self.given_name}"

    def to_json(self) -> dict:
        data = asdict(self)
        data["birth_date"] = self.birth_date.isoformat()
        return data


def synthetic_nhs_number(rng: np.random.Generator) -> str:
    """A valid NHS number from the 999 test range."""
    while True:
        stem = "999" + "".join(str(d) for d in rng.integers(0, 10, size=6))
        check = nhs_check_digit(stem)
        if check is not None:
            return stem + str(check)


def make_patient(rng: np.random.Generator, on: date, age_range: tuple[int, int]) -> SyntheticPatient:
    """A patient aged within age_range (inclusive) on the given day."""
    sex = "F" if rng.random() < 0.5 else "M"
    age = int(rng.integers(age_range[0], age_range[1] + 1))
    birth = on - timedelta(days=int(age * 365.25 + rng.integers(1, 360)))
    return SyntheticPatient(
        nhs_number=synthetic_nhs_number(rng),
        hospital_number=f"{TRUST_CODE}{int(rng.integers(0, 10**7)):07d}",
        family_name=str(rng.choice(FAMILY_NAMES)),
        given_name=str(rng.choice(GIVEN_NAMES[sex])),
        birth_date=birth,
        sex=sex,
    )


def accession_number(rng: np.random.Generator) -> str:
    """Trust prefix + 8 digits, e.g. RXX40311852 (fits DICOM SH and HL7 EI)."""
    return f"{TRUST_CODE}{int(rng.integers(0, 10**8)):08d}"


def placer_order_number(rng: np.random.Generator) -> str:
    """An order-comms (placer) number, e.g. OCS2210457731."""
    return f"OCS{int(rng.integers(0, 10**10)):010d}"
