"""What serving the deployments costs per pathway run, measured on `radpath serve` itself.

`radpath serve` (its own Prefect server, the served runner) takes N synthetic studies with
their orders over MLLP and C-STORE. For each pathway flow run, from Prefect's own records:

- trigger: `radpath.run.ready` emitted → the deployment's flow run created (events → trigger);
- start: flow run created → running (runner poll, a fresh Python process, imports);
- run: running → finished (the flow itself; its own Prefect overhead is bench/orchestration.py's).

Reports medians and the share of start (pure orchestration cost) in created → finished.

    .venv/bin/python bench/served.py [--kind chest-ct] [--studies 4] [--seed 11]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _finished_pathway_runs(api: str) -> set[str]:
    """Ledger run ids of the pathway flow runs that have finished."""
    runs = httpx.post(f"{api}/flow_runs/filter", json={"flow_runs": {
        "state": {"type": {"any_": ["COMPLETED", "FAILED", "CRASHED"]}}}}, timeout=10).json()
    return {r["parameters"]["run_id"] for r in runs if r["deployment_id"] and "run_id" in r["parameters"]}


def main(kind: str, studies: int, seed: int) -> None:
    from integrations.dicom.scu import push_folder
    from integrations.hl7.client import send_messages
    from radpath.synth import generate
    from tests.served import radpath_serve

    root = Path(tempfile.mkdtemp(prefix="radpath-bench-served-"))
    generated = generate(kind, studies, seed, root / "synthetic")
    # A quiet period long enough for storescu to finish: each study is ready once, not re-run
    # as late images supersede a run started mid-push.
    with radpath_serve(root, {"RADPATH_DICOM_QUIET_PERIOD_SECONDS": '{"CT": 5}'}) as served:
        for number, study in enumerate(generated, start=1):  # one at a time: each run alone on the 2 cores
            assert [a.code for a in send_messages("127.0.0.1", served.mllp_port, [Path(study.order_path).read_text()])] == ["AA"]
            assert push_folder(study.dicom_dir, "127.0.0.1", served.dicom_port).failed == 0
            deadline = time.monotonic() + 600
            while len(_finished_pathway_runs(served.prefect_api)) < number:
                assert time.monotonic() < deadline, "a pathway run did not finish within 10 minutes"
                time.sleep(0.5)
        answer = httpx.post(f"{served.prefect_api}/events/filter",
                            json={"filter": {"event": {"name": ["radpath.run.ready"]}}, "limit": 50}, timeout=10)
        answer.raise_for_status()
        events = answer.json()["events"]
        ready_at = {e["payload"]["run_id"]: _ts(e["occurred"]) for e in events}
        runs = httpx.post(f"{served.prefect_api}/flow_runs/filter", json={}, timeout=10).json()
    rows = []
    for run in runs:
        if not run["deployment_id"] or run["state"]["type"] != "COMPLETED" or "run_id" not in run["parameters"]:
            continue
        if run["state"]["name"] != "Delivered":
            print(f"{run['name']}: ended {run['state']['name']} ({run['state']['message']}), not counted")
            continue
        created, start, end = _ts(run["created"]), _ts(run["start_time"]), _ts(run["end_time"])
        trigger = created - ready_at.get(run["parameters"]["run_id"], created)
        rows.append((trigger, start - created, end - start, (start - created) / (end - created)))
        print(f"{run['name']}: trigger {rows[-1][0]:.2f} s, start {rows[-1][1]:.2f} s, run {rows[-1][2]:.2f} s")
    assert rows, "no pathway flow runs finished"
    med = [statistics.median(r[i] for r in rows) for i in range(4)]
    print(f"median over {len(rows)} runs: trigger {med[0]:.2f} s, start {med[1]:.2f} s, run {med[2]:.2f} s, "
          f"start share of created→finished {100 * med[3]:.0f} %")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", default="chest-ct")
    parser.add_argument("--studies", type=int, default=4)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    main(args.kind, args.studies, args.seed)
