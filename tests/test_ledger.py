"""The ledger's guarantees: migrations, idempotent orders, one result per study/pathway/model."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect
from sqlmodel import select

from integrations.db import ledger
from integrations.db.engine import get_engine, migrate, session_scope
from integrations.db.models import AuditEvent, Delivery, InboundMessage, Order, PathwayRun, Result, Study
from integrations.hl7.orders import parse_order

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
    first = ledger.record_order(parse_order(ORDER), ORDER, registry)
    again = ledger.record_order(parse_order(ORDER), ORDER, registry)
    assert not first.duplicate and again.duplicate
    assert again.order_id == first.order_id and again.run_ids == first.run_ids
    with session_scope() as s:
        assert len(s.exec(select(Order)).all()) == 1
        assert len(s.exec(select(InboundMessage)).all()) == 1
        run = s.exec(select(PathwayRun)).one()
        assert run.pathway == "lung-cancer-ct" and run.status == "waiting"


def test_order_for_no_pathway_is_visibly_not_eligible(radpath_env, registry):
    other = ORDER.replace("169069000^Computed tomography of chest", "71651007^Mammography").replace("MSG0001", "MSG0002")
    outcome = ledger.record_order(parse_order(other), other, registry)
    assert not outcome.eligible and outcome.run_ids == ()
    with session_scope() as s:
        assert s.exec(select(Order)).one().status == "not_eligible"
        actions = [a.action for a in s.exec(select(AuditEvent)).all()]
        assert "order.received" in actions


def test_same_placer_order_from_same_sender_is_one_order(radpath_env, registry):
    ledger.record_order(parse_order(ORDER), ORDER, registry)
    resent_with_new_control_id = ORDER.replace("MSG0001", "MSG0099")
    with pytest.raises(Exception):  # (sender, placer order number) is unique
        ledger.record_order(parse_order(resent_with_new_control_id), resent_with_new_control_id, registry)
    with session_scope() as s:
        assert len(s.exec(select(Order)).all()) == 1


def _ready_run(registry) -> str:
    outcome = ledger.record_order(parse_order(ORDER), ORDER, registry)
    with session_scope() as s:
        study = Study(study_uid="1.2.826.0.1.3680043.8.498.1", accession_number="ACC00001", patient_key="P-x")
        s.add(study)
    assert ledger.attach_study("1.2.826.0.1.3680043.8.498.1") == list(outcome.run_ids)
    return outcome.run_ids[0]


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
    third = ledger.record_result(run_id, **{**kwargs, "model_version": "2.0", "result_id": ledger.result_id_for("1.2.826.0.1.3680043.8.498.1", "lung-cancer-ct", "2.0")})
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
    outcome = ledger.record_order(parse_order(ORDER.replace("ORC|NW|PL123|", "ORC|NW|PL123^OCS^1.2.3.4^ISO|")), ORDER,
                                  registry)
    with session_scope() as s:
        study = Study(study_uid="1.2.3.4.9", accession_number="ACC00001", patient_key="k")
        s.add(study)
        s.flush()
        s.get(PathwayRun, outcome.run_ids[0]).study_id = study.id
    ctx = ledger.result_context(outcome.run_ids[0], result_id="0b5d1c36-63b4-4a57-9d9e-2f2d0c7d6a11", model_name="m",
                                model_version="1", source_series_uid="1.2.3.4.9.1")
    assert (ctx.placer_order_number, ctx.placer_namespace, ctx.placer_system) == ("PL123", "OCS", "urn:oid:1.2.3.4")


def test_hl7_intake_rows_equal_the_orm_path(radpath_env, registry):
    """The MLLP intake inserts orders with Core INSERTs (its hot path); the rows must be the
    ones the ORM path (record_order, used by FHIR) writes: same columns, same defaults."""
    from integrations.db import hl7_intake
    from integrations.db.models import column_values

    with pytest.raises(TypeError):
        column_values(Order, no_such_column=1)
    assert "id" not in column_values(AuditEvent, actor="a", action="b", entity_type="c", entity_id="d")

    orm = ledger.record_order(parse_order(ORDER), ORDER, registry)
    other = ORDER.replace("PL123", "PL456").replace("ACC00001", "ACC00002").replace("MSG0001", "MSG0002")
    with session_scope() as s:
        message = hl7_intake.message_values(application="SYNTH_RIS", facility="RXX01", control_id="MSG0002",
                                            message_type="ORM^O01", raw=other, ack="MSH|ack")
        core = hl7_intake.add_order(s, parse_order(other), message, registry)
    assert not core.duplicate and core.eligible and len(core.run_ids) == 1
    skip = {"id", "placer_order_number", "filler_order_number", "accession_number", "message_id", "received_at", "order_id", "created_at"}
    with session_scope() as s:
        a, b = (s.get(Order, o.order_id) for o in (orm, core))
        assert {k: v for k, v in a.model_dump().items() if k not in skip} == \
            {k: v for k, v in b.model_dump().items() if k not in skip}
        assert b.received_at is not None and b.clinical_context == a.clinical_context
        ra, rb = (s.get(PathwayRun, o.run_ids[0]) for o in (orm, core))
        assert {k: v for k, v in ra.model_dump().items() if k not in skip} == \
            {k: v for k, v in rb.model_dump().items() if k not in skip}
        assert rb.created_at is not None and rb.status == "waiting"
        assert s.get(InboundMessage, b.message_id).ack == "MSH|ack"
        audit = s.exec(select(AuditEvent).where(AuditEvent.entity_id == b.id)).one()
        assert audit.action == "order.received" and audit.detail["pathways"] == ["lung-cancer-ct"]
    with session_scope() as s:  # the same placer order in another message: kept, marked duplicate
        message = hl7_intake.message_values(application="SYNTH_RIS", facility="RXX01", control_id="MSG0003",
                                            message_type="ORM^O01", raw=other)
        again = hl7_intake.add_order(s, parse_order(other), message, registry)
    assert again.duplicate and again.order_id == core.order_id and again.run_ids == core.run_ids
