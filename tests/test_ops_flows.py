"""Modes, review holds, dead letters and the reconciler, through real flows under Prefect's
test harness (cardiac CT: a rules-only pathway, the quickest to run)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from sqlmodel import select

from integrations.db import ledger, ops
from integrations.db.engine import session_scope
from integrations.db.models import AuditEvent, Delivery, PathwayRun, Result
from integrations.dicom.store import ingest_instances
from integrations.hl7.orders import parse_order
from integrations.errors import PermanentError
from pathways.spec import Destination, Review
from tests.hl7_fixtures import receive
from tests.conftest import make_ready
from tests.phi_scan import assert_prefect_holds_none, identity_forms, linkable_values

pytestmark = pytest.mark.slow
PATHWAY = "heart-failure-cardiac-ct"
IDENTITIES: list[str] = []  # every patient identifier these tests sent through Prefect
LINKABLE: list[str] = []  # accession and DICOM UIDs: not identity, but they link a study key back to RIS and PACS
STUDY_KEYS: list[str] = []


@pytest.fixture
def spec_mode(registry):
    """Set the cardiac CT spec's mode (plus an evaluation destination) for one test."""
    original = registry.specs[PATHWAY]

    def set_mode(mode: str, review: bool = False, final_only: tuple[str, ...] = ()) -> None:
        evaluation = Destination(name="evaluation", formats=("fhir-bundle",), clinical=False)
        destinations = tuple(d.model_copy(update={"statuses": ("final",)}) if d.name in final_only else d
                             for d in original.destinations)
        registry.specs[PATHWAY] = original.model_copy(
            update={"mode": mode, "destinations": destinations + (evaluation,), "review": Review(required=review)}
        )

    yield set_mode
    registry.specs[PATHWAY] = original


def _ready_run(tmp_path: Path, registry, seed: int, kind: str = "cardiac-ct") -> str:
    from radpath.synth import generate

    (study,) = generate(kind, 1, seed, tmp_path / "synthetic")
    raw = Path(study.order_path).read_text()
    order = parse_order(raw)
    receive(raw, registry)
    ingest_instances(f.read_bytes() for f in sorted(Path(study.dicom_dir).rglob("*.dcm")))
    (run_id,) = make_ready(study.study_uid, registry)
    IDENTITIES.extend(identity_forms(order))
    LINKABLE.extend(linkable_values(order.accession_number, study.study_uid))
    STUDY_KEYS.append(ledger.run_view(run_id).study_key)
    return run_id


def _deliveries() -> dict[str, Delivery]:
    with session_scope() as s:
        return {d.destination: d for d in s.exec(select(Delivery)).all()}


def _run(run_id: str):
    from flows.dispatch import run_pathway

    return asyncio.run(run_pathway(run_id))


REVIEWED = {"F", "C", "final", "amended", "corrected", "VERIFIED"}  # HL7 0123/0085, FHIR, DICOM SR
UNREVIEWED = {"P", "preliminary", "UNVERIFIED"}


def _sent_statuses(outbox: Path) -> dict[str, set[tuple[str, str | None]]]:
    """What each destination received, read back from the delivered files: (status, reviewer)
    per ORU OBR-25 / OBX-11 (reviewer: OBR-32), FHIR DiagnosticReport / Observation status
    (resultsInterpreter / performer) and SR Verification Flag (Verifying Observer Name)."""
    import pydicom

    seen: dict[str, set[tuple[str, str | None]]] = {}
    for path in (p for p in outbox.rglob("*") if p.is_file()):
        got = seen.setdefault(path.relative_to(outbox).parts[0], set())
        if path.name == "oru-r01.hl7":
            segments = [s.split("|") for s in path.read_bytes().decode().split("\r") if s]
            for obr in (s for s in segments if s[0] == "OBR"):
                interpreter = (obr + [""] * 33)[32].lstrip("&") or None
                got |= {(obr[25], interpreter)} | {(obx[11], interpreter) for obx in segments if obx[0] == "OBX"}
        elif path.name == "report-bundle.json":
            for entry in json.loads(path.read_text())["entry"]:
                r = entry["resource"]
                if r["resourceType"] in ("DiagnosticReport", "Observation"):
                    named = r.get("resultsInterpreter") or r.get("performer") or [{}]
                    got.add((r["status"], named[0].get("display")))
        elif path.suffix == ".dcm":
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            if ds.Modality == "SR":
                observer = ds.get("VerifyingObserverSequence")
                got.add((ds.VerificationFlag, str(observer[0].VerifyingObserverName) if observer else None))
    return seen


@pytest.mark.parametrize("mode, review, final_only", [
    ("shadow", False, ()), ("qa", False, ()), ("clinical", False, ()), ("clinical", True, ()),
    ("clinical", False, ("ehr",)),  # a trust that wants no preliminary in its EHR
])
def test_nothing_unreviewed_is_ever_sent_as_final(prefect_api, radpath_env, registry, spec_mode, tmp_path, mode, review,
                                                 final_only):
    """Every mode, with and without review: before a review every message at every destination
    is preliminary (HL7 P, FHIR preliminary, SR UNVERIFIED) and names no reviewer; a named
    reviewer's accept sends the final (F / final / VERIFIED) naming the reviewer to each held
    destination, and in clinical mode with review to each clinical destination that had the
    preliminary; evaluation destinations keep the preliminary."""
    from flows.reconciler import reconciler
    from flows.review import ReviewDecision, apply_review

    spec_mode(mode, review=review, final_only=final_only)
    state = _run(_ready_run(tmp_path, registry, seed=40))
    before = _sent_statuses(radpath_env.outbox_dir)
    assert before and all(status in UNREVIEWED and reviewer is None for got in before.values() for status, reviewer in got)
    assert {d for d, got in before.items() if got} == ({"evaluation"} if mode != "clinical"
                                                        else {"evaluation", "pacs", "ris", "ehr"} - set(final_only))
    if state.name != "AwaitingReview":
        assert (mode, review, final_only) in (("shadow", False, ()), ("clinical", False, ())), state.name
        return
    with session_scope() as s:
        result_id = s.exec(select(Result.id)).one()
    apply_review(result_id, ReviewDecision(decision="accept", reviewer="Dr Ada Reviewer", reason="agree"))
    assert asyncio.run(reconciler(grace_seconds=0, return_state=True)).name == "Reconciled"
    after = _sent_statuses(radpath_env.outbox_dir)
    # What the review sent: held destinations had nothing before; with review in clinical mode
    # each clinical destination had the preliminary, and now also gets the final superseding it.
    sent = {d: after[d] - before.get(d, set()) for d in after}
    assert after["evaluation"] == before["evaluation"]  # never reviewed: preliminary, untouched
    for destination in ("ris", "ehr") if not final_only else final_only:
        assert sent[destination] and all(status in REVIEWED and reviewer == "Dr Ada Reviewer"  # OBR-32, resultsInterpreter
                                         for status, reviewer in sent[destination]), (destination, sent[destination])
    assert {s for s, _ in sent["ehr"]} == {"final"}
    if final_only:  # the others had the preliminary at once, as the spec allows, and keep it
        assert all(after[d] == before[d] for d in ("pacs", "ris"))
        return
    assert {s for s, _ in sent["ris"]} == {"F"}
    if "pacs" in sent:  # the pathway's PACS formats include an SR: a VERIFIED one, naming the reviewer
        assert ("VERIFIED", "Dr Ada Reviewer^") in sent["pacs"] and all(
            status in REVIEWED for status, _ in sent["pacs"]), sent["pacs"]
    for got in after.values():  # nothing final without the reviewer's name
        assert all(reviewer and reviewer.rstrip("^") == "Dr Ada Reviewer" for status, reviewer in got if status in REVIEWED)


def test_shadow_mode_delivers_only_to_evaluation(prefect_api, radpath_env, registry, spec_mode, tmp_path):
    spec_mode("shadow")
    state = _run(_ready_run(tmp_path, registry, seed=21))
    assert state.name == "Delivered" and "mode=shadow" in state.message
    rows = _deliveries()
    assert set(rows) == {"evaluation"} and rows["evaluation"].status == "delivered"
    assert sorted(p.name for p in radpath_env.outbox_dir.iterdir()) == ["evaluation"]


def test_qa_mode_holds_clinical_deliveries_until_accepted(prefect_api, radpath_env, registry, spec_mode, tmp_path):
    from flows.reconciler import reconciler
    from flows.review import ReviewDecision, apply_review

    spec_mode("qa")
    run_id = _ready_run(tmp_path, registry, seed=22)
    state = _run(run_id)
    assert state.is_completed() and state.name == "AwaitingReview", state.message
    rows = _deliveries()
    assert rows["evaluation"].status == "delivered"
    assert {rows[d].status for d in ("pacs", "ris", "ehr")} == {"held"}
    assert not (radpath_env.outbox_dir / "ris").exists()
    with session_scope() as s:
        assert s.get(PathwayRun, run_id).status == "awaiting_review"
        result = s.exec(select(Result)).one()
    assert result.review_status == "pending"

    status, pending = apply_review(result.id, ReviewDecision(decision="accept", reviewer="Dr Test", reason="agree"))
    assert status == "accepted" and len(pending) == 3
    assert asyncio.run(reconciler(grace_seconds=0, return_state=True)).name == "Reconciled"  # sends what the review released
    rows = _deliveries()
    assert all(r.status == "delivered" and r.attempts == 1 for r in rows.values())
    with session_scope() as s:
        assert s.exec(select(Result)).one().reviewed_by == "Dr Test"


def test_a_rejected_review_sends_nothing_clinical(prefect_api, radpath_env, registry, spec_mode, tmp_path):
    """qa mode: the clinical destinations were held, so a rejection sends them nothing."""
    from flows.review import ReviewDecision, apply_review

    spec_mode("qa")
    assert _run(_ready_run(tmp_path, registry, seed=23)).name == "AwaitingReview"
    with session_scope() as s:
        result_id = s.exec(select(Result.id)).one()
    with pytest.raises(ValueError, match="reason"):
        apply_review(result_id, ReviewDecision(decision="reject", reviewer="Dr Test"))
    assert apply_review(result_id, ReviewDecision(decision="reject", reviewer="Dr Test", reason="artefact")) == ("rejected", [])
    assert {d: r.status for d, r in _deliveries().items()} == {
        "evaluation": "delivered", "pacs": "rejected", "ris": "rejected", "ehr": "rejected"}


def test_a_rejected_review_withdraws_the_preliminary_each_destination_had(prefect_api, radpath_env, registry, spec_mode,
                                                                        tmp_path):
    """Clinical mode with review: the RIS and EHR had the preliminary at once; a rejection sends
    each a cancellation of the same report (ORU OBR-25/OBX-11 X for the same order; FHIR
    entered-in-error on the same DiagnosticReport), as a new outbox row delivered once. PACS keeps
    its UNVERIFIED SR (no IOCM rejection note yet); the evaluation destination is not reviewed."""
    from flows.reconciler import reconciler
    from flows.review import ReviewDecision, apply_review

    spec_mode("clinical", review=True)
    assert _run(_ready_run(tmp_path, registry, seed=24)).name == "AwaitingReview"
    before = _sent_statuses(radpath_env.outbox_dir)
    assert {s for s, _ in before["ris"]} == {"P"} and {s for s, _ in before["ehr"]} == {"preliminary"}
    with session_scope() as s:
        result_id = s.exec(select(Result.id)).one()
    status, pending = apply_review(result_id, ReviewDecision(decision="reject", reviewer="Dr Test", reason="artefact"))
    assert status == "rejected" and len(pending) == 2
    assert asyncio.run(reconciler(grace_seconds=0, return_state=True)).name == "Reconciled"
    asyncio.run(reconciler(grace_seconds=0, return_state=True))  # a second pass re-sends nothing
    after = _sent_statuses(radpath_env.outbox_dir)
    assert {s for s, _ in after["ris"] - before["ris"]} == {"X"}
    assert {s for s, _ in after["ehr"] - before["ehr"]} == {"entered-in-error"}
    assert after["pacs"] == before["pacs"] and after["evaluation"] == before["evaluation"]
    with session_scope() as s:
        rows = s.exec(select(Delivery).where(Delivery.result_id == result_id)).all()
    assert sorted((r.destination, r.result_status, r.status) for r in rows) == [
        ("ehr", "cancelled", "delivered"), ("ehr", "preliminary", "delivered"), ("evaluation", "preliminary", "delivered"),
        ("pacs", "preliminary", "delivered"), ("ris", "cancelled", "delivered"), ("ris", "preliminary", "delivered")]
    oru = [p for p in (radpath_env.outbox_dir / "ris").rglob("oru-r01.hl7")]
    placers = {[f for f in p.read_bytes().decode().split("\r") if f.startswith("ORC|")][0].split("|")[2] for p in oru}
    assert len(oru) == 2 and len(placers) == 1  # the cancellation files against the same order


def test_an_amended_review_sends_the_reviewers_conclusion_to_the_ehr_and_ris(prefect_api, radpath_env, registry, spec_mode, tmp_path):
    from flows.reconciler import reconciler
    from flows.review import ReviewDecision, apply_review

    spec_mode("qa")
    run_id = _ready_run(tmp_path, registry, seed=24)
    assert _run(run_id).name == "AwaitingReview"
    with session_scope() as s:
        result = s.exec(select(Result)).one()
    ai_conclusion = result.report["conclusion"]
    with pytest.raises(ValueError, match="amended conclusion"):
        apply_review(result.id, ReviewDecision(decision="amend", reviewer="Dr Test", reason="calcium in the mitral annulus"))
    decision = ReviewDecision(decision="amend", reviewer="Dr Test", reason="mitral annular calcium counted as coronary",
                              amended_conclusion="Coronary calcium score 0 on review (CAC-DRS 0).")
    status, pending = apply_review(result.id, decision)
    assert status == "amended" and len(pending) == 3
    assert asyncio.run(reconciler(grace_seconds=0, return_state=True)).name == "Reconciled"
    rows = _deliveries()
    assert all(r.status == "delivered" for r in rows.values())

    def sent(destination: str, name: str) -> Path:
        (path,) = (radpath_env.outbox_dir / destination).rglob(name)
        return path

    bundle = json.loads(sent("ehr", "report-bundle.json").read_text())
    (report,) = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "DiagnosticReport"]
    assert report["conclusion"] == decision.amended_conclusion and "conclusionCode" not in report
    assert report["status"] == "final" and report["resultsInterpreter"] == [{"display": "Dr Test"}]  # the reviewer's
    oru = sent("ris", "oru-r01.hl7").read_bytes().decode()
    assert "Coronary calcium score 0 on review" in oru and "Dr Test" in oru and ai_conclusion[:40] in oru
    evaluation = json.loads(sent("evaluation", "report-bundle.json").read_text())  # sent before the review, as the algorithm wrote it
    (eval_report,) = [e["resource"] for e in evaluation["entry"] if e["resource"]["resourceType"] == "DiagnosticReport"]
    assert eval_report["conclusion"] == ai_conclusion
    assert "/amended/" not in str(rows["pacs"].payloads)  # SR and SEG are the algorithm's evidence, sent as recorded
    with session_scope() as s:
        stored = s.exec(select(Result)).one()
    assert stored.review_status == "amended" and stored.report["conclusion"] == decision.amended_conclusion


def test_radpath_review_lists_the_queue_and_decides_from_a_terminal(prefect_api, radpath_env, registry, spec_mode, tmp_path,
                                                                   monkeypatch):
    from typer.testing import CliRunner

    from radpath import cli as radpath_cli
    from radpath.cli import app

    monkeypatch.setattr(radpath_cli.console, "width", 250)  # the whole table on one line per result

    spec_mode("clinical", review=True)
    run_id = _ready_run(tmp_path, registry, seed=25)
    assert _run(run_id).name == "AwaitingReview"
    with session_scope() as s:
        result_id = s.exec(select(Result.id)).one()
    cli = CliRunner()
    listing = cli.invoke(app, ["review", "list"])
    assert listing.exit_code == 0 and result_id in listing.output and ledger.run_view(run_id).study_key in listing.output
    assert not any(identity in listing.output for identity in IDENTITIES)
    refused = cli.invoke(app, ["review", "decide", result_id, "--decision", "reject", "--reviewer", "Dr Test"])
    assert refused.exit_code == 2 and "reason" in refused.output
    accepted = cli.invoke(app, ["review", "decide", result_id, "--decision", "accept", "--reviewer", "Dr Test", "--reason", "agree"])
    assert accepted.exit_code == 0, accepted.output
    assert {d: r.status for d, r in _deliveries().items()} == {
        "evaluation": "delivered", "pacs": "delivered", "ris": "delivered", "ehr": "delivered"}
    assert ops.run_status(run_id) == "completed"
    again = cli.invoke(app, ["review", "decide", result_id, "--decision", "accept", "--reviewer", "Dr Test"])
    assert again.exit_code == 1 and "does not wait for review" in again.output
    assert "no results wait for review" in cli.invoke(app, ["review", "list"]).output


def test_an_overdue_review_expires_keeps_its_deliveries_held_and_can_still_be_decided(prefect_api, radpath_env, registry,
                                                                                       spec_mode, tmp_path):
    import datetime as dt

    from flows.review import ReviewDecision, apply_review

    spec_mode("qa")  # clinical deliveries held
    assert _run(_ready_run(tmp_path, registry, seed=26)).name == "AwaitingReview"
    with session_scope() as s:
        result_id = s.exec(select(Result.id)).one()
    timeout = registry.get(PATHWAY).review.timeout_minutes * 60
    assert ops.expire_reviews(PATHWAY, timeout) == []  # not overdue yet
    later = ops.utcnow() + dt.timedelta(seconds=timeout + 1)
    assert ops.expire_reviews(PATHWAY, timeout, now=later) == [result_id]
    assert ops.expire_reviews(PATHWAY, timeout, now=later) == []  # once
    assert [(i.result_id, i.status) for i in ops.review_queue()] == [(result_id, "expired")]
    assert {d: r.status for d, r in _deliveries().items() if d != "evaluation"} == {"pacs": "held", "ris": "held", "ehr": "held"}
    assert apply_review(result_id, ReviewDecision(decision="accept", reviewer="Dr Late", reason="seen at last"))[0] == "accepted"
    assert ops.review_queue() == []
    with session_scope() as s:
        actions = [a.action for a in s.exec(select(AuditEvent).where(AuditEvent.entity_id == result_id)).all()]
    assert "review.expired" in actions and "review.accepted" in actions


def test_a_permanent_rejection_dead_letters_and_names_the_state(prefect_api, radpath_env, registry, monkeypatch, tmp_path):
    import tasks.delivery
    from integrations.delivery.send import send as real_send

    def refusing_ris(destination, config, key, payloads):  # noqa: ANN001
        if destination == "ris":
            raise PermanentError("AR: unknown order")
        return real_send(destination, config, key, payloads)

    monkeypatch.setattr(tasks.delivery, "send", refusing_ris)
    run_id = _ready_run(tmp_path, registry, seed=24)
    state = _run(run_id)
    assert state.is_failed() and state.name == "DeadLettered", state.message
    rows = _deliveries()
    assert rows["ris"].status == "dead_letter" and rows["ris"].attempts == 1  # permanent: never retried
    assert rows["pacs"].status == rows["ehr"].status == "delivered"
    with session_scope() as s:
        assert s.get(PathwayRun, run_id).status == "dead_lettered"
    assert [d.destination for d in ops.dead_letters()] == ["ris"]
    assert ops.runs_to_redrive(grace_seconds=0) == []  # a dead letter is for people, not for re-driving


def test_a_cached_inference_result_is_keyed_and_stored_without_dicom_uids(prefect_api, radpath_env, registry, tmp_path):
    """The echo pathway's LV segmentation is cached across runs (a re-drive reuses it): its cache
    key, which Prefect stores on the task run and names the result file by, is a digest."""
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH

    state = _run(_ready_run(tmp_path, registry, seed=31, kind="echo"))
    assert state.name in {"Delivered", "NotMeasurable"}, state.message
    stored = [p.name for p in Path(PREFECT_LOCAL_STORAGE_PATH.value()).rglob("*") if p.is_file()]
    assert stored and all(set(name) <= set("0123456789abcdef") for name in stored), stored  # digests and uuids


def test_prefect_holds_no_patient_identifier(prefect_api):
    """Scan everything Prefect stored for these runs (its database, logs, artifacts, events,
    task inputs, and any persisted results) for the patients' identifiers."""
    from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL, PREFECT_LOCAL_STORAGE_PATH

    assert IDENTITIES and STUDY_KEYS, "run this module whole: the earlier tests feed the scan"
    db_path = Path(PREFECT_API_DATABASE_CONNECTION_URL.value().split("///", 1)[1])
    time.sleep(2)  # events and logs are sent in the background; let them land
    assert_prefect_holds_none([db_path.parent, Path(PREFECT_LOCAL_STORAGE_PATH.value())], IDENTITIES, LINKABLE,
                              STUDY_KEYS[0])
