"""A RIS taken down under `radpath serve` (issue 22), as ops would see it: `/health` turns 503
naming it within a minute, the automation alerts with the peer's error, `radpath status` shows
it down, and all of it turns back when the RIS returns.

Real parts: `radpath serve` in its own process with its own Prefect server (triggers and
actions services running), the RIS simulator as the MLLP peer, automations applied by
`radpath automations apply`'s code path. The webhook receiver (tests.test_automations_live)
stands in for the trust's chat or paging hook, which cannot run here.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
from typer.testing import CliRunner

from radpath.ris_simulator import RisSimulator
from tests.served import radpath_serve
from tests.test_automations_live import WebhookReceiver

pytestmark = pytest.mark.slow


def wait_for_health(url: str, predicate, timeout: float, served) -> tuple[int, dict]:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while True:
        response = httpx.get(url, timeout=10)
        if predicate(response.status_code, response.json()):
            return response.status_code, response.json()
        assert time.monotonic() < deadline, f"{response.status_code} {response.text}\n{served.log_tail()}"
        time.sleep(0.5)


def test_a_ris_taken_down_is_down_in_health_and_alerts_with_its_error_then_recovers(tmp_path, served_ledger, registry):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from deployments.automations import apply_automations
    from radpath.cli import app

    ris = RisSimulator()
    port = ris.start()
    receiver = WebhookReceiver()
    env = {"RADPATH_DESTINATIONS": json.dumps({"ris": {"kind": "mllp", "host": "127.0.0.1", "port": port}}),
           "RADPATH_HEALTH_CHECK_SECONDS": "2"}
    try:
        with radpath_serve(tmp_path, extra_env=env) as served:
            with temporary_settings(updates={PREFECT_API_URL: served.prefect_api}):
                asyncio.run(apply_automations(registry, receiver.url))
            time.sleep(3)  # the triggers service loads new automations
            url = f"http://127.0.0.1:{served.http_port}/health"
            code, body = wait_for_health(url, lambda c, b: b["destinations"]["ris"]["checked_at"], 60, served)
            assert code == 200 and body["status"] == "ok", body
            assert body["doors"] == {"mllp": "up", "dicom": "up", "http": "up"} and body["ledger"] == "up"
            assert set(body["destinations"]) == set(registry.destination_names())
            assert httpx.get(f"http://127.0.0.1:{served.http_port}/health/live", timeout=10).status_code == 200

            ris.stop()
            taken_down = time.monotonic()
            code, body = wait_for_health(url, lambda c, b: c == 503, 60, served)
            assert time.monotonic() - taken_down < 60
            assert body["status"] == "unhealthy" and body["problems"] == ["destination ris: down"], body
            alert = receiver.wait_for("radpath: destination down", 60)
            assert f"MLLP 127.0.0.1:{port}" in alert["text"] and "Connection refused" in alert["text"], alert

            served_ledger(served.data_dir)
            result = CliRunner().invoke(app, ["status"], terminal_width=300)
            assert result.exit_code == 0, result.output
            (line,) = [line for line in result.output.splitlines() if "│ destination │ ris" in line]
            assert "│ down" in line and "Connection refused" in result.output

            ris = RisSimulator(port=port)
            ris.start()
            code, body = wait_for_health(url, lambda c, b: c == 200, 60, served)
            assert body["destinations"]["ris"]["state"] == "up"
            assert f"127.0.0.1:{port}" in receiver.wait_for("radpath: destination back up", 60)["text"]
            assert [b["subject"] for b in receiver.bodies].count("radpath: destination down") == 1  # one alert per outage
    finally:
        ris.stop()
