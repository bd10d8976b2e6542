"""DICOM ingest: the C-STORE SCP and STOW-RS take pydicom's own test files (real CT, MR, US, SR,
SEG and broken ones); each gets the right status and the node answers C-ECHO after every one."""

from __future__ import annotations

import copy
import json
import subprocess
import time
from io import BytesIO
from pathlib import Path

import httpx
import pydicom
import pytest
from pydicom.data import get_testdata_file
from sqlmodel import select

from integrations.db.engine import session_scope
from integrations.db.models import AuditEvent, Instance
from integrations.delivery.dicom import multipart_body
from integrations.dicom import scu
from integrations.dicom.scp import start_scp
from integrations.dicom.stow import create_app, split_multipart
from integrations.errors import PermanentError
from integrations.settings import get_settings, reset_settings
from tests.conftest import require_tool

# (file, expected C-STORE status) — pydicom's test files; MR_truncated has too few pixel bytes.
GOOD = [
    "CT_small.dcm",  # CT, explicit VR little endian
    "MR_small_implicit.dcm",  # MR, implicit VR
    "MR_small_bigendian.dcm",  # MR, explicit VR big endian
    "MR_small_jpeg_ls_lossless.dcm",  # MR, JPEG-LS lossless
    "emri_small_jpeg_2k_lossless.dcm",  # Enhanced MR, multi-frame JPEG 2000
    "US1_UNCR.dcm",  # US, RGB
    "US1_J2KR.dcm",  # US, JPEG 2000
    "test-SR.dcm",  # Comprehensive SR
    "liver_1frame.dcm",  # Segmentation
]
BROKEN = ["MR_truncated.dcm"]


def _file(name: str) -> Path:
    path = get_testdata_file(name)
    assert path, f"{name} missing: pip install pydicom-data"
    return Path(path)


def _crafted(tmp_path: Path) -> dict[str, Path]:
    """Broken variants of a real CT: a bad IS value, oversized dimensions, short pixel data."""
    base = pydicom.dcmread(_file("CT_small.dcm"))
    out = {}
    for name, change in {
        "bad_vr": lambda ds: setattr(ds, "NumberOfFrames", "7"),  # becomes "1A" in the bytes below
        "oversized": lambda ds: (setattr(ds, "Rows", 65535), setattr(ds, "Columns", 65535), setattr(ds, "NumberOfFrames", "4000")),
        "short_pixels": lambda ds: setattr(ds, "PixelData", ds.PixelData[:-1000]),
        "bad_uid": lambda ds: setattr(ds, "SOPInstanceUID", "1.2.3.4a"),
    }.items():
        ds = copy.deepcopy(base)
        ds.SOPInstanceUID = f"{base.SOPInstanceUID}.{len(out) + 1}"
        change(ds)
        path = tmp_path / f"{name}.dcm"
        ds.save_as(path, enforce_file_format=True)
        if name == "bad_vr":  # an IS value that is not an integer string (PS3.5 Table 6.2-1)
            raw = path.read_bytes()
            tag = b"\x28\x00\x08\x00IS\x02\x007 "
            assert raw.count(tag) == 1
            path.write_bytes(raw.replace(tag, b"\x28\x00\x08\x00IS\x02\x001A"))
        out[name] = path
    return out


def _not_images(tmp_path: Path) -> dict[str, Path]:
    """A real CT that is no longer an image: Pixel Data removed, or swallowed by a corrupt length."""
    base = pydicom.dcmread(_file("CT_small.dcm"))
    out = {}
    no_pixels = copy.deepcopy(base)
    no_pixels.SOPInstanceUID = f"{base.SOPInstanceUID}.91"
    del no_pixels.PixelData
    out["no_pixels"] = tmp_path / "no_pixels.dcm"
    no_pixels.save_as(out["no_pixels"], enforce_file_format=True)
    swallowed = copy.deepcopy(base)
    swallowed.SOPInstanceUID = f"{base.SOPInstanceUID}.92"
    swallowed.ImageComments = "ok"
    path = tmp_path / "swallowed.dcm"
    swallowed.save_as(path, enforce_file_format=True)
    raw = bytearray(path.read_bytes())
    at = raw.index(b"\x20\x00\x00\x40LT\x02\x00ok")  # (0020,4000) LT, explicit VR little endian
    raw[at + 6 : at + 8] = (len(raw) - (at + 8)).to_bytes(2, "little")  # its value now runs to the end
    path.write_bytes(bytes(raw))
    out["swallowed_pixels"] = path
    return out


@pytest.fixture
def scp(radpath_env, monkeypatch):
    monkeypatch.setenv("RADPATH_DICOM_PORT", "0")
    monkeypatch.setenv("RADPATH_DICOM_PEERS", '{"MODALITY": [], "ECHOSCU": ["127.0.0.1"], "STORESCU": [], "FAR": ["10.9.9.9"]}')
    monkeypatch.setenv("RADPATH_DICOM_MIN_FREE_MB", "0")
    monkeypatch.setenv("RADPATH_DICOM_MAX_ASSOCIATIONS", "2")
    reset_settings()
    from integrations.settings import get_settings

    handle = start_scp(get_settings())
    yield handle
    handle.shutdown()


def _echo_ok(port: int) -> None:
    echoscu = require_tool("echoscu")
    done = subprocess.run([echoscu, "-aec", "RADPATH", "127.0.0.1", str(port)], capture_output=True, text=True, timeout=20)
    assert done.returncode == 0, done.stderr


def _store(port: int, path: Path) -> int | None:
    (result,) = scu.store_files([path], "127.0.0.1", port, called_ae="RADPATH", calling_ae="MODALITY", timeout=20)
    return result.status


def test_cstore_statuses_for_real_and_broken_files(scp, tmp_path):
    for name in GOOD:
        assert _store(scp.port, _file(name)) == 0x0000, name
        _echo_ok(scp.port)
    for name in BROKEN:
        assert _store(scp.port, _file(name)) == 0xC000, name
        _echo_ok(scp.port)
    for name, path in _crafted(tmp_path).items():
        assert _store(scp.port, path) == 0xC000, name
        _echo_ok(scp.port)
    # Not a storage class radpath takes (RT Plan): the presentation context is refused.
    with pytest.raises(PermanentError, match="accepts none"):
        _store(scp.port, _file("rtplan.dcm"))
    _echo_ok(scp.port)
    # MR_small_* (and US1_*) share one SOP Instance UID across encodings: the first is indexed,
    # each later one is a different instance under an existing UID, kept aside and flagged.
    distinct = {str(pydicom.dcmread(_file(n), stop_before_pixels=True).SOPInstanceUID) for n in GOOD}
    with session_scope() as s:
        paths = [i.path for i in s.exec(select(Instance)).all()]
        conflicts = s.exec(select(AuditEvent).where(AuditEvent.action == "instance.conflict")).all()
    assert len(paths) == len(distinct) and len(conflicts) == len(GOOD) - len(distinct)
    for rel in paths:  # paths are hashes, never raw UIDs
        assert "1.2.840" not in rel and "1.3.6" not in rel
        assert (scp_store := Path(rel)).suffix == ".dcm" and scp_store.parent.name.isalnum()


def test_an_image_without_complete_pixel_data_is_refused_a900_and_never_indexed(scp, tmp_path):
    """39 of 328 fuzzed instances were indexed as images with no pixels (issue 20): a CT whose
    Pixel Data is absent, or swallowed by an earlier element's corrupt length, is 0xA900 (PS3.4
    B.2.3, data set does not match SOP class) through C-STORE and STOW-RS alike."""
    for name, path in _not_images(tmp_path).items():
        assert _store(scp.port, path) == 0xA900, name
        _echo_ok(scp.port)
    body, content_type = multipart_body(list(_not_images(tmp_path).values()))
    response = _stow_client().post("/dicomweb/studies", content=body, headers={"Content-Type": content_type})
    assert response.status_code == 409, response.text
    assert [i["00081197"]["Value"][0] for i in response.json()["00081198"]["Value"]] == [0xA900, 0xA900]
    assert _store(scp.port, _file("test-SR.dcm")) == 0x0000  # an SR has no pixels, and needs none
    with session_scope() as s:
        assert [i.sop_class_uid for i in s.exec(select(Instance)).all()] == ["1.2.840.10008.5.1.4.1.1.88.33"]


def test_storescu_resend_is_stored_once_and_a_changed_instance_is_kept_aside(scp, radpath_env):
    storescu = require_tool("storescu")
    ct = _file("CT_small.dcm")
    for _ in range(2):
        done = subprocess.run([storescu, "-aec", "RADPATH", "127.0.0.1", str(scp.port), str(ct)], capture_output=True, text=True, timeout=20)
        assert done.returncode == 0, done.stderr
    changed = pydicom.dcmread(ct)
    changed.SeriesDescription = "changed after sending"
    other = radpath_env.data_dir / "changed.dcm"
    changed.save_as(other, enforce_file_format=True)
    assert _store(scp.port, other) == 0x0000
    with session_scope() as s:
        assert len(s.exec(select(Instance)).all()) == 1
        assert s.exec(select(AuditEvent).where(AuditEvent.action == "instance.conflict")).first() is not None
    assert scp.stats["stored"] == 1 and scp.stats["duplicate"] == 1 and scp.stats["conflict"] == 1
    assert len(list(radpath_env.store_dir.rglob("*.conflict"))) == 1


def test_unknown_peers_are_rejected_and_audited(scp):
    echoscu = require_tool("echoscu")
    for aet in ("STRANGER", "FAR"):  # unknown title; known title from the wrong address
        done = subprocess.run([echoscu, "-aet", aet, "-aec", "RADPATH", "127.0.0.1", str(scp.port)], capture_output=True, text=True, timeout=20)
        assert done.returncode != 0 and "Rejected" in done.stderr
    for _ in range(50):  # the audit row is written right after the reject goes out
        with session_scope() as s:
            rejected = s.exec(select(AuditEvent).where(AuditEvent.action == "association.rejected")).all()
        if len(rejected) == 2:
            break
        time.sleep(0.05)
    assert sorted(r.entity_id for r in rejected) == ["FAR", "STRANGER"]
    _echo_ok(scp.port)


def test_association_cap(scp):
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    held = []
    for _ in range(3):
        ae = AE(ae_title="MODALITY")
        ae.add_requested_context(Verification)
        held.append(ae.associate("127.0.0.1", scp.port, ae_title="RADPATH"))
    try:
        assert [a.is_established for a in held] == [True, True, False]
        assert held[2].is_rejected
    finally:
        for a in held:
            if a.is_established:
                a.release()
    _echo_ok(scp.port)


def test_below_watermark_refuses_with_a700_and_507(scp, monkeypatch):
    monkeypatch.setenv("RADPATH_DICOM_MIN_FREE_MB", str(10**9))
    reset_settings()
    assert _store(scp.port, _file("CT_small.dcm")) == 0xA700
    body, content_type = multipart_body([_file("CT_small.dcm")])
    response = _stow_client().post("/dicomweb/studies", content=body, headers={"Content-Type": content_type})
    assert response.status_code == 507
    assert response.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0xA700]
    with session_scope() as s:
        assert s.exec(select(Instance)).first() is None
    _echo_ok(scp.port)


def _stow_client() -> httpx.Client:
    from fastapi.testclient import TestClient

    return TestClient(create_app(get_settings()))  # the settings as they are now


def test_stow_rs_statuses(radpath_env, tmp_path):
    client = _stow_client()
    crafted = _crafted(tmp_path)
    files = ([_file(n) for n in GOOD] + [_file(n) for n in BROKEN] + list(crafted.values())
             + [_file("rtplan.dcm"), _file("emri_small_jpeg_2k_lossless_too_short.dcm")])
    body, content_type = multipart_body(files)
    response = client.post("/dicomweb/studies", content=body, headers={"Content-Type": content_type})
    assert response.status_code == 202, response.text
    doc = response.json()
    stored = [i["00081155"]["Value"][0] for i in doc["00081199"]["Value"]]
    failed = [(i["00081155"].get("Value", [""])[0], i["00081197"]["Value"][0]) for i in doc["00081198"]["Value"]]
    assert len(stored) == len(GOOD)  # conflicts are stored aside, and reported stored
    assert [code for _, code in failed] == [0xC000] * (len(BROKEN) + len(crafted)) + [0x0122, 0xC000]
    # all refused → 409; the same good instances again → 200 (stored once)
    bad_body, bad_type = multipart_body([_file("MR_truncated.dcm")])
    assert client.post("/dicomweb/studies", content=bad_body, headers={"Content-Type": bad_type}).status_code == 409
    again_body, again_type = multipart_body([_file("CT_small.dcm")])
    assert client.post("/dicomweb/studies", content=again_body, headers={"Content-Type": again_type}).status_code == 200
    distinct = {str(pydicom.dcmread(_file(n), stop_before_pixels=True).SOPInstanceUID) for n in GOOD}
    with session_scope() as s:
        assert len(s.exec(select(Instance)).all()) == len(distinct)


def test_stow_rs_rejects_bad_requests(radpath_env, monkeypatch):
    client = _stow_client()
    assert client.post("/dicomweb/studies", content=b"x", headers={"Content-Type": "application/json"}).status_code == 415
    assert client.post("/dicomweb/studies", content=b"x", headers={"Content-Type": 'multipart/related; type="application/dicom"'}).status_code == 400
    body, content_type = multipart_body([_file("CT_small.dcm")])
    monkeypatch.setenv("RADPATH_DICOM_MAX_STOW_BYTES", "1000")
    reset_settings()
    limited = _stow_client()
    assert limited.post("/dicomweb/studies", content=body, headers={"Content-Type": content_type}).status_code == 413
    monkeypatch.delenv("RADPATH_DICOM_MAX_STOW_BYTES")
    reset_settings()
    wrong_study = client.post("/dicomweb/studies/1.2.3", content=body, headers={"Content-Type": content_type})
    assert wrong_study.status_code == 409
    assert wrong_study.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0xA900]


def test_stow_rs_inbound_authentication(radpath_env, monkeypatch):
    monkeypatch.setenv("RADPATH_STOW_INBOUND_TOKENS", json.dumps({"gateway": "img-t0ken"}))
    reset_settings()
    client = _stow_client()
    body, content_type = multipart_body([_file("CT_small.dcm")])
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic img-t0ken"}):
        refused = client.post("/dicomweb/studies", content=body, headers={"Content-Type": content_type, **headers})
        assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith("Bearer")
    with session_scope() as s:
        assert s.exec(select(Instance)).first() is None  # nothing of a refused request is stored
        assert len(s.exec(select(AuditEvent).where(AuditEvent.action == "auth.refused")).all()) == 3  # each audited
    ok = client.post("/dicomweb/studies", content=body,
                     headers={"Content-Type": content_type, "Authorization": "Bearer img-t0ken"})
    assert ok.status_code == 200, ok.text
    with session_scope() as s:
        assert s.exec(select(Instance)).first() is not None


def test_multipart_round_trip(tmp_path):
    files = [_file("CT_small.dcm"), _file("test-SR.dcm")]
    body, content_type = multipart_body(files)
    parts = split_multipart(body, content_type)
    assert [data for _, data in parts] == [f.read_bytes() for f in files]
    assert pydicom.dcmread(BytesIO(parts[1][1])).Modality == "SR"
