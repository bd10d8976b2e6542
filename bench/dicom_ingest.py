"""Ingest throughput of radpath's C-STORE SCP next to dcmtk's storescp, same study, same run.

Both receivers are fed by dcmtk's storescu (TCP_NODELAY=1 on every dcmtk process) with the
same synthetic chest CT, split across N parallel storescu processes (one association each).
radpath writes each instance durably (file fsync, folder fsync) and commits its ledger row
before answering (concurrent associations share one group commit); storescp just writes
files (with --fork when N > 1, so its associations run in parallel too). A third receiver,
"pyn-empty", is pynetdicom with a handler that stores nothing and answers success: the ceiling
any pynetdicom-based SCP can reach here. Prints instances/s, MB/s and the ratios per
concurrency level: medians of --repeat runs.

    .venv/bin/python bench/dicom_ingest.py [--seed 3] [--repeat 3] [--concurrency 1 4]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _send(shares: list[list[Path]], port: int) -> float:
    """Send each share over its own association, all at once; seconds until the last finishes."""
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            ["storescu", "-aet", "MODALITY", "-aec", "RADPATH", "127.0.0.1", str(port), *map(str, share)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=DCMTK_ENV,
        )
        for share in shares
    ]
    errors = [p.communicate()[1] for p in procs]
    elapsed = time.perf_counter() - start
    if any(p.returncode for p in procs):
        raise RuntimeError("".join(errors)[-1000:])
    return elapsed


def _wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError("receiver did not start")


def bench_storescp(shares: list[list[Path]], out: Path) -> float:
    port = _free_port()
    out.mkdir(parents=True, exist_ok=True)
    fork = ["--fork"] if len(shares) > 1 else []
    proc = subprocess.Popen(["storescp", *fork, "-aet", "RADPATH", "-od", str(out), str(port)], env=DCMTK_ENV)
    try:
        _wait_port(port)
        return _send(shares, port)
    finally:
        proc.terminate()
        proc.wait()


def bench_empty_pynetdicom(shares: list[list[Path]]) -> float:
    """pynetdicom with radpath's contexts and TCP_NODELAY, and a C-STORE handler that does nothing."""
    from pynetdicom import AE, evt

    from integrations.dicom.scp import STORAGE_SOP_CLASSES, decodable_transfer_syntaxes, quiet_pynetdicom, set_nodelay

    quiet_pynetdicom()
    ae = AE(ae_title="RADPATH")
    ae.maximum_pdu_size = 0
    ae.maximum_associations = max(10, len(shares))
    for sop_class in STORAGE_SOP_CLASSES:
        ae.add_supported_context(sop_class, decodable_transfer_syntaxes())
    handlers = [(evt.EVT_CONN_OPEN, set_nodelay), (evt.EVT_C_STORE, lambda event: 0x0000)]
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=handlers)
    try:
        return _send(shares, server.server_address[1])
    finally:
        server.shutdown()


def bench_radpath(shares: list[list[Path]], data_dir: Path) -> tuple[float, float]:
    """(seconds, instances per ledger commit)."""
    os.environ.update(
        RADPATH_DATA_DIR=str(data_dir), RADPATH_DICOM_PORT="0", RADPATH_DICOM_PEERS='{"MODALITY": ["127.0.0.1"]}',
        RADPATH_PSEUDONYM_KEY="bench", RADPATH_DICOM_MIN_FREE_MB="0", RADPATH_DICOM_MAX_ASSOCIATIONS=str(max(10, len(shares))),
    )
    os.environ.pop("RADPATH_DATABASE_URL", None)
    from integrations.db.engine import get_engine, migrate
    from integrations.dicom.scp import start_scp
    from integrations.dicom.store import GROUP_COMMITTER
    from integrations.settings import get_settings, reset_settings

    reset_settings()
    get_engine.cache_clear()
    migrate()
    handle = start_scp(get_settings())
    batches, groups = GROUP_COMMITTER.batches, GROUP_COMMITTER.grouped
    try:
        seconds = _send(shares, handle.port)
    finally:
        handle.shutdown()
        get_engine().dispose()
    assert handle.stats["stored"] == sum(map(len, shares)), handle.stats
    return seconds, (GROUP_COMMITTER.grouped - groups) / max(1, GROUP_COMMITTER.batches - batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    args = parser.parse_args()
    from radpath.synth import generate

    work = Path(tempfile.mkdtemp(prefix="radpath-bench-"))
    try:
        (study,) = generate("chest-ct", 1, args.seed, work / "synthetic")
        files = sorted(Path(study.dicom_dir).rglob("*.dcm"))
        n, mb = len(files), sum(f.stat().st_size for f in files) / 1e6
        print(f"study: {n} instances, {mb:.1f} MB (synthetic chest CT, explicit VR little endian); medians of {args.repeat} runs")
        print(f"{'assocs':>6} {'receiver':9} {'inst/s':>8} {'MB/s':>7} {'seconds':>8}  note")
        for level in args.concurrency:
            shares = [files[k::level] for k in range(level)]
            times: dict[str, list[float]] = {"storescp": [], "pyn-empty": [], "radpath": []}
            per_commit: list[float] = []
            for k in range(args.repeat):  # interleaved, so both see the same disk weather
                times["storescp"].append(bench_storescp(shares, work / f"storescp-{level}-{k}"))
                times["pyn-empty"].append(bench_empty_pynetdicom(shares))
                seconds, grouped = bench_radpath(shares, work / f"radpath-{level}-{k}")
                times["radpath"].append(seconds)
                per_commit.append(grouped)
            medians = {name: statistics.median(t) for name, t in times.items()}
            for name, seconds in medians.items():
                note = (f"{statistics.median(per_commit):.1f} instances per ledger commit" if name == "radpath"
                        else ("--fork" if name == "storescp" and level > 1 else ""))
                print(f"{level:>6} {name:9} {n / seconds:8.1f} {mb / seconds:7.1f} {seconds:8.2f}  {note}")
            print(
                f"{level:>6} ratio radpath/storescp: {medians['storescp'] / medians['radpath']:.2f}"
                f"  (pyn-empty/storescp: {medians['storescp'] / medians['pyn-empty']:.2f})"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
