"""The tests of tests/test_dicom_group_commit.py, the same tests on PostgreSQL (a fresh database per test;
see tests/test_postgres_ledger.py for the `radpath_env` override), and one scale-out test of
its own: several processes indexing the same studies at once (PostgreSQL lets their
transactions deadlock; the group committer takes row locks in one order and retries)."""

from __future__ import annotations

from io import BytesIO

from tests.test_dicom_group_commit import *
from tests.test_dicom_group_commit import _assert_committed_once, _instances
from tests.test_postgres_ledger import radpath_env  # noqa: F401  (overrides conftest's)

# --- scale-out: several processes index the same studies at once (PostgreSQL only) ---------

SENDER = """
import random, sys, threading
sys.path.insert(0, sys.argv[1])
from integrations.dicom.store import ingest_instances
paths = sys.argv[3:]
random.Random(int(sys.argv[2])).shuffle(paths)
blobs = [open(p, "rb").read() for p in paths]
errors, outcomes = [], []
def send(part):
    try:
        for i in range(0, len(part), 3):  # a few instances per association, many studies per batch
            outcomes.extend(o.outcome for o in ingest_instances(part[i:i + 3], actor="test"))
    except Exception as exc:
        errors.append(repr(exc)[:300])
threads = [threading.Thread(target=send, args=(blobs[k::3],)) for k in range(3)]
[t.start() for t in threads]
[t.join(120) for t in threads]
print("ERRORS", errors) if errors else print(" ".join(outcomes))
"""


def test_processes_indexing_the_same_studies_at_once_commit_each_instance_once(radpath_env, tmp_path):  # noqa: F811
    blobs = []
    for k, blob in enumerate(_instances(48, series=8)):  # 8 series over 4 studies
        ds = pydicom.dcmread(BytesIO(blob))
        ds.StudyInstanceUID = f"{ds.StudyInstanceUID}.{int(ds.SeriesInstanceUID.rsplit('.', 1)[1]) % 4 + 1}"
        buffer = BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        blobs.append(buffer.getvalue())
    files = []
    for k, blob in enumerate(blobs):
        files.append(tmp_path / f"{k}.dcm")
        files[-1].write_bytes(blob)
    procs = [subprocess.Popen([sys.executable, "-c", SENDER, str(ROOT), str(seed), *map(str, files)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
             for seed in range(3)]
    outputs = [proc.communicate(timeout=180) for proc in procs]
    assert all(proc.returncode == 0 for proc in procs), [err[-2000:] for _, err in outputs]
    assert not [out for out, _ in outputs if out.startswith("ERRORS")], [out for out, _ in outputs]
    outcomes = " ".join(out for out, _ in outputs).split()
    assert outcomes.count("stored") == len(blobs) and outcomes.count("conflict") == 0
    assert len(outcomes) == 3 * len(blobs)
    _assert_committed_once(radpath_env.store_dir, blobs)
    with session_scope() as s:
        assert sum(series.n_instances for series in s.exec(select(Series)).all()) == len(blobs)
