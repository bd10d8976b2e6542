"""The deployments `radpath serve` serves, read from `deployments/prefect.yaml`.

One declaration, two ways to run it: `prefect deploy --all` registers prefect.yaml against a
work pool for process workers (scale-out; the urgent queue has priority); `radpath serve`
turns the same entries into runner deployments (same names, entrypoints, tags, triggers and
schedules) served by one Prefect `Runner` per work queue in the service process, each running
its flow runs in subprocesses.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import yaml
from prefect.events import DeploymentEventTrigger

PREFECT_YAML = Path(__file__).with_name("prefect.yaml")


def declared_deployments(path: Path = PREFECT_YAML) -> list[dict[str, Any]]:
    return yaml.safe_load(path.read_text())["deployments"]


def _flow(entrypoint: str):  # noqa: ANN202 - a prefect Flow
    module_path, _, name = entrypoint.partition(":")
    return getattr(importlib.import_module(module_path.removesuffix(".py").replace("/", ".")), name)


async def runner_deployments(path: Path = PREFECT_YAML) -> dict[str, list]:  # queue -> list[RunnerDeployment]
    """Every deployment of prefect.yaml as a RunnerDeployment for a `Runner`, by the work queue it
    names (urgent, routine): `radpath serve` gives each queue a runner of its own, so urgent runs
    have reserved capacity instead of waiting behind routine ones."""
    out: dict[str, list] = {}
    for entry in declared_deployments(path):
        flow = _flow(entry["entrypoint"])
        triggers = [DeploymentEventTrigger(**{k: v for k, v in t.items() if k != "type"}) for t in entry.get("triggers", [])]
        intervals = [s["interval"] for s in entry.get("schedules", []) if "interval" in s]
        out.setdefault(entry["work_pool"]["work_queue_name"], []).append(
            await flow.ato_deployment(
                name=entry["name"],
                tags=entry.get("tags"),
                triggers=triggers or None,
                interval=intervals or None,
                description=entry.get("description") or (flow.description or "").strip().splitlines()[0],
            )
        )
    return out


WORK_POOL = "radpath"
QUEUE_PRIORITIES = {"urgent": 1, "routine": 2}  # a worker takes urgent runs first


async def ensure_work_pool() -> None:
    """The process work pool prefect.yaml names, with its urgent and routine queues (created
    if missing), for `prefect deploy` and `prefect worker start --pool radpath`."""
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    async with get_client() as client:
        try:
            await client.create_work_pool(WorkPoolCreate(name=WORK_POOL, type="process"))
        except ObjectAlreadyExists:
            pass
        existing = {q.name for q in await client.read_work_queues(work_pool_name=WORK_POOL)}
        for name, priority in QUEUE_PRIORITIES.items():
            if name not in existing:
                await client.create_work_queue(name=name, work_pool_name=WORK_POOL, priority=priority)
