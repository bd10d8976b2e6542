"""radpath's Prefect events: emitted after the ledger commit, carrying opaque ids only.

Listeners in `integrations/` take these as callbacks (they do not import Prefect), so the
order is always: commit, acknowledge, emit. Events about an order carry each pathway it
claims as a related resource, which the SLA automations (deployments/automations.py) match.
"""

from __future__ import annotations

from collections.abc import Mapping

from prefect.events import emit_event

from pathways.orders import urgency

RESOURCE_PREFIX = "radpath"


def emit(
    event: str,
    kind: str,
    entity_id: str,
    related: Mapping[str, str | list[str]] | None = None,
    labels: Mapping[str, str] | None = None,
    **payload: str | int | float | bool | None,
) -> None:
    """Emit `radpath.<event>` about one ledger entity (order, study, run, result, delivery).

    `related`: role -> id(s), e.g. {"pathway": "lung-cancer-ct"} → resource `radpath.pathway.lung-cancer-ct`.
    """
    related_resources = []
    for role, ids in (related or {}).items():
        for related_id in [ids] if isinstance(ids, str) else ids:
            related_resources.append(
                {"prefect.resource.id": f"{RESOURCE_PREFIX}.{role}.{related_id}", "prefect.resource.role": role}
            )
    emit_event(
        event=f"{RESOURCE_PREFIX}.{event}",
        resource={"prefect.resource.id": f"{RESOURCE_PREFIX}.{kind}.{entity_id}", "prefect.resource.name": kind,
                  **{f"{RESOURCE_PREFIX}.{k}": v for k, v in (labels or {}).items()}},
        related=related_resources or None,
        payload={k: v for k, v in payload.items() if v is not None},
    )


def emit_order_received(order_id: str, run_ids: tuple[str, ...] | list[str], eligible: bool) -> None:
    """`radpath.order.received`, related to each pathway the order will run and labelled with the
    order's lane (the SLA clocks of that lane start here)."""
    from integrations.db.ops import order_lane, run_pathways

    emit("order.received", "order", order_id, related={"pathway": sorted(set(run_pathways(run_ids)))},
         labels={"priority": order_lane(order_id)}, eligible=eligible, runs=len(run_ids))


def emit_health_change(peer: str, state: str, detail: str, **payload: str | int | None) -> None:
    """`radpath.door.down|up` or `radpath.destination.down|up` when a check changed the state of
    `peer` ("door:mllp", "destination:ris"; integrations.db.health.record_check). The detail is
    scrubbed: addresses, status codes, the peer's masked words."""
    kind, _, name = peer.partition(":")
    emit(f"{kind}.{state}", kind, name, **{kind: name}, detail=detail, **payload)


def emit_runs_ready(run_ids) -> None:  # noqa: ANN001 - iterable of ledger run ids
    """`radpath.run.ready` per run: what the deployments' triggers start pathway flows on.

    The resource carries the pathway and priority as labels (triggers route urgent runs to
    the urgent queue); the payload carries only the opaque run id and study key."""
    from integrations.db import ledger

    for run_id in run_ids:
        view = ledger.run_view(run_id)
        emit("run.ready", "run", run_id, related={"pathway": view.pathway},
             labels={"pathway": view.pathway, "priority": urgency(view.priority)}, run_id=run_id, study_key=view.study_key)


def ops_tags(run_id: str) -> set[str]:
    """The tags ops filter pathway flow runs on: pathway, trust, queue and pseudonymous study key."""
    from integrations.db import ledger
    from integrations.settings import get_settings

    view = ledger.run_view(run_id)
    return {f"pathway:{view.pathway}", f"trust:{get_settings().trust}", f"priority:{urgency(view.priority)}",
            f"study:{view.study_key}"}
