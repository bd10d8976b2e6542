"""Prepare a pathway's inputs: the right series, loaded once, and the clinical context."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict

from integrations.db import ledger
from integrations.dicom.volume import NotARegularVolume, load_volume
from pathways.findings import PatientContext, SeriesRef, VolumeRef
from pathways.heart_failure import CalciumAssessment, CalciumRules, CineRef
from pathways.registry import default_registry
from pathways.series_selection import SeriesInfo, select_series


class PreparedInputs(BaseModel):
    model_config = ConfigDict(frozen=True)

    series: SeriesRef | None  # None: the study holds no series the pathway can use
    volume: VolumeRef | None
    patient: PatientContext
    passed_over: dict[str, str] = {}  # series UID → reason, for the run summary
    not_measurable: str | None = None  # the series chosen is not a regular volume: why (volume None)


@task(name="prepare-inputs", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def prepare_inputs(run_id: str) -> PreparedInputs:
    """Select the series the spec asks for and load it into the local volume cache."""
    view = ledger.run_view(run_id)
    spec = default_registry().get(view.pathway)
    candidates = [
        SeriesInfo(
            series_uid=s.series_uid,
            modality=s.modality,
            description=s.description,
            slice_thickness_mm=s.slice_thickness_mm,
            orientation=tuple(float(v) for v in s.orientation.split("\\")) if s.orientation else (),
            n_instances=s.n_instances,
        )
        for s in ledger.study_series(view.study_uid)
    ]
    best, reasons = select_series(candidates, spec.series)
    patient = PatientContext(
        age_years=view.age_years,
        sex=view.sex if view.sex in ("F", "M") else "U",
        family_history_lung_cancer=bool(view.clinical_context.get("family_history_lung_cancer", False)),
        emphysema=bool(view.clinical_context.get("emphysema", False)),
    )
    if best is None:
        return PreparedInputs(series=None, volume=None, patient=patient, passed_over=reasons)
    series = SeriesRef(
        study_uid=view.study_uid,
        series_uid=best.series_uid,
        modality=best.modality,
        n_instances=best.n_instances,
        slice_thickness_mm=best.slice_thickness_mm,
        description=best.description,
    )
    try:
        volume = load_volume(best.series_uid)
    except NotARegularVolume as exc:  # never measured wrong: the flow ends not measurable, named
        return PreparedInputs(series=series, volume=None, patient=patient, passed_over=reasons,
                              not_measurable=f"series geometry: {exc}")
    return PreparedInputs(series=series, volume=volume, patient=patient, passed_over=reasons)


# --- Heart failure: echo cine and cardiac CT calcium scoring ----------------------------------
class PreparedCine(BaseModel):
    model_config = ConfigDict(frozen=True)

    series: SeriesRef | None  # None: the study holds no cine the pathway can use
    cine: CineRef | None = None
    passed_over: dict[str, str] = {}
    age_years: int | None = None  # the patient's, for the model card's input domain


@task(name="prepare-echo-cine", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def prepare_echo_cine(run_id: str) -> PreparedCine:
    """Select the US multi-frame series the spec asks for and decode its cine once."""
    from integrations.dicom.multiframe import load_cine

    view = ledger.run_view(run_id)
    spec = default_registry().get(view.pathway)
    candidates = [
        SeriesInfo(series_uid=s.series_uid, modality=s.modality, description=s.description,
                   slice_thickness_mm=s.slice_thickness_mm, orientation=(), n_instances=s.n_instances)
        for s in ledger.study_series(view.study_uid)
    ]
    best, reasons = select_series(candidates, spec.series)
    if best is None:
        return PreparedCine(series=None, passed_over=reasons, age_years=view.age_years)
    series = SeriesRef(study_uid=view.study_uid, series_uid=best.series_uid, modality=best.modality,
                       n_instances=best.n_instances, description=best.description)
    return PreparedCine(series=series, cine=load_cine(best.series_uid), passed_over=reasons, age_years=view.age_years)


@task(name="score-coronary-calcium", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2)
def score_coronary_calcium(volume: VolumeRef, rules: CalciumRules) -> tuple[CalciumAssessment, str]:
    """Agatston score of the cached CT volume (pure rules); lesion label mask (.npy) for the SEG."""
    import hashlib

    import numpy as np

    from integrations.dicom.volume import read_volume
    from integrations.settings import get_settings
    from pathways.heart_failure import score_calcium

    hu = np.asarray(read_volume(volume))
    assessment, mask = score_calcium(hu, volume.spacing_zyx_mm, volume.origin_xyz_mm, rules, kvp_values=volume.kvp_values,
                                    contrast_agent=volume.contrast_agent)
    out = get_settings().work_dir / "masks" / f"calcium-{hashlib.sha256(volume.series_uid.encode()).hexdigest()[:24]}.npy"
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, mask)
    return assessment, str(out)
