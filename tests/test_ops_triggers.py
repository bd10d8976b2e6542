"""Deployment triggers and automations, checked with Prefect's own (3.9.1) event matching."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

from deployments.automations import apply_automations, build_automations

ROOT = Path(__file__).resolve().parents[1]


def _event(event: str, resource: dict, related: list | None = None, payload: dict | None = None):
    from prefect.server.events.schemas.events import ReceivedEvent

    return ReceivedEvent(occurred=datetime.now(timezone.utc), event=event, resource=resource,
                         related=related or [], payload=payload or {}, id=uuid.uuid4())


def _server_trigger(trigger: dict):
    """What the server evaluates: the YAML read as `prefect deploy` reads it (defaults filled in)."""
    from prefect.events.schemas.automations import EventTrigger as ClientTrigger
    from prefect.server.events.schemas.automations import EventTrigger

    fields = {k: v for k, v in trigger.items() if k not in ("enabled", "parameters", "name")}
    return EventTrigger.model_validate(ClientTrigger.model_validate(fields).model_dump(mode="json", exclude={"type"}))


def _run_ready(pathway: str, priority: str):
    return _event("radpath.run.ready",
                  {"prefect.resource.id": "radpath.run.r-1", "prefect.resource.name": "run",
                   "radpath.pathway": pathway, "radpath.priority": priority},
                  [{"prefect.resource.id": f"radpath.pathway.{pathway}", "prefect.resource.role": "pathway"}],
                  {"run_id": "r-1", "study_key": "S-abc"})


def test_each_ready_run_starts_exactly_one_deployment_of_its_specs_flow(registry):
    from prefect.server.utilities.user_templates import render_user_template_sync

    deployments = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())["deployments"]
    triggered = {d["name"]: d["triggers"][0] for d in deployments if d.get("triggers")}
    assert {n.rsplit("-", 1)[0] for n in triggered} == set(registry.specs)
    queues = {d["name"]: d["work_pool"]["work_queue_name"] for d in deployments}
    for pathway in registry.specs:
        for priority in ("urgent", "routine"):
            event = _run_ready(pathway, priority)
            hits = [n for n, t in triggered.items() if _server_trigger(t).covers(event)]
            assert hits == [f"{pathway}-{priority}"] and queues[hits[0]] == priority
            params = {k: render_user_template_sync(v, {"event": event}) for k, v in triggered[hits[0]]["parameters"].items()}
            assert params == {"run_id": "r-1", "study_key": "S-abc"}
    # Each pathway's two deployments run the flow its spec names, tagged as its runs are.
    by_name = {d["name"]: d for d in deployments}
    for name, spec in registry.specs.items():
        module, function = spec.flow.split(":")
        for priority in ("urgent", "routine"):
            deployment = by_name[f"{name}-{priority}"]
            assert deployment["entrypoint"] == f"{module.replace('.', '/')}.py:{function}"
            assert set(deployment["tags"]) == {f"pathway:{name}", f"priority:{priority}"}
    other = _event("radpath.study.ready", {"prefect.resource.id": "radpath.study.s-1"})
    assert not any(_server_trigger(t).covers(other) for t in triggered.values())


def _automation_triggers(registry) -> dict:
    return {a.name: _server_trigger(a.trigger.model_dump(mode="json")) for a in build_automations(registry, uuid.uuid4())}


def test_automations_match_failures_dead_letters_and_sla_clocks(registry):
    triggers = _automation_triggers(registry)
    failed = _event("prefect.flow-run.Failed", {"prefect.resource.id": f"prefect.flow-run.{uuid.uuid4()}"},
                    [{"prefect.resource.id": "prefect.tag.pathway:lung-cancer-ct", "prefect.resource.role": "tag"}])
    assert triggers["radpath: pathway run failed or crashed"].covers(failed)
    unrelated = _event("prefect.flow-run.Failed", {"prefect.resource.id": f"prefect.flow-run.{uuid.uuid4()}"})
    assert not triggers["radpath: pathway run failed or crashed"].covers(unrelated)
    dead = _event("radpath.delivery.dead_lettered", {"prefect.resource.id": "radpath.delivery.d-1"},
                  payload={"destination": "ris", "attempts": 1})
    assert triggers["radpath: delivery dead-lettered"].covers(dead)
    overdue = _event("radpath.result.review_expired", {"prefect.resource.id": "radpath.result.r-1"})
    assert triggers["radpath: clinical review overdue"].covers(overdue)
    assert not triggers["radpath: clinical review overdue"].covers(dead)
    sweep = _event("radpath.store.sweep_problem", {"prefect.resource.id": "radpath.store.images"},
                   payload={"quarantined": 1, "failed": 0})
    assert triggers["radpath: image store sweep found unreadable files"].covers(sweep)
    unmeasurable = _event("radpath.run.not_measurable", {"prefect.resource.id": "radpath.run.r-1"},
                          payload={"pathway": "dementia-mri", "study_key": "S-abc", "reason": "series geometry: missing-slice"})
    assert triggers["radpath: study not measurable"].covers(unmeasurable)
    assert not triggers["radpath: study not measurable"].covers(sweep)
    down = _event("radpath.destination.down", {"prefect.resource.id": "radpath.destination.ris"},
                  payload={"destination": "ris", "detail": "MLLP ris.trust.nhs.uk:2575: ConnectionRefusedError"})
    assert triggers["radpath: destination down"].covers(down) and not triggers["radpath: destination back up"].covers(down)
    door = _event("radpath.door.down", {"prefect.resource.id": "radpath.door.mllp"}, payload={"door": "mllp"})
    assert triggers["radpath: front door down"].covers(door) and not triggers["radpath: destination down"].covers(door)

    pending = _event("radpath.result.delivery_pending", {"prefect.resource.id": "radpath.result.r-1"},
                     payload={"pathway": "lung-cancer-ct", "study_key": "S-abc", "pending": 1, "destinations": "ris"})
    assert triggers["radpath: delivery waiting for retry"].covers(pending)
    assert not triggers["radpath: clinical review overdue"].covers(pending)
    follow_up = _event("radpath.surveillance.overdue", {"prefect.resource.id": "radpath.surveillance_plan.p-1"},
                       payload={"pathway": "lung-cancer-ct", "patient_key": "P-abc", "due": "2027-03-01"})
    assert triggers["radpath: follow-up overdue"].covers(follow_up)
    assert not triggers["radpath: clinical review overdue"].covers(follow_up)

    sla = triggers["radpath: SLA breach lung-cancer-ct (routine)"]
    urgent_sla = triggers["radpath: SLA breach lung-cancer-ct (urgent)"]

    def order_received(order_id: str, pathway: str, lane: str) -> object:
        return _event("radpath.order.received", {"prefect.resource.id": f"radpath.order.{order_id}", "radpath.priority": lane},
                      [{"prefect.resource.id": f"radpath.pathway.{pathway}", "prefect.resource.role": "pathway"}])

    routine, urgent = order_received("o-1", "lung-cancer-ct", "routine"), order_received("o-3", "lung-cancer-ct", "urgent")
    assert sla.covers(routine) and not sla.covers(order_received("o-2", "dementia-mri", "routine"))
    assert urgent_sla.covers(urgent) and not urgent_sla.covers(routine) and not sla.covers(urgent)  # one clock per lane
    assert sla.posture == "Proactive" and sla.after == {"radpath.order.received"} and sla.expect == {"radpath.result.delivered"}
    spec_sla = registry.get("lung-cancer-ct").sla
    assert sla.within.total_seconds() == spec_sla.turnaround_minutes * 60
    assert urgent_sla.within.total_seconds() == spec_sla.urgent_turnaround_minutes * 60 == 30 * 60
    dementia_urgent = triggers["radpath: SLA breach dementia-mri (urgent)"]  # no urgent target: the routine one
    assert dementia_urgent.within.total_seconds() == registry.get("dementia-mri").sla.turnaround_minutes * 60
    assert sla.for_each == {"prefect.resource.id"}  # one clock per order


@pytest.mark.slow
def test_apply_creates_the_automations_and_is_repeatable(registry):
    from prefect import get_client
    from prefect.testing.utilities import prefect_test_harness

    async def names() -> list[str]:
        async with get_client() as client:
            return sorted(a.name for a in await client.read_automations())

    with prefect_test_harness(server_startup_timeout=120):
        first = asyncio.run(apply_automations(registry, "http://127.0.0.1:9/hook"))
        asyncio.run(apply_automations(registry, "http://127.0.0.1:9/hook"))  # replaces, never duplicates
        assert asyncio.run(names()) == sorted(first) and len(first) == 11 + 2 * len(registry.specs)


def test_every_automation_is_described_for_the_automations_page(registry):
    """The UI lists automations by description ("A custom trigger" without one)."""
    automations = build_automations(registry, uuid.uuid4())
    assert all(len(a.description) > 40 for a in automations), [a.name for a in automations if not a.description]
