"""Operator actions on the outbox from the Prefect UI: the `deliveries-admin` deployment.

The same functions as `radpath deliveries ...` (integrations/db/deliveries.py and
integrations/delivery/probe.py), with typed parameters the UI renders as a form. The run's
message carries counts, destination names and pseudonymous keys only; `accession` is looked
up in the ledger and never echoed (Prefect keeps flow parameters: prefer `study_key`).
"""

from __future__ import annotations

from typing import Literal

from prefect import flow
from prefect.states import Completed, Failed, State

Action = Literal["list", "retry", "discard", "pause", "resume", "test"]


@flow(name="deliveries-admin", flow_run_name="deliveries-{action}", persist_result=False)
def deliveries_admin(
    action: Action,
    actor: str,
    destination: str | None = None,
    study_key: str | None = None,
    delivery_ids: list[str] | None = None,
    reason: str = "",
) -> State:
    """List, re-queue or discard dead letters, pause or resume a destination, or test its
    connection. Re-queued rows are sent by the reconciler's next pass (exactly once each)."""
    from integrations.db import deliveries
    from integrations.delivery.probe import check_destination
    from integrations.settings import get_settings

    selection = deliveries.Selection(tuple(delivery_ids or ()), destination, study_key)
    if action in ("pause", "resume", "test") and not destination:
        return Failed(name="Refused", message=f"{action} needs a destination")
    if action in ("retry", "discard") and selection.empty:
        return Failed(name="Refused", message=f"{action} needs delivery ids, a destination or a study key")
    if action == "list":
        rows = deliveries.list_deliveries(selection)
        lines = [f"{r.delivery_id} {r.destination} {r.study_key} attempts={r.attempts}" for r in rows]
        return Completed(name="Listed", message="; ".join(lines) or "no dead letters")
    if action == "retry":
        done = deliveries.requeue(selection, actor, reason)
        return Completed(name="Requeued", message=f"{len(done)} deliveries re-queued")
    if action == "discard":
        try:
            done = deliveries.discard(selection, actor, reason)
        except ValueError as exc:
            return Failed(name="Refused", message=str(exc))
        return Completed(name="Discarded", message=f"{len(done)} deliveries discarded")
    if action == "pause":
        changed = deliveries.pause(destination, actor, reason)
        return Completed(name="Paused", message=f"{destination} {'paused' if changed else 'was already paused'}")
    if action == "resume":
        waiting = deliveries.resume(destination, actor, reason)
        return Completed(name="Resumed", message=f"{destination} was not paused" if waiting is None
                         else f"{destination} resumed; {waiting} deliveries waiting")
    probe = check_destination(get_settings().destination(destination))
    return (Completed if probe.ok else Failed)(name="ConnectionOk" if probe.ok else "ConnectionFailed",
                                               message=f"{destination}: {probe.detail}")
