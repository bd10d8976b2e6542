"""Deliver one outbox row to its destination, exactly once.

The outbox is the only retry scheduler: the adapter tries once, and the ledger
(`ledger.record_delivery_attempt`) records the attempt and sets when the next is due, from
the destination's `retry` schedule; the reconciler's pass sends what is due. Prefect does not
retry this task (a second scheduler would try again before the outbox's due time).
"""

from __future__ import annotations

import datetime as dt
import logging

from prefect import task
from prefect.cache_policies import NO_CACHE

from integrations.db import deliveries, health, ledger, ops
from integrations.db.models import DeliveryStatus, utcnow
from integrations.delivery.send import send
from integrations.delivery.probe import where
from integrations.errors import PermanentError, is_transient
from integrations.settings import Settings, get_settings
from tasks.events import emit, emit_health_change

log = logging.getLogger("radpath.delivery")


class DeadLettered(PermanentError):
    """The delivery will not be attempted again; ops must act (an automation alerts them)."""


@task(name="deliver", cache_policy=NO_CACHE, retries=0)
def deliver(delivery_id: str) -> str:
    """Send one delivery; a delivery already delivered, or being sent by another holder of its
    lease (a pathway flow or a reconciler), is never sent again."""
    return attempt_delivery(delivery_id, owner=f"task-run:{_task_run_id()}")


def attempt_delivery(delivery_id: str, *, owner: str = "local", settings: Settings | None = None,
                     now: dt.datetime | None = None, rand: float | None = None) -> str:
    """One attempt at one outbox row under its lease (no Prefect needed: tests drive the outbox
    with a simulated clock `now` and jitter draw `rand`).

    Returns a receipt line; raises the adapter's error when the attempt failed (the row is then
    pending with its next due time) and DeadLettered when the row will not be tried again."""
    settings = settings or get_settings()
    if not ops.claim_delivery(delivery_id, owner, settings.delivery_lease_seconds):
        return f"{ledger.get_delivery(delivery_id).destination}: being sent by another worker"
    try:
        return _send_claimed(delivery_id, settings, now, rand)
    finally:
        ops.release_delivery(delivery_id, owner)


def _task_run_id() -> str:
    from prefect.context import TaskRunContext

    context = TaskRunContext.get()
    return str(context.task_run.id) if context else "local"


def _send_claimed(delivery_id: str, settings: Settings, now: dt.datetime | None, rand: float | None) -> str:
    row = ledger.get_delivery(delivery_id)
    if row.status != DeliveryStatus.PENDING:  # delivered, dead_letter, held for review, rejected, discarded
        return f"{row.destination}: {row.status} ({row.last_response or 'not sent'})"
    if deliveries.is_paused(row.destination):  # ops paused it: not attempted, left pending for resume
        return f"{row.destination}: paused, waiting"
    config = settings.destination(row.destination)
    try:
        receipt = send(row.destination, config, row.idempotency_key, row.payloads)
    except Exception as exc:
        outcome = ledger.record_delivery_attempt(delivery_id, ok=False, response=f"{exc.__class__.__name__}: {exc}",
                                                 error=exc, schedule=config.retry, now=now or utcnow(), rand=rand)
        if is_transient(exc):  # the peer did not answer (a refusal of this message says nothing of the peer)
            # The address and the error's class only: the peer's own words may quote the message (they stay
            # in the ledger's last_response), and this detail goes to Prefect in the event.
            _peer_seen(row.destination, False, f"{where(config)}: delivery attempt failed ({exc.__class__.__name__})", now)
        if outcome.status == DeliveryStatus.DEAD_LETTER:
            context = ops.delivery_context(delivery_id)
            emit("delivery.dead_lettered", "delivery", delivery_id,
                 related={"pathway": context.pathway, "order": context.order_id},
                 destination=row.destination, attempts=outcome.attempts, reason=outcome.dead_reason,
                 pathway=context.pathway, study_key=context.study_key, error=exc.__class__.__name__)
            raise DeadLettered(f"{row.destination}: dead-lettered after {outcome.attempts} attempt(s) "
                               f"({outcome.dead_reason}): {exc}") from exc
        raise
    ledger.record_delivery_attempt(delivery_id, ok=True, response=receipt, now=now)
    _peer_seen(row.destination, True, "delivery accepted", now)
    context = ops.delivery_context(delivery_id)
    if ops.result_fully_delivered(context.result_id):
        emit("result.delivered", "order", context.order_id, related={"pathway": context.pathway, "result": context.result_id},
             labels={"priority": context.lane})  # stops the order's SLA clock of its lane
    return f"{row.destination}: {receipt}"


def _peer_seen(destination: str, ok: bool, detail: str, now: dt.datetime | None) -> None:
    """A delivery attempt is a health check of its destination too (integrations.db.health)."""
    peer = health.peer_name("destination", destination)
    try:
        change = health.record_check(peer, ok, detail, now)
        if change:
            emit_health_change(peer, change, detail)
    except Exception:  # the delivery's own record is committed; the next check writes health again
        log.warning("could not record the health of %s", destination, exc_info=True)
