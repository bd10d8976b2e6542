"""The ledger's guarantees: migrations, idempotent orders, one result per study/pathway/model.

Orders enter through the HL7 intake (tests.hl7_fixtures.receive), the listener's own path."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect
from sqlmodel import select

from integrations.db import ledger, ops, orders, runs
from integrations.db.engine import get_engine, migrate, session_scope
from integrations.db.models import AuditEvent, Delivery, InboundMessage, Order, PathwayRun, Result, Study
from integrations.db.orders import OrderStatus
from integrations.db.runs import RunStatus
from tests.hl7_fixtures import receive
from tests.conftest import make_ready

ORDER = "\r".join(
    [
        "MSH|^~\\&|SYNTH_RIS|RXX01|RADPATH|RADPATH|20261129101500||ORM^O01|MSG0001|P|2.4",
        "PID|1||9434765919^^^NHS^NH~H123456^^^RXX01^MR||SMITH^JANE||19580312|F",
        "PV1|1|O",
        "ORC|NW|PL123|ACC00001||||^^^^^R",
        "OBR|1|PL123|ACC00001|169069000^Computed tomography of chest^SCT|||20261129|||||||||||ACC00001||||||CT",
    ]
)


def test_migrations_create_every_table_and_rerun_cleanly(radpath_env):
    tables = set(inspect(get_engine()).get_table_names())
    assert {"imaging_order", "inbound_message", "study", "series", "instance", "pathway_run", "result", "delivery", "audit_event", "alembic_version"} <= tables
    migrate()  # a second upgrade is a no-op, as at every service start


def test_order_commit_is_idempotent_on_resend(radpath_env, registry):
    first = receive(ORDER, registry)
    again = receive(ORDER, registry)  # the same message: the stored ACK, nothing new
    assert not first.order.duplicate and again.status == "duplicate" and again.acks == first.acks
    with session_scope() as s:
        assert len(s.exec(select(Order)).all()) == 1
        assert len(s.exec(select(InboundMessage)).all()) == 1
        run = s.exec(select(PathwayRun)).one()
        assert run.pathway == "lung-cancer-ct" and run.status == "waiting"


def test_order_for_no_pathway_is_visibly_not_eligible(radpath_env, registry):
    other = ORDER.replace("169069000^Computed tomography of chest", "71651007^Mammography").replace("MSG0001", "MSG0002")
    outcome = receive(other, registry).order
    assert not outcome.eligible and outcome.run_ids == ()
    with session_scope() as s:
        assert s.exec(select(Order)).one().status == OrderStatus.NOT_ELIGIBLE == "not_eligible"
        actions = [a.action for a in s.exec(select(AuditEvent)).all()]
        assert "order.received" in actions


def test_same_placer_order_from_same_sender_is_one_order(radpath_env, registry):
    first = receive(ORDER, registry).order
    resent_with_new_control_id = ORDER.replace("MSG0001", "MSG0099")
    again = receive(resent_with_new_control_id, registry).order  # kept, marked duplicate
    assert again.duplicate and again.order_id == first.order_id and again.run_ids == first.run_ids
    with session_scope() as s:
        assert len(s.exec(select(Order)).all()) == 1
        assert sorted(m.status for m in s.exec(select(InboundMessage)).all()) == ["accepted", "duplicate"]


def test_order_status_changes_only_along_legal_transitions(radpath_env, registry):
    """One function moves an order's status; it refuses an illegal move and audits a legal one."""
    order_id = receive(ORDER, registry).order.order_id
    with session_scope() as s:
        row = s.get(Order, order_id)
        orders.transition(s, row, OrderStatus.CANCELLED, actor="test", action="order.cancelled")
        with pytest.raises(orders.IllegalTransition):
            orders.transition(s, row, OrderStatus.RECEIVED, actor="test", action="order.changed")
    with session_scope() as s:
        assert s.get(Order, order_id).status == "cancelled"
        audit = s.exec(select(AuditEvent).where(AuditEvent.action == "order.cancelled")).one()
        assert (audit.detail["status_from"], audit.detail["status"]) == ("received", "cancelled")


def _ready_run(registry) -> str:
    outcome = receive(ORDER, registry).order
    with session_scope() as s:
        study = Study(study_uid="1.2.826.0.1.3680043.8.498.1", accession_number="ACC00001", patient_key="P-x")
        s.add(study)
    assert make_ready("1.2.826.0.1.3680043.8.498.1", registry) == list(outcome.run_ids)
    return outcome.run_ids[0]


def test_a_run_moves_only_along_its_life_cycle_and_every_move_is_audited(radpath_env, registry):
    """The order follows its one run: in progress when it starts, completed when it is done."""
    run_id = _ready_run(registry)  # waiting -> ready by the readiness sweep

    def order_status() -> str:
        with session_scope() as s:
            return s.get(Order, s.get(PathwayRun, run_id).order_id).status

    assert order_status() == OrderStatus.RECEIVED
    runs.set_status(run_id, RunStatus.RUNNING, flow_run_id="f-1")
    assert order_status() == OrderStatus.IN_PROGRESS
    runs.set_status(run_id, RunStatus.COMPLETED)
    assert order_status() == OrderStatus.COMPLETED
    with pytest.raises(runs.IllegalRunTransition):
        runs.set_status(run_id, RunStatus.RUNNING)  # a completed run is never started again (only re-run on new images)
    with pytest.raises(runs.IllegalRunTransition):
        runs.set_status(run_id, RunStatus.CANCELLED)  # an order cancelled now cannot unsend a result
    with session_scope() as s:
        row = s.get(PathwayRun, run_id)
        assert row.status == "completed" and row.started_at and row.finished_at
        moves = [(a.action, a.detail["status_from"]) for a in
                 s.exec(select(AuditEvent).where(AuditEvent.entity_id == run_id).order_by(AuditEvent.id)).all()]
    assert moves == [("study.ready", "waiting"), ("run.running", "ready"), ("run.completed", "running")]


def test_one_flow_run_holds_a_run_and_a_refused_one_never_marks_it_failed(radpath_env, registry):
    """The failure hook of a flow run that lost the claim (RunClaimed) leaves the live run alone;
    a trigger repeated after the run finished starts nothing."""
    run_id = _ready_run(registry)
    assert runs.start(run_id, "flow-run:holder", 60, flow_run_id="f-1") == runs.Start.STARTED
    assert runs.start(run_id, "flow-run:second", 60, flow_run_id="f-2") == runs.Start.HELD_ELSEWHERE
    assert runs.fail_if_held(run_id, "flow-run:second", reason="flow run Failed") is False
    assert ops.run_status(run_id) == RunStatus.RUNNING
    assert runs.fail_if_held(run_id, "flow-run:holder", reason="flow run Crashed") is True
    with session_scope() as s:
        row = s.get(PathwayRun, run_id)
        assert (row.status, row.status_reason, row.claimed_by, row.flow_run_id) == ("failed", "flow run Crashed", None, "f-1")
    assert runs.start(run_id, "flow-run:redrive", 60, flow_run_id="f-3") == runs.Start.STARTED  # failed: re-driven
    runs.set_status(run_id, RunStatus.COMPLETED)
    ops.release_run(run_id, "flow-run:redrive")
    assert runs.start(run_id, "flow-run:repeat", 60, flow_run_id="f-4") == runs.Start.FINISHED
    assert ops.run_status(run_id) == RunStatus.COMPLETED


def test_second_result_for_same_study_pathway_model_is_not_created(radpath_env, registry):
    run_id = _ready_run(registry)
    result_id = ledger.result_id_for("1.2.826.0.1.3680043.8.498.1", "lung-cancer-ct", "1.0")
    plans = [ledger.DeliveryPlan(destination="ris", kind="file-drop", payloads=["/nonexistent"])]
    kwargs = dict(result_id=result_id, study_uid="1.2.826.0.1.3680043.8.498.1", pathway="lung-cancer-ct", model_version="1.0",
                  assessment={"a": 1}, report={"r": 1}, urgent=False, deliveries=plans)
    first = ledger.record_result(run_id, **kwargs)
    second = ledger.record_result(run_id, **kwargs)
    assert first[2] is True and second[2] is False
    assert first[:2] == second[:2]
    with session_scope() as s:
        assert len(s.exec(select(Result)).all()) == 1
        assert len(s.exec(select(Delivery)).all()) == 1
    # A new model version is a new result.
    third = ledger.record_result(run_id, **{**kwargs, "model_version": "2.0",
                                            "result_id": ledger.result_id_for("1.2.826.0.1.3680043.8.498.1", "lung-cancer-ct", "2.0")})
    assert third[2] is True


def test_run_view_carries_no_identity(radpath_env, registry):
    view = ledger.run_view(_ready_run(registry))
    flat = repr(view)
    assert "9434765919" not in flat and "SMITH" not in flat and "1958" not in flat
    assert view.age_years is not None and view.study_key.startswith("S-")


def test_delivery_attempts_are_recorded(radpath_env, registry):
    run_id = _ready_run(registry)
    rid = ledger.result_id_for("1.2.826.0.1.3680043.8.498.1", "lung-cancer-ct", "1.0")
    _, (delivery_id,), _ = ledger.record_result(
        run_id, result_id=rid, study_uid="1.2.826.0.1.3680043.8.498.1", pathway="lung-cancer-ct", model_version="1.0",
        assessment={}, report={}, urgent=False, deliveries=[ledger.DeliveryPlan("ris", "file-drop", [])],
    )
    ledger.record_delivery_attempt(delivery_id, ok=False, response="timeout")
    ledger.record_delivery_attempt(delivery_id, ok=True, response="ok")
    row = ledger.get_delivery(delivery_id)
    assert row.status == "delivered" and row.attempts == 2 and row.delivered_at is not None
    assert row.idempotency_key == ledger.idempotency_key(rid, "ris")


def test_the_placer_system_reaches_the_result_context(radpath_env, registry):
    """ORC-2 "PL123^OCS^<oid>^ISO": the report's basedOn will name the order as the RIS issued it."""
    outcome = receive(ORDER.replace("ORC|NW|PL123|", "ORC|NW|PL123^OCS^1.2.3.4^ISO|"), registry).order
    with session_scope() as s:
        study = Study(study_uid="1.2.3.4.9", accession_number="ACC00001", patient_key="k")
        s.add(study)
        s.flush()
        s.get(PathwayRun, outcome.run_ids[0]).study_id = study.id
    ctx = ledger.result_context(outcome.run_ids[0], result_id="0b5d1c36-63b4-4a57-9d9e-2f2d0c7d6a11", model_name="m",
                                model_version="1", source_series_uid="1.2.3.4.9.1")
    assert (ctx.placer_order_number, ctx.placer_namespace, ctx.placer_system) == ("PL123", "OCS", "urn:oid:1.2.3.4")


def test_core_rows_keep_the_models_defaults(radpath_env):
    """The intake inserts orders with Core INSERTs (its hot path): `column_values` fills in the
    model's defaults as the ORM would, and refuses a column the model lacks."""
    from integrations.db.models import column_values

    with pytest.raises(TypeError):
        column_values(Order, no_such_column=1)
    assert "id" not in column_values(AuditEvent, actor="a", action="b", entity_type="c", entity_id="d")
    row = column_values(Order, sender="s", placer_order_number="p", accession_number="a", patient_key="k",
                        procedure_code="c")
    assert (row["status"], row["priority"], row["clinical_context"], row["sex"]) == ("received", "routine", {}, "U")
    assert row["received_at"] is not None and row["id"]
