"""The outbox is the only retry scheduler, against a real FHIR server on loopback.

The EHR sits behind a loopback HTTP peer that answers 503 (with Retry-After) while it is
"down" and forwards to the real server once it is back. The outbox is driven as the
reconciler drives it (`ops.deliveries_due`, then one attempt per due row) on a simulated
clock: an hour of outage takes well under a second, nobody sleeps. Rerun on PostgreSQL by
tests/test_postgres_outbox_retry.py.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import httpx
import pytest
from sqlmodel import select

import tasks.delivery
from integrations.db import ledger, ops
from integrations.db.engine import session_scope
from integrations.db.models import AuditEvent, Delivery, PeerHealth, utcnow
from integrations.errors import RadpathError
from integrations.fhir.report import RESULT_SYSTEM, build_report_bundle
from integrations.settings import reset_settings
from tasks.delivery import DeadLettered, attempt_delivery
from tests.fhir_server import start_fhir_server
from tests.test_ledger import _ready_run
from tests.test_outputs import assessment, content, ctx  # noqa: F401 - shared fixtures

UID = "1.2.826.0.1.3680043.8.498.1"  # the study tests.test_ledger._ready_run makes ready


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_fhir_server(tmp_path_factory.mktemp("fhir"))
    yield srv
    srv.stop()


class FlakyEhr:
    """A loopback HTTP peer in front of the real FHIR server. While `down` it answers every
    request 503 with `Retry-After` and an OperationOutcome; otherwise it forwards the request
    and relays the server's answer. `forwarded` lists (method, path, status) of what got through."""

    def __init__(self, upstream: str, retry_after: str = "120"):
        origin = urlsplit(upstream)
        self.upstream = f"{origin.scheme}://{origin.netloc}"
        self.down, self.refused, self.forwarded = True, 0, []
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if peer.down:
                    peer.refused += 1
                    outcome = json.dumps({"resourceType": "OperationOutcome", "issue": [
                        {"severity": "error", "code": "transient", "diagnostics": "EHR down for maintenance"}]}).encode()
                    self.send_response(503)
                    self.send_header("Retry-After", retry_after)
                    self.send_header("Content-Type", "application/fhir+json")
                    self.send_header("Content-Length", str(len(outcome)))
                    self.end_headers()
                    self.wfile.write(outcome)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() in ("content-type", "accept")}
                answer = httpx.request(self.command, peer.upstream + self.path, content=body, headers=headers, timeout=30)
                peer.forwarded.append((self.command, self.path, answer.status_code))
                self.send_response(answer.status_code)
                for name in ("Content-Type", "Location"):
                    if name in answer.headers:
                        self.send_header(name, answer.headers[name])
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = do_PUT = _any

            def log_message(self, *args) -> None:  # noqa: ANN002
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}{origin.path}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FlakyEhr:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def events(monkeypatch):
    """The Prefect events the delivery step emits, collected (no Prefect API in these tests)."""
    seen = []
    monkeypatch.setattr(tasks.delivery, "emit",
                        lambda event, kind, entity_id, related=None, **payload: seen.append((event, payload)))
    return seen


def _use_ehr(monkeypatch, base_url: str, **retry) -> None:
    config = {"kind": "fhir", "base_url": base_url, "connect_timeout_s": 2, "timeout_s": 10}
    monkeypatch.setenv("RADPATH_DESTINATIONS", json.dumps({"ehr": config | ({"retry": retry} if retry else {})}))
    reset_settings()


def _results(registry, content, ctx, tmp_path, n: int, bundle=None) -> dict[str, str]:  # noqa: F811, ANN001
    """n results of one run, each with one outbox row for the EHR: delivery id -> result id."""
    run_id = _ready_run(registry)
    rows = {}
    for k in range(n):
        version = f"1.{k}"
        result_id = ledger.result_id_for(UID, "lung-cancer-ct", version)
        payload = tmp_path / f"bundle-{k}.json"
        payload.write_text(json.dumps(bundle or build_report_bundle(content, ctx.model_copy(update={"result_id": result_id}))))
        _, (delivery_id,), _ = ledger.record_result(
            run_id, result_id=result_id, study_uid=UID, pathway="lung-cancer-ct", model_version=version,
            assessment={}, report={}, urgent=False,
            deliveries=[ledger.DeliveryPlan(destination="ehr", kind="fhir", payloads=[str(payload)])])
        rows[delivery_id] = result_id
    return rows


def drive(start: dt.datetime, *, until: dt.timedelta, peer: FlakyEhr, up_after: dt.timedelta | None = None):
    """The reconciler's delivery sweep on a simulated clock: send what is due, jump to the next
    due time, until nothing is pending or `until` has passed. Returns [(delivery id, time)] of
    every attempt."""
    now, attempts = start, []
    while now <= start + until:
        peer.down = up_after is None or now < start + up_after
        for delivery_id in ops.deliveries_due(grace_seconds=0, now=now):
            attempts.append((delivery_id, now))
            try:
                attempt_delivery(delivery_id, now=now)
            except RadpathError:
                pass  # the row records it; the outbox decides what comes next
        pending = [r.next_attempt_at for r in _rows().values() if r.status == "pending"]
        if not pending:
            break
        now = max(now, min(pending))
    return attempts


def _rows() -> dict[str, Delivery]:
    with session_scope() as s:
        return {r.id: r for r in s.exec(select(Delivery)).all()}


def _audit(delivery_id: str) -> list[AuditEvent]:
    with session_scope() as s:
        return list(s.exec(select(AuditEvent).where(AuditEvent.entity_id == delivery_id).order_by(AuditEvent.id)).all())


def _reports(server, result_id: str) -> int:
    return httpx.get(f"{server.base_url}/DiagnosticReport", params={"identifier": f"{RESULT_SYSTEM}|{result_id}"}).json()["total"]


def test_an_ehr_down_for_an_hour_gets_every_result_exactly_once_and_nothing_is_dead_lettered(
        radpath_env, registry, server, content, ctx, tmp_path, monkeypatch, events):  # noqa: F811
    with FlakyEhr(server.base_url, retry_after="120") as peer:
        _use_ehr(monkeypatch, peer.base_url)
        rows = _results(registry, content, ctx, tmp_path, 3)
        start = utcnow()
        attempts = drive(start, until=dt.timedelta(hours=3), peer=peer, up_after=dt.timedelta(hours=1))

    final = _rows()
    assert {r.status for r in final.values()} == {"delivered"} and ops.dead_letters() == []
    assert [e for e, _ in events] == ["result.delivered"] * 3  # and no dead-letter alert
    posts = [f for f in peer.forwarded if f[0] == "POST"]
    assert len(posts) == 3 and all(status == 200 for _, _, status in posts)  # one transaction per result got through
    assert all(_reports(server, result_id) == 1 for result_id in rows.values())
    assert peer.refused == sum(r.attempts - 1 for r in final.values())
    for delivery_id, row in final.items():
        times = [t for d, t in attempts if d == delivery_id]
        gaps = [(b - a).total_seconds() for a, b in zip(times, times[1:])]
        assert row.attempts == len(times) > 10  # tried all through the hour, not given up after a count
        assert all(120 <= g <= 900 for g in gaps), gaps  # Retry-After honoured, backoff capped at 15 min
        assert start + dt.timedelta(hours=1) <= row.delivered_at <= start + dt.timedelta(hours=1, minutes=15)
        trail = _audit(delivery_id)
        assert [a.action for a in trail if a.action.startswith("delivery.")] == \
            ["delivery.failed"] * (row.attempts - 1) + ["delivery.delivered"]
        failed = next(a for a in trail if a.action == "delivery.failed")
        assert failed.detail["peer"] == {"http_status": 503, "retry_after_s": 120.0}
        assert failed.detail["error"] == "RetryLater" and "next_attempt_at" in failed.detail
        assert row.first_attempt_at == start and row.next_attempt_at is None


def test_a_permanent_refusal_dead_letters_at_once_with_the_servers_words(
        radpath_env, registry, server, content, ctx, tmp_path, monkeypatch, events):  # noqa: F811
    broken = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Observation", "status": "final"},  # code is required
         "request": {"method": "POST", "url": "Observation"}}]}
    _use_ehr(monkeypatch, server.base_url)
    (delivery_id,) = _results(registry, content, ctx, tmp_path, 1, bundle=broken)
    with pytest.raises(DeadLettered, match="permanent"):
        attempt_delivery(delivery_id)
    row = ledger.get_delivery(delivery_id)
    assert row.status == "dead_letter" and row.attempts == 1 and row.next_attempt_at is None
    assert row.last_response.startswith("FhirRejected: FHIR server refused with 4")
    assert "OperationOutcome" in row.last_response  # what the server said, kept for ops
    (letter,) = ops.dead_letters()
    assert letter.delivery_id == delivery_id and "refused" in letter.last_response
    dead = [a for a in _audit(delivery_id) if a.action == "delivery.dead_lettered"]
    assert len(dead) == 1 and dead[0].detail["dead_reason"] == "permanent"
    assert 400 <= dead[0].detail["peer"]["http_status"] < 500 and dead[0].detail["peer"]["outcome"]
    ((name, payload),) = events
    assert name == "delivery.dead_lettered" and payload == {
        "destination": "ehr", "attempts": 1, "reason": "permanent", "pathway": letter.pathway,
        "study_key": payload["study_key"], "error": "FhirRejected"}  # the error's class: the peer's words stay in the ledger
    assert payload["study_key"].startswith("S-")
    assert ops.deliveries_due(grace_seconds=0, now=utcnow() + dt.timedelta(days=2)) == []  # never tried again


def test_an_ehr_down_past_the_window_is_dead_lettered_at_the_windows_end(
        radpath_env, registry, server, content, ctx, tmp_path, monkeypatch, events):  # noqa: F811
    with FlakyEhr(server.base_url, retry_after="30") as peer:
        _use_ehr(monkeypatch, peer.base_url, window_s=1800)  # this destination gives up after 30 minutes
        (delivery_id,) = _results(registry, content, ctx, tmp_path, 1)
        start = utcnow()
        attempts = drive(start, until=dt.timedelta(hours=2), peer=peer)  # never comes back
    row = ledger.get_delivery(delivery_id)
    assert row.status == "dead_letter" and peer.forwarded == []
    assert attempts[-1][1] == start + dt.timedelta(seconds=1800)  # the last try is at the window's end
    assert row.attempts == len(attempts) and "503" in row.last_response
    dead = [a for a in _audit(delivery_id) if a.action == "delivery.dead_lettered"]
    assert len(dead) == 1 and dead[0].detail["dead_reason"] == "window"
    assert dead[0].detail["peer"]["http_status"] == 503
    ((name, payload),) = events
    assert name == "delivery.dead_lettered" and {k: payload[k] for k in ("destination", "attempts", "reason")} == {
        "destination": "ehr", "attempts": row.attempts, "reason": "window"}
    assert "503" not in payload["error"] and payload["study_key"].startswith("S-")
    with session_scope() as session:  # the attempts told health only the address and the error's class
        health = session.get(PeerHealth, "destination:ehr")
    assert health.state == "down" and health.detail == f"FHIR {peer.base_url}: delivery attempt failed ({payload['error']})"
