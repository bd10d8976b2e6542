"""The Prefect UI as ops and reviewers use it, driven by headless Chromium (selenium + chromedriver).

1. One cardiac CT pathway run against the server `radpath ui` starts (temporary data dir,
   free port): Chromium opens the flow run's page and its markdown artifact.
2. `radpath serve` (its own Prefect server) with review required on cardiac CT: an order and
   a study go in, the review run suspends, a reviewer amends the conclusion in the UI's
   resume form, and the run resumes to delivery with the amended report.

Screenshots go under test-output/ui/; RADPATH_UPDATE_SCREENSHOTS=1 also copies them to docs/screenshots/.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import ingest_synthetic_study, require_tool
from tests.served import stop_process

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "test-output" / "ui"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1400,1000",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def prefect_ui(tmp_path):
    """`radpath ui` on a free port with its own data dir; yields the base URL."""
    port = _free_port()
    env = {**os.environ, "RADPATH_DATA_DIR": str(tmp_path / "ui-data")}
    log = (tmp_path / "ui.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "radpath.cli", "ui", "--port", str(port)], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "ui.log").read_text()
            try:
                if httpx.get(f"{base}/api/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "Prefect server did not answer within 60 s"
            time.sleep(0.5)
        assert (tmp_path / "ui-data" / "prefect" / "prefect.db").exists()  # its database is in radpath's data dir
        yield base
    finally:
        stop_process(proc, 20)
        log.close()


@pytest.fixture
def browser(tmp_path):
    chromium = require_tool("chromium")
    driver_path = require_tool("chromedriver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _page_shows(driver, url: str | None, texts: list[str], timeout: float = 45) -> str:
    """Open url (None: stay on the current page) and wait until the rendered page text holds
    every one of texts; returns the text."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    if url is not None:
        driver.get(url)
    seen = ""

    def ready(d) -> bool:
        nonlocal seen
        seen = d.find_element(By.TAG_NAME, "body").text
        return all(t in seen for t in texts)

    try:
        WebDriverWait(driver, timeout, poll_frequency=0.5).until(ready)
    except Exception:  # noqa: BLE001 - report what the page did show
        pytest.fail(f"{url or 'the page'} never showed {texts!r}; it showed:\n{seen[-2000:]}")
    return seen


def _screenshot(driver, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / name
    assert driver.save_screenshot(str(path)), name
    if os.environ.get("RADPATH_UPDATE_SCREENSHOTS") == "1":  # a small palette PNG for the docs
        from PIL import Image

        (ROOT / "docs" / "screenshots").mkdir(parents=True, exist_ok=True)
        with Image.open(path) as shot:
            shot.convert("RGB").quantize(colors=128).save(ROOT / "docs" / "screenshots" / name, optimize=True)
    return path


def test_prefect_ui_shows_the_run_and_its_summary(prefect_ui, browser, radpath_env, registry, tmp_path):
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.dispatch import run_pathway
    from integrations.db import ledger

    _, run_id = ingest_synthetic_study(tmp_path, registry, "cardiac-ct", seed=5)
    study_key = ledger.run_view(run_id).study_key
    with temporary_settings(updates={PREFECT_API_URL: f"{prefect_ui}/api"}):
        try:
            state = asyncio.run(run_pathway(run_id))
        finally:  # send queued logs and events now, not later to a server that is gone
            APILogWorker.drain_all(timeout=30)
            EventsWorker.drain_all(timeout=30)
    assert state.is_completed(), state.message
    flow_run_id = state.state_details.flow_run_id
    run_name = f"heart-failure-cardiac-ct/{study_key}"

    key = f"heart-failure-cardiac-ct-{study_key}".lower()
    found = httpx.post(f"{prefect_ui}/api/artifacts/filter", json={"artifacts": {"key": {"any_": [key]}}}, timeout=10)
    found.raise_for_status()
    (artifact,) = found.json()
    assert artifact["flow_run_id"] == str(flow_run_id)
    conclusion = next(line for line in artifact["data"].splitlines() if line.startswith("**Conclusion:**"))
    conclusion = conclusion.removeprefix("**Conclusion:**").strip()

    _page_shows(browser, f"{prefect_ui}/runs/flow-run/{flow_run_id}", [run_name, state.name])
    _screenshot(browser, "flow-run.png")

    _page_shows(browser, f"{prefect_ui}/artifacts/artifact/{artifact['id']}", ["Findings", conclusion[:60]])
    _screenshot(browser, "artifact.png")

    # The ops tables a reconciler pass publishes, and the automations with their descriptions
    from deployments.automations import apply_automations
    from tasks.artifacts import publish_ops_tables

    with temporary_settings(updates={PREFECT_API_URL: f"{prefect_ui}/api"}):
        publish_ops_tables()
        asyncio.run(apply_automations(registry, "http://127.0.0.1:9/hook"))
    found = httpx.post(f"{prefect_ui}/api/artifacts/filter", json={"artifacts": {"key": {"any_": ["radpath-sla"]}}}, timeout=10)
    (sla,) = found.json()
    _page_shows(browser, f"{prefect_ui}/artifacts/artifact/{sla['id']}", ["% within target", "heart-failure-cardiac-ct"])
    _screenshot(browser, "ops-sla.png")
    _page_shows(browser, f"{prefect_ui}/automations", ["radpath: delivery waiting for retry", "left to the outbox"])
    _screenshot(browser, "automations.png")


def _review_specs(tmp_path: Path) -> Path:
    """The shipped specs, with cardiac CT in qa mode: every clinical delivery held for a
    reviewer (RADPATH_PATHWAYS_DIR)."""
    import shutil

    import yaml

    specs = tmp_path / "specs"
    shutil.copytree(ROOT / "pathways" / "specs", specs)
    path = specs / "heart_failure_cardiac_ct.yaml"
    spec = yaml.safe_load(path.read_text())
    spec["mode"], spec["review"] = "qa", {"required": True, "timeout_minutes": 60}
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return specs


def _field(driver, label: str):  # noqa: ANN001, ANN202
    """The input of the resume form's field whose label reads `label`."""
    from selenium.webdriver.common.by import By

    return driver.find_element(
        By.XPATH, f"//*[normalize-space(text())='{label}']/ancestor::*[.//textarea or .//select][1]//*[self::textarea or self::select]"
    )


def test_a_reviewer_amends_a_suspended_run_in_the_ui_and_it_resumes_to_delivery(browser, served_ledger, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select
    from sqlmodel import select

    from integrations.db.engine import session_scope
    from integrations.db.models import Delivery, Result
    from tests.served import radpath_serve
    from tests.test_serve import send_cardiac_ct

    amended = "No coronary artery calcium on review (CAC-DRS 0)."
    with radpath_serve(tmp_path, {"RADPATH_PATHWAYS_DIR": str(_review_specs(tmp_path))}) as served:
        served_ledger(served.data_dir)
        send_cardiac_ct(tmp_path, served)
        suspended = _wait_for_flow_run(served, lambda r: r["name"].startswith("review/") and r["state"]["name"] == "Suspended", 240)
        with session_scope() as s:
            assert {d.status for d in s.exec(select(Delivery)).all()} == {"held"}  # nothing clinical before the review

        page = f"{served.prefect_ui}/runs/flow-run/{suspended['id']}"
        _page_shows(browser, page, [suspended["name"], "Suspended", "Resume"])
        _screenshot(browser, "review-suspended.png")
        next(b for b in browser.find_elements(By.TAG_NAME, "button") if b.text.strip() == "Resume").click()
        _page_shows(browser, None, ["Resume Flow Run", "the algorithm concluded", "Amended Conclusion"])
        Select(_field(browser, "Decision")).select_by_visible_text("amend")
        _field(browser, "Reviewer").send_keys("Dr Browser")
        _field(browser, "Reason (Optional)").send_keys("mitral annular calcium, not coronary")
        _field(browser, "Amended Conclusion (Optional)").send_keys(amended)
        _screenshot(browser, "review-form.png")
        _submit_resume_form(browser)

        done = _wait_for_flow_run(served, lambda r: r["id"] == suspended["id"] and r["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED"), 180)
        assert done["state"]["name"] == "Delivered", done["state"]
        _page_shows(browser, page, [suspended["name"], "Delivered"])
        _screenshot(browser, "review-delivered.png")
        with session_scope() as s:
            result = s.exec(select(Result)).one()
            deliveries = s.exec(select(Delivery)).all()
        assert (result.review_status, result.reviewed_by, result.report["conclusion"]) == ("amended", "Dr Browser", amended)
        assert {d.destination: d.status for d in deliveries} == {"pacs": "delivered", "ris": "delivered", "ehr": "delivered"}
        (oru,) = (served.data_dir / "outbox" / "ris").rglob("oru-r01.hl7")
        assert amended in oru.read_bytes().decode()


def _submit_resume_form(driver) -> None:  # noqa: ANN001
    """Click the resume form's Submit and wait until the UI has taken it (the modal closes).

    On a slow machine the first click can land while the form is still validating and be
    ignored; the run then stays Suspended. One more click is what a reviewer would do; if the
    form still does not close, fail with what the page shows rather than wait out the run."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def closed(d) -> bool:  # noqa: ANN001
        return "Resume Flow Run" not in d.find_element(By.TAG_NAME, "body").text

    for _ in range(2):
        buttons = [b for b in driver.find_elements(By.TAG_NAME, "button") if b.text.strip() == "Submit"]
        if not buttons:
            break
        buttons[0].click()
        try:
            WebDriverWait(driver, 30, poll_frequency=0.5).until(closed)
            return
        except Exception:  # noqa: BLE001,S112 - try once more, then report below
            continue
    if not closed(driver):
        _screenshot(driver, "review-submit-failed.png")
        pytest.fail(f"the resume form did not close after Submit; the page shows:\n{driver.find_element(By.TAG_NAME, 'body').text[-2000:]}")


def _wait_for_flow_run(served, predicate, timeout: float) -> dict:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while True:
        runs = httpx.post(f"{served.prefect_api}/flow_runs/filter", json={"sort": "EXPECTED_START_TIME_DESC", "limit": 50},
                          timeout=10).json()
        match = next((r for r in runs if predicate(r)), None)
        if match:
            return match
        assert time.monotonic() < deadline, f"{[(r['name'], r['state']['name']) for r in runs]}\n{served.log_tail()}"
        time.sleep(1)
