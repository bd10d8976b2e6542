"""Dementia — brain MRI: hippocampal and brain volumetry, age-normative percentiles, delivered.

The steps and the branching only; what to select, which model, which thresholds and where
results go all come from `pathways/specs/dementia_mri.yaml`.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.context import get_run_context
from prefect.states import Completed

from flows.common import StepTimer, mark_run_failed
from integrations.db import ledger
from pathways.dementia_mri import assess_brain_study
from pathways.dementia_report import dementia_report_content
from pathways.registry import default_registry
from tasks.artifacts import publish_run_summary
from tasks.delivery import deliver
from tasks.imaging import prepare_inputs
from tasks.inference import measure_brain_volumes
from tasks.results import record_result

PATHWAY = "dementia-mri"


@flow(
    name=PATHWAY,
    flow_run_name="dementia-mri/{study_key}",
    on_failure=[mark_run_failed],
    on_crashed=[mark_run_failed],
    persist_result=False,
)
async def dementia_mri(run_id: str, study_key: str):  # noqa: ANN201 - returns a Prefect state
    """Run the dementia MRI pathway for one ledger pathway run (opaque ids only)."""
    registry = default_registry()
    spec = registry.get(PATHWAY)
    timer = StepTimer()
    ledger.set_run_status(run_id, "running", flow_run_id=str(get_run_context().flow_run.id))

    with timer.step("prepare"):
        inputs = prepare_inputs(run_id)
    if inputs.series is None:
        ledger.set_run_status(run_id, "not_eligible", reason="no 3D T1 series fits the spec")
        return Completed(name="NotEligible", message="the study holds no 3D T1 series the pathway can use")

    with timer.step("inference"):
        volumetry = measure_brain_volumes(inputs.volume, spec.model)
        if not Path(volumetry.mask_path).exists():  # a cached result whose mask file was cleaned away
            volumetry = measure_brain_volumes.with_options(refresh_cache=True)(inputs.volume, spec.model)
    with timer.step("rules"):
        assessment = assess_brain_study(volumetry.volumes, inputs.patient, registry.rules(PATHWAY))
        content = dementia_report_content(assessment)
    with timer.step("outputs"):
        recorded = record_result(
            run_id, content, assessment, inputs.series, volumetry.mask_path, volumetry.model_name, volumetry.model_version
        )
    with timer.step("delivery"):
        receipts = [f.result() for f in [deliver.submit(d) for d in recorded.delivery_ids]]

    publish_run_summary(PATHWAY, study_key, content, timer.seconds, receipts)
    ledger.set_run_status(run_id, "completed")
    return Completed(name="Delivered", message=f"{len(receipts)} deliveries; atrophy={assessment.atrophy}")
