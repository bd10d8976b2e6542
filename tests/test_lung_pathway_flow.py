"""The lung cancer CT flow end to end under Prefect's test harness (a real, temporary Prefect API).

One synthetic chest CT with known nodules: order → ingest → ready → flow → outputs → file drop.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from sqlmodel import select

from integrations.db.engine import session_scope
from integrations.db.models import Delivery, PathwayRun, Result
from pathways.lung_cancer_ct import match_detections
from tests.conftest import ingest_synthetic_study

pytestmark = pytest.mark.slow


def test_flow_delivers_once_and_a_rerun_adds_nothing(prefect_api, radpath_env, registry, tmp_path):
    from flows.dispatch import run_pathway

    study, run_id = ingest_synthetic_study(tmp_path, registry, "chest-ct", 11)
    state = asyncio.run(run_pathway(run_id))
    assert state.is_completed() and state.name == "Delivered", state.message

    with session_scope() as s:
        result = s.exec(select(Result)).one()
        deliveries = s.exec(select(Delivery)).all()
        assert s.get(PathwayRun, run_id).status == "completed"
    assert {d.destination for d in deliveries} == {"pacs", "ris", "ehr"}
    assert all(d.status == "delivered" and d.attempts == 1 for d in deliveries)
    outbox = radpath_env.outbox_dir
    assert sorted(p.name for p in (outbox / "pacs").iterdir()) == [d.idempotency_key for d in deliveries if d.destination == "pacs"]
    assert {p.name for p in (outbox / "pacs" / deliveries[0].idempotency_key).iterdir()} >= {"manifest.json"}

    # This study (generator seed 11) holds three nodules of >= 5 mm: all are found, none invented.
    truth = [n for n in json.loads(Path(study.truth_path).read_text())["truth"]["nodules"] if n["diameter_mm"] >= 5]
    found = [n["nodule"] for n in result.assessment["nodules"]]
    hits, false_positives = match_detections(truth, found)
    assert (hits, false_positives) == (len(truth), 0) and len(truth) == 3
    assert result.assessment["recommendation_code"] in {"ct-3-months", "pet-ct", "clinical-review"}

    # The same order and study again (a re-driven run): no second result, nothing re-sent.
    state = asyncio.run(run_pathway(run_id))
    assert state.is_completed()
    with session_scope() as s:
        assert len(s.exec(select(Result)).all()) == 1
        again = s.exec(select(Delivery)).all()
    assert [(d.id, d.attempts, d.status) for d in again] == [(d.id, d.attempts, d.status) for d in deliveries]
    assert len(list((outbox / "ris").iterdir())) == 1


def test_a_study_with_no_detection_is_delivered_as_no_nodule_detected_never_an_all_clear(
        prefect_api, radpath_env, registry, tmp_path):
    """Hazard H-11: the detector finding nothing may be a miss. Generator seed 30 draws a chest CT
    with no nodule (vessels only) and the detector finds none: every destination gets "no nodule
    detected by the AI", never "no follow-up" or any follow-up recommendation of the AI's own."""
    import pydicom

    from flows.dispatch import run_pathway

    study, run_id = ingest_synthetic_study(tmp_path, registry, "chest-ct", 30)
    assert json.loads(Path(study.truth_path).read_text())["truth"]["nodules"] == []
    state = asyncio.run(run_pathway(run_id))
    assert state.is_completed() and state.name == "Delivered", state.message

    with session_scope() as s:
        result = s.exec(select(Result)).one()
        deliveries = s.exec(select(Delivery)).all()
    assert result.assessment["nodules"] == [] and not result.assessment["urgent"]
    assert result.assessment["recommendation_code"] == "no-nodule-detected"
    assert {d.destination for d in deliveries} == {"pacs", "ris", "ehr"}
    assert all(d.status == "delivered" for d in deliveries)

    def delivered(destination: str) -> list[Path]:
        return [p for p in (radpath_env.outbox_dir / destination).rglob("*") if p.is_file() and p.name != "manifest.json"]

    oru = "".join(p.read_text() for p in delivered("ris"))
    assert "ai-no-nodule-detected^No nodule detected by the AI (not an all-clear)^99RADPATH" in oru
    assert "No pulmonary nodule detected by the AI. This is not an all-clear" in oru
    fhir = "".join(p.read_text() for p in delivered("ehr"))
    assert '"code": "ai-no-nodule-detected"' in fhir and '"system": "urn:radpath:codes"' in fhir
    (sr,) = [pydicom.dcmread(p) for p in delivered("pacs")]  # the SR; no SEG without a segment
    assert sr.Modality == "SR" and sr.PreliminaryFlag == "PRELIMINARY"

    def statements(items):  # (concept name, text) of every TEXT content item, depth first
        for item in items:
            if item.get("ValueType") == "TEXT":
                yield item.ConceptNameCodeSequence[0].CodeMeaning, item.TextValue
            yield from statements(item.get("ContentSequence", []))

    # radpath's local code is text in DICOM (no private coding scheme in the SR)
    assert ("Recommendation", "No nodule detected by the AI (not an all-clear)") in set(statements(sr.ContentSequence))
    for text in (oru, fhir, str(sr)):
        assert "bts2015" not in text and "no follow-up" not in text.lower()
