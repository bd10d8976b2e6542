"""The reconciler: a scheduled flow that re-drives ledger work Prefect lost.

The ledger is the source of truth. Every few minutes this finds pathway runs that were
ready but never started (a missed event), running but whose lease lapsed (the process
died), or failed; deliveries whose next attempt is due; reviews past their spec's timeout;
and image files a crash left without their ledger row. Each item is claimed with a
lease first, so two reconcilers (or a reconciler and a live flow) never do the same item.
Re-driven pathway runs are idempotent: the result and its outbox rows are written once.
"""

from __future__ import annotations

import time

from prefect import flow, get_run_logger
from prefect.context import get_run_context
from prefect.states import Completed, State

from flows.common import HANDOFF, deliver_all
from integrations.db import ops
from integrations.db.audit import seal as seal_audit
from integrations.db.runs import REDRIVABLE
from integrations.dicom.store import reconcile_store
from integrations.settings import get_settings
from pathways.registry import default_registry
from tasks.artifacts import publish_ops_tables
from tasks.events import emit

# Each pass sweeps the image store for files modified this recently that lack a ledger row (a
# crash between fsync and commit); `radpath serve` sweeps the whole store when it starts.
STORE_SWEEP_WINDOW_SECONDS = 3600


@flow(name="reconciler", flow_run_name="reconcile", persist_result=False)
async def reconciler(grace_seconds: float | None = None, max_runs: int = 10) -> State:
    """One reconciliation pass: re-drive lost runs, then due deliveries."""
    from flows.dispatch import run_pathway

    settings = get_settings()
    grace = settings.reconcile_grace_seconds if grace_seconds is None else grace_seconds
    owner = f"reconciler:{get_run_context().flow_run.id}"
    logger = get_run_logger()
    redriven = []
    for run_id in ops.runs_to_redrive(grace_seconds=grace)[:max_runs]:
        if not ops.claim_run(run_id, owner, settings.run_lease_seconds):
            continue  # another reconciler (or a live flow) has it
        if ops.run_status(run_id) not in REDRIVABLE:  # finished between the listing and the claim
            ops.release_run(run_id, owner)
            continue
        ops.note_redrive(run_id, owner)
        token = HANDOFF.set(owner)
        try:
            state = await run_pathway(run_id)
        finally:
            HANDOFF.reset(token)
        logger.info("re-drove pathway run %s: %s", run_id, state.name)
        redriven.append(state.name)
    receipts, failures = deliver_all(ops.deliveries_due(grace_seconds=grace))
    expired = expire_overdue_reviews()
    swept = reconcile_store(settings, modified_after=time.time() - STORE_SWEEP_WINDOW_SECONDS)
    if swept.quarantined or swept.failed:
        emit("store.sweep_problem", "store", "images", quarantined=swept.quarantined, failed=swept.failed)
    sealed = seal_audit()  # `radpath serve` seals every few seconds; a worker-only set-up relies on this
    publish_ops_tables()  # once per pass, not per pathway run: ops tables are a periodic view
    message = (f"{len(redriven)} runs re-driven ({', '.join(redriven) or 'none'}); {len(receipts)} deliveries sent, "
               f"{len(failures)} failed; {len(expired)} reviews expired; {swept.indexed} stored images indexed late; "
               f"{sealed} audit events sealed")
    return Completed(name="Reconciled", message=message)


def expire_overdue_reviews() -> list[str]:
    """Reviews left longer than their spec's `review.timeout_minutes`: recorded as expired and
    announced (`radpath.result.review_expired`, which an automation turns into an alert)."""
    expired = []
    for spec in default_registry().specs.values():
        for result_id in ops.expire_reviews(spec.name, spec.review.timeout_minutes * 60):
            emit("result.review_expired", "result", result_id, related={"pathway": spec.name})
            expired.append(result_id)
    return expired
