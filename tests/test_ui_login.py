"""A login in front of the Prefect UI and API that `radpath serve` starts (RADPATH_UI_AUTH:
Prefect's HTTP basic auth). The clinical review form lives in that UI, so without the
credentials nothing is readable or resumable; radpath's own clients carry them, so the whole
journey still runs."""

from __future__ import annotations

import httpx
import pytest

from tests.served import radpath_serve
from tests.test_serve import send_cardiac_ct, wait_for_run

pytestmark = pytest.mark.slow

CREDENTIALS = ("ops", "correct-horse-battery")


def test_the_served_ui_and_api_need_the_login_and_radpath_runs_through_it(tmp_path, served_ledger):
    with radpath_serve(tmp_path, extra_env={"RADPATH_UI_AUTH": ":".join(CREDENTIALS)}) as served:
        served_ledger(served.data_dir)
        send_cardiac_ct(tmp_path, served)
        # The trigger, the runner, the flow's events and logs all reached the API with the login.
        run, deliveries = wait_for_run(lambda r, d: r.status in {"completed", "failed"} and d, 300, served)
        assert run.status == "completed" and all(d.status == "delivered" for d in deliveries)

        flow_run = f"{served.prefect_api}/flow_runs/{run.flow_run_id}"
        assert httpx.get(flow_run, timeout=10).status_code == 401
        assert httpx.get(flow_run, auth=("ops", "wrong"), timeout=10).status_code == 401
        assert httpx.post(f"{served.prefect_api}/flow_runs/filter", json={}, timeout=10).status_code == 401
        answer = httpx.get(flow_run, auth=CREDENTIALS, timeout=10)
        assert answer.status_code == 200 and answer.json()["state"]["name"] == "Delivered"
        assert httpx.get(f"{served.prefect_api}/health", timeout=10).status_code == 200  # probes need no login
