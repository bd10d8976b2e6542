"""Prepare a pathway's inputs: the right series, loaded once, and the clinical context."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict

from integrations.db import ledger
from integrations.dicom.volume import load_volume
from pathways.findings import PatientContext, SeriesRef, VolumeRef
from pathways.registry import default_registry
from pathways.series_selection import SeriesInfo, select_series


class PreparedInputs(BaseModel):
    model_config = ConfigDict(frozen=True)

    series: SeriesRef | None  # None: the study holds no series the pathway can use
    volume: VolumeRef | None
    patient: PatientContext
    passed_over: dict[str, str] = {}  # series UID → reason, for the run summary


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
    return PreparedInputs(series=series, volume=load_volume(best.series_uid), patient=patient, passed_over=reasons)
