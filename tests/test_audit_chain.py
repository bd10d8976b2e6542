"""The audit trail is tamper-evident: sealed into a keyed hash chain that `radpath audit verify`
recomputes, and exported as FHIR R4 AuditEvent for a trust's SIEM.

Events are made through the production paths (the HL7 intake, the readiness sweep, the CLI's
operator commands); tampering is done as someone with write access to the database would, in SQL.
"""

from __future__ import annotations

import json
import threading

from sqlalchemy import text
from sqlmodel import select
from typer.testing import CliRunner

from integrations.db import audit
from integrations.db.engine import session_scope
from integrations.db.models import AuditEvent
from radpath.cli import app
from tests.hl7_fixtures import receive
from tests.test_ledger import ORDER


def _cli(*args: str):
    return CliRunner().invoke(app, list(args))


_SENT = iter(range(10_000))


def _orders(registry, n: int) -> None:
    """New orders through the HL7 intake (each one audited)."""
    for _, i in zip(range(n), _SENT):
        receive(ORDER.replace("MSG0001", f"MSG{i:04d}").replace("PL123", f"PL{i:03d}").replace("ACC00001", f"ACC{i:05d}"),
                registry)


def _sql(statement: str, **params) -> None:
    with session_scope() as s:
        s.exec(text(statement).bindparams(**params))


def test_verify_finds_an_edited_a_deleted_and_a_swapped_event(radpath_env, registry):
    _orders(registry, 6)
    first = _cli("audit", "verify")
    assert first.exit_code == 0 and "audit chain intact" in first.output, first.output
    report = audit.verify()
    assert report.sealed >= 6 and report.unsealed == 0 and report.intact

    _orders(registry, 2)  # later events continue the same chain
    assert audit.seal() >= 2 and audit.verify().intact

    with session_scope() as s:
        rows = s.exec(select(AuditEvent).order_by(AuditEvent.seq)).all()
        edited, deleted, swap_a, swap_b = rows[1], rows[3], rows[5], rows[6]
    _sql("UPDATE audit_event SET actor = 'someone-else' WHERE id = :id", id=edited.id)
    _sql("DELETE FROM audit_event WHERE id = :id", id=deleted.id)
    _sql("UPDATE audit_event SET seq = -1 WHERE id = :id", id=swap_a.id)  # swap two rows' places
    _sql("UPDATE audit_event SET seq = :seq WHERE id = :id", seq=swap_a.seq, id=swap_b.id)
    _sql("UPDATE audit_event SET seq = :seq WHERE id = :id", seq=swap_b.seq, id=swap_a.id)

    broken = _cli("audit", "verify")
    assert broken.exit_code == 1, broken.output
    problems = audit.verify().problems
    assert any(p.startswith(f"seq {edited.seq}: content") for p in problems)
    assert any(p.startswith(f"seq {deleted.seq}") and "deleted" in p for p in problems)
    assert any(p.startswith(f"seq {swap_a.seq}: content") for p in problems)
    assert any(p.startswith(f"seq {swap_b.seq}: content") for p in problems)
    assert "audit chain broken" in broken.output


def test_a_chain_recomputed_without_the_key_is_detected(radpath_env, registry, monkeypatch):
    """Someone who can write the database but lacks the installation's secret cannot re-chain."""
    _orders(registry, 3)
    audit.seal()
    forged_key = b"not the installation's key"
    with session_scope() as s:
        rows = s.exec(select(AuditEvent).order_by(AuditEvent.seq)).all()
        rows[0].actor = "someone-else"
        previous = audit.GENESIS
        for row in rows:
            row.chain = previous = audit.link(forged_key, previous, row)
    assert not audit.verify().intact


def test_sealers_in_parallel_leave_one_unbroken_chain(radpath_env, registry):
    _orders(registry, 20)
    threads = [threading.Thread(target=audit.seal, kwargs={"limit": 3}) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    while audit.seal():
        pass
    report = audit.verify()
    assert report.intact and report.unsealed == 0
    with session_scope() as s:
        assert sorted(s.exec(select(AuditEvent.seq)).all()) == list(range(1, report.sealed + 1))


def test_export_is_fhir_auditevent_with_dicom_event_types_and_the_chain_head(radpath_env, registry, tmp_path):
    from tests.fhir_server import fhir_schema_validator

    _orders(registry, 2)
    paused = _cli("deliveries", "pause", "ehr", "--actor", "Ops Engineer", "--reason", "EHR maintenance")
    assert paused.exit_code == 0, paused.output
    out = tmp_path / "audit.ndjson"
    exported = _cli("audit", "export", "--out", str(out))
    assert exported.exit_code == 0, exported.output
    events = [json.loads(line) for line in out.read_text().splitlines()]
    report = audit.verify()
    assert len(events) == report.sealed and f"head seq {report.head_seq}" in exported.output
    validator = fhir_schema_validator()
    for event in events:
        validator.validate_resource(event)
    by_action = {next(d["valueString"] for d in e["entity"][0]["detail"] if d["type"] == "radpath-action"): e for e in events}
    order = next(e for a, e in by_action.items() if a.startswith("order."))
    assert order["type"]["code"] == "110107" and order["agent"][0]["requestor"] is False  # Import, by the HL7 intake
    pause = by_action["destination.paused"]
    assert pause["type"]["code"] == "110100" and pause["agent"][0] == {"who": {"display": "Ops Engineer"}, "requestor": True}
    last = events[-1]["entity"][0]["detail"]
    assert {"type": "radpath-chain", "valueString": report.head_chain} in last
    text_out = out.read_text()
    assert "9434765919" not in text_out and "SMITH" not in text_out and "19580312" not in text_out

    _orders(registry, 1)  # an incremental export starts after the last head
    again = tmp_path / "more.ndjson"
    assert _cli("audit", "export", "--out", str(again), "--after", str(report.head_seq)).exit_code == 0
    assert 0 < len(again.read_text().splitlines()) < len(events)
