"""A real Orthanc as PACS: order-triggered retrieval (QIDO-RS + WADO-RS, C-FIND + C-MOVE, C-GET)
and SR/SEG delivery by C-STORE and STOW-RS, with refused first attempts."""

from __future__ import annotations

import copy
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from sqlmodel import select

from integrations.db.engine import session_scope
from integrations.db.models import AuditEvent, Instance, Study
from integrations.delivery.config import DicomDestination, StowDestination
from integrations.delivery.send import send
from integrations.dicom.config import PacsSource
from integrations.dicom.pacs import retrieve_for_accession
from integrations.dicom.scp import start_scp
from integrations.dicom.scu import status_category
from integrations.errors import PermanentError, TransientError
from integrations.settings import get_settings, reset_settings
from tests.orthanc import Orthanc, free_port

ACCESSION = "ACC0042"


def _study(tmp_path: Path, n: int = 3) -> list[Path]:
    """n CT instances (from pydicom's CT_small) in one study under a known accession number."""
    base = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    out = []
    for k in range(n):
        ds = copy.deepcopy(base)
        ds.AccessionNumber = ACCESSION
        ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.826.0.1.3680043.10.1.1", "1.2.826.0.1.3680043.10.1.2"
        ds.SOPInstanceUID = f"1.2.826.0.1.3680043.10.1.3.{k + 1}"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = k + 1
        path = tmp_path / f"ct{k}.dcm"
        ds.save_as(path, enforce_file_format=True)
        out.append(path)
    return out


@pytest.fixture
def scp(radpath_env, monkeypatch):
    monkeypatch.setenv("RADPATH_DICOM_PORT", str(free_port()))
    monkeypatch.setenv("RADPATH_DICOM_PEERS", '{"ORTHANC": ["127.0.0.1"]}')
    monkeypatch.setenv("RADPATH_DICOM_MIN_FREE_MB", "0")
    reset_settings()
    handle = start_scp(get_settings())
    yield handle
    handle.shutdown()


@pytest.fixture
def pacs(tmp_path, scp):
    with Orthanc(tmp_path / "orthanc", radpath_port=scp.port) as orthanc:
        for path in _study(tmp_path):
            orthanc.upload(path.read_bytes())
        yield orthanc


def _local_instances() -> int:
    with session_scope() as s:
        return len(s.exec(select(Instance)).all())


@pytest.mark.parametrize("query,retrieve", [("qido-rs", "wado-rs"), ("c-find", "c-move"), ("c-find", "c-get")])
def test_order_triggered_retrieval(pacs, scp, query, retrieve):
    source = PacsSource(
        query=query, retrieve=retrieve, dicomweb_url=pacs.dicomweb_url, host="127.0.0.1", port=pacs.dicom_port, called_ae_title="ORTHANC"
    )
    result = retrieve_for_accession(ACCESSION, source)
    assert result.study_uids == ("1.2.826.0.1.3680043.10.1.1",)
    assert _local_instances() == 3
    with session_scope() as s:
        assert s.exec(select(Study)).one().accession_number == ACCESSION
    assert retrieve_for_accession("NO-SUCH", source).study_uids == ()
    again = retrieve_for_accession(ACCESSION, source, skip_if=lambda acc: True)
    assert again.study_uids == () and _local_instances() == 3


def _result_files(tmp_path: Path) -> list[str]:
    sr = pydicom.dcmread(get_testdata_file("test-SR.dcm"))
    seg = pydicom.dcmread(get_testdata_file("liver_1frame.dcm"))
    out = []
    for name, ds in (("sr.dcm", sr), ("seg.dcm", seg)):
        path = tmp_path / name
        ds.save_as(path, enforce_file_format=True)
        out.append(str(path))
    return out


def _retry_until(fn, attempts: int, between=None):  # noqa: ANN001, ANN202
    """What tasks/delivery.py does with Prefect retries, inline: retry transient, stop on permanent."""
    errors = []
    for k in range(attempts):
        try:
            return fn(), errors
        except TransientError as exc:
            errors.append(exc)
            if between:
                between(k)
    raise AssertionError(f"still failing after {attempts} attempts: {errors}")


def test_cstore_delivery_retries_a_rejecting_pacs_and_lands_once(tmp_path):
    payloads = _result_files(tmp_path)
    with Orthanc(tmp_path / "orthanc", known_peers_only=True) as orthanc:
        config = DicomDestination(host="127.0.0.1", port=orthanc.dicom_port, called_ae_title="ORTHANC", calling_ae_title="RADPATH_OUT")
        receipt, errors = _retry_until(
            lambda: send("pacs", config, "key", payloads), 5, between=lambda k: k == 1 and orthanc.allow("radpath-out", "RADPATH_OUT")
        )
        assert len(errors) == 2 and all("rejected" in str(e) for e in errors)
        send("pacs", config, "key", payloads)  # a retry after success: still one object each
        assert sorted(orthanc.sop_instance_uids()) == sorted(str(pydicom.dcmread(p).SOPInstanceUID) for p in payloads)
        assert "2 instance(s) stored" in receipt


def test_stow_delivery_retries_until_the_pacs_is_up_and_lands_once(tmp_path):
    payloads = _result_files(tmp_path)
    orthanc = Orthanc(tmp_path / "orthanc")
    config = StowDestination(base_url=orthanc.dicomweb_url, timeout_seconds=10)
    try:
        receipt, errors = _retry_until(lambda: send("pacs", config, "key", payloads), 5, between=lambda k: k == 0 and orthanc.start())
        assert len(errors) == 1 and "not reachable" in str(errors[0])
        send("pacs", config, "key", payloads)
        assert sorted(orthanc.sop_instance_uids()) == sorted(str(pydicom.dcmread(p).SOPInstanceUID) for p in payloads)
    finally:
        orthanc.stop()


def test_statuses_from_a_real_peer_map_to_retry_or_dead_letter(scp, monkeypatch, tmp_path):
    """radpath's own SCP as the peer: 0xA700 (store full) retries; 0xC000 (broken) dead-letters."""
    monkeypatch.setenv("RADPATH_DICOM_PEERS", '{"RADPATH": []}')
    reset_settings()
    scp.shutdown()
    handle = start_scp(get_settings())
    try:
        config = DicomDestination(host="127.0.0.1", port=handle.port, called_ae_title="RADPATH", calling_ae_title="RADPATH")
        broken = tmp_path / "broken.dcm"
        broken.write_bytes(Path(get_testdata_file("MR_truncated.dcm")).read_bytes())
        with pytest.raises(PermanentError, match="0xC000"):
            send("pacs", config, "k", [str(broken)])
        monkeypatch.setenv("RADPATH_DICOM_MIN_FREE_MB", str(10**9))
        reset_settings()
        with pytest.raises(TransientError, match="0xA700"):
            send("pacs", config, "k", _result_files(tmp_path))
    finally:
        handle.shutdown()
    with pytest.raises(TransientError):  # nobody listening any more
        send("pacs", config, "k", _result_files(tmp_path))


def test_status_categories():
    # PS3.4 Annex B.2.3: 0000 success; B000/B006/B007 warnings; A7xx out of resources;
    # A9xx data set does not match SOP class; Cxxx cannot understand.
    assert [status_category(s) for s in (0x0000, 0xB000, 0xB007, 0xA700, 0xA7FF, 0xA900, 0xC000, 0x0122, None)] == [
        "success", "warning", "warning", "transient", "transient", "permanent", "permanent", "permanent", "transient"
    ]


def test_an_order_without_images_has_them_retrieved_from_the_pacs_then_stops_asking(pacs, scp, registry, monkeypatch):
    """`radpath serve`'s retrieval pass: an order through the HL7 intake whose images sit only in
    PACS gets them (QIDO-RS + WADO-RS); each attempt is audited; an order the PACS has nothing
    for is asked again only after the retry interval, and at most the configured times."""
    import datetime as dt

    from integrations.db.models import AuditEvent, utcnow
    from integrations.dicom.pacs import retrieve_for_waiting_orders
    from tests.hl7_fixtures import receive
    from tests.test_ledger import ORDER

    monkeypatch.setenv("RADPATH_PACS", PacsSource(dicomweb_url=pacs.dicomweb_url).model_dump_json())
    monkeypatch.setenv("RADPATH_PACS_RETRIEVE_AFTER_SECONDS", "0")
    monkeypatch.setenv("RADPATH_PACS_RETRIEVE_ATTEMPTS", "2")
    reset_settings()
    settings = get_settings()
    receive(ORDER.replace("ACC00001", ACCESSION), registry)
    receive(ORDER.replace("ACC00001", "ACC-NOT-IN-PACS").replace("PL123", "PL999").replace("MSG0001", "MSG0002"), registry)
    now = utcnow() + dt.timedelta(seconds=1)
    found, missing = sorted(retrieve_for_waiting_orders(settings, now=now), key=lambda r: -len(r.study_uids))
    assert found.study_uids == ("1.2.826.0.1.3680043.10.1.1",) and found.stored == 3 and _local_instances() == 3
    assert missing.study_uids == ()
    assert retrieve_for_waiting_orders(settings, now=now) == []  # the missing one waits for the retry interval
    later = now + dt.timedelta(seconds=settings.pacs_retrieve_retry_seconds + 1)
    assert [r.study_uids for r in retrieve_for_waiting_orders(settings, now=later)] == [()]  # asked again: still none
    assert retrieve_for_waiting_orders(settings, now=later + dt.timedelta(hours=1)) == []  # two attempts, no more
    with session_scope() as s:
        attempts = s.exec(select(AuditEvent).where(AuditEvent.action == "order.retrieval")).all()
    assert sorted((a.detail["studies"], a.detail["stored"]) for a in attempts) == [(0, 0), (0, 0), (1, 3)]


@pytest.mark.slow
def test_radpath_serve_fetches_a_study_the_pacs_already_holds_when_its_order_comes(tmp_path, served_ledger):
    """The study is in Orthanc before the order; no modality pushes it. `radpath serve` (with
    `pacs` configured) asks Orthanc by accession, retrieves the study by WADO-RS, and the
    pathway runs to delivered results."""
    import json
    import time

    from integrations.db.models import Delivery, PathwayRun
    from integrations.hl7.client import send_messages
    from radpath.synth import generate
    from tests.served import radpath_serve

    (study,) = generate("cardiac-ct", 1, 5, tmp_path / "synthetic")
    with Orthanc(tmp_path / "orthanc") as orthanc:
        for path in sorted(Path(study.dicom_dir).rglob("*.dcm")):
            orthanc.upload(path.read_bytes())
        env = {"RADPATH_PACS": PacsSource(dicomweb_url=orthanc.dicomweb_url).model_dump_json(),
               "RADPATH_PACS_RETRIEVE_AFTER_SECONDS": "0"}
        with radpath_serve(tmp_path, extra_env=env) as served:
            served_ledger(served.data_dir)
            acks = send_messages("127.0.0.1", served.mllp_port, [Path(study.order_path).read_bytes().decode()])
            assert [a.code for a in acks] == ["AA"]
            deadline = time.monotonic() + 300
            while True:
                with session_scope() as s:
                    run = s.exec(select(PathwayRun)).first()
                    deliveries = s.exec(select(Delivery)).all()
                if run is not None and run.status in {"completed", "failed", "not_eligible", "not_measurable"}:
                    break
                assert time.monotonic() < deadline, served.log_tail()
                time.sleep(1)
    assert run.status == "completed", run.status_reason
    assert deliveries and all(d.status == "delivered" for d in deliveries)
    with session_scope() as s:
        assert s.exec(select(Study)).one().accession_number == study.accession_number
        (attempt,) = s.exec(select(AuditEvent).where(AuditEvent.action == "order.retrieval")).all()
    assert attempt.detail["studies"] == 1 and attempt.detail["stored"] > 0
    assert json.dumps(attempt.detail).find(study.accession_number) == -1  # the audit names no accession
