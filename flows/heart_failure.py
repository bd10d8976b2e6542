"""Heart failure — echo (LV ejection fraction) and cardiac CT (coronary calcium score).

Two flows sharing their tasks and their ending, one per spec
(`pathways/specs/heart_failure_echo.yaml`, `pathways/specs/heart_failure_cardiac_ct.yaml`).
Why two and not one flow that branches: a spec holds one series rule and one model, and
the branch is already decided by the order — the registry matches the procedure code and
modality (433236007/US → echo, 426005005/CT → cardiac CT) to a spec when the order arrives,
so a single flow would only re-derive that choice. Each flow stays a straight line of steps.
"""

from __future__ import annotations

from prefect import flow

from flows.common import already_finished, disclosure_problems, mark_run_failed, not_eligible, not_measurable, record_and_deliver, start_run
from pathways.model_card import input_problems, output_problems
from pathways.heart_failure import assess_lv_function
from pathways.heart_failure_report import calcium_report_content, echo_report_content
from pathways.registry import default_registry
from tasks.imaging import prepare_echo_cine, prepare_inputs, score_coronary_calcium
from tasks.inference import segment_echo_lv

ECHO = "heart-failure-echo"
CARDIAC_CT = "heart-failure-cardiac-ct"
CALCIUM_RULES_NAME = "radpath-agatston"  # the "model" of a rules-only result (SR observer, result identity)


@flow(name=ECHO, flow_run_name="heart-failure-echo/{study_key}", on_failure=[mark_run_failed],
      on_crashed=[mark_run_failed], persist_result=False)
async def heart_failure_echo(run_id: str, study_key: str):  # noqa: ANN201 - returns a Prefect state
    """A4C cine → LV masks per frame → EDV, ESV, LVEF → ESC 2021 category → SR, FHIR, ORU."""
    registry = default_registry()
    spec, rules = registry.get(ECHO), registry.rules(ECHO)
    if (timer := start_run(run_id)) is None:
        return already_finished(run_id)
    with timer.step("prepare"):
        inputs = prepare_echo_cine(run_id)
    if inputs.series is None:
        return not_eligible(run_id, "echo cine")
    card, cine = registry.card(ECHO), inputs.cine
    problems = input_problems(card, modality=inputs.series.modality, spacing_mm=(cine.cm_per_pixel * 10,),
                              matrix=(cine.rows, cine.columns), frames=cine.n_frames, age_years=inputs.age_years
                              ) + disclosure_problems(spec.model.name, inputs.series.modality, cine.burned_in_annotation)
    if problems:
        return not_measurable(run_id, ECHO, study_key, timer, problems)
    with timer.step("inference"):
        segmentation = segment_echo_lv(inputs.cine, spec.model, rules)
    with timer.step("rules"):
        assessment = assess_lv_function(segmentation.volumes, rules)
    if problems := output_problems(card, assessment.model_dump(include={"edv_ml", "esv_ml", "ef_percent", "long_axis_ed_cm"})):
        return not_measurable(run_id, ECHO, study_key, timer, problems)
    content = echo_report_content(assessment)
    # No SEG: the cine has no frame of reference for a highdicom SEG; the SR carries the measurements.
    return record_and_deliver(ECHO, run_id, study_key, timer, content, assessment, inputs.series, None,
                               segmentation.model_name, segmentation.model_version)


@flow(name=CARDIAC_CT, flow_run_name="heart-failure-cardiac-ct/{study_key}", on_failure=[mark_run_failed],
      on_crashed=[mark_run_failed], persist_result=False)
async def heart_failure_cardiac_ct(run_id: str, study_key: str):  # noqa: ANN201 - returns a Prefect state
    """Calcium-scoring CT → Agatston per lesion (rules, no model) → CAC-DRS → SR + SEG, FHIR, ORU."""
    registry = default_registry()
    spec, rules = registry.get(CARDIAC_CT), registry.rules(CARDIAC_CT)
    if (timer := start_run(run_id)) is None:
        return already_finished(run_id)
    with timer.step("prepare"):
        inputs = prepare_inputs(run_id)
    if inputs.series is None:
        return not_eligible(run_id, "3 mm axial calcium-scoring series")
    if inputs.not_measurable:  # rules only, no model card: the geometry still gates the score
        return not_measurable(run_id, CARDIAC_CT, study_key, timer, [inputs.not_measurable])
    with timer.step("rules"):
        assessment, mask_path = score_coronary_calcium(inputs.volume, rules)
        content = calcium_report_content(assessment) if assessment.measurable else None
    if content is None:  # another tube voltage, or contrast: no score is a conclusion
        return not_measurable(run_id, CARDIAC_CT, study_key, timer, [assessment.reason])
    mask = mask_path if assessment.lesions else None
    return record_and_deliver(CARDIAC_CT, run_id, study_key, timer, content, assessment, inputs.series, mask,
                               CALCIUM_RULES_NAME, spec.version)
