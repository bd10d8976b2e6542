"""Clinical review: a held result waits for a radiologist's decision, given in the Prefect UI.

The pathway flow records the result (clinical destinations `held`) and ends `AwaitingReview`;
this flow then suspends with a typed form (`ReviewDecision`). Resuming it with a decision
releases the held deliveries (accept) or records the rejection. Nothing of the
pathway is recomputed: the result is in the ledger. A suspended run needs a Prefect server
and this flow's deployment (`radpath ui` + `radpath serve`); without them
`apply_review` is called by `radpath review`.
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
from pathways.registry import default_registry

REVIEW_DEPLOYMENT = "clinical-review/clinical-review"
log = logging.getLogger("radpath.review")


class ReviewDecision(RunInput):
    """The form a reviewer fills in the Prefect UI."""

    decision: Literal["accept", "reject"] = Field(description="accept: deliver as recorded; reject: deliver nothing clinical")
    reviewer: str = Field(min_length=2, description="Your name as it appears in the audit trail")
    reason: str = Field(default="", description="Why (required to reject)")


def apply_review(result_id: str, decision: ReviewDecision) -> tuple[str, list[str]]:
    """Record the decision; returns (review status, delivery ids now pending)."""
    if decision.decision == "reject" and not decision.reason.strip():
        raise ValueError("a reason is required to reject")
    status = {"accept": "accepted", "reject": "rejected"}[decision.decision]
    ops.set_review(result_id, status, reviewer=decision.reviewer, reason=decision.reason)
    return status, ops.delivery_ids(result_id, "pending")


@flow(name="clinical-review", flow_run_name="review/{study_key}", persist_result=True)
def clinical_review(result_id: str, study_key: str, pathway: str) -> State:
    """Suspend until a reviewer decides (or the spec's review timeout passes), then act."""
    from flows.common import deliver_all
    from integrations.db import ledger
    from tasks.events import emit

    timeout = default_registry().get(pathway).review.timeout_minutes * 60
    get_run_logger().info("result for study %s awaits clinical review (timeout %s min)", study_key, timeout // 60)
    decision = suspend_flow_run(wait_for_input=ReviewDecision, timeout=timeout, key=f"review-{result_id}")
    status, pending = apply_review(result_id, decision)
    run_id = ops.result_run_id(result_id)
    if status == "rejected":
        ledger.set_run_status(run_id, "rejected", reason="rejected at clinical review")
        emit("result.rejected", "result", result_id, related={"pathway": pathway})
        return Completed(name="Rejected", message=f"rejected by the reviewer: {decision.reason}")
    receipts, failures = deliver_all(pending)
    dead = ops.delivery_ids(result_id, "dead_letter")
    ledger.set_run_status(run_id, "dead_lettered" if dead else "completed", reason=f"review {status}")
    if dead:
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
