"""Lung cancer — chest CT: nodules detected and measured, Brock risk, BTS follow-up, growth
against the patient's prior chest CT, delivered.

The steps and the branching only; what to select, which model, which thresholds and where
results go all come from `pathways/specs/lung_cancer_ct.yaml`.
"""

from __future__ import annotations

from prefect import flow

from flows.common import already_finished, mark_run_failed, not_eligible, not_measurable, record_and_deliver, start_run, volume_problems
from pathways.model_card import output_problems
from integrations.db import surveillance
from integrations.dicom.seg import tracking_uid
from pathways.findings import LungAssessment
from pathways.lung_cancer_ct import assess_lung_study, compare_to_prior
from pathways.lung_cancer_report import lung_report_content, nodule_key
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
    if (timer := start_run(run_id)) is None:
        return already_finished(run_id)
    with timer.step("prepare"):
        inputs = prepare_inputs(run_id)
    if inputs.series is None:
        return not_eligible(run_id, "thin-slice axial chest CT series")
    card = registry.card(PATHWAY)
    if problems := [inputs.not_measurable] if inputs.not_measurable else volume_problems(card, inputs, spec.model.name):
        return not_measurable(run_id, PATHWAY, study_key, timer, problems)
    with timer.step("inference"):
        detection = detect_lung_nodules(inputs.volume, spec.model)
    measured = {"nodule_count": len(detection.nodules), "nodule_long_axis_mm": [n.long_axis_mm for n in detection.nodules]}
    if problems := output_problems(card, measured):
        return not_measurable(run_id, PATHWAY, study_key, timer, problems)
    with timer.step("rules"):
        rules = registry.rules(PATHWAY)
        assessment = assess_lung_study(detection.nodules, inputs.patient, rules).model_copy(update={
            "study_date": inputs.volume.study_date, "lung_centroid_xyz_mm": detection.lung_centroid_xyz_mm})
        if (prior := surveillance.prior_result(run_id)) is not None:  # growth against the patient's prior CT
            earlier = LungAssessment.model_validate(prior.assessment)
            tracking = {a.nodule.index: tracking_uid(prior.result_id, nodule_key(a.nodule.index), a.tracking_uid)
                        for a in earlier.nodules}
            assessment = compare_to_prior(assessment, earlier, prior.study_key, rules, prior_result_id=prior.result_id,
                                          prior_tracking=tracking)
        content = lung_report_content(assessment)
    return record_and_deliver(PATHWAY, run_id, study_key, timer, content, assessment, inputs.series,
                              detection.mask_path, detection.model_name, detection.model_version)
