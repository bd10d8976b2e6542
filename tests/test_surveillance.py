"""Surveillance plans and their failsafe (issue 17), through the production paths: the order
through the HL7 intake, images through the store, the readiness sweep, the real lung flow
under a real (temporary) Prefect API, the failsafe flow, `radpath surveillance list`.

The follow-up is the synthetic generator's follow-up of the same patient (`radpath.synth.
generate_follow_up`): 91 days later, the nodule's volume doubled, the patient lying elsewhere
in the scanner; its truth gives the volume-doubling time the pathway must find."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from pathlib import Path

import pydicom
import pytest
from sqlmodel import select

from integrations.db import ledger, ops, surveillance
from integrations.db.engine import session_scope
from integrations.db.models import AuditEvent, Result, SurveillancePlan
from integrations.hl7.orders import parse_order
from integrations.settings import get_settings
from pathways.lung_cancer_ct import CATEGORY_ORDER, NO_NODULE_DETECTED as NO_NODULE
from pathways.spec import Surveillance
from tests.conftest import ingest_synthetic_study, make_ready, prefect_events
from tests.phi_scan import assert_prefect_holds_none, identity_forms, linkable_values

# Generator seed 17 draws a 7.5 mm solid nodule of 220 mm3 (BTS 2015 Algorithm 1: 80 to < 300 mm3,
# CT at 3 months) and a 3.1 mm one (no follow-up); seed 18 is another patient's chest CT.
BASELINE_SEED, FOLLOW_UP_SEED = 17, 18
FOLLOW_UP = {"days": 91, "volume_ratio": {1: 2.0}, "shift_xyz_mm": (9.0, -7.0, 16.0)}


def _tracking(sr: pydicom.Dataset) -> dict[str, str]:
    """Tracking Identifier (DCM 112039) -> Tracking Unique Identifier (DCM 112040) of every
    measurement group in an SR's content tree."""
    found: dict[str, str] = {}

    def walk(items) -> None:  # noqa: ANN001
        for item in items:
            children = item.get("ContentSequence", [])
            by_code = {c.ConceptNameCodeSequence[0].CodeValue: c for c in children if "ConceptNameCodeSequence" in c}
            if "112039" in by_code and "112040" in by_code:
                found[by_code["112039"].TextValue] = by_code["112040"].UID
            walk(children)

    walk(sr.ContentSequence)
    return found


def _plan() -> SurveillancePlan:
    with session_scope() as s:
        return s.exec(select(SurveillancePlan)).one()


@pytest.mark.slow
def test_an_overdue_follow_up_is_alerted_then_again_weekly_and_closed_by_the_follow_up_study(
        prefect_api, radpath_env, registry, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from flows.dispatch import run_pathway
    from flows.surveillance import surveillance_failsafe
    from integrations.dicom.store import ingest_instances
    from radpath import cli
    from radpath.synth import FollowUpPlan, generate_follow_up
    from tests.hl7_fixtures import receive

    baseline, run_id = ingest_synthetic_study(tmp_path, registry, "chest-ct", BASELINE_SEED)
    state = asyncio.run(run_pathway(run_id))
    assert state.name == "Delivered", state.message
    with session_scope() as s:
        result = s.exec(select(Result)).one()
    assert result.assessment["recommendation_code"] == "ct-3-months"

    plan = _plan()  # opened with the result, 91 days after the baseline study arrived (the lung spec)
    plan_study_key = surveillance.plans()[0].study_key
    assert (plan.result_id, plan.status, plan.recommendation_code) == (result.id, "due", "ct-3-months")
    assert plan.due_at - plan.baseline_at == dt.timedelta(days=91)
    assert plan.overdue_at - plan.due_at == dt.timedelta(days=28)

    # Before the grace period has passed: listed as due, nothing alerted.
    before = surveillance_failsafe(as_of=plan.overdue_at - dt.timedelta(hours=1), return_state=True)
    assert before.message == "1 plans open, 0 overdue, 0 newly alerted"

    # Past it: one alert, however many passes run.
    late = plan.overdue_at + dt.timedelta(days=2)
    first = surveillance_failsafe(as_of=late, return_state=True)
    second = surveillance_failsafe(as_of=late + dt.timedelta(hours=1), return_state=True)
    assert first.message == "1 plans open, 1 overdue, 1 newly alerted"
    assert second.message == "1 plans open, 1 overdue, 0 newly alerted"
    # Still overdue a week after the first alert (the spec's realert_days): alerted again.
    week = surveillance_failsafe(as_of=late + dt.timedelta(days=7), return_state=True)
    assert week.message == "1 plans open, 1 overdue, 1 newly alerted"
    deadline = time.monotonic() + 30  # both events persisted (the server's persister batches)
    while True:
        events = sorted((e for e in prefect_events(prefect_api, "radpath.surveillance.overdue")
                         if e["resource"]["prefect.resource.id"] == f"radpath.surveillance_plan.{plan.id}"),
                        key=lambda e: e["payload"]["days_overdue"])
        if len(events) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert len(events) == 2, events
    payload = events[0]["payload"]
    assert payload["recommendation"] == "ct-3-months" and payload["days_overdue"] == 30 and payload["repeated"] is False
    assert payload["follow_up_ordered"] is False and payload["patient_key"] == plan.patient_key
    assert events[1]["payload"]["days_overdue"] == 37 and events[1]["payload"]["repeated"] is True
    (row,) = surveillance.plans(late)
    assert (row.status, row.alerted, row.accession_number) == ("overdue", True, baseline.accession_number)

    # The responsible team's terminal names the accession number; the Prefect table does not.
    monkeypatch.setattr(cli.console, "width", 300)
    listed = CliRunner().invoke(cli.app, ["surveillance", "list"])
    assert listed.exit_code == 0 and baseline.accession_number in listed.output and "ct-3-months" in listed.output
    assert baseline.accession_number not in str(surveillance.surveillance_rows([row]))

    # The follow-up: first its order (booked, no study yet), then its images close the plan.
    follow_up = generate_follow_up(BASELINE_SEED, FollowUpPlan(**FOLLOW_UP), tmp_path / "follow-up")
    assert receive(Path(follow_up.order_path).read_bytes().decode(), registry).status == "accepted"
    (row,) = surveillance.plans(late)
    assert row.follow_up_ordered and row.status == "overdue"
    ingest_instances(f.read_bytes() for f in sorted(Path(follow_up.dicom_dir).rglob("*.dcm")))
    (follow_up_run,) = make_ready(follow_up.study_uid, registry)
    plan = _plan()
    assert (plan.status, plan.closed_by_run_id) == ("received", follow_up_run)
    assert "follow-up study received" in plan.close_reason
    assert surveillance.plans(late) == []
    closed = surveillance_failsafe(as_of=late, return_state=True)
    assert closed.message == "0 plans open, 0 overdue, 0 newly alerted"
    with session_scope() as s:
        actions = [a.action for a in s.exec(select(AuditEvent).where(AuditEvent.entity_id == plan.id)
                                             .order_by(AuditEvent.id)).all()]
    assert actions == ["surveillance.opened", "surveillance.overdue-alerted", "surveillance.overdue-alerted",
                       "surveillance.received"]

    # The follow-up's result compares it with the baseline: growth and VDT against the truth.
    state = asyncio.run(run_pathway(follow_up_run))
    assert state.name == "Delivered", state.message
    with session_scope() as s:
        current = s.exec(select(Result).where(Result.study_uid == follow_up.study_uid)).one()
    truth = {g["index"]: g for g in json.loads(Path(follow_up.truth_path).read_text())["truth"]["growth"]}
    growth = {g["prior_index"]: g for g in current.assessment["growth"]}
    assert current.assessment["interval_days"] == 91 and current.assessment["prior_study_key"] == plan_study_key
    grown = growth[1]
    assert grown["status"] == "growing" and grown["index"] is not None
    assert grown["vdt_days"] == pytest.approx(truth[1]["vdt_days"], rel=0.25)
    # Now 9.4 mm: Brock puts it at PET-CT by size alone; the growth adds its own urgent reason.
    assert current.assessment["recommendation_code"] in {"clinical-review", "pet-ct"} and current.urgent
    assert any("VDT" in r and "the range of lung cancer" in r for r in current.assessment["urgent_reasons"])
    assert "COMPARISON: prior chest CT" in current.report["text"] and "volume-doubling time" in current.report["text"]
    # The plan's outcome follows the follow-up's recommendation: beyond surveillance, referred.
    (closed,) = surveillance.plans(include_closed=True)
    assert closed.outcome == f"referred ({current.assessment['recommendation_code']})"
    # PACS links the two studies: the follow-up SR names the baseline SR as pertinent other
    # evidence, and the grown nodule keeps its Tracking UID in both SRs and the follow-up SEG.
    assert current.assessment["prior_result_id"] == result.id
    sr_of = {r.id: pydicom.dcmread(get_settings().data_dir / "results" / r.id / "sr.dcm") for r in (result, current)}
    (evidence,) = sr_of[current.id].PertinentOtherEvidenceSequence
    assert evidence.StudyInstanceUID == baseline.study_uid
    referenced = evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
    assert referenced == sr_of[result.id].SOPInstanceUID
    tracked = {rid: _tracking(sr) for rid, sr in sr_of.items()}
    assert tracked[current.id][f"Nodule {grown['index']}"] == tracked[result.id]["Nodule 1"]
    assert tracked[current.id]["Conclusion"] != tracked[result.id]["Conclusion"]
    seg = pydicom.dcmread(get_settings().data_dir / "results" / current.id / "seg.dcm")
    segment = next(d for d in seg.SegmentSequence if d.SegmentNumber == grown["index"])
    assert segment.TrackingUID == tracked[result.id]["Nodule 1"]

    # The alert, its table and the failsafe's runs hold pseudonymous keys only.
    from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL, PREFECT_LOCAL_STORAGE_PATH

    db_path = Path(PREFECT_API_DATABASE_CONNECTION_URL.value().split("///", 1)[1])
    assert_prefect_holds_none([db_path.parent, Path(PREFECT_LOCAL_STORAGE_PATH.value())],
                              identity_forms(parse_order(Path(baseline.order_path).read_bytes().decode())),
                              linkable_values(baseline.accession_number, baseline.study_uid), plan.patient_key)


def test_a_result_rejected_at_review_or_superseded_cancels_its_plan(radpath_env, registry, tmp_path):
    """The ledger's write path (what tasks/results.record_result and the review decision call),
    on a real order, study and readiness sweep; no flow is needed to open a plan."""
    study, run_id = ingest_synthetic_study(tmp_path, registry, "chest-ct", FOLLOW_UP_SEED)
    follow_up = registry.get("lung-cancer-ct").surveillance.follow_up("ct-12-months")

    def record(revision: int) -> str:
        result_id = ledger.result_id_for(study.study_uid, "lung-cancer-ct", "1.1.0", revision)
        ledger.record_result(run_id, result_id=result_id, study_uid=study.study_uid, pathway="lung-cancer-ct",
                             model_version="1.1.0", assessment={"recommendation_code": "ct-12-months"}, report={},
                             urgent=False, deliveries=[], study_revision=revision, follow_up=follow_up)
        return result_id

    first = record(0)
    second = record(1)  # late images re-ran the study: the first result is superseded
    with session_scope() as s:
        plans = {p.result_id: p for p in s.exec(select(SurveillancePlan)).all()}
    assert plans[first].status == "cancelled" and "superseded" in plans[first].close_reason
    assert plans[second].status == "due" and plans[second].due_at - plans[second].baseline_at == dt.timedelta(days=365)
    ops.set_review(second, "rejected", reviewer="Dr Test", reason="the nodule is a vessel")
    with session_scope() as s:
        plan = s.exec(select(SurveillancePlan).where(SurveillancePlan.result_id == second)).one()
    assert plan.status == "cancelled" and "rejected at review" in plan.close_reason
    assert surveillance.plans() == []


def test_the_surveillance_spec_names_lung_categories_and_positive_intervals(registry):
    lung = registry.get("lung-cancer-ct").surveillance
    assert set(lung.follow_up_days) <= set(CATEGORY_ORDER)
    assert lung.follow_up("ct-3-months").days == 91 and lung.follow_up("ct-12-months").days == 365
    assert lung.follow_up("pet-ct") is None and lung.follow_up("no-nodule-detected") is None
    assert all(not registry.get(name).surveillance.follow_up_days for name in registry.specs if name != "lung-cancer-ct")
    with pytest.raises(ValueError, match="positive"):
        Surveillance(follow_up_days={"ct-3-months": 0})


def test_a_patient_recorded_deceased_by_adt_has_their_plans_cancelled(radpath_env, registry, tmp_path):
    """ADT^A08 with PID-30 (Patient Death Indicator) "Y", through the HL7 intake."""
    from tests.hl7_fixtures import receive

    study, run_id = ingest_synthetic_study(tmp_path, registry, "chest-ct", FOLLOW_UP_SEED)
    result_id = ledger.result_id_for(study.study_uid, "lung-cancer-ct", "1.1.0")
    ledger.record_result(run_id, result_id=result_id, study_uid=study.study_uid, pathway="lung-cancer-ct",
                         model_version="1.1.0", assessment={"recommendation_code": "ct-3-months"}, report={},
                         urgent=False, deliveries=[],
                         follow_up=registry.get("lung-cancer-ct").surveillance.follow_up("ct-3-months"))
    pid = next(s for s in Path(study.order_path).read_bytes().decode().split("\r") if s.startswith("PID")).split("|")
    alive = "|".join(pid + [""] * (31 - len(pid)))
    deceased = alive.split("|")
    deceased[29], deceased[30] = "20270101", "Y"  # PID-29 death date, PID-30 death indicator
    adt = "MSH|^~\\&|PAS|RXX01|RADPATH|RADPATH|20270102090000||ADT^A08^ADT_A01|{c}|P|2.4\rEVN|A08|20270102090000\r{p}\rPV1|1|O\r"
    assert receive(adt.format(c="ADT-1", p=alive), registry).status == "accepted"
    assert [p.status for p in surveillance.plans()] == ["due"]  # an update that is not a death changes nothing
    assert receive(adt.format(c="ADT-2", p="|".join(deceased)), registry).status == "accepted"
    assert surveillance.plans() == []
    (plan,) = surveillance.plans(include_closed=True)
    assert plan.status == "cancelled" and "deceased" in plan.closed_reason


def test_a_patient_merge_moves_plans_and_priors_to_the_surviving_patient(radpath_env, registry, tmp_path):
    """ADT^A40 (HL7 v2.5.1 ch. 3.3.40) through the HL7 intake: the baseline chest CT was made under
    one record (seed 17's patient), the PAS merges it into another (seed 18's patient, MRG-1 naming
    the retired identifiers); that patient's next chest CT then closes the plan and is compared
    with the baseline."""
    from radpath.synth import generate
    from tests.hl7_fixtures import receive

    baseline, run_id = ingest_synthetic_study(tmp_path / "a", registry, "chest-ct", BASELINE_SEED)
    result_id = ledger.result_id_for(baseline.study_uid, "lung-cancer-ct", "1.1.0")
    ledger.record_result(run_id, result_id=result_id, study_uid=baseline.study_uid, pathway="lung-cancer-ct",
                         model_version="1.1.0", assessment={"recommendation_code": "ct-3-months"}, report={},
                         urgent=False, deliveries=[],
                         follow_up=registry.get("lung-cancer-ct").surveillance.follow_up("ct-3-months"))
    prior_key = _plan().patient_key

    def pid_of(study) -> str:  # noqa: ANN001
        return next(s for s in Path(study.order_path).read_bytes().decode().split("\r") if s.startswith("PID"))

    (survivor,) = generate("chest-ct", 1, FOLLOW_UP_SEED, tmp_path / "peek")
    a40 = ("MSH|^~\\&|PAS|RXX01|RADPATH|RADPATH|20270102090000||ADT^A40^ADT_A39|{c}|P|2.4\r"
           "EVN|A40|20270102090000\r{pid}\r{mrg}")
    with pytest.raises(AssertionError, match=r"ERR\|MRG\^1\^1\^101"):  # no prior identifiers: refused, nothing moved
        receive(a40.format(c="A40-0", pid=pid_of(survivor), mrg="PV1|1|O\r"), registry)
    assert _plan().patient_key == prior_key
    mrg = f"MRG|{pid_of(baseline).split('|')[3]}\r"
    assert receive(a40.format(c="A40-1", pid=pid_of(survivor), mrg=mrg), registry).status == "accepted"

    plan = _plan()
    assert plan.patient_key != prior_key and plan.status == "due"
    with session_scope() as s:
        merged = s.exec(select(AuditEvent).where(AuditEvent.action == "patient.merged")).one()
        assert s.exec(select(AuditEvent).where(AuditEvent.action == "surveillance.patient-merged",
                                               AuditEvent.entity_id == plan.id)).one()
    assert len(merged.detail["orders"]) == 1 and merged.detail["into"] == plan.patient_key

    # The surviving patient's chest CT: it closes the plan and finds the baseline as its prior.
    follow_up, follow_up_run = ingest_synthetic_study(tmp_path / "b", registry, "chest-ct", FOLLOW_UP_SEED)
    plan = _plan()
    assert (plan.status, plan.closed_by_run_id) == ("received", follow_up_run)
    prior = surveillance.prior_result(follow_up_run)
    assert prior is not None and prior.result_id == result_id


def test_the_follow_up_recommendation_says_whether_the_patient_stays_on_surveillance(registry):
    lung = registry.get("lung-cancer-ct").surveillance
    assert lung.outcome("ct-12-months") == "on surveillance" and lung.outcome("ct-3-months") == "on surveillance"
    assert lung.outcome("no-follow-up") == "discharged"
    assert {lung.outcome(c) for c in ("clinical-review", "pet-ct", "mass", NO_NODULE)} == {"referred"}


def test_the_interval_counts_from_the_scan_date_unless_radpath_received_it_earlier():
    arrived = dt.datetime(2026, 3, 20, 14, 5, tzinfo=dt.UTC)
    scanned = dt.datetime(2026, 3, 2, tzinfo=dt.UTC)
    assert surveillance.baseline_time("2026-03-02", arrived) == scanned  # arrived 18 days late: no extra time
    assert surveillance.baseline_time("2026-04-01", arrived) == arrived  # a date after arrival is not believed
    assert surveillance.baseline_time(None, arrived) == surveillance.baseline_time("not a date", arrived) == arrived
