"""radpath's automations, as code: built from the pathway specs and applied by
`radpath automations apply` (replacing any automation of the same name).

- a pathway run failed or crashed;
- a delivery dead-lettered (`radpath.delivery.dead_lettered`);
- a clinical review overdue (`radpath.result.review_expired`, from the reconciler);
- a destination or a front door went down, and a destination came back
  (`radpath.destination.down|up`, `radpath.door.down`, from the health checks of radpath serve
  and from delivery attempts: radpath/health.py);
- the image store sweep quarantined or failed files (`radpath.store.sweep_problem`);
- a study not measurable (`radpath.run.not_measurable`: doubtful geometry, input outside the
  model card's domain, or an implausible model answer; no conclusion was delivered);
- a result's deliveries left to the outbox's retries (`radpath.result.delivery_pending`: the
  run ended `DeliveryPending`, green in the UI, with a clinical system not yet holding it);
- a recommended follow-up scan overdue (`radpath.surveillance.overdue`, from the surveillance
  failsafe flow);
- a model version agreeing with the radiologists' reports less than its spec's minimum
  (`radpath.model.agreement_low`, from the evidence monitor flow);
- per pathway and lane (routine, urgent), an SLA breach: `radpath.order.received` related to
  the pathway and no `radpath.result.delivered` for the same order within the spec's target
  for that lane (a proactive trigger).

Each notifies through one notification block (a custom webhook by default), carries a
description for the Automations page, and, where the event came from a flow run, the run's UI
link. Messages name pathway, pseudonymous study key, destination and the scrubbed peer error;
never an identifier of the patient or a DICOM UID.
"""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

from prefect.automations import Automation
from prefect.events.actions import SendNotification
from prefect.events.schemas.automations import EventTrigger, Posture

from pathways.orders import LANES
from pathways.registry import Registry

BLOCK_NAME = "radpath-ops-webhook"
# The flow run the event came from (Prefect relates events emitted inside a run to it); absent
# for events from radpath serve's own loops, so guarded.
RUN_LINK = "{% if flow_run %} Flow run: {{ flow_run|ui_url }}{% endif %}"


def build_automations(registry: Registry, block_document_id: UUID) -> list[Automation]:
    def notify(subject: str, body: str) -> list[SendNotification]:
        return [SendNotification(block_document_id=block_document_id, subject=subject, body=body)]

    def on_event(name: str, event: str, kind: str, body: str, description: str) -> Automation:
        """Notify once per radpath event `event` about a `kind` entity; the name is the subject."""
        trigger = EventTrigger(expect={event}, match={"prefect.resource.id": f"radpath.{kind}.*"},
                               posture=Posture.Reactive, threshold=1, within=timedelta(0))
        return Automation(name=name, description=description, trigger=trigger, actions=notify(name, body + RUN_LINK))

    automations = [
        Automation(
            name="radpath: pathway run failed or crashed",
            description="A pathway flow run ended Failed or Crashed. The ledger marks the run failed and the "
                        "reconciler re-drives it; no result went out from the failed attempt.",
            trigger=EventTrigger(
                expect={"prefect.flow-run.Failed", "prefect.flow-run.Crashed"},
                match={"prefect.resource.id": "prefect.flow-run.*"},
                match_related={"prefect.resource.role": "tag", "prefect.resource.id": "prefect.tag.pathway:*"},
                posture=Posture.Reactive,
                threshold=1,
                within=timedelta(0),
            ),
            actions=notify("radpath: pathway run {{ flow_run.name }} {{ flow_run.state.name }}",
                           "Flow run {{ flow_run.name }} ended {{ flow_run.state.name }}: {{ flow_run.state.message }}"
                           + RUN_LINK),
        ),
        on_event("radpath: delivery dead-lettered", "radpath.delivery.dead_lettered", "delivery",
                 "Delivery {{ event.resource.id }} to {{ event.payload.destination }} (study {{ event.payload.study_key }}, "
                 "{{ event.payload.pathway }}) was dead-lettered after {{ event.payload.attempts }} attempt(s) "
                 "({{ event.payload.reason }}, {{ event.payload.error }}: a permanent refusal, or still failing at the "
                 "end of its retry window). `radpath deliveries list` shows the peer's words; `radpath deliveries "
                 "retry` re-sends.",
                 "A delivery will not be tried again: the peer refused it or its retry window ended. The clinical "
                 "system lacks the result until ops re-send it (`radpath deliveries retry`)."),
        on_event("radpath: destination down", "radpath.destination.down", "destination",
                 "Destination {{ event.payload.destination }} is not answering: {{ event.payload.detail }}. Its "
                 "deliveries wait in the outbox and are retried on their schedule; `radpath status` shows what is "
                 "pending, `radpath deliveries test {{ event.payload.destination }}` checks the link.",
                 "A destination failed its health check (radpath serve, every health_check_seconds) or a delivery "
                 "attempt found it not answering."),
        on_event("radpath: destination back up", "radpath.destination.up", "destination",
                 "Destination {{ event.payload.destination }} answers again ({{ event.payload.detail }}); pending "
                 "deliveries go on their next due time. Dead letters need `radpath deliveries retry`.",
                 "A destination that was down answers its health check or accepts a delivery again."),
        on_event("radpath: front door down", "radpath.door.down", "door",
                 "radpath's {{ event.payload.door }} listener is not accepting connections: "
                 "{{ event.payload.detail }}. Senders' messages are refused or queue at their end; restart "
                 "radpath serve if it does not recover.",
                 "One of radpath's own listeners (MLLP, DICOM, HTTP) stopped accepting connections."),
        on_event("radpath: clinical review overdue", "radpath.result.review_expired", "result",
                 "Result {{ event.resource.id }} waited longer than its pathway's review timeout; its clinical "
                 "deliveries stay held. `radpath review list` shows the queue.",
                 "A result held for clinical review was not reviewed within its pathway's review timeout."),
        on_event("radpath: image store sweep found unreadable files", "radpath.store.sweep_problem", "store",
                 "{{ event.payload.quarantined }} file(s) quarantined and {{ event.payload.failed }} failed while "
                 "indexing images a crash left without ledger rows; see <data dir>/quarantine/dicom and the audit.",
                 "The start-up sweep of the image store found files it could not index."),
        on_event("radpath: study not measurable", "radpath.run.not_measurable", "run",
                 "Study {{ event.payload.study_key }} was not measurable by {{ event.payload.pathway }}: "
                 "{{ event.payload.reason }}. No AI result was delivered; the study is read as usual.",
                 "A pathway refused to conclude: doubtful geometry, input outside the model card's domain, or an "
                 "implausible model answer."),
        on_event("radpath: delivery waiting for retry", "radpath.result.delivery_pending", "result",
                 "Study {{ event.payload.study_key }} ({{ event.payload.pathway }}): {{ event.payload.pending }} "
                 "delivery(ies) to {{ event.payload.destinations }} failed their first attempt and wait in the "
                 "outbox for retry; the run shows DeliveryPending. A dead letter alerts separately.",
                 "A pathway run finished but a clinical system does not hold its result yet: the deliveries are "
                 "left to the outbox's retry schedule."),
        on_event("radpath: follow-up overdue", "radpath.surveillance.overdue", "surveillance_plan",
                 "Patient {{ event.payload.patient_key }} ({{ event.payload.pathway }}, baseline study "
                 "{{ event.payload.study_key }}): the {{ event.payload.recommendation }} follow-up was due "
                 "{{ event.payload.due }} and no follow-up study has arrived ({{ event.payload.days_overdue }} days; "
                 "follow-up ordered: {{ event.payload.follow_up_ordered }}). `radpath surveillance list` on the "
                 "ledger host names the accession number.",
                 "The surveillance failsafe (hourly) found a recommended follow-up scan that did not happen within "
                 "its due date plus the pathway spec's grace period. It alerts, and again every realert_days (7) "
                 "while the plan stays overdue; the plan stays on the radpath-surveillance table until a study comes."),
        on_event("radpath: model agreement low", "radpath.model.agreement_low", "model",
                 "{{ event.payload.pathway }} model {{ event.payload.model_version }} at {{ event.payload.trust }}: "
                 "{{ event.payload.measure }} {{ event.payload.value }} against the radiologists' reports over "
                 "{{ event.payload.window_days }} days ({{ event.payload.cases }} studies; 95% upper bound "
                 "{{ event.payload.upper_bound }} < minimum {{ event.payload.minimum }}). `radpath monitor` shows "
                 "the figures; consider shadow mode while it is investigated.",
                 "The evidence monitor (daily) found a model version agreeing with the radiologists' signed "
                 "reports less than its pathway spec's monitoring minimum, with 95 % confidence."),
    ]
    for spec in registry.specs.values():
        for lane in LANES:
            automations.append(sla_breach(spec.name, lane, spec.sla.target_minutes(lane), notify))
    return automations


def sla_breach(pathway: str, lane: str, minutes: int, notify) -> Automation:  # noqa: ANN001 - build_automations' notify
    """One SLA clock per order of this pathway and lane: `radpath.order.received` then no
    `radpath.result.delivered` for the same order within the target (both events carry the
    order's lane as the label `radpath.priority`)."""
    return Automation(
        name=f"radpath: SLA breach {pathway} ({lane})",
        description=f"{'An' if lane == 'urgent' else 'A'} {lane} order for {pathway} has no delivered result {minutes} "
                    "min after it was received "
                    "(the pathway spec's sla).",
        trigger=EventTrigger(
            after={"radpath.order.received"},
            expect={"radpath.result.delivered"},
            match={"prefect.resource.id": "radpath.order.*", "radpath.priority": lane},
            match_related={"prefect.resource.id": f"radpath.pathway.{pathway}"},
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(minutes=minutes),
        ),
        actions=notify(f"radpath: SLA breach on {pathway} ({lane})",
                       f"No result delivered within {minutes} min of the {lane} order ({{{{ event.resource.id }}}}); "
                       "`radpath status` lists the open work and its stage."),
    )


async def ensure_notification_block(url: str) -> UUID:
    """The webhook block automations notify through (created or updated)."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    block = CustomWebhookNotificationBlock(name="radpath", url=url, json_data={"subject": "{{subject}}", "text": "{{body}}"})
    return await block.save(BLOCK_NAME, overwrite=True)


async def apply_automations(registry: Registry, webhook_url: str) -> list[str]:
    """Create radpath's automations against the configured Prefect API, replacing same-named ones."""
    from prefect import get_client

    block_id = await ensure_notification_block(webhook_url)
    names = []
    async with get_client() as client:
        existing = {a.name: a.id for a in await client.read_automations()}
        for automation in build_automations(registry, block_id):
            if automation.name in existing:
                await client.delete_automation(existing[automation.name])
            await automation.acreate()
            names.append(automation.name)
    return names
