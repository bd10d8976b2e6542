"""Ingest throughput of radpath's C-STORE SCP next to dcmtk's storescp, same study, same run.

Both receivers are fed by dcmtk's storescu (TCP_NODELAY=1 on every dcmtk process) with the
same synthetic chest CT; radpath writes each instance durably (fsync) and commits it to the
ledger before answering, storescp just writes files. Prints instances/s, MB/s and the ratio.

    .venv/bin/python bench/dicom_ingest.py [--seed 3] [--repeat 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _send(folder: Path, port: int) -> float:
    env = {**os.environ, "TCP_NODELAY": "1"}
    start = time.perf_counter()
    done = subprocess.run(
        ["storescu", "-aet", "MODALITY", "-aec", "RADPATH", "+sd", "+r", "127.0.0.1", str(port), str(folder)],
        capture_output=True, text=True, env=env,
    )
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-1000:])
    return elapsed


def _wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError("receiver did not start")


def bench_storescp(folder: Path, out: Path) -> float:
    port = _free_port()
    out.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(["storescp", "-aet", "RADPATH", "-od", str(out), str(port)], env={**os.environ, "TCP_NODELAY": "1"})
    try:
        _wait_port(port)
        return _send(folder, port)
    finally:
        proc.terminate()
        proc.wait()


def bench_radpath(folder: Path, data_dir: Path) -> float:
    os.environ.update(
        RADPATH_DATA_DIR=str(data_dir), RADPATH_DICOM_PORT="0", RADPATH_DICOM_PEERS='{"MODALITY": ["127.0.0.1"]}',
        RADPATH_PSEUDONYM_KEY="bench", RADPATH_DICOM_MIN_FREE_MB="0",
    )
    os.environ.pop("RADPATH_DATABASE_URL", None)
    from integrations.db.engine import get_engine, migrate
    from integrations.dicom.scp import start_scp
    from integrations.settings import get_settings, reset_settings

    reset_settings()
    get_engine.cache_clear()
    migrate()
    handle = start_scp(get_settings())
    try:
        return _send(folder, handle.port)
    finally:
        handle.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    from radpath.synth import generate

    work = Path(tempfile.mkdtemp(prefix="radpath-bench-"))
    try:
        (study,) = generate("chest-ct", 1, args.seed, work / "synthetic")
        files = list(Path(study.dicom_dir).rglob("*.dcm"))
        n, mb = len(files), sum(f.stat().st_size for f in files) / 1e6
        print(f"study: {n} instances, {mb:.1f} MB (synthetic chest CT, explicit VR little endian)")
        best = {"storescp": float("inf"), "radpath": float("inf")}
        for k in range(args.repeat):
            best["storescp"] = min(best["storescp"], bench_storescp(Path(study.dicom_dir), work / f"storescp{k}"))
            best["radpath"] = min(best["radpath"], bench_radpath(Path(study.dicom_dir), work / f"radpath{k}"))
        for name, seconds in best.items():
            print(f"{name:9s} {n / seconds:8.1f} instances/s {mb / seconds:8.1f} MB/s  ({seconds:.2f} s, best of {args.repeat})")
        print(f"ratio radpath/storescp: {best['storescp'] / best['radpath']:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
