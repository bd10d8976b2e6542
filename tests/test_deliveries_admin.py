"""`radpath deliveries ...` through the CLI entry point, against a real FHIR server on loopback.

The EHR sits behind tests.test_outbox_retry.FlakyEhr (a loopback peer answering 503 while
"down", forwarding to the real FHIR server once up). The outbox is driven as the reconciler
drives it: `ops.deliveries_due`, then one `attempt_delivery` per due row, on a simulated clock.
"""
from __future__ import annotations

import datetime as dt
import socket

import pytest
from sqlmodel import select
from typer.testing import CliRunner

from integrations.db import ops
from integrations.db.engine import session_scope
from integrations.db.models import AuditEvent, utcnow
from integrations.errors import RadpathError
from radpath.cli import app
from tasks.delivery import attempt_delivery
from tests.test_outbox_retry import FlakyEhr, _results, _rows, _use_ehr, events, server  # noqa: F401 - fixtures
from tests.test_outputs import assessment, content, ctx  # noqa: F401 - fixtures

ACCESSION = "ACC00001"  # tests.test_ledger._ready_run's order
UID = "1.2.826.0.1.3680043.8.498.1"


def cli(*args: str):
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def outbox_pass(now: dt.datetime) -> list[str]:
    """One reconciler delivery sweep at `now`: the ids attempted."""
    tried = []
    for delivery_id in ops.deliveries_due(grace_seconds=0, now=now):
        tried.append(delivery_id)
        try:
            attempt_delivery(delivery_id, now=now)
        except RadpathError:
            pass
    return tried


def posts(peer: FlakyEhr) -> int:
    return sum(1 for method, _, _ in peer.forwarded if method == "POST")


def actions(entity_id: str) -> list[AuditEvent]:
    with session_scope() as s:
        return list(s.exec(select(AuditEvent).where(AuditEvent.entity_id == entity_id).order_by(AuditEvent.id)).all())


def _dead_letter_all(peer: FlakyEhr, start: dt.datetime) -> None:
    """The EHR is down past the (short) window: every row dead-letters."""
    peer.down = True
    outbox_pass(start)
    outbox_pass(start + dt.timedelta(seconds=120))
    assert {r.status for r in _rows().values()} == {"dead_letter"}


def test_dead_letters_are_listed_without_identifiers_and_resent_exactly_once(
        radpath_env, registry, content, ctx, tmp_path, server, monkeypatch, events):  # noqa: F811
    with FlakyEhr(server.base_url) as peer:
        _use_ehr(monkeypatch, peer.base_url, window_s=60)
        rows = _results(registry, content, ctx, tmp_path, 2)
        _dead_letter_all(peer, utcnow())

        code, out = cli("deliveries", "list", "--accession", ACCESSION)
        assert code == 0 and all(d in out for d in rows) and "ehr" in out and "dead_letter" in out
        assert ACCESSION not in out and UID not in out and "943" not in out  # no accession, UID or NHS number

        code, out = cli("deliveries", "retry")
        assert code == 2 and "refusing" in out
        assert {r.status for r in _rows().values()} == {"dead_letter"}

        peer.down = False  # the peer is fixed
        code, out = cli("deliveries", "retry", "--destination", "ehr", "--actor", "ops-anna", "--reason", "EHR fixed")
        assert code == 0 and "2 deliveries re-queued" in out
        assert cli("deliveries", "retry", "--destination", "ehr")[1].strip() == "no dead letters matched"
        now = utcnow() + dt.timedelta(seconds=1)
        assert sorted(outbox_pass(now)) == sorted(rows)
        assert outbox_pass(now + dt.timedelta(hours=1)) == []  # nothing left: sent once each
        assert posts(peer) == 2 and {r.status for r in _rows().values()} == {"delivered"}
        for delivery_id in rows:
            trail = [(a.action, a.actor) for a in actions(delivery_id)]
            assert ("delivery.requeued", "ops-anna") in trail and trail[-1] == ("delivery.delivered", "delivery")
            assert [a for a, _ in trail].count("delivery.failed") + [a for a, _ in trail].count("delivery.dead_lettered") == 2
        assert cli("deliveries", "list")[1].strip() == "no dead letters"


def test_discard_is_audited_with_its_reason_and_needs_a_selection(
        radpath_env, registry, content, ctx, tmp_path, server, monkeypatch, events):  # noqa: F811
    with FlakyEhr(server.base_url) as peer:
        _use_ehr(monkeypatch, peer.base_url, window_s=60)
        rows = _results(registry, content, ctx, tmp_path, 1)
        _dead_letter_all(peer, utcnow())
        (delivery_id,) = rows
        assert cli("deliveries", "discard", "--reason", "sent by hand")[0] == 2
        code, out = cli("deliveries", "discard", delivery_id, "--actor", "ops-ben", "--reason", "sent by fax")
        assert code == 0 and "1 deliveries discarded" in out
        assert _rows()[delivery_id].status == "discarded" and ops.dead_letters() == []
        (event,) = [a for a in actions(delivery_id) if a.action == "delivery.discarded"]
        assert event.actor == "ops-ben" and event.detail["reason"] == "sent by fax"
        assert cli("deliveries", "retry", delivery_id)[1].strip() == "no dead letters matched"
        peer.down = False
        assert outbox_pass(utcnow() + dt.timedelta(hours=1)) == [] and posts(peer) == 0


def test_a_paused_destination_waits_without_dead_lettering_and_resume_delivers(
        radpath_env, registry, content, ctx, tmp_path, server, monkeypatch, events):  # noqa: F811
    with FlakyEhr(server.base_url) as peer:
        _use_ehr(monkeypatch, peer.base_url, window_s=60)
        rows = _results(registry, content, ctx, tmp_path, 2)
        start = utcnow()
        outbox_pass(start)  # down: one failed attempt each, window started
        assert cli("deliveries", "pause", "ehr", "--actor", "ops-cat", "--reason", "EHR upgrade")[0] == 0
        assert "paused" in cli("deliveries", "list", "--status", "pending")[1]
        for hours in (1, 2, 5):  # far past the 60 s window: paused rows are neither tried nor expired
            assert outbox_pass(start + dt.timedelta(hours=hours)) == []
        assert {r.status for r in _rows().values()} == {"pending"} and peer.refused == 2
        delivery_id = next(iter(rows))  # a flow's own attempt is held too
        assert attempt_delivery(delivery_id, now=start + dt.timedelta(hours=5)) == "ehr: paused, waiting"
        peer.down = False
        code, out = cli("deliveries", "resume", "ehr", "--actor", "ops-cat")
        assert code == 0 and "2 deliveries waiting" in out
        assert sorted(outbox_pass(utcnow() + dt.timedelta(minutes=30))) == sorted(rows)
        assert posts(peer) == 2 and {r.status for r in _rows().values()} == {"delivered"}
        trail = [(a.action, a.actor) for a in actions("ehr")]
        assert trail == [("destination.paused", "ops-cat"), ("destination.resumed", "ops-cat")]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_connection_test_against_a_live_ehr_and_closed_ports(radpath_env, server, monkeypatch):  # noqa: F811
    import json

    from integrations.settings import reset_settings

    port = _closed_port()
    monkeypatch.setenv("RADPATH_DESTINATIONS", json.dumps({
        "ehr": {"kind": "fhir", "base_url": server.base_url, "connect_timeout_s": 2, "timeout_s": 10},
        "ris": {"kind": "mllp", "host": "127.0.0.1", "port": port, "connect_timeout_s": 2},
        "pacs": {"kind": "dicom", "host": "127.0.0.1", "port": port, "timeout_seconds": 2},
    }))
    reset_settings()
    code, out = cli("deliveries", "test", "ehr")
    assert code == 0 and "ok" in out and "CapabilityStatement" in out
    code, out = cli("deliveries", "test", "ris")
    assert code == 1 and "failed" in out and f"127.0.0.1:{port}" in out
    code, out = cli("deliveries", "test", "pacs")
    assert code == 1 and "failed" in out and "C-ECHO" in out


@pytest.mark.parametrize("letters", [[]])
def test_an_empty_dead_letter_table_says_so(letters):
    from tasks import artifacts

    assert artifacts.dead_letter_rows(letters) == [{"dead letters": "no dead letters"}]


def test_the_ui_flow_refuses_a_bare_retry_and_pauses_through_the_same_functions(radpath_env, prefect_api):
    from flows.deliveries_admin import deliveries_admin
    from integrations.db.deliveries import is_paused

    state = deliveries_admin(action="retry", actor="ops-ui", return_state=True)
    assert state.is_failed() and state.name == "Refused"
    state = deliveries_admin(action="pause", actor="ops-ui", destination="ris", reason="RIS upgrade", return_state=True)
    assert state.is_completed() and is_paused("ris")
    state = deliveries_admin(action="list", actor="ops-ui", return_state=True)
    assert state.message == "no dead letters"
    assert deliveries_admin(action="resume", actor="ops-ui", destination="ris", return_state=True).is_completed()
    assert not is_paused("ris") and [a.action for a in actions("ris")] == ["destination.paused", "destination.resumed"]


def test_connection_test_round_trips_nmq_with_a_live_ris(radpath_env, monkeypatch):
    """radpath's RIS simulator (a real MLLP peer on loopback) answers the NMQ^N01."""
    import json

    from integrations.settings import reset_settings
    from radpath.ris_simulator import RisSimulator

    ris = RisSimulator()
    port = ris.start()
    try:
        monkeypatch.setenv("RADPATH_DESTINATIONS", json.dumps({"ris": {"kind": "mllp", "host": "127.0.0.1", "port": port}}))
        reset_settings()
        code, out = cli("deliveries", "test", "ris")
        assert code == 0 and "ok" in out and "NMQ^N01" in out
    finally:
        ris.stop()
