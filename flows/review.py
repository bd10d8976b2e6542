"""Clinical review: a held result waits for a radiologist's decision, given in the Prefect UI.

The pathway flow records the result (clinical destinations `held`), ends `AwaitingReview`
and starts this flow from its deployment. It suspends with a typed form (`ReviewDecision`:
accept, amend the conclusion, or reject; the reviewer's name and reason); Prefect's UI shows
the form on the suspended run's page ("Resume"). The served runner runs the flow again with
the answer: accept re-renders the held report messages as final naming the reviewer and
releases them, amend does the same with the reviewer's conclusion first, reject records the
rejection. Destinations that already had the preliminary (clinical mode with review) get the
final, or on reject a cancellation, as a new outbox row superseding it. Nothing of the pathway is
recomputed: the result is in the ledger. An incomplete answer (a rejection without a reason)
asks again. `radpath review` gives the same decisions from a terminal (no Prefect server).
A review left longer than the spec's `review.timeout_minutes` is expired by the reconciler:
the deliveries stay held, ops are alerted, and a late decision is still possible.
"""

from __future__ import annotations

import logging
from typing import Literal

from prefect import flow, get_run_logger
from prefect.flow_runs import suspend_flow_run
from prefect.input import RunInput
from prefect.states import Completed, Failed, State
from pydantic import Field

from integrations.db import ops
from integrations.db.models import REVIEW_OPEN, DeliveryStatus, ReviewStatus
from pathways.registry import default_registry

REVIEW_DEPLOYMENT = "clinical-review/clinical-review"
MAX_ASKS = 5
log = logging.getLogger("radpath.review")


class ReviewDecision(RunInput):
    """The form a reviewer fills in the Prefect UI."""

    decision: Literal["accept", "amend", "reject"] = Field(
        description="accept: deliver as recorded; amend: deliver with your conclusion; reject: deliver nothing clinical"
    )
    reviewer: str = Field(min_length=2, description="Your name as it appears in the audit trail")
    reason: str = Field(default="", description="Why (required to amend or reject)")
    amended_conclusion: str = Field(default="", description="To amend: the conclusion to report instead of the algorithm's")

    def problem(self) -> str | None:
        """What is missing for this decision, if anything."""
        if self.decision in ("amend", "reject") and not self.reason.strip():
            return f"a reason is required to {self.decision}"
        if self.decision == "amend" and not self.amended_conclusion.strip():
            return "an amended conclusion is required to amend"
        return None


def apply_review(result_id: str, decision: ReviewDecision) -> tuple[str, list[str]]:
    """Record the decision (amend: re-render the held report messages first) and the pathway
    run's outcome; returns (review status, delivery ids now pending)."""
    from integrations.db import runs
    from integrations.db.runs import RunStatus

    if problem := decision.problem():
        raise ValueError(problem)
    status, pending = _record_decision(result_id, decision)
    outcome = RunStatus.REJECTED if status == ReviewStatus.REJECTED else RunStatus.COMPLETED
    runs.set_status(ops.result_run_id(result_id), outcome, reason=f"review {status} by the reviewer")
    return status, pending


def _record_decision(result_id: str, decision: ReviewDecision) -> tuple[str, list[str]]:
    """Accept and amend re-render the held report messages as the reviewed (final) version
    naming the reviewer; reject releases nothing (the held rows never left radpath)."""
    if decision.decision in ("accept", "amend"):
        from prefect.context import FlowRunContext

        from tasks.results import finalise_held_report

        render = finalise_held_report if FlowRunContext.get() else finalise_held_report.fn  # a task inside the review flow
        conclusion = decision.amended_conclusion if decision.decision == "amend" else None
        reviewed = render(result_id, decision.reviewer, decision.reason, conclusion)
        status = ReviewStatus.AMENDED if decision.decision == "amend" else ReviewStatus.ACCEPTED
        ops.set_review(result_id, status, reviewer=decision.reviewer, reason=decision.reason,
                       report=reviewed.report if conclusion is not None else None, payloads=reviewed.payloads,
                       follow_ups=reviewed.follow_ups, issued=str(reviewed.status))
        return status, ops.delivery_ids(result_id, DeliveryStatus.PENDING)
    from prefect.context import FlowRunContext

    from tasks.results import cancel_sent_reports

    cancel = cancel_sent_reports if FlowRunContext.get() else cancel_sent_reports.fn
    ops.set_review(result_id, ReviewStatus.REJECTED, reviewer=decision.reviewer, reason=decision.reason,
                   follow_ups=cancel(result_id), issued="cancelled")
    return ReviewStatus.REJECTED, ops.delivery_ids(result_id, DeliveryStatus.PENDING)  # the cancellations of preliminaries sent


def _form(study_key: str, conclusion: str, urgent: bool, problem: str | None = None) -> type[ReviewDecision]:
    """The form with what the reviewer needs to see first (pseudonymous key, no identifiers)."""
    lines = [f"**Study {study_key}**: the algorithm concluded: *{conclusion}*" + (" — **urgent**" if urgent else ""),
             "Open the study in PACS, then accept, amend the conclusion, or reject.",
             "Do not type patient identifiers here: this form is kept by Prefect, outside the clinical record."]
    if problem:
        lines.insert(0, f"**Please answer again: {problem}.**")
    return ReviewDecision.with_initial_data(description="\n\n".join(lines))


@flow(name="clinical-review", flow_run_name="review/{study_key}", persist_result=True)
def clinical_review(result_id: str, study_key: str, pathway: str) -> State:
    """Suspend until a reviewer decides, then act. Resumed runs start again from the top;
    each ask has its own key, so answers already given come back without waiting."""
    from flows.common import deliver_all
    from integrations.db import runs
    from integrations.db.runs import RunStatus
    from tasks.events import emit

    logger = get_run_logger()
    if (already := ops.review_status(result_id)) not in REVIEW_OPEN:
        return Completed(name="AlreadyReviewed", message=f"decided elsewhere (`radpath review`): {already}")
    timeout = default_registry().get(pathway).review.timeout_minutes * 60
    held = ops.held_result(result_id)
    conclusion, urgent = held.report.get("conclusion", ""), bool(held.report.get("urgent"))
    problem = None
    for ask in range(MAX_ASKS):
        decision = suspend_flow_run(wait_for_input=_form(study_key, conclusion, urgent, problem), timeout=timeout,
                                    key=f"review-{result_id}-{ask}")
        if (problem := decision.problem()) is None:
            break
        logger.warning("review answer incomplete (%s): asking again", problem)
    else:
        return Failed(name="ReviewIncomplete", message=f"{MAX_ASKS} incomplete answers; decide with `radpath review`")
    if (already := ops.review_status(result_id)) not in REVIEW_OPEN:
        return Completed(name="AlreadyReviewed", message=f"decided elsewhere while suspended: {already}")
    status, pending = apply_review(result_id, decision)
    emit(f"result.{status}", "result", result_id, related={"pathway": pathway}, study_key=study_key)
    receipts, failures = deliver_all(pending)
    if status == ReviewStatus.REJECTED:
        return Completed(name="Rejected", message=f"rejected at review: {decision.reason}; "
                                                  f"{len(receipts)} cancellation(s) of a preliminary sent")
    dead = ops.delivery_ids(result_id, DeliveryStatus.DEAD_LETTER)
    if dead:
        runs.set_status(ops.result_run_id(result_id), RunStatus.DEAD_LETTERED, reason=f"review {status}; deliveries dead-lettered")
        return Failed(name="DeadLettered", message=f"{len(dead)} deliveries dead-lettered after review")
    return Completed(name="Delivered", message=f"review {status}; {len(receipts)} deliveries, {len(failures)} to retry")


def start_review_run(result_id: str, study_key: str, pathway: str) -> str | None:
    """Create the review flow run from its deployment; None when it is not deployed here."""
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound

    try:
        flow_run = run_deployment(
            REVIEW_DEPLOYMENT,
            parameters={"result_id": result_id, "study_key": study_key, "pathway": pathway},
            timeout=0,
            as_subflow=False,
            tags=[f"pathway:{pathway}", f"study:{study_key}", "review"],
            _sync=True,  # called from sync code inside async pathway flows
        )
    except ObjectNotFound:
        log.info("no %s deployment: the held result waits for `radpath review`", REVIEW_DEPLOYMENT)
        return None
    return str(flow_run.id)
