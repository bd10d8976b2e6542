"""What every pathway flow shares: run bookkeeping, step timing, failure hooks."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from integrations.db import ledger


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
