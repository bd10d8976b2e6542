"""Health of the front doors and destinations (issue 22): the ledger's record of each check,
what makes the service unhealthy, and the checks themselves against real sockets.

The served end to end (a RIS taken down under `radpath serve`, /health, the alert) is in
tests/test_health_served.py; this file drives the same HealthChecker `radpath serve` builds,
with real listeners (an MLLP RIS simulator, a closed port) and no Prefect (its events go to a list).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import socket

from integrations.db import health
from integrations.db.health import PeerStatus, problems, record_check
from radpath.health import HealthChecker
from radpath.ris_simulator import RisSimulator
from tests.served import free_port

T0 = dt.datetime(2026, 12, 7, 8, 0, tzinfo=dt.UTC)


def test_a_change_of_state_is_reported_once_and_a_first_up_is_not_news(radpath_env):
    assert record_check("destination:ris", True, "accepting", T0) is None  # the expected state
    assert record_check("destination:ris", True, "accepting", T0 + dt.timedelta(seconds=30)) is None
    assert record_check("destination:ris", False, "refused", T0 + dt.timedelta(seconds=60)) == "down"
    assert record_check("destination:ris", False, "refused", T0 + dt.timedelta(seconds=90)) is None
    assert record_check("destination:ris", True, "accepting", T0 + dt.timedelta(seconds=120)) == "up"
    assert record_check("door:mllp", False, "stopped", T0) == "down"  # first sight of a down door is news

    (ris,) = health.health_rows(["ris"], doors=(), now=T0 + dt.timedelta(seconds=150))
    assert (ris.state, ris.since, ris.checked_at, ris.detail) == ("up", T0 + dt.timedelta(seconds=120),
                                                                  T0 + dt.timedelta(seconds=120), "accepting")
    stale = health.health_rows(["ris"], doors=("mllp", "dicom"), stale_after_s=90, now=T0 + dt.timedelta(seconds=300))
    assert [(r.name, r.state) for r in stale] == [("mllp", "unknown"), ("dicom", "unknown"), ("ris", "unknown")]
    assert "is radpath serve running?" in stale[0].detail and stale[1].detail == "never checked"


def test_down_doors_and_unpaused_down_destinations_make_the_service_unhealthy():
    def row(kind: str, name: str, state: str, **kw) -> PeerStatus:  # noqa: ANN003
        return PeerStatus(kind, name, state, None, None, "", **kw)

    healthy = [row("door", "mllp", "up"), row("destination", "ris", "up", dead_letters=3),
               row("destination", "pacs", "unknown"), row("destination", "ehr", "down", paused=True)]
    assert problems(healthy) == []  # dead letters are work, a paused peer is ops' choice, unknown is not yet checked
    assert problems(healthy, ledger_ok=False) == ["ledger: cannot be reached"]
    assert problems([row("door", "dicom", "unknown"), row("destination", "ris", "down")]) == [
        "door dicom: unknown", "destination ris: down"]


def test_the_dicom_door_is_accepting_until_it_shuts_down_without_being_connected_to(radpath_env):
    from integrations.db.models import AuditEvent
    from integrations.dicom.scp import start_scp
    from integrations.settings import get_settings
    from sqlmodel import select

    from integrations.db.engine import session_scope

    settings = get_settings().model_copy(update={"dicom_port": 0, "dicom_peers": {"MODALITY": ("10.0.0.9",)}})
    scp = start_scp(settings)
    checker = HealthChecker(settings, [], doors={"dicom": (scp.accepting, scp.port, False)}, emit_change=print)
    assert asyncio.run(checker.check_doors())["dicom"].ok
    scp.shutdown()
    probe = asyncio.run(checker.check_doors())["dicom"]
    assert not probe.ok and probe.detail.endswith("the listener has stopped")
    with session_scope() as session:  # loopback is not allow-listed, and no refusal was audited
        assert not session.exec(select(AuditEvent).where(AuditEvent.action == "connection.refused")).all()


def test_the_checker_finds_a_stopped_listener_and_a_ris_that_went_away(radpath_env, monkeypatch):
    ris = RisSimulator()
    ris_port = ris.start()
    monkeypatch.setenv("RADPATH_DESTINATIONS", json.dumps({"ris": {"kind": "mllp", "host": "127.0.0.1", "port": ris_port}}))
    from integrations.settings import get_settings, reset_settings

    reset_settings()
    listening = socket.create_server(("127.0.0.1", 0))
    closed_port = free_port()
    changes: list[tuple[str, str, str]] = []
    checker = HealthChecker(get_settings(), ["ris", "pacs"],
                            doors={"mllp": (lambda: True, listening.getsockname()[1], True),
                                   "dicom": (lambda: True, closed_port, True),  # serving, they say, but nothing accepts
                                   "http": (lambda: False, listening.getsockname()[1], True)},  # the server stopped
                            emit_change=lambda *args: changes.append(args))
    try:
        asyncio.run(checker.check_all())
        assert sorted((peer, state) for peer, state, _ in changes) == [("door:dicom", "down"), ("door:http", "down")]
        detail = {peer: text for peer, _, text in changes}
        assert f"127.0.0.1:{closed_port}: not accepting connections: ConnectionRefusedError" in detail["door:dicom"]
        assert detail["door:http"].endswith("the listener has stopped")
        code, body = asyncio.run(checker.report())
        assert code == 503 and body["doors"] == {"mllp": "up", "dicom": "down", "http": "down"}
        assert body["destinations"]["ris"]["state"] == "up" and body["destinations"]["pacs"]["state"] == "up"  # a file drop
        assert "127.0.0.1" not in json.dumps(body)  # no addresses on an endpoint without credentials

        changes.clear()
        ris.stop()
        asyncio.run(checker.check_all())
        ((peer, state, text),) = changes
        assert (peer, state) == ("destination:ris", "down")
        assert f"MLLP 127.0.0.1:{ris_port}" in text and "refused" in text.lower()
        rows = {r["name"]: r for r in health.health_table(["ris", "pacs"])}
        assert rows["ris"]["state"] == "down" and rows["ris"]["pending"] == 0 and rows["mllp"]["state"] == "up"

        changes.clear()
        ris = RisSimulator(port=ris_port)
        ris.start()
        asyncio.run(checker.check_all())
        assert [(p, s) for p, s, _ in changes] == [("destination:ris", "up")]
    finally:
        ris.stop()
        listening.close()
