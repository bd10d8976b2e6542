"""Last image → study ready → delivered on `radpath serve`, with completion signals and without.

One `radpath serve` (its own Prefect server) takes synthetic studies (cardiac CT, or the lung
pathway's chest CT with --kind chest-ct), one at a time, order
over MLLP and images over C-STORE, in three interleaved arms: "mpps" framed by an MPPS N-CREATE
and an N-SET COMPLETED listing every instance, sent after the images; "mpps first", the N-SET
COMPLETED sent before the images (as a modality often does: its images queue behind it); "ris
completed", the RIS's ORM SC with ORC-5 CM after the images (readiness then waits the spec's
`completed_quiet_seconds`, 5 s); and "quiet period", no signal, so readiness waits for the quiet period (the spec's 60 s unless
--quiet-seconds overrides it for CT). For each
study, from the served ledger: the last instance's commit time → the `study.ready` audit event
→ the last delivery of its result, beside the model task's own run time from Prefect (the
bare inference). Reports medians per arm.

    .venv/bin/python bench/readiness.py [--kind chest-ct] [--studies 12] [--quiet-seconds 60] [--seed 31]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pydicom

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


INFERENCE_TASKS = {"cardiac-ct": "score-coronary-calcium", "chest-ct": "detect-lung-nodules"}


def _task_seconds(api: str, flow_run_id: str, prefix: str) -> float:
    """The run time Prefect recorded for the flow run's task named `prefix…` (its model step)."""
    runs = httpx.post(f"{api}/task_runs/filter", timeout=10,
                      json={"task_runs": {"flow_run_id": {"any_": [flow_run_id]}}}).json()
    return sum(r["total_run_time"] for r in runs if r["name"].startswith(prefix))


def main(kind: str, studies: int, quiet_seconds: int, seed: int) -> None:
    import os

    from sqlmodel import func, select

    from integrations.db.engine import get_engine, session_scope
    from integrations.db.models import AuditEvent, Delivery, Instance, PathwayRun, Result, Series, Study
    from integrations.dicom.scu import push_folder
    from integrations.hl7.client import send_messages
    from integrations.settings import reset_settings
    from radpath.synth import generate
    from tests.hl7_fixtures import exam_completed
    from tests.modality import Modality
    from tests.served import SERVE_PSEUDONYM_KEY, radpath_serve

    root = Path(tempfile.mkdtemp(prefix="radpath-bench-readiness-"))
    generated = generate(kind, studies, seed, root / "synthetic")
    env = {"RADPATH_DICOM_QUIET_PERIOD_SECONDS": json.dumps({"CT": quiet_seconds})}
    arms = ("mpps", "mpps first", "ris completed", "quiet period")
    delays: dict[str, list[float]] = {arm: [] for arm in arms}
    totals: dict[str, list[float]] = {arm: [] for arm in arms}
    inference: list[float] = []
    with radpath_serve(root, env) as served:
        os.environ["RADPATH_DATA_DIR"], os.environ["RADPATH_PSEUDONYM_KEY"] = str(served.data_dir), SERVE_PSEUDONYM_KEY
        reset_settings()
        get_engine.cache_clear()
        for number, study in enumerate(generated):
            arm = arms[number % len(arms)]
            modality, step = Modality(served.dicom_port, ae_title="RADPATH_DEMO"), f"1.2.826.0.1.3680043.8.498.{900 + number}"
            assert [a.code for a in send_messages("127.0.0.1", served.mllp_port, [Path(study.order_path).read_text()])] == ["AA"]
            uids = [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in Path(study.dicom_dir).rglob("*.dcm")]
            if arm != "quiet period":
                assert modality.create(step, study_uid=study.study_uid, accession=study.accession_number) == 0
            if arm == "mpps first":
                assert modality.set(step, "COMPLETED", uids) == 0
            assert push_folder(study.dicom_dir, "127.0.0.1", served.dicom_port).failed == 0
            if arm == "mpps":
                assert modality.set(step, "COMPLETED", uids) == 0
            if arm == "ris completed":
                completed = exam_completed(Path(study.order_path).read_text(), f"RIS-CM-{number}")
                assert [a.code for a in send_messages("127.0.0.1", served.mllp_port, [completed])] == ["AA"]
            deadline = time.monotonic() + quiet_seconds + 600
            while True:  # ready, then every delivery of the run's result done
                with session_scope() as s:
                    study_id = s.exec(select(Study.id).where(Study.study_uid == study.study_uid)).one()
                    ready = s.exec(select(AuditEvent.at).where(AuditEvent.action == "study.ready",
                                                               AuditEvent.detail["study_id"].as_string() == study_id)).first()
                    last = s.exec(select(func.max(Instance.received_at)).join(Series, Series.id == Instance.series_id)
                                  .where(Series.study_id == study_id)).one()
                    run = s.exec(select(PathwayRun).where(PathwayRun.study_id == study_id)).first()
                    deliveries = s.exec(select(Delivery).join(Result, Result.id == Delivery.result_id)
                                        .where(Result.run_id == run.id)).all() if run is not None else []
                if ready is not None and deliveries and all(d.status == "delivered" for d in deliveries):
                    delivered = max(d.delivered_at for d in deliveries)
                    delays[arm].append((ready - last).total_seconds())
                    totals[arm].append((delivered - last).total_seconds())
                    inference.append(_task_seconds(served.prefect_api, run.flow_run_id, INFERENCE_TASKS[kind]))
                    print(f"{arm:>13}: last image → ready {delays[arm][-1]:6.2f} s, → delivered {totals[arm][-1]:6.2f} s "
                          f"(inference task {inference[-1]:.2f} s)", flush=True)
                    break
                assert time.monotonic() < deadline, "a study did not reach delivered"
                time.sleep(0.2)
    for arm, values in delays.items():
        print(f"{arm:>13}: median last image → ready {statistics.median(values):6.2f} s "
              f"(min {min(values):.2f}, max {max(values):.2f}), → delivered {statistics.median(totals[arm]):6.2f} s, "
              f"over {len(values)} studies")
    print(f"inference task alone (the model step inside the flow): median {statistics.median(inference):.2f} s")
    print(f"quiet period {quiet_seconds} s; serve sweeps readiness every 5 s, at once after an MPPS completion "
          "or a C-STORE association, and when a quiet period ends")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=sorted(INFERENCE_TASKS), default="cardiac-ct")
    parser.add_argument("--studies", type=int, default=12)
    parser.add_argument("--quiet-seconds", type=int, default=60)
    parser.add_argument("--seed", type=int, default=31)
    args = parser.parse_args()
    main(args.kind, args.studies, args.quiet_seconds, args.seed)
