"""What every pathway flow shares: run bookkeeping, step timing, failure hooks."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from pydantic import BaseModel

from prefect import get_run_logger
from prefect.context import get_run_context
from prefect.states import Completed, Failed, State

from integrations.db import ops, runs
from integrations.db.models import REVIEW_OPEN, DeliveryStatus, ReviewStatus
from integrations.db.runs import RunStatus
from integrations.settings import get_settings
from pathways.registry import default_registry
from pathways.routing import route
from pathways.disclosure import burned_in_problem
from pathways.findings import SeriesRef
from pathways.report import ReportContent
from pathways.model_card import ModelCard, input_problems
from tasks.artifacts import publish_not_measurable_summary, publish_run_summary
from tasks.delivery import deliver
from tasks.events import emit, ops_tags
from tasks.results import record_result


# The flow-run tag of a result whose finding is clinically urgent (the order's own priority is
# the `priority:` tag of tasks.events.ops_tags).
URGENT_FINDING_TAG = "finding:urgent"

# The lease owner a reconciler holds for the run it is about to re-drive in this process.
HANDOFF: ContextVar[str | None] = ContextVar("radpath_run_handoff", default=None)


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
    """Flow hook (failure/crash): the ledger shows the run failed; the reconciler may re-drive it.

    A run that ended `DeadLettered` already recorded that; it is not re-driven."""
    run_id = flow_run.parameters.get("run_id")
    if run_id and state.name != "DeadLettered":
        runs.fail_if_held(run_id, _owner(str(flow_run.id)), reason=f"flow run {state.name}")
    elif run_id:
        ops.release_run(run_id, _owner(str(flow_run.id)))


def _owner(flow_run_id: str) -> str:
    return f"flow-run:{flow_run_id}"


def start_run(run_id: str) -> StepTimer | None:
    """Claim the ledger run for this flow run (a lease the reconciler respects) and mark it running.

    None: the run is already finished (a repeated trigger): the flow returns `already_finished`.
    Raises RunClaimed when another live flow run holds the run."""
    flow_run_id = str(get_run_context().flow_run.id)
    handed = HANDOFF.get()  # a reconciler that claimed the run passes it on to this flow run
    started = runs.start(run_id, _owner(flow_run_id), get_settings().run_lease_seconds, flow_run_id=flow_run_id,
                         handed_from=handed)
    if started == runs.Start.FINISHED:
        return None
    if started == runs.Start.HELD_ELSEWHERE:
        raise RunClaimed("the reconciler's claim on this pathway run lapsed" if handed
                         else "another flow run holds this pathway run")
    _tag_for_ops(run_id)
    return StepTimer()


def already_finished(run_id: str) -> State:
    """A trigger repeated for a run that has ended: nothing is computed or sent again."""
    return Completed(name="AlreadyFinished", message=f"the pathway run is already {ops.run_status(run_id)}")


def _tag_for_ops(run_id: str) -> None:
    """The tags ops filter on, whoever created the flow run (a trigger, the reconciler, the demo):
    pathway, trust, priority and the pseudonymous study key."""
    _add_flow_run_tags(ops_tags(run_id))


def _add_flow_run_tags(wanted: set[str]) -> None:
    from prefect.client.orchestration import get_client

    flow_run = get_run_context().flow_run
    if not wanted <= set(flow_run.tags):
        with get_client(sync_client=True) as client:
            client.update_flow_run(flow_run.id, tags=sorted(set(flow_run.tags) | wanted))
            flow_run.tags = sorted(set(flow_run.tags) | wanted)


class RunClaimed(RuntimeError):
    """Another live flow run is working on the same pathway run."""


def _finish(run_id: str, status: RunStatus, reason: str | None = None) -> None:
    runs.set_status(run_id, status, reason=reason)
    ops.release_run(run_id, _owner(str(get_run_context().flow_run.id)))


def not_eligible(run_id: str, what: str) -> State:
    """The study holds nothing the pathway can use: a named terminal state, visible to ops."""
    _finish(run_id, RunStatus.NOT_ELIGIBLE, reason=f"no {what} fits the spec")
    return Completed(name="NotEligible", message=f"the study holds no {what} the pathway can use")


def not_measurable(run_id: str, pathway: str, study_key: str, timer: StepTimer, reasons: list[str]) -> State:
    """Doubtful input or an implausible answer: no conclusion is made or delivered. A named
    terminal state, audited with the reasons, summarised for ops, and an event ops are alerted on
    (automation "radpath: study not measurable")."""
    reason = "; ".join(reasons)
    _finish(run_id, RunStatus.NOT_MEASURABLE, reason=reason)
    emit("run.not_measurable", "run", run_id, related={"pathway": pathway}, pathway=pathway, study_key=study_key,
         reason=reason)
    publish_not_measurable_summary(pathway, study_key, reasons, timer.seconds)
    return Completed(name="NotMeasurable", message=f"not measurable: {reason}")


def volume_problems(card: ModelCard, inputs, model_name: str) -> list[str]:  # noqa: ANN001 - tasks.imaging.PreparedInputs
    """Why a prepared volume is outside the model card's input domain, or may not be sent to the
    model's remote inference service (empty: neither)."""
    volume = inputs.volume
    return input_problems(card, modality=inputs.series.modality, spacing_mm=volume.spacing_zyx_mm,
                          matrix=volume.shape_zyx[1:], slices=volume.shape_zyx[0], age_years=inputs.patient.age_years
                          ) + disclosure_problems(model_name, inputs.series.modality, volume.burned_in_annotation)


def disclosure_problems(model_name: str, modality: str, burned_in_annotation: str) -> list[str]:
    """Why these images may not leave the trust for the model's remote inference service: pixels
    that carry, or may carry, burned-in identifying text (pathways/disclosure.py). Empty where the
    model runs here or the service is configured `burned_in_annotation: allow`."""
    service = get_settings().inference_services.get(model_name)
    problem = burned_in_problem(burned_in_annotation, modality) if service and service.burned_in_annotation == "refuse" else None
    return [f"not sent to the remote inference service: {problem} (DICOM PS3.15 Annex E, Clean Pixel Data)"] if problem else []


def deliver_all(delivery_ids: list[str]) -> tuple[list[str], list[str]]:
    """Send the rows concurrently; returns (receipts, failures) without raising."""
    receipts, failures = [], []
    for future in [deliver.with_options(task_run_name=ops.delivery_run_name(d)).submit(d) for d in delivery_ids]:
        try:
            receipts.append(future.result())
        except Exception as exc:  # noqa: BLE001 - the ledger row records it; the state names it
            failures.append(f"{exc.__class__.__name__}: {exc}")
    return receipts, failures


def record_and_deliver(
    pathway: str,
    run_id: str,
    study_key: str,
    timer: StepTimer,
    content: ReportContent,
    assessment: BaseModel,
    series: SeriesRef,
    mask_path: str | None,
    model_name: str,
    model_version: str,
) -> State:
    """The ending every pathway shares: outputs + outbox routed by the spec's mode, deliveries,
    the ops summary, and a named terminal state (Delivered, AwaitingReview, DeadLettered,
    DeliveryPending)."""
    spec = default_registry().get(pathway)
    routing = route(spec)
    with timer.step("outputs"):
        recorded = record_result(run_id, content, assessment, series, mask_path, model_name, model_version)
    if content.urgent:  # the clinical urgency of the finding, beside the order's priority tag
        _add_flow_run_tags({URGENT_FINDING_TAG})
    with timer.step("delivery"):
        receipts, failures = deliver_all(ops.delivery_ids(recorded.result_id, DeliveryStatus.PENDING))
    held = ops.delivery_ids(recorded.result_id, DeliveryStatus.HELD)
    receipts += [f"{d}: held for review" for d in routing.held] if held else []
    receipts += [f"{d}: not sent (shadow mode)" for d in routing.withheld]
    publish_run_summary(pathway, study_key, content, timer.seconds, receipts + [f"FAILED {f}" for f in failures])
    summary = content.conclusion_codes[0].display if content.conclusion_codes else content.conclusion
    mode = f"mode={spec.mode}"
    pending = ops.delivery_ids(recorded.result_id, DeliveryStatus.PENDING)
    get_run_logger().info(
        "result recorded (%s, model %s %s): %s; urgent=%s; %d delivered, %d held for review, %d not sent (shadow), "
        "%d pending retry; steps %s", mode, model_name, model_version, summary, content.urgent,
        len(ops.delivery_ids(recorded.result_id, DeliveryStatus.DELIVERED)),
        len(held), len(routing.withheld), len(pending),
        ", ".join(f"{k} {v:.1f} s" for k, v in timer.seconds.items()))
    dead = ops.delivery_ids(recorded.result_id, DeliveryStatus.DEAD_LETTER)
    if dead:
        _finish(run_id, RunStatus.DEAD_LETTERED, reason=f"{len(dead)} delivery(ies) dead-lettered")
        return Failed(name="DeadLettered", message=f"{len(dead)} of {len(receipts) + len(failures)} deliveries dead-lettered; {mode}")
    # Review required with the preliminary sent: the decision still has to reach those destinations.
    follow_up = list(routing.follow_up) if ops.review_status(recorded.result_id) in (None, *REVIEW_OPEN) else []
    if held or follow_up:
        ops.set_review(recorded.result_id, ReviewStatus.PENDING)
        waiting = f"{len(held)} clinical delivery(ies) held, {len(follow_up)} sent preliminary"
        _finish(run_id, RunStatus.AWAITING_REVIEW, reason=f"{waiting}: awaiting review")
        emit("result.awaiting_review", "result", recorded.result_id, related={"pathway": pathway, "run": run_id},
             study_key=study_key, held=len(held), preliminary_sent=len(follow_up))
        request_review(recorded.result_id, study_key, pathway)
        return Completed(name="AwaitingReview", message=f"{waiting}, awaiting review; {mode}; {summary}")
    if pending:
        _finish(run_id, RunStatus.COMPLETED, reason="deliveries pending retry")
        emit("result.delivery_pending", "result", recorded.result_id, related={"pathway": pathway, "run": run_id},
             pathway=pathway, study_key=study_key, pending=len(pending),
             destinations=", ".join(ops.delivery_destinations(pending)))
        return Completed(name="DeliveryPending", message=f"{len(failures)} deliveries will be retried by the reconciler; {mode}")
    _finish(run_id, RunStatus.COMPLETED)
    return Completed(name="Delivered", message=f"{len(receipts)} deliveries; urgent={content.urgent}; {mode}; {summary}")


def request_review(result_id: str, study_key: str, pathway: str) -> None:
    """Start the review flow (a suspended run with a typed form) where it is deployed.

    Where the review deployment is not served (`radpath demo` on the ephemeral API), held
    results wait in the ledger for `radpath review`."""
    from flows.review import start_review_run

    start_review_run(result_id, study_key, pathway)
