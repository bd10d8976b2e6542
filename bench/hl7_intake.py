"""HL7 order intake throughput and ACK latency: commit-before-ACK against a parse-only baseline.

Both runs use the same listener, the same senders and the same messages; the parse-only run
parses and answers AA without touching the ledger. Senders run in a separate process, each
connection sending its orders one at a time (wait for the ACK, then send the next), as RIS
interfaces do. Usage: python bench/hl7_intake.py [--messages 600] [--connections 6]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

NHS = "9434765919"


def order(n: int) -> str:
    return "\r".join([
        f"MSH|^~\\&|BENCH_RIS|RXX01|RADPATH|RADPATH|20261129101500||ORM^O01^ORM_O01|B{n:07d}|P|2.4",
        f"PID|1||{NHS}^^^NHS^NH~H{n:06d}^^^RXX01^MR||SMITH^JANE||19580312|F",
        "PV1|1|O|RADIOLOGY^^^RXX01",
        f"ORC|NW|PL{n}^OCS|ACC{n}^RIS||||^^^20261129^^R||20261129|||C1234567^JONES^ALAN",
        f"OBR|1|PL{n}^OCS|ACC{n}^RIS|169069000^Computed tomography of chest^SCT|||20261129||||||Cough|||"
        f"C1234567^JONES^ALAN||ACC{n}||||||CT|||||||^Suspected lung cancer",
        "OBX|1|CE|FHLC^Family history of lung cancer^L||N^No^HL70136||||||F",
        "OBX|2|CE|EMPH^Emphysema^L||Y^Yes^HL70136||||||F",
    ]) + "\r"


def _sender(port: int, messages: list[str], out: list[float]) -> None:
    from integrations.hl7.client import MllpClient

    with MllpClient("127.0.0.1", port, ack_timeout=60) as client:
        for m in messages:
            started = time.perf_counter()
            ack = client.send(m)
            out.append(time.perf_counter() - started)
            assert ack.code == "AA", ack.raw


def _senders(port: int, messages: list[str], connections: int, result) -> None:  # noqa: ANN001
    latencies: list[list[float]] = [[] for _ in range(connections)]
    threads = [threading.Thread(target=_sender, args=(port, messages[i::connections], latencies[i]))
               for i in range(connections)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result.put((time.perf_counter() - started, [x for lat in latencies for x in lat]))


def run(mode: str, messages: list[str], connections: int, processes: int) -> dict:
    from integrations.db.engine import get_engine, migrate
    from integrations.db.batch import BatchCommitter
    from integrations.hl7.intake import Intake, IntakeConfig
    from integrations.hl7.listener import ListenerConfig, MllpListener
    from integrations.settings import reset_settings
    from pathways.registry import default_registry

    data = tempfile.mkdtemp(prefix=f"radpath-bench-{mode}-")
    os.environ.update(RADPATH_DATA_DIR=data, RADPATH_PSEUDONYM_KEY="bench")
    reset_settings()
    get_engine.cache_clear()
    migrate()
    committer = BatchCommitter()
    intake = Intake(default_registry(), IntakeConfig(commit=mode != "parse-only"), committer, parse_processes=processes)
    listener = MllpListener(intake, ListenerConfig(port=0, max_connections=connections + 1))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(listener.start(), loop).result(10)
    result = multiprocessing.get_context("fork").Queue()
    proc = multiprocessing.get_context("fork").Process(target=_senders, args=(listener.port, messages, connections, result))
    proc.start()
    elapsed, latencies = result.get(timeout=600)
    proc.join()
    asyncio.run_coroutine_threadsafe(listener.stop(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    latencies.sort()
    return {
        "mode": mode,
        "per_s": len(messages) / elapsed,
        "p50_ms": 1000 * statistics.median(latencies),
        "p95_ms": 1000 * latencies[int(0.95 * (len(latencies) - 1))],
        "commits": committer.batches,
    }


def parse_loop(messages: list[str]) -> float:
    from integrations.hl7.intake import parse_for_intake

    started = time.perf_counter()
    for m in messages:
        parse_for_intake(m, "order")
    return len(messages) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=600)
    parser.add_argument("--connections", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each mode; the median is reported")
    parser.add_argument("--parse-processes", type=int, default=1, help="as RADPATH_MLLP_PARSE_PROCESSES")
    args = parser.parse_args()
    bare = parse_loop([order(n) for n in range(200)])
    runs: dict[str, list[dict]] = {"parse-only": [], "commit-before-ACK": []}
    for _ in range(args.repeats):  # interleaved, so drift on a shared machine hits both alike
        for mode, results in runs.items():
            results.append(run(mode, [order(n) for n in range(args.messages)], args.connections, args.parse_processes))
    baseline, intake = (sorted(r, key=lambda x: x["per_s"])[(len(r) - 1) // 2] for r in runs.values())  # median run
    print(f"HL7 intake, {args.messages} ORM^O01 over {args.connections} MLLP connections, {os.cpu_count()} cores, "
          f"{args.parse_processes} parse process(es)")
    print(f"hl7apy parse + checks alone, one thread: {bare:.0f} msgs/s")
    print("| run | orders/s | ACK p50 (ms) | ACK p95 (ms) | ledger commits |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for r in (baseline, intake):
        print(f"| {r['mode']} | {r['per_s']:.0f} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['commits'] or '-'} |")
    every = "; ".join(f"{k}: " + ", ".join(f"{r['per_s']:.0f}" for r in v) for k, v in runs.items())
    print(f"commit-before-ACK / parse-only: {intake['per_s'] / baseline['per_s']:.0%} (every run, orders/s: {every})")


if __name__ == "__main__":
    main()
