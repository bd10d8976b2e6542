"""Orchestration overhead: a pathway as a Prefect flow against the same steps called bare.

For each synthetic chest CT, the same study is ingested into two separate ledgers; the
bare run calls the flow's steps as plain functions (the tasks' `.fn`), the Prefect run
calls the flow through `flows.dispatch.run_pathway` on the embedded API, in alternating
order. Overhead is (flow − bare) / flow per study; medians are reported. The ephemeral API
start and the model load are paid once before timing (a service pays them once per process).

Usage: python bench/orchestration.py [--studies 5] [--seed 7]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def use_data_dir(path: Path) -> None:
    from integrations.db.engine import get_engine, migrate
    from integrations.settings import reset_settings

    os.environ["RADPATH_DATA_DIR"] = str(path)
    reset_settings()
    get_engine.cache_clear()
    migrate()


def ingest(study) -> str:  # noqa: ANN001 - radpath.synth.GeneratedStudy
    import asyncio

    import datetime as dt

    from integrations.db.models import utcnow
    from integrations.db.studies import sweep_readiness
    from integrations.dicom.store import ingest_instances
    from integrations.hl7.intake import Intake
    from pathways.registry import default_registry

    intake = Intake(default_registry())  # the MLLP listener's intake, less the socket
    try:
        asyncio.run(intake.handle_frame(Path(study.order_path).read_bytes()))
    finally:
        intake.close()
    files = sorted(Path(study.dicom_dir).rglob("*.dcm"))
    for start in range(0, len(files), 64):
        ingest_instances(f.read_bytes() for f in files[start : start + 64])
    (ready,) = sweep_readiness(now=utcnow() + dt.timedelta(days=1))  # every quiet period has passed
    (run_id,) = ready.run_ids
    return run_id


def bare_lung_pathway(run_id: str) -> None:
    """The lung flow's steps without Prefect: the baseline."""
    from integrations.db import runs
    from integrations.db.runs import RunStatus
    from pathways.lung_cancer_ct import assess_lung_study
    from pathways.lung_cancer_report import lung_report_content
    from pathways.registry import default_registry
    from tasks.delivery import deliver
    from tasks.imaging import prepare_inputs
    from tasks.inference import detect_lung_nodules
    from tasks.results import record_result

    registry = default_registry()
    spec = registry.get("lung-cancer-ct")
    inputs = prepare_inputs.fn(run_id)
    detection = detect_lung_nodules.fn(inputs.volume, spec.model)
    assessment = assess_lung_study(detection.nodules, inputs.patient, registry.rules("lung-cancer-ct"))
    content = lung_report_content(assessment)
    recorded = record_result.fn(run_id, content, assessment, inputs.series, detection.mask_path, detection.model_name, detection.model_version)
    for delivery_id in recorded.delivery_ids:
        deliver.fn(delivery_id)
    runs.set_status(run_id, RunStatus.RUNNING)
    runs.set_status(run_id, RunStatus.COMPLETED)


async def main(studies: int, seed: int) -> None:
    from radpath.runtime import configure_prefect

    root = Path(tempfile.mkdtemp(prefix="radpath-bench-"))
    os.environ["RADPATH_DATA_DIR"] = str(root / "prefect-run")
    configure_prefect()
    from flows.dispatch import run_pathway
    from radpath.synth import generate

    generated = generate("chest-ct", studies, seed, root / "synthetic")
    use_data_dir(root / "prefect-run")
    from prefect import get_client

    async with get_client() as client:  # starts the ephemeral API before timing
        await client.api_healthcheck()
    warm = generate("chest-ct", 1, seed + 1000, root / "warm-up")[0]  # model load, imports: paid once, untimed
    use_data_dir(root / "warm-up-run")
    bare_lung_pathway(ingest(warm))
    rows = []
    for number, study in enumerate(generated):
        # Alternate which goes first, so warm caches (page cache, loaded model) favour neither.
        async def timed_bare() -> float:
            use_data_dir(root / "bare")
            run_id = ingest(study)
            start = time.perf_counter()
            bare_lung_pathway(run_id)
            return time.perf_counter() - start

        async def timed_flow() -> float:
            use_data_dir(root / "prefect-run")
            run_id = ingest(study)
            start = time.perf_counter()
            state = await run_pathway(run_id)
            assert state.name == "Delivered", state
            return time.perf_counter() - start

        if number % 2:
            flow, bare = await timed_flow(), await timed_bare()
        else:
            bare, flow = await timed_bare(), await timed_flow()
        rows.append((bare, flow, (flow - bare) / flow))
        print(f"study {len(rows)}: bare {bare:.2f} s, Prefect flow {flow:.2f} s, overhead {100 * rows[-1][2]:.1f} %")
    print(
        f"median over {len(rows)} studies: bare {statistics.median(r[0] for r in rows):.2f} s, "
        f"flow {statistics.median(r[1] for r in rows):.2f} s, "
        f"orchestration overhead {100 * statistics.median(r[2] for r in rows):.1f} % (target <= 5 %)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    asyncio.run(main(args.studies, args.seed))
