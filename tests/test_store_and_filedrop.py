"""Durable instance storage with ledger index; file-drop delivery exactly once."""

from __future__ import annotations

import json

import pydicom
import pytest
from pydicom.data import get_testdata_file
from sqlmodel import select

from integrations.db.engine import session_scope
from integrations.db.models import AuditEvent, Instance, Series, Study
from integrations.delivery.filedrop import deliver_files
from integrations.dicom.store import ingest_instances, relative_path, valid_uid
from integrations.errors import InvalidInput, PermanentError


def _ct_bytes() -> bytes:
    with open(get_testdata_file("CT_small.dcm"), "rb") as f:
        return f.read()


def test_instance_stored_once_and_indexed(radpath_env):
    data = _ct_bytes()
    first = ingest_instances([data])
    again = ingest_instances([data])
    assert first[0].outcome == "stored" and again[0].outcome == "duplicate"
    with session_scope() as s:
        assert len(s.exec(select(Instance)).all()) == 1
        series = s.exec(select(Series)).one()
        assert series.n_instances == 1 and series.modality == "CT"
        study = s.exec(select(Study)).one()
        assert study.patient_key.startswith("P-")
        path = radpath_env.store_dir / s.exec(select(Instance)).one().path
    assert path.read_bytes() == data
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    assert ds.StudyInstanceUID not in str(path)  # paths never carry raw UIDs


def test_different_instance_under_same_uid_is_kept_aside_and_flagged(radpath_env):
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ingest_instances([_ct_bytes()])
    ds.SeriesDescription = "changed"
    from io import BytesIO

    buf = BytesIO()
    ds.save_as(buf)
    outcome = ingest_instances([buf.getvalue()])[0]
    assert outcome.outcome == "conflict"
    with session_scope() as s:
        assert any(a.action == "instance.conflict" for a in s.exec(select(AuditEvent)).all())
    assert list(radpath_env.store_dir.rglob("*.conflict"))


def test_garbage_and_bad_uids_are_refused(radpath_env):
    with pytest.raises(InvalidInput):
        ingest_instances([b"not dicom at all" * 10])
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.SOPInstanceUID = "1.2.3/../../etc"
    from io import BytesIO

    buf = BytesIO()
    ds.save_as(buf)
    with pytest.raises(InvalidInput, match="UID"):
        ingest_instances([buf.getvalue()])
    assert valid_uid("1.2.840.10008.1.1") and not valid_uid("1." + "2" * 70) and not valid_uid("1..2x")
    assert relative_path("1.2", "1.2.3", "1.2.3.4").suffix == ".dcm"


def test_file_drop_delivers_once_even_when_repeated(tmp_path):
    payload = tmp_path / "oru-r01.hl7"
    payload.write_text("MSH|...")
    target = tmp_path / "ris"
    target.mkdir()
    first = deliver_files(target, "key1", [str(payload)])
    second = deliver_files(target, "key1", [str(payload)])
    assert "written" in first and "already present" in second
    assert sorted(p.name for p in target.iterdir()) == ["key1"]
    manifest = json.loads((target / "key1" / "manifest.json").read_text())
    assert list(manifest) == ["oru-r01.hl7"]
    payload.write_text("MSH|different")
    with pytest.raises(PermanentError):
        deliver_files(target, "key1", [str(payload)])
    with pytest.raises(PermanentError, match="missing"):
        deliver_files(target, "key2", [str(tmp_path / "nope.hl7")])
