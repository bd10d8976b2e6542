"""The store sweep: files that reached the store without their ledger row (a crash between the
file fsync and the commit) are indexed once; unreadable or misnamed files are quarantined."""

from __future__ import annotations

import copy
import os
import time
from io import BytesIO
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file
from sqlmodel import select

from integrations.db.engine import session_scope
from integrations.db.models import AuditEvent, Instance, Series
from integrations.dicom.store import (
    _write_temporary,
    ingest_instances,
    prepare_instance,
    quarantine_dir,
    reconcile_store,
    relative_path,
)
from integrations.durable import write_durably


def _instance(k: int) -> bytes:
    ds = copy.deepcopy(pydicom.dcmread(get_testdata_file("CT_small.dcm")))
    ds.SOPInstanceUID = f"{ds.SOPInstanceUID}.{k}"
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _crash_after_fsync(store_dir: Path, data: bytes, age_seconds: float = 3600) -> Path:
    """What the store leaves when the process dies after the file fsync, before the commit."""
    prep = prepare_instance(data)
    path = store_dir / relative_path(prep.study_uid, prep.series_uid, prep.sop_instance_uid, prep.digest)
    write_durably(path, data)
    old = time.time() - age_seconds
    os.utime(path, (old, old))
    return path


def _rows() -> list[Instance]:
    with session_scope() as s:
        return s.exec(select(Instance)).all()


def test_orphan_is_indexed_once_and_a_second_sweep_does_nothing(radpath_env):
    ingest_instances([_instance(1)], actor="test")  # an indexed neighbour in the same series
    orphan = _crash_after_fsync(radpath_env.store_dir, _instance(2))
    assert len(_rows()) == 1

    sweep = reconcile_store(radpath_env)
    assert (sweep.scanned, sweep.indexed, sweep.quarantined) == (2, 1, 0)
    rows = {r.path: r for r in _rows()}
    assert str(orphan.relative_to(radpath_env.store_dir)) in rows
    with session_scope() as s:
        assert [series.n_instances for series in s.exec(select(Series)).all()] == [2]

    again = reconcile_store(radpath_env)
    assert (again.scanned, again.indexed, again.quarantined, again.duplicates) == (2, 0, 0, 0)
    assert len(_rows()) == 2


def test_young_files_and_live_temporaries_are_left_alone(radpath_env):
    young = _crash_after_fsync(radpath_env.store_dir, _instance(3), age_seconds=0)
    live_tmp = _write_temporary(young.with_name("other.0123456789abcdef.dcm"), b"partial")
    stale_tmp = _write_temporary(young.with_name("stale.0123456789abcdef.dcm"), b"partial")
    old = time.time() - 3600
    os.utime(stale_tmp, (old, old))

    sweep = reconcile_store(radpath_env, grace_seconds=60)
    assert (sweep.young, sweep.indexed, sweep.temporaries_removed) == (1, 0, 1)
    assert young.exists() and live_tmp.exists() and not stale_tmp.exists()
    assert _rows() == []
    assert reconcile_store(radpath_env, grace_seconds=0).indexed == 1


def test_corrupt_and_misnamed_files_are_quarantined_and_audited(radpath_env):
    truncated = _crash_after_fsync(radpath_env.store_dir, _instance(4))
    truncated.write_bytes(truncated.read_bytes()[:-1000])  # pixel data cut short
    os.utime(truncated, (0, 0))
    misnamed = _crash_after_fsync(radpath_env.store_dir, _instance(5))
    os.replace(misnamed, misnamed.with_name("0" * 24 + ".0123456789abcdef.dcm"))
    os.utime(misnamed.with_name("0" * 24 + ".0123456789abcdef.dcm"), (0, 0))

    sweep = reconcile_store(radpath_env)
    assert (sweep.quarantined, sweep.indexed) == (2, 0)
    assert not list(radpath_env.store_dir.rglob("*.dcm"))
    assert len(list(quarantine_dir(radpath_env).iterdir())) == 2
    with session_scope() as s:
        events = s.exec(select(AuditEvent).where(AuditEvent.action == "instance.quarantined")).all()
    assert sorted(e.detail["reason"] for e in events) == [
        "file name does not match its content",
        "pixel data length runs past the end of the instance",
    ]
    assert _rows() == []
    assert reconcile_store(radpath_env).quarantined == 0


def test_orphan_with_a_different_instance_under_its_uid_is_kept_aside(radpath_env):
    ingest_instances([_instance(6)], actor="test")
    ds = pydicom.dcmread(BytesIO(_instance(6)))
    ds.InstanceNumber = 99  # other bytes, same SOP Instance UID
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    _crash_after_fsync(radpath_env.store_dir, buf.getvalue())

    sweep = reconcile_store(radpath_env)
    assert (sweep.conflicts, sweep.indexed) == (1, 0)
    assert len(list(radpath_env.store_dir.rglob("*.conflict"))) == 1
    assert len(_rows()) == 1
