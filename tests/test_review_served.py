"""Clinical review through the Prefect API on `radpath serve`: an incomplete answer is asked
again, a rejection with its reason delivers nothing clinical.

The same suspended run and resume form the browser test drives (tests/test_ui_browser.py),
answered here as an integration engine or script would, with `prefect.flow_runs.resume_flow_run`.
"""

from __future__ import annotations

import time

import httpx
import pytest
from sqlmodel import select

from tests.served import radpath_serve
from tests.test_serve import send_cardiac_ct
from tests.test_ui_browser import _review_specs, _wait_for_flow_run

pytestmark = pytest.mark.slow


def _input_description(api: str, flow_run: dict) -> str:
    key = flow_run["state"]["state_details"]["run_input_keyset"]["description"]
    return httpx.get(f"{api}/flow_runs/{flow_run['id']}/input/{key}", timeout=10).json()


def test_an_incomplete_answer_is_asked_again_and_a_rejection_sends_nothing_clinical(served_ledger, tmp_path):
    from prefect.flow_runs import resume_flow_run
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from integrations.db.engine import session_scope
    from integrations.db.models import Delivery, PathwayRun, Result

    with radpath_serve(tmp_path, {"RADPATH_PATHWAYS_DIR": str(_review_specs(tmp_path))}) as served:
        served_ledger(served.data_dir)
        study = send_cardiac_ct(tmp_path, served)
        first = _wait_for_flow_run(served, lambda r: r["name"].startswith("review/") and r["state"]["name"] == "Suspended", 240)
        assert "the algorithm concluded" in _input_description(served.prefect_api, first)
        with temporary_settings(updates={PREFECT_API_URL: served.prefect_api}):
            resume_flow_run(first["id"], run_input={"decision": "reject", "reviewer": "Dr Api"})  # no reason

            def asked_again(r: dict) -> bool:
                return (r["id"] == first["id"] and r["state"]["name"] == "Suspended"
                        and r["state"]["state_details"]["pause_key"] != first["state"]["state_details"]["pause_key"])

            again = _wait_for_flow_run(served, asked_again, 120)
            assert "Please answer again: a reason is required to reject" in _input_description(served.prefect_api, again)
            with session_scope() as s:
                assert {d.status for d in s.exec(select(Delivery)).all()} == {"held"}
            resume_flow_run(first["id"], run_input={"decision": "reject", "reviewer": "Dr Api", "reason": "motion artefact"})
        done = _wait_for_flow_run(served, lambda r: r["id"] == first["id"] and r["state"]["type"] in ("COMPLETED", "FAILED"), 120)
        assert done["state"]["name"] == "Rejected", done["state"]
        time.sleep(1)
        with session_scope() as s:
            result = s.exec(select(Result)).one()
            run = s.exec(select(PathwayRun)).one()
            deliveries = s.exec(select(Delivery)).all()
        assert (result.review_status, result.reviewed_by, result.review_reason) == ("rejected", "Dr Api", "motion artefact")
        assert run.status == "rejected"
        assert {d.status for d in deliveries} == {"rejected"}
        assert not (served.data_dir / "outbox").exists() or not any((served.data_dir / "outbox").rglob("*.*"))

        # Nothing Prefect stored for the pathway and review runs (parameters, form inputs and
        # their description, logs, events, artifacts, results) names the patient, or holds the
        # accession or a DICOM UID.
        from pathlib import Path

        from integrations.hl7.orders import parse_order
        from tests.phi_scan import assert_prefect_holds_none, identity_forms, linkable_values

        order = parse_order(Path(study.order_path).read_text())
        time.sleep(2)  # events and logs land in the background
        assert_prefect_holds_none([served.data_dir / "prefect"], identity_forms(order),
                                  linkable_values(order.accession_number, study.study_uid),
                                  first["name"].removeprefix("review/"))
