"""Procedure-code checks (worked values from their sources) and ACK layout per version."""

import pytest

from integrations.hl7.ack import ErrorDetail, Header, acknowledgements
from pathways.code_checks import (
    is_loinc_code,
    is_snomed_concept_id,
    luhn_check_digit,
    procedure_code_problem,
    verhoeff_check_digit,
)
from integrations.hl7.orders import parse_order
from tests.hl7_fixtures import order


def test_verhoeff_worked_example():
    # Verhoeff's scheme as in the SNOMED CT TIG check-digit section: "236" → check digit 3
    assert verhoeff_check_digit("236") == 3


@pytest.mark.parametrize("code", ["169069000", "22298006", "71651007", "816077007"])
def test_snomed_concept_ids_pass(code):
    assert is_snomed_concept_id(code)


@pytest.mark.parametrize("code", ["169069001", "169069", "0169069000", "169069020", "12A"])
def test_bad_snomed_ids_fail(code):
    assert not is_snomed_concept_id(code)


def test_loinc_mod10_worked_example():
    # LOINC Users' Guide, "Calculating Mod 10 check digits": 12345 → 5
    assert luhn_check_digit("12345") == 5
    assert is_loinc_code("24627-2") and not is_loinc_code("24627-3") and not is_loinc_code("24627")


def test_local_codes_only_need_to_exist():
    assert procedure_code_problem("CCHES", "NICIP") is None
    assert procedure_code_problem("", "L") == "procedure code missing"


def test_v23_orders_parse():
    parsed = parse_order(order("V23", version="2.3"))
    assert parsed.message_type == "ORM^O01" and parsed.family_name == "SMITH"


def test_ack_err_layout_follows_the_version():
    detail = ErrorDetail("PID", 3, "102", "NHS number fails its modulus-11 check")
    old = acknowledgements(Header(control_id="X", version="2.4", trigger="O01"), "AE", error=detail)[0]
    new = acknowledgements(Header(control_id="X", version="2.5.1", trigger="O23"), "AE", error=detail)[0]
    assert "\rERR|PID^1^3^102&Data type error&HL70357\r" in old
    assert "\rERR||PID^1^3|102^Data type error^HL70357|E||||NHS number fails its modulus-11 check\r" in new
    assert "ACK^O01^ACK" in old and "|P|2.4\r" in old


def test_enhanced_mode_conditions():
    header = Header(control_id="X", accept_ack_type="NE", application_ack_type="ER")
    assert acknowledgements(header, "AA") == []  # nothing asked for on success
    assert [a.split("\r")[1][:6] for a in acknowledgements(header, "AE")] == ["MSA|AE"]


def test_every_radpath_private_code_is_listed_in_the_designer_docs():
    """One documented local coding system: every urn:radpath:codes code a pathway can emit is
    in docs/pathway-designers.md, and the docs list no code radpath does not emit."""
    import re
    import typing
    from pathlib import Path

    from pathways import codes as c
    from pathways import dementia_report, heart_failure, heart_failure_report, lung_cancer_report

    emitted = {v.code for v in vars(c).values() if isinstance(v, c.Code) and v.system == c.RADPATH}
    emitted |= {f"bts2015-{k}" for k in lung_cancer_report._CATEGORY_DISPLAYS}
    emitted |= {f"dementia-mri-{k}" for k in dementia_report._CATEGORY_DISPLAYS}
    emitted |= {f"esc2021-lvef-{k}" for k in heart_failure_report._EF_DISPLAYS}
    emitted |= {f"cacdrs-{k}" for k in typing.get_args(heart_failure.CacDrs)}
    doc = (Path(__file__).parent.parent / "docs/pathway-designers.md").read_text()
    section = doc.split("### radpath's own codes", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `([a-z0-9A-Z-]+)`", section, flags=re.M))
    ranges = re.findall(r"^\| `(cacdrs)-A0` … `cacdrs-A3`", section, flags=re.M)
    listed |= {f"cacdrs-A{i}" for i in range(4)} if ranges else set()
    assert emitted == listed, (emitted - listed, listed - emitted)
