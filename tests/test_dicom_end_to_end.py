"""End to end against real peers: dcmtk's storescu as the modality, radpath's SCP, readiness,
the lung pathway (Prefect test harness), and SR + SEG delivered to a real Orthanc exactly once
even though Orthanc rejects radpath's first association (unknown calling AE, fixed via REST):
the outbox schedules the retry and the reconciler's pass delivers it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from pathlib import Path

import pydicom
import pytest
from sqlmodel import select

from integrations.db.engine import session_scope
from integrations.db import ledger
from integrations.db.models import Delivery
from integrations.db.studies import sweep_readiness
from integrations.dicom.scp import start_scp
from integrations.settings import get_settings, reset_settings
from tests.conftest import prefect_events, require_tool
from tests.orthanc import Orthanc, free_port
from tests.hl7_fixtures import receive

pytestmark = pytest.mark.slow


def test_storescu_study_runs_the_lung_pathway_and_results_land_in_orthanc_once(prefect_api, radpath_env, registry, tmp_path, monkeypatch):
    from flows.dispatch import run_pathway
    from flows.reconciler import reconciler
    from radpath.synth import generate

    storescu = require_tool("storescu")
    (study,) = generate("chest-ct", 1, 23, tmp_path / "synthetic")  # a seed no other test uses (see report: inference cache)
    raw = Path(study.order_path).read_text()
    (run_id,) = receive(raw, registry).order.run_ids

    with Orthanc(tmp_path / "orthanc", known_peers_only=True) as orthanc:
        monkeypatch.setenv("RADPATH_DICOM_PORT", str(free_port()))
        monkeypatch.setenv("RADPATH_DICOM_PEERS", '{"MODALITY": ["127.0.0.1"]}')
        monkeypatch.setenv("RADPATH_DICOM_MIN_FREE_MB", "0")
        monkeypatch.setenv("RADPATH_DICOM_QUIET_PERIOD_SECONDS", '{"CT": 1}')
        destination = {"kind": "dicom", "host": "127.0.0.1", "port": orthanc.dicom_port, "called_ae_title": "ORTHANC",
                       "calling_ae_title": "RADPATH_OUT", "retry": {"base_s": 1, "jitter": "none"}}
        monkeypatch.setenv("RADPATH_DESTINATIONS", json.dumps({"pacs": destination}))
        reset_settings()
        scp = start_scp(get_settings())
        try:
            sent = subprocess.run(
                [storescu, "-aet", "MODALITY", "-aec", "RADPATH", "+sd", "+r", "127.0.0.1", str(scp.port), str(study.dicom_dir)],
                capture_output=True, text=True, timeout=300, env={**os.environ, "TCP_NODELAY": "1"},
            )
            assert sent.returncode == 0, sent.stderr[-2000:]
        finally:
            scp.shutdown()
        n_files = len(list(Path(study.dicom_dir).rglob("*.dcm")))
        assert scp.stats["stored"] == n_files

        time.sleep(1.1)
        (ready,) = sweep_readiness(registry=registry)
        assert ready.run_ids == (run_id,)

        # PACS does not know radpath's calling AE yet: the flow's one attempt is rejected, and the
        # outbox (not Prefect) schedules the next one.
        state = asyncio.run(run_pathway(run_id))
        assert state.name == "DeliveryPending", state.message
        (pending,) = prefect_events(prefect_api, "radpath.result.delivery_pending")  # what ops are alerted on
        assert pending["payload"] == {"pathway": "lung-cancer-ct", "study_key": ledger.study_key(study.study_uid),
                                      "pending": 1, "destinations": "pacs"}
        assert any(r["prefect.resource.id"].startswith("prefect.flow-run.") for r in pending["related"])  # the UI link
        orthanc.allow("radpath-out", "RADPATH_OUT")
        time.sleep(1.1)  # the retry the outbox scheduled (base 1 s) is due
        swept = asyncio.run(reconciler(grace_seconds=0, return_state=True))
        assert swept.is_completed(), swept.message

        with session_scope() as s:
            pacs = s.exec(select(Delivery).where(Delivery.destination == "pacs")).one()
        assert pacs.status == "delivered" and pacs.attempts >= 2  # the first association was rejected
        sent_uids = sorted(str(pydicom.dcmread(p).SOPInstanceUID) for p in pacs.payloads if p.endswith(".dcm"))
        kinds = {pydicom.dcmread(p).Modality for p in pacs.payloads}
        assert "SR" in kinds
        assert sorted(orthanc.sop_instance_uids()) == sent_uids  # each object once, nothing else

        # A re-driven run re-sends nothing and Orthanc still holds each object once.
        asyncio.run(run_pathway(run_id))
        assert sorted(orthanc.sop_instance_uids()) == sent_uids
