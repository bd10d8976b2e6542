"""Deliver one outbox row to its destination, exactly once, retrying only what is transient."""

from __future__ import annotations

import datetime as dt

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from integrations.db import ledger
from integrations.delivery.send import send
from integrations.errors import is_transient
from integrations.settings import get_settings

MAX_RETRIES = 4


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
    """Send one delivery; a delivery already marked delivered is never sent again."""
    row = ledger.get_delivery(delivery_id)
    if row.status == "delivered":
        return f"{row.destination}: already delivered ({row.last_response})"
    if row.status == "dead_letter":
        return f"{row.destination}: dead-lettered ({row.last_response})"
    try:
        receipt = send(row.destination, get_settings().destination(row.destination), row.idempotency_key, row.payloads)
    except Exception as exc:
        transient = is_transient(exc)
        retry_at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30) if transient else None
        ledger.record_delivery_attempt(delivery_id, ok=False, response=f"{exc.__class__.__name__}: {exc}", dead=not transient, retry_at=retry_at)
        raise
    ledger.record_delivery_attempt(delivery_id, ok=True, response=receipt)
    return f"{row.destination}: {receipt}"
