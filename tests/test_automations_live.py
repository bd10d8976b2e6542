"""radpath's automations fire on a live Prefect server and notify a webhook.

A real `prefect server start` (as `radpath ui` starts it; its triggers and actions services
running) gets the automations from `radpath automations apply`'s code path, pointed at a
webhook receiver in this process (an HTTP server on a free port: the stand-in for the
trust's chat or paging hook, which cannot run here). The events are the ones radpath emits
(`tasks.events`), and a failing flow run tagged as a pathway run; the SLA clock runs for
real, on a 1-minute SLA.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.served import free_port

pytestmark = pytest.mark.slow


class WebhookReceiver:
    """Collects the JSON bodies POSTed to it."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:  # noqa: ANN002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, subject: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for body in self.bodies:
                if body.get("subject") == subject:
                    return body
            time.sleep(0.5)
        raise AssertionError(f"no notification {subject!r} within {timeout:.0f} s; got {[b.get('subject') for b in self.bodies]}")


@pytest.fixture
def live_prefect(radpath_env, tmp_path):
    """A Prefect server with its services, as `radpath ui` runs it; the client points at it."""
    import os
    import signal

    from prefect.settings import PREFECT_API_URL, temporary_settings

    from radpath.ui import api_url, start_server

    port = free_port()
    server = start_server("127.0.0.1", port, tmp_path / "prefect-server.log")
    try:
        with temporary_settings(updates={PREFECT_API_URL: api_url("127.0.0.1", port)}):
            yield api_url("127.0.0.1", port)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_failures_dead_letters_pending_deliveries_overdue_reviews_store_problems_and_sla_breaches_notify_the_webhook(live_prefect, registry):
    from prefect import flow, tags
    from prefect.events.worker import EventsWorker

    from deployments.automations import apply_automations
    from pathways.spec import Sla
    from tasks.events import emit

    receiver = WebhookReceiver()
    lung = registry.specs["lung-cancer-ct"]
    registry.specs["lung-cancer-ct"] = lung.model_copy(update={"sla": Sla(turnaround_minutes=1)})
    try:
        asyncio.run(apply_automations(registry, receiver.url))
    finally:
        registry.specs["lung-cancer-ct"] = lung
    time.sleep(3)  # the triggers service loads new automations

    # SLA clocks: order o-late never gets a result; order o-on-time does, within the minute
    for order in ("o-late", "o-on-time"):
        emit("order.received", "order", order, related={"pathway": ["lung-cancer-ct"]}, labels={"priority": "routine"},
             eligible=True, runs=1)
    emit("delivery.dead_lettered", "delivery", "d-1", related={"pathway": "lung-cancer-ct"}, destination="ris", attempts=12,
         reason="retry window ended", pathway="lung-cancer-ct", study_key="S-dead", error="ConnectionRefusedError")
    emit("result.review_expired", "result", "r-1", related={"pathway": "lung-cancer-ct"})
    emit("store.sweep_problem", "store", "images", quarantined=2, failed=0)

    @flow(name="lung-cancer-ct", flow_run_name="lung-cancer-ct/S-test")
    def failing_pathway_run() -> None:
        raise RuntimeError("inference service unavailable")

    @flow(name="lung-cancer-ct", flow_run_name="lung-cancer-ct/S-pending")
    def pathway_run_left_to_retries() -> str:  # as flows.common.record_and_deliver emits it
        emit("result.delivery_pending", "result", "r-3", related={"pathway": "lung-cancer-ct", "run": "run-3"},
             pathway="lung-cancer-ct", study_key="S-pending", pending=1, destinations="ris")
        from prefect.context import get_run_context
        return str(get_run_context().flow_run.id)

    with tags("pathway:lung-cancer-ct"):
        state = failing_pathway_run(return_state=True)
        pending_run_id = pathway_run_left_to_retries()
    assert state.is_failed()
    emit("result.delivered", "order", "o-on-time", related={"pathway": "lung-cancer-ct", "result": "r-2"},
         labels={"priority": "routine"})
    EventsWorker.drain_all(timeout=30)

    dead = receiver.wait_for("radpath: delivery dead-lettered", 60)
    assert dead["text"].startswith("Delivery radpath.delivery.d-1 to ris (study S-dead, lung-cancer-ct) was "
                                    "dead-lettered after 12 attempt(s) (retry window ended, ConnectionRefusedError")
    overdue = receiver.wait_for("radpath: clinical review overdue", 60)
    assert "radpath.result.r-1" in overdue["text"]
    sweep = receiver.wait_for("radpath: image store sweep found unreadable files", 60)
    assert sweep["text"].startswith("2 file(s) quarantined and 0 failed")
    failed = receiver.wait_for("radpath: pathway run lung-cancer-ct/S-test Failed", 60)
    assert "inference service unavailable" in failed["text"]
    assert "Flow run: http" in failed["text"] and "/runs/flow-run/" in failed["text"]  # the UI link
    pending = receiver.wait_for("radpath: delivery waiting for retry", 60)
    assert pending["text"].startswith("Study S-pending (lung-cancer-ct): 1 delivery(ies) to ris failed")
    assert f"/runs/flow-run/{pending_run_id}" in pending["text"]  # the run the event came from
    assert "Flow run:" not in dead["text"]  # emitted outside a flow run: no link, and no template error

    breach = receiver.wait_for("radpath: SLA breach on lung-cancer-ct (routine)", 150)
    assert "radpath.order.o-late" in breach["text"]
    time.sleep(10)  # any second breach (o-on-time) would have come with the first
    breaches = [b["text"] for b in receiver.bodies if b.get("subject", "").startswith("radpath: SLA breach")]
    assert len(breaches) == 1 and "o-on-time" not in breaches[0]
