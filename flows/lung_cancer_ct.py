"""Lung cancer — chest CT: nodules detected and measured, Brock risk, BTS follow-up, delivered.

The steps and the branching only; what to select, which model, which thresholds and where
results go all come from `pathways/specs/lung_cancer_ct.yaml`.
"""

from __future__ import annotations

from prefect import flow
from prefect.context import get_run_context
from prefect.states import Completed

from flows.common import StepTimer, mark_run_failed
from integrations.db import ledger
from pathways.lung_cancer_ct import assess_lung_study
from pathways.lung_cancer_report import lung_report_content
from pathways.registry import default_registry
from tasks.artifacts import publish_run_summary
from tasks.delivery import deliver
from tasks.imaging import prepare_inputs
from tasks.inference import detect_lung_nodules
from tasks.results import record_result

PATHWAY = "lung-cancer-ct"


@flow(
    name=PATHWAY,
    flow_run_name="lung-cancer-ct/{study_key}",
    on_failure=[mark_run_failed],
    on_crashed=[mark_run_failed],
    persist_result=False,
)
async def lung_cancer_ct(run_id: str, study_key: str):  # noqa: ANN201 - returns a Prefect state
    """Run the lung pathway for one ledger pathway run (opaque ids only)."""
    registry = default_registry()
    spec = registry.get(PATHWAY)
    timer = StepTimer()
    ledger.set_run_status(run_id, "running", flow_run_id=str(get_run_context().flow_run.id))

    with timer.step("prepare"):
        inputs = prepare_inputs(run_id)
    if inputs.series is None:
        ledger.set_run_status(run_id, "not_eligible", reason="no series fits the spec")
        return Completed(name="NotEligible", message="the study holds no series the pathway can use")

    with timer.step("inference"):
        detection = detect_lung_nodules(inputs.volume, spec.model)
    with timer.step("rules"):
        assessment = assess_lung_study(detection.nodules, inputs.patient, registry.rules(PATHWAY))
        content = lung_report_content(assessment)
    with timer.step("outputs"):
        recorded = record_result(
            run_id, content, assessment, inputs.series, detection.mask_path, detection.model_name, detection.model_version
        )
    with timer.step("delivery"):
        receipts = [f.result() for f in [deliver.submit(d) for d in recorded.delivery_ids]]

    publish_run_summary(PATHWAY, study_key, content, timer.seconds, receipts)
    ledger.set_run_status(run_id, "completed")
    return Completed(name="Delivered", message=f"{len(receipts)} deliveries; urgent={content.urgent}")
