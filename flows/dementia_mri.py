"""Dementia — brain MRI: hippocampal and brain volumetry, age-normative percentiles, delivered.

The steps and the branching only; what to select, which model, which thresholds and where
results go all come from `pathways/specs/dementia_mri.yaml`.
"""

from __future__ import annotations

from prefect import flow

from flows.common import already_finished, mark_run_failed, not_eligible, not_measurable, record_and_deliver, start_run, volume_problems
from pathways.model_card import output_problems
from pathways.dementia_mri import assess_brain_study
from pathways.dementia_report import dementia_report_content
from pathways.registry import default_registry
from tasks.imaging import prepare_inputs
from tasks.inference import measure_brain_volumes

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
    if (timer := start_run(run_id)) is None:
        return already_finished(run_id)
    with timer.step("prepare"):
        inputs = prepare_inputs(run_id)
    if inputs.series is None:
        return not_eligible(run_id, "3D T1 series")
    card = registry.card(PATHWAY)
    if problems := [inputs.not_measurable] if inputs.not_measurable else volume_problems(card, inputs, spec.model.name):
        return not_measurable(run_id, PATHWAY, study_key, timer, problems)
    with timer.step("inference"):
        volumetry = measure_brain_volumes(inputs.volume, spec.model)
    if problems := output_problems(card, volumetry.volumes.model_dump()):
        return not_measurable(run_id, PATHWAY, study_key, timer, problems)
    with timer.step("rules"):
        assessment = assess_brain_study(volumetry.volumes, inputs.patient, registry.rules(PATHWAY))
        content = dementia_report_content(assessment)
    return record_and_deliver(PATHWAY, run_id, study_key, timer, content, assessment, inputs.series,
                              volumetry.mask_path, volumetry.model_name, volumetry.model_version)
