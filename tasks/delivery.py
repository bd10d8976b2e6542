"""Deliver one outbox row to its destination, exactly once, retrying only what is transient."""

from __future__ import annotations

import datetime as dt

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from integrations.db import ledger, ops
from integrations.delivery.send import send
from integrations.errors import is_transient
from integrations.errors import PermanentError
from integrations.settings import get_settings
from tasks.events import emit

MAX_RETRIES = 4


class DeadLettered(PermanentError):
    """The delivery will not be attempted again; ops must act (an automation alerts them)."""


def _retry_transient(task, task_run, state) -> bool:  # noqa: ANN001
    """Prefect retry condition: retry timeouts and refusals, never a permanent rejection."""
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - inspecting the failure, not handling it
        return is_transient(exc)
    return False


@task(
    name="deliver",
    cache_policy=NO_CACHE,
    retries=MAX_RETRIES,
    retry_delay_seconds=exponential_backoff(backoff_factor=2),
    retry_jitter_factor=0.5,
    retry_condition_fn=_retry_transient,
)
def deliver(delivery_id: str) -> str:
    """Send one delivery; a delivery already delivered, or being sent by another holder of its
    lease (a pathway flow or a reconciler), is never sent again."""
    settings = get_settings()
    owner = f"task-run:{_task_run_id()}"
    if not ops.claim_delivery(delivery_id, owner, settings.delivery_lease_seconds):
        return f"{ledger.get_delivery(delivery_id).destination}: being sent by another worker"
    try:
        return _send_claimed(delivery_id, settings)
    finally:
        ops.release_delivery(delivery_id, owner)


def _task_run_id() -> str:
    from prefect.context import TaskRunContext

    context = TaskRunContext.get()
    return str(context.task_run.id) if context else "local"


def _send_claimed(delivery_id: str, settings) -> str:  # noqa: ANN001
    row = ledger.get_delivery(delivery_id)
    if row.status != "pending":  # delivered, dead_letter, held for review, rejected
        return f"{row.destination}: {row.status} ({row.last_response or 'not sent'})"
    try:
        receipt = send(row.destination, settings.destination(row.destination), row.idempotency_key, row.payloads)
    except Exception as exc:
        transient = is_transient(exc)
        dead = not transient or row.attempts + 1 >= settings.delivery_max_attempts
        retry_at = None if dead else dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30)
        ledger.record_delivery_attempt(delivery_id, ok=False, response=f"{exc.__class__.__name__}: {exc}", dead=dead, retry_at=retry_at)
        if dead:
            result_id, order_id, pathway = ops.delivery_context(delivery_id)
            emit("delivery.dead_lettered", "delivery", delivery_id, related={"pathway": pathway, "order": order_id},
                 destination=row.destination, attempts=row.attempts + 1)
            raise DeadLettered(f"{row.destination}: dead-lettered after {row.attempts + 1} attempt(s)") from exc
        raise
    ledger.record_delivery_attempt(delivery_id, ok=True, response=receipt)
    result_id, order_id, pathway = ops.delivery_context(delivery_id)
    if ops.result_fully_delivered(result_id):
        emit("result.delivered", "order", order_id, related={"pathway": pathway, "result": result_id})
    return f"{row.destination}: {receipt}"
