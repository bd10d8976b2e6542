import pytest

from integrations.errors import InvalidInput
from integrations.hl7.orders import parse_order
from tests.test_ledger import ORDER


def test_parses_the_fields_a_pathway_needs():
    order = parse_order(ORDER)
    assert (order.sending_application, order.sending_facility, order.control_id) == ("SYNTH_RIS", "RXX01", "MSG0001")
    assert order.nhs_number == "9434765919" and order.local_patient_id == "H123456"
    assert (order.placer_order_number, order.accession_number) == ("PL123", "ACC00001")
    assert (order.procedure_code, order.procedure_system, order.modality) == ("169069000", "SCT", "CT")
    assert order.priority == "routine" and order.sex == "F" and order.birth_date.year == 1958


@pytest.mark.parametrize(("orc_2", "system"), [
    ("PL123^OCS^1.2.826.0.1.3680043.8.498.1^ISO", "urn:oid:1.2.826.0.1.3680043.8.498.1"),  # EI-3 an OID
    ("PL123^OCS^https://trust.example/placer^URI", "https://trust.example/placer"),
    ("PL123^OCS", ""),  # a namespace alone names no identifier system
])
def test_the_placer_number_system_comes_from_its_universal_id(orc_2, system):
    """HL7 v2-to-FHIR IG, EI data type: EI-3 with EI-4 ISO becomes urn:oid:<EI-3>."""
    order = parse_order(ORDER.replace("ORC|NW|PL123|", f"ORC|NW|{orc_2}|"))
    assert (order.placer_order_number, order.placer_namespace, order.placer_system) == ("PL123", "OCS", system)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (("9434765919", "9434765918"), "PID-3"),
        (("ORM^O01", "ADT^A01"), "MSH-9"),
        (("|MSG0001|", "||"), "MSH-10"),
        (("169069000^Computed tomography of chest^SCT", ""), "OBR-4"),
        (("19580312", "1958-03-12x"), "PID-7"),
    ],
)
def test_bad_orders_name_the_field_and_never_the_patient(change, field):
    with pytest.raises(InvalidInput) as err:
        parse_order(ORDER.replace(*change))
    assert str(err.value).startswith(field)
    assert "9434765919" not in str(err.value) and "SMITH" not in str(err.value)


def test_missing_segment():
    without_obr = "\r".join(s for s in ORDER.split("\r") if not s.startswith("OBR"))
    with pytest.raises(InvalidInput, match="^OBR"):
        parse_order(without_obr)
