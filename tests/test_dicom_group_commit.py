"""Group commit: concurrent callers and associations each get their instances committed exactly
once, and a crash between the file fsync and the ledger commit loses nothing on resend."""

from __future__ import annotations

import copy
import hashlib
import os
import subprocess
import sys
import threading
from io import BytesIO
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file
from sqlmodel import select

from integrations.db.engine import session_scope
from integrations.db.models import Instance, Series
from integrations.dicom.store import GROUP_COMMITTER, ingest_instances
from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parents[1]


def _instances(n: int, series: int = 2) -> list[bytes]:
    """`n` distinct CT instances (real pixel data from pydicom's CT_small) over `series` series."""
    base = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    out = []
    for k in range(n):
        ds = copy.deepcopy(base)
        ds.SOPInstanceUID = f"{base.SOPInstanceUID}.{k + 1}"
        ds.SeriesInstanceUID = f"{base.SeriesInstanceUID}.{k % series + 1}"
        ds.InstanceNumber = k + 1
        buf = BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        out.append(buf.getvalue())
    return out


def _assert_committed_once(store_dir: Path, blobs: list[bytes], same_bytes: bool = True) -> None:
    """One row and one file per SOP Instance UID; the file holds what its row's digest says
    (over the network the file meta is rewritten, so the bytes match only for local ingest)."""
    digests = {pydicom.dcmread(BytesIO(b), stop_before_pixels=True).SOPInstanceUID: hashlib.sha256(b).hexdigest() for b in blobs}
    with session_scope() as s:
        rows = s.exec(select(Instance)).all()
        counts = sorted(series.n_instances for series in s.exec(select(Series)).all())
    assert sorted(r.sop_instance_uid for r in rows) == sorted(digests)
    assert sum(counts) == len(digests)
    for row in rows:
        assert row.sha256 == digests[row.sop_instance_uid] or not same_bytes
        assert hashlib.sha256((store_dir / row.path).read_bytes()).hexdigest() == row.sha256
    assert len(list(store_dir.rglob("*.dcm"))) == len(digests)
    assert not list(store_dir.rglob("*.tmp*"))


def test_concurrent_callers_commit_each_instance_exactly_once(radpath_env):
    blobs = _instances(48)
    shares = [blobs[k::4] + blobs[(k + 1) % 4 :: 8] for k in range(4)]  # overlapping: some sent twice at once
    results, errors = [], []
    start = threading.Barrier(4)
    batches = GROUP_COMMITTER.batches

    def send(share: list[bytes]) -> None:
        start.wait()
        try:
            for blob in share:
                results.extend(ingest_instances([blob], actor="test"))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(share,)) for share in shares]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    outcomes = [r.outcome for r in results]
    assert outcomes.count("stored") == len(blobs) and outcomes.count("conflict") == 0
    assert len(outcomes) == sum(map(len, shares))
    assert GROUP_COMMITTER.batches > batches
    _assert_committed_once(radpath_env.store_dir, blobs)


def test_parallel_associations_are_all_committed(radpath_env, monkeypatch, tmp_path):
    storescu = require_tool("storescu")
    monkeypatch.setenv("RADPATH_DICOM_PORT", "0")
    monkeypatch.setenv("RADPATH_DICOM_PEERS", '{"MODALITY": ["127.0.0.1"]}')
    monkeypatch.setenv("RADPATH_DICOM_MIN_FREE_MB", "0")
    from integrations.dicom.scp import start_scp
    from integrations.settings import get_settings, reset_settings

    reset_settings()
    blobs = _instances(30)
    files = []
    for k, blob in enumerate(blobs):
        files.append(tmp_path / f"{k}.dcm")
        files[-1].write_bytes(blob)
    handle = start_scp(get_settings())
    try:
        env = {**os.environ, "TCP_NODELAY": "1"}
        procs = [
            subprocess.Popen([storescu, "-aet", "MODALITY", "-aec", "RADPATH", "127.0.0.1", str(handle.port), *map(str, files[k::3])],
                             stderr=subprocess.PIPE, text=True, env=env)
            for k in range(3)
        ]
        for proc in procs:
            assert proc.wait(60) == 0, proc.stderr.read()
    finally:
        handle.shutdown()
    assert handle.stats == {"stored": 30, "duplicate": 0, "conflict": 0, "refused": 0}
    _assert_committed_once(radpath_env.store_dir, blobs, same_bytes=False)


CRASH = """
import os, sys
sys.path.insert(0, sys.argv[1])
from integrations.dicom import store
def crash(groups):  # the files are fsynced and renamed; the ledger commit never happens
    os._exit(9)
store.index.commit_groups = crash
store.ingest_instances([open(p, "rb").read() for p in sys.argv[2:]])
"""


def test_crash_between_fsync_and_commit_then_resend_stores_once(radpath_env, tmp_path):
    blobs = _instances(3, series=1)
    files = []
    for k, blob in enumerate(blobs):
        files.append(tmp_path / f"{k}.dcm")
        files[-1].write_bytes(blob)
    done = subprocess.run([sys.executable, "-c", CRASH, str(ROOT), *map(str, files)], env=os.environ.copy(), timeout=60)
    assert done.returncode == 9
    assert len(list(radpath_env.store_dir.rglob("*.dcm"))) == 3  # on disk, durable, not indexed
    with session_scope() as s:
        assert s.exec(select(Instance)).first() is None
    outcomes = ingest_instances(blobs)  # the sender got no success, so it sends again
    assert [o.outcome for o in outcomes] == ["stored"] * 3
    _assert_committed_once(radpath_env.store_dir, blobs)
