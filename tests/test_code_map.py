"""The trust's procedure-code map: local and NICIP codes claimed through the standard concept.

Worked values: SNOMED CT 169069000 |Computed tomography of chest| is what the lung pathway
claims (pathways/specs/lung_cancer_ct.yaml); HL7 table 0396 names SNOMED CT "SCT" and local
codes "L"; the FHIR system for SNOMED CT is http://snomed.info/sct.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from sqlmodel import select

from integrations.db import ledger
from integrations.db.engine import session_scope
from integrations.db.models import AuditEvent, PathwayRun
from pathways.code_map import CodeMap
from pathways.codes import SNOMED
from pathways.registry import RegistryError, SPECS_DIR, load_registry
from tests.hl7_fixtures import order, receive

CT_CHEST = {"system": SNOMED, "code": "169069000", "display": "Computed tomography of chest"}


def write_map(tmp_path: Path, *mappings: dict) -> Path:
    path = tmp_path / "code_map.yaml"
    path.write_text(yaml.safe_dump({"mappings": list(mappings)}))
    return path


def mapping(code: str, system: str = "L", senders=(), means=CT_CHEST) -> dict:  # noqa: ANN001
    return {"ordered": {"system": system, "code": code}, "means": dict(means), "senders": list(senders),
            "source": "RXX01 RIS procedure dictionary (test)"}


def test_a_senders_own_entry_wins_and_systems_are_compared_by_meaning():
    other = {**CT_CHEST, "code": "241540006", "display": "Computed tomography of brain"}
    code_map = CodeMap.model_validate({"mappings": [mapping("CTC"), mapping("CTC", senders=["CRIS^RXX02"], means=other)]})
    assert code_map.standard("L", "CTC").code == "169069000"  # every sender
    assert code_map.standard("L", "CTC", "CRIS^RXX02").code == "241540006"  # that sender's own
    assert code_map.standard("urn:radpath:v2-coding-system:L", "CTC").code == "169069000"  # same system, as a URI
    assert code_map.standard("99RIS", "CTC") is None and code_map.standard("L", "CTX") is None
    blank = CodeMap.model_validate({"mappings": [mapping("CTC", system="")]})  # OBR-4 without OBR-4.3
    assert blank.standard("", "CTC").code == "169069000" and blank.standard("L", "CTC") is None


def test_the_map_is_validated_with_the_specs(tmp_path):
    bad = write_map(tmp_path,
                    mapping("A1", means={**CT_CHEST, "code": "169069001"}),  # check digit wrong
                    mapping("A2", means={**CT_CHEST, "code": "71651007"}),  # valid, but no pathway claims it
                    mapping("A3"), mapping("A3"))  # twice for every sender
    with pytest.raises(RegistryError) as caught:
        load_registry(SPECS_DIR.glob("*.yaml"), code_map=bad)
    text = "\n".join(caught.value.errors)
    assert "169069001 is not a valid SNOMED CT concept id" in text
    assert "maps to 71651007, which no pathway claims" in text
    assert "mapped twice for every sender" in text
    (tmp_path / "typo.yaml").write_text(yaml.safe_dump({"mapings": []}))
    with pytest.raises(RegistryError, match="mapings"):
        load_registry(SPECS_DIR.glob("*.yaml"), code_map=tmp_path / "typo.yaml")


def test_claims_compare_the_coding_system_where_the_order_names_one(registry):
    assert [s.name for s in registry.match("169069000", "CT", "SCT")] == ["lung-cancer-ct"]
    assert [s.name for s in registry.match("169069000", "CT", SNOMED)] == ["lung-cancer-ct"]
    assert [s.name for s in registry.match("169069000", "CT")] == ["lung-cancer-ct"]  # no system: by code
    assert registry.match("169069000", "CT", "L") == []  # a local code that only looks the same


def test_a_local_code_order_is_claimed_for_its_sender_only(radpath_env, tmp_path):
    registry = load_registry(SPECS_DIR.glob("*.yaml"), code_map=write_map(tmp_path, mapping("CTCHEST", senders=["SYNTH_RIS^RXX01"])))
    local = "CTCHEST^CT chest^L"
    mapped = receive(order("M1", procedure=local), registry).order
    elsewhere = receive(order("M2", procedure=local, sender="OTHER_RIS", placer="P2", accession="A2"), registry).order
    assert mapped.eligible and len(mapped.run_ids) == 1 and not elsewhere.eligible
    with session_scope() as s:
        assert s.get(PathwayRun, mapped.run_ids[0]).pathway == "lung-cancer-ct"
        audit = s.exec(select(AuditEvent).where(AuditEvent.entity_id == mapped.order_id)).one()
        assert audit.detail["procedure_means"] == f"{SNOMED}|169069000"


def test_results_echo_the_ordered_code_and_the_sr_reports_the_standard_one(radpath_env, tmp_path, monkeypatch):
    """ORU^R01 OBR-4 is the RIS's own code; the DICOM SR's Procedure Reported is SNOMED CT."""
    from integrations.db.models import Order, Study
    from pathways import registry as registry_module

    monkeypatch.setenv("RADPATH_CODE_MAP", str(write_map(tmp_path, mapping("CTCHEST"))))
    registry_module.default_registry.cache_clear()
    try:
        registry = registry_module.default_registry()
        outcome = receive(order("M1", procedure="CTCHEST^CT chest^L"), registry).order
        with session_scope() as s:
            study = Study(study_uid="1.2.3.4", accession_number="ACC00001", patient_key="k")
            s.add(study)
            s.flush()
            s.get(PathwayRun, outcome.run_ids[0]).study_id = study.id
            assert s.get(Order, outcome.order_id).procedure_code == "CTCHEST"  # kept as sent
        ctx = ledger.result_context(outcome.run_ids[0], result_id="0b5d1c36-63b4-4a57-9d9e-2f2d0c7d6a11",
                                    model_name="m", model_version="1", source_series_uid="1.2.3.4.5")
    finally:
        registry_module.default_registry.cache_clear()
    assert (ctx.procedure.system, ctx.procedure.code) == ("L", "CTCHEST")
    assert (ctx.standard_procedure.system, ctx.standard_procedure.code) == (SNOMED, "169069000")


@pytest.mark.parametrize("system", ["SCT", "SNOMED CT", "snomedct", "SNOMED-CT", "SNM", SNOMED])
def test_the_spellings_of_snomed_ct_risks_send_are_claimed(registry, system):
    assert [s.name for s in registry.match("169069000", "CT", system)] == ["lung-cancer-ct"]
