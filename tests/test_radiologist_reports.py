"""The radiologist's signed report back into radpath (issue 16), through the production path: the
order and images through the HL7 intake, store and readiness sweep; the RIS's ORU^R01 over a real
MLLP connection to radpath's listener; the readings counted by `radpath monitor`.

The AI result is recorded through the ledger's result write path with a lung assessment (a 7.5 mm
nodule) rather than by running the model: what is under test is the report's journey."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest
from sqlmodel import select

from integrations.settings import get_settings
from integrations.db import ledger, radiologist_reports
from integrations.db.engine import session_scope
from integrations.db.models import AuditEvent, Hl7Quarantine, InboundMessage, RadiologistReport
from integrations.hl7.client import send_messages
from radpath.synth.radiologist import WrittenReport, report_message, write_chest_ct_report
from tests.conftest import ingest_synthetic_study
from tests.hl7_fixtures import ThreadedListener

SEED = 17  # a 7.5 mm solid nodule and a 3.1 mm one (the synthetic generator's truth)
AI_ASSESSMENT = {"nodules": [{"nodule": {"long_axis_mm": 7.5}}], "recommendation_code": "ct-3-months"}


def _report() -> RadiologistReport:
    with session_scope() as s:
        return s.exec(select(RadiologistReport)).one()


def test_a_signed_report_arrives_once_is_read_corrected_counted_and_its_text_expires(
        radpath_env, registry, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from radpath import cli

    study, run_id = ingest_synthetic_study(tmp_path, registry, "chest-ct", SEED)
    result_id = ledger.result_id_for(study.study_uid, "lung-cancer-ct", "1.1.0")
    ledger.record_result(run_id, result_id=result_id, study_uid=study.study_uid, pathway="lung-cancer-ct",
                         model_version="1.1.0", assessment=AI_ASSESSMENT, report={}, urgent=False, deliveries=[])
    truth = json.loads(Path(study.truth_path).read_text())["truth"]["nodules"]
    written = write_chest_ct_report(truth, np.random.default_rng(SEED), disagreement=0.0)
    signed = dt.datetime(2027, 1, 4, 11, 30, tzinfo=dt.UTC)
    final = report_message(study.order_path, written, control_id="RPT-1", signed_at=signed)
    corrected = report_message(study.order_path, WrittenReport("CT CHEST\nNo pulmonary nodules.", False, None, True),
                               control_id="RPT-2", signed_at=signed + dt.timedelta(hours=2), status="C")
    preliminary = report_message(study.order_path, written, control_id="RPT-3", signed_at=signed, status="P")
    other_exam = final.replace(study.accession_number, "RXX00000000").replace("RPT-1", "RPT-4")

    with ThreadedListener() as listener:
        first, resent = send_messages("127.0.0.1", listener.port, [final, final])
        assert (first.code, resent.code) == ("AA", "AA")  # the resend is answered as before, stored once
        report = _report()
        reading = report.readings["lung-cancer-ct"]
        assert reading["nodule_present"] and reading["sizes_mm"][0] == written.largest_mm
        assert report.result_status == "final" and report.reported_at == signed and report.corrections == 0
        assert "nodule" in report.text

        monkeypatch.setattr(cli.console, "width", 300)
        shown = CliRunner().invoke(cli.app, ["monitor"])
        assert shown.exit_code == 0, shown.output
        assert "1.1.0" in shown.output and "100% (21%-100%)" in shown.output  # 1 TP: sensitivity 1/1

        (fixed,) = send_messages("127.0.0.1", listener.port, [corrected])
        assert fixed.code == "AA"
        report = _report()
        assert report.result_status == "corrected" and report.corrections == 1
        assert not report.readings["lung-cancer-ct"]["nodule_present"]
        (studies,) = [r for r in radiologist_reports.reported_results()]
        assert (studies.model_version, studies.trust, studies.assessment) == ("1.1.0", "RXX01", AI_ASSESSMENT)

        refused, unknown = send_messages("127.0.0.1", listener.port, [preliminary, other_exam])
        assert refused.code == "AE" and "ERR|OBR^1^25^103" in refused.raw  # a preliminary is not the radiologist's word
        assert unknown.code == "AA"  # a report of an exam radpath never saw: acknowledged, kept as a message only
    with session_scope() as s:
        actions = [a.action for a in s.exec(select(AuditEvent).where(AuditEvent.action.like("report.%"))
                                             .order_by(AuditEvent.id)).all()]
    assert actions == ["report.received", "report.corrected", "report.unmatched"]
    # What the listener tells Prefect carries ids only.
    reported = [e for e in listener.events if e.event == "report.received"]
    assert len(reported) == 2 and all(set(e.payload) == {"status"} for e in reported)
    assert study.accession_number not in repr(listener.events)

    # Past the retention (30 days by default), the text and its raw message go; the reading stays.
    assert radiologist_reports.purge_texts(signed + dt.timedelta(days=1), 30) == 0
    assert radiologist_reports.purge_texts(dt.datetime.now(dt.UTC) + dt.timedelta(days=31), 30) == 1
    report = _report()
    assert report.text is None and report.text_purged_at is not None and "lung-cancer-ct" in report.readings
    with session_scope() as s:  # every report message: original, correction, refused draft, unknown exam
        reports = s.exec(select(InboundMessage).where(InboundMessage.message_type == "ORU^R01")).all()
        assert len(reports) == 4 and all(m.raw == "" for m in reports)
        kept = s.exec(select(Hl7Quarantine)).all()  # the refused draft's bytes, kept in quarantine, go too
        assert len(kept) == 1 and kept[0].raw == b""


def test_a_signed_fhir_diagnostic_report_is_kept_once_and_a_draft_is_refused(radpath_env, registry, tmp_path):
    """The same report through radpath's FHIR door (POST /fhir/DiagnosticReport, the HTTP router)."""
    import base64

    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from integrations.fhir.api import fhir_router

    study, run_id = ingest_synthetic_study(tmp_path, registry, "chest-ct", SEED)
    result_id = ledger.result_id_for(study.study_uid, "lung-cancer-ct", "1.1.0")
    ledger.record_result(run_id, result_id=result_id, study_uid=study.study_uid, pathway="lung-cancer-ct",
                         model_version="1.1.0", assessment=AI_ASSESSMENT, report={}, urgent=False, deliveries=[])
    acsn = {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]},
            "value": study.accession_number}

    def report(status: str, text: str, **extra) -> dict:  # noqa: ANN003
        return {"resourceType": "DiagnosticReport", "status": status, "code": {"text": "CT chest"},
                "basedOn": [{"identifier": acsn}], "issued": "2027-01-04T11:30:00Z",
                "presentedForm": [{"contentType": "text/plain; charset=utf-8",
                                   "data": base64.b64encode(text.encode()).decode()}], **extra}

    app = FastAPI()
    app.include_router(fhir_router(registry, settings=get_settings()), prefix="/fhir")
    with TestClient(app) as client:
        def post(resource: dict):  # noqa: ANN202
            return client.post("/fhir/DiagnosticReport", content=json.dumps(resource),
                               headers={"Content-Type": "application/fhir+json"})

        signed = report("final", "CT CHEST\nThere is an 8 mm solid nodule in the right upper lobe.")
        first = post(signed)
        assert first.status_code == 201, first.text
        assert post(signed).status_code == 200 and _report().corrections == 0  # a resend: nothing new
        assert _report().readings["lung-cancer-ct"]["sizes_mm"] == [8.0]
        amended = post(report("amended", "CT CHEST\nNo pulmonary nodules."))
        assert amended.status_code == 200 and "corrected" in amended.text and _report().corrections == 1
        draft = post(report("preliminary", "CT CHEST"))
        assert draft.status_code == 422 and draft.json()["issue"][0]["expression"] == ["DiagnosticReport.status"]
        nameless = post(report("final", "x", basedOn=[]))
        assert nameless.status_code == 422 and "ACSN" in nameless.text
        other = report("final", "x")
        other["basedOn"][0]["identifier"] = {**acsn, "value": "RXX00000000"}
        unknown = post(other)
        assert unknown.status_code == 200 and unknown.json()["issue"][0]["severity"] == "warning"
    assert not _report().readings["lung-cancer-ct"]["nodule_present"] and _report().result_status == "corrected"


def test_a_follow_up_the_radiologist_asks_for_is_tracked_even_where_the_ai_asked_for_none(radpath_env, registry,
                                                                                          tmp_path):
    """The report's interval brings the AI's plan forward (never later) or opens one (hazard H-27)."""
    from integrations.db import surveillance
    from integrations.db.models import SurveillancePlan
    from tests.hl7_fixtures import receive

    lung = registry.get("lung-cancer-ct").surveillance
    planned, run_a = ingest_synthetic_study(tmp_path / "a", registry, "chest-ct", SEED)
    unplanned, run_b = ingest_synthetic_study(tmp_path / "b", registry, "chest-ct", SEED + 1)
    for study, run_id, follow_up in ((planned, run_a, lung.follow_up("ct-12-months")), (unplanned, run_b, None)):
        ledger.record_result(run_id, result_id=ledger.result_id_for(study.study_uid, "lung-cancer-ct", "1.1.0"),
                             study_uid=study.study_uid, pathway="lung-cancer-ct", model_version="1.1.0",
                             assessment=AI_ASSESSMENT, report={}, urgent=False, deliveries=[], follow_up=follow_up)
    ask = "CT CHEST\nThere is a 6 mm solid nodule in the right upper lobe.\nRecommend follow-up CT in 3 months."
    later = "CT CHEST\nThere is a 6 mm solid nodule in the right upper lobe.\nRepeat CT at 24 months."
    signed = dt.datetime(2027, 1, 4, 11, 30, tzinfo=dt.UTC)
    for i, (study, text) in enumerate(((planned, ask), (unplanned, ask), (planned, later))):
        message = report_message(study.order_path, WrittenReport(text, True, 6.0, False), control_id=f"FU-{i}",
                                 signed_at=signed, status="F" if i < 2 else "C")
        assert receive(message, registry).status == "accepted"

    with session_scope() as s:
        plans = {p.recommendation_code: p for p in s.exec(select(SurveillancePlan)).all()}
    assert set(plans) == {"ct-12-months", "report-ct-91d"}
    brought = plans["ct-12-months"]  # 365 days by the AI, 91 by the radiologist, and 24 months later changes nothing
    assert brought.due_at - brought.baseline_at == dt.timedelta(days=91)
    assert brought.overdue_at - brought.due_at == dt.timedelta(days=lung.grace_days)
    assert plans["report-ct-91d"].due_at - plans["report-ct-91d"].baseline_at == dt.timedelta(days=91)
    assert {p.status for p in surveillance.plans()} == {"due"}


def test_the_evidence_monitor_stays_silent_while_agreement_holds_and_alerts_when_it_falls(
        prefect_api, radpath_env, tmp_path, monkeypatch):
    """flows/monitor.py on a live Prefect server, with a trust's own spec folder
    (RADPATH_PATHWAYS_DIR) that lets the lung monitor judge from 3 studies. Three chest CTs whose
    AI found a 7.5 mm nodule: the radiologists agree (no alert), then correct all three to "no
    nodules" (specificity 0/3, upper bound 0.47 < 0.60: alerted, figures and ids only)."""
    import asyncio
    import shutil

    import yaml
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.monitor import evidence_monitor
    from pathways.registry import SPECS_DIR, default_registry
    from tests.conftest import prefect_events
    from tests.hl7_fixtures import receive

    specs = tmp_path / "specs"
    shutil.copytree(SPECS_DIR, specs)
    lung = yaml.safe_load((specs / "lung_cancer_ct.yaml").read_text())
    lung["monitoring"] = {"window_days": 30, "min_cases": 3, "min_sensitivity": 0.8, "min_specificity": 0.6}
    (specs / "lung_cancer_ct.yaml").write_text(yaml.safe_dump(lung, sort_keys=False))
    monkeypatch.setenv("RADPATH_PATHWAYS_DIR", str(specs))
    default_registry.cache_clear()
    try:
        registry = default_registry()
        studies = []
        for seed in (17, 18, 19):
            study, run_id = ingest_synthetic_study(tmp_path / str(seed), registry, "chest-ct", seed)
            ledger.record_result(run_id, result_id=ledger.result_id_for(study.study_uid, "lung-cancer-ct", "1.1.0"),
                                 study_uid=study.study_uid, pathway="lung-cancer-ct", model_version="1.1.0",
                                 assessment=AI_ASSESSMENT, report={}, urgent=False, deliveries=[])
            studies.append(study)
        signed = dt.datetime.now(dt.UTC)

        def report_all(text: str, status: str) -> None:
            for i, study in enumerate(studies):
                message = report_message(study.order_path, WrittenReport(text, True, 8.0, False),
                                         control_id=f"MON-{status}-{i}", signed_at=signed, status=status)
                assert receive(message, registry).status == "accepted"

        report_all("CT CHEST\nThere is an 8 mm solid nodule in the right upper lobe.", "F")
        steady = evidence_monitor(return_state=True)
        assert steady.message == "1 model versions compared, 0 below minimum"
        report_all("CT CHEST\nNo pulmonary nodules.", "C")
        fallen = evidence_monitor(return_state=True)
        assert fallen.message == "1 model versions compared, 1 below minimum"
        (event,) = prefect_events(prefect_api, "radpath.model.agreement_low")
        payload = event["payload"]
        assert (payload["measure"], payload["cases"], payload["model_version"]) == ("specificity", 3, "1.1.0")
        assert payload["value"] == 0 and payload["upper_bound"] == pytest.approx(0.474, abs=1e-3)
        assert all(s.accession_number not in json.dumps(event) for s in studies)

        async def table() -> str:
            async with get_client() as client:
                (artifact,) = await client.read_latest_artifacts(
                    artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["radpath-concordance"])))
                return json.dumps(artifact.data)

        shown = asyncio.run(table())
        assert "0% (0%-56%)" in shown and all(s.accession_number not in shown for s in studies)
    finally:
        default_registry.cache_clear()
