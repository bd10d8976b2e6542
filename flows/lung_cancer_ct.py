"""Lung cancer — chest CT: nodules detected and measured, Brock risk, BTS follow-up, delivered.

The steps and the branching only; what to select, which model, which thresholds and where
results go all come from `pathways/specs/lung_cancer_ct.yaml`.
"""

from __future__ import annotations

from prefect import flow

from flows.common import mark_run_failed, not_eligible, record_and_deliver, start_run
from pathways.lung_cancer_ct import assess_lung_study
from pathways.lung_cancer_report import lung_report_content
from pathways.registry import default_registry
from tasks.imaging import prepare_inputs
from tasks.inference import detect_lung_nodules

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
    timer = start_run(run_id)
    with timer.step("prepare"):
        inputs = prepare_inputs(run_id)
    if inputs.series is None:
        return not_eligible(run_id, "thin-slice axial chest CT series")
    with timer.step("inference"):
        detection = detect_lung_nodules(inputs.volume, spec.model)
    with timer.step("rules"):
        assessment = assess_lung_study(detection.nodules, inputs.patient, registry.rules(PATHWAY))
        content = lung_report_content(assessment)
    return record_and_deliver(PATHWAY, run_id, study_key, timer, content, assessment, inputs.series,
                              detection.mask_path, detection.model_name, detection.model_version)
