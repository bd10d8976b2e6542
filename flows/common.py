"""What every pathway flow shares: run bookkeeping, step timing, failure hooks."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from pydantic import BaseModel

from prefect.context import get_run_context
from prefect.states import Completed, State

from integrations.db import ledger
from pathways.findings import SeriesRef
from pathways.report import ReportContent
from tasks.artifacts import publish_run_summary
from tasks.delivery import deliver
from tasks.results import record_result


class StepTimer:
    """Wall time per named step, for the run summary and turnaround figures."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(time.perf_counter() - start, 3)


def mark_run_failed(flow, flow_run, state) -> None:  # noqa: ANN001
    """Flow hook (failure/crash): the ledger shows the run failed; the reconciler may re-drive it."""
    run_id = flow_run.parameters.get("run_id")
    if run_id:
        ledger.set_run_status(run_id, "failed", reason=f"flow run {state.name}")


def start_run(run_id: str) -> StepTimer:
    """Mark the ledger run as running under this flow run; returns the step timer."""
    ledger.set_run_status(run_id, "running", flow_run_id=str(get_run_context().flow_run.id))
    return StepTimer()


def not_eligible(run_id: str, what: str) -> State:
    """The study holds nothing the pathway can use: a named terminal state, visible to ops."""
    ledger.set_run_status(run_id, "not_eligible", reason=f"no {what} fits the spec")
    return Completed(name="NotEligible", message=f"the study holds no {what} the pathway can use")


def record_and_deliver(
    pathway: str,
    run_id: str,
    study_key: str,
    timer: StepTimer,
    content: ReportContent,
    assessment: BaseModel,
    series: SeriesRef,
    mask_path: str | None,
    model_name: str,
    model_version: str,
) -> State:
    """The ending every pathway shares: outputs + outbox, deliveries, the ops summary."""
    with timer.step("outputs"):
        recorded = record_result(run_id, content, assessment, series, mask_path, model_name, model_version)
    with timer.step("delivery"):
        receipts = [f.result() for f in [deliver.submit(d) for d in recorded.delivery_ids]]
    publish_run_summary(pathway, study_key, content, timer.seconds, receipts)
    ledger.set_run_status(run_id, "completed")
    summary = content.conclusion_codes[0].display if content.conclusion_codes else content.conclusion
    return Completed(name="Delivered", message=f"{len(receipts)} deliveries; urgent={content.urgent}; {summary}")
