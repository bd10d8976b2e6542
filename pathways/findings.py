"""Value objects that travel between pathway steps: small, typed, free of patient identity.

Everything here is safe to hand to Prefect (task results, artifacts): no NHS number,
name or birth date. Volumes and DICOM files never appear; they travel by reference.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

NoduleType = Literal["solid", "part-solid", "ground-glass"]
Lobe = Literal["RUL", "RML", "RLL", "LUL", "LLL"]
Sex = Literal["F", "M", "U"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SeriesRef(_Frozen):
    """A selected series, by reference: the ledger id and where its files sit."""

    study_uid: str
    series_uid: str
    modality: str
    n_instances: int
    slice_thickness_mm: float | None = None
    description: str = ""


class VolumeRef(_Frozen):
    """A volume loaded once and cached on local disk (npy), with its geometry."""

    series_uid: str
    path: str  # .npy file in the local store, int16 HU / stored values, shape (z, y, x)
    shape_zyx: tuple[int, int, int]
    spacing_zyx_mm: tuple[float, float, float]
    origin_xyz_mm: tuple[float, float, float]  # patient position (LPS) of voxel (0, 0, 0)
    # Row and column direction cosines (DICOM ImageOrientationPatient)
    orientation: tuple[float, float, float, float, float, float] = (1, 0, 0, 0, 1, 0)
    # SOP Instance UIDs of the slices in z order, so outputs can reference them
    sop_instance_uids: tuple[str, ...] = ()
    # The distinct KVP (tube voltage) values of its slices; empty: not recorded (CT)
    kvp_values: tuple[float, ...] = ()
    contrast_agent: str = ""  # Contrast/Bolus Agent (0018,0010) of its slices; empty: none recorded
    burned_in_annotation: str = ""  # YES | NO | "" not recorded (pathways.disclosure.burned_in_value)
    study_date: dt.date | None = None  # Study Date (0008,0020)

    @property
    def content_key(self) -> str:
        """Names exactly these slices of this series: late images that join the series give a
        new key, so nothing computed from the earlier slices is reused for them."""
        digest = hashlib.sha256("\n".join((self.series_uid, *self.sop_instance_uids)).encode()).hexdigest()[:16]
        return f"{self.series_uid}:{digest}"


class Nodule(_Frozen):
    """One detected pulmonary nodule, measured."""

    index: int = Field(ge=1, description="1-based, in descending size order")
    centre_zyx_vox: tuple[float, float, float]
    centre_xyz_mm: tuple[float, float, float]  # patient coordinates (LPS)
    long_axis_mm: float  # longest axial (in-plane) diameter
    short_axis_mm: float  # longest perpendicular in-plane diameter
    mean_diameter_mm: float  # mean of long and short axis (Brock uses longest; BTS uses mean/longest per size rules)
    volume_mm3: float
    nodule_type: NoduleType
    spiculated: bool
    lobe: Lobe
    mean_hu: float
    confidence: float = Field(ge=0, le=1)

    @property
    def upper_lobe(self) -> bool:
        return self.lobe in ("RUL", "LUL")


class PatientContext(_Frozen):
    """Clinical context rules need, without identity: age, sex, history flags."""

    age_years: int | None = None
    sex: Sex = "U"
    family_history_lung_cancer: bool = False
    emphysema: bool = False
    # Clinical indication/history marks that change follow-up (BTS): e.g. known cancer
    known_malignancy: bool = False


class NoduleAssessment(_Frozen):
    """One nodule with its Brock risk and its BTS 2015 management category."""

    nodule: Nodule
    brock_probability: float | None = Field(default=None, ge=0, le=1)
    bts_category: str  # a stable code, e.g. "no-follow-up", "ct-12-months", "ct-3-months", "pet-ct"
    recommendation: str  # human-readable sentence citing the guideline
    # The SR/SEG Tracking UID of the same nodule on the patient's earlier CT (issue 17), so that
    # PACS links its measurements across studies (TID 1500); None: first seen on this study.
    tracking_uid: str | None = None


class NoduleGrowth(_Frozen):
    """One nodule compared with the prior chest CT (pathways.lung_growth)."""

    index: int | None  # in the current study (None: resolved)
    prior_index: int | None  # in the prior study (None: new)
    status: Literal["growing", "stable", "shrinking", "new", "resolved"]
    prior_volume_mm3: float | None = None
    volume_mm3: float | None = None
    prior_long_axis_mm: float | None = None
    long_axis_mm: float | None = None
    volume_change: float | None = None  # (V2 - V1) / V1
    vdt_days: float | None = None  # volume-doubling time, only for a significant change in volume


class LungAssessment(_Frozen):
    """The clinical-rule outcome for one chest CT."""

    nodules: tuple[NoduleAssessment, ...]
    recommendation_code: str  # the most intensive category across nodules
    recommendation: str
    urgent: bool
    urgent_reasons: tuple[str, ...] = ()
    guideline: str = "BTS 2015 pulmonary nodule guideline (Callister et al., Thorax 2015;70:ii1-ii54)"
    # For the next study's comparison (pathways.lung_growth): when this scan was made and where
    # its lungs' centroid lay (patient coordinates, mm).
    study_date: dt.date | None = None
    lung_centroid_xyz_mm: tuple[float, float, float] | None = None
    # The comparison with the prior chest CT of the same patient, where there was one.
    prior_study_key: str | None = None
    prior_result_id: str | None = None  # the ledger result compared with: the SR references its SR
    interval_days: int | None = None
    growth: tuple[NoduleGrowth, ...] = ()
