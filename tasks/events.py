"""radpath's Prefect events: emitted after the ledger commit, carrying opaque ids only.

Listeners in `integrations/` take these as callbacks (they do not import Prefect), so the
order is always: commit, acknowledge, emit.
"""

from __future__ import annotations

from prefect.events import emit_event

RESOURCE_PREFIX = "radpath"


def emit(event: str, kind: str, entity_id: str, **payload: str | int | float | bool | None) -> None:
    """Emit `radpath.<event>` about one ledger entity (order, study, run, result, delivery)."""
    emit_event(
        event=f"{RESOURCE_PREFIX}.{event}",
        resource={"prefect.resource.id": f"{RESOURCE_PREFIX}.{kind}.{entity_id}", "prefect.resource.name": kind},
        payload={k: v for k, v in payload.items() if v is not None},
    )
