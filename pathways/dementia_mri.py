"""Dementia — brain MRI clinical rules: hippocampal volume percentile for age and sex, atrophy flag,
left/right asymmetry, brain parenchymal fraction.

Pure functions over small value objects; no I/O.

Sources
- Normative hippocampal volumes. The intended reference is the UK Biobank nomograms (Nobis L, et al.
  "Hippocampal volume across age: nomograms derived from over 19,700 people in UK Biobank."
  NeuroImage: Clinical 2019;23:101904), whose percentile curves are published as figures and an
  online tool; their numeric tables were not available to us, so the DEFAULT norms here are a
  documented parametric approximation (replace them in the spec's `rules.norms` with a trust's
  chosen table):
    * mean and SD at the reference age: the normal Malay adult cohort, PMC3773349
      (manual MRI hippocampal volumetry, 1.0 T): left 3.26 cm3
      (SD 0.34), right 3.43 cm3 (SD 0.32), 43 adults aged 50-77, no significant sex difference
      (so the same values for F, M and unknown sex);
    * reference age 63.5 years: the midpoint of that cohort's 50-77 range (its mean age was not
      available to us);
    * age: mean and SD scale by (1 - 0.0085) per year from the reference age, the mean annual
      hippocampal atrophy of healthy adults in Fraser MA, Shaw ME, Cherbuin N. "A systematic
      review and meta-analysis of longitudinal hippocampal atrophy in healthy human ageing."
      NeuroImage 2015;112:364-374 (0.85 %/year);
    * volumes normally distributed at each age: percentile = 100 * Phi((v - mean) / sd).
- Atrophy threshold: below the lower reference limit, the 2.5th percentile (a reference interval
  is the central 95 % of the healthy distribution: CLSI EP28-A3c, 2010).
- Asymmetry index AI = |L - R| / (L + R) x 100 % ("normalised to total volume"), flagged above
  9.8 %, the 90th percentile measured with FSL-FIRST in 2082 adults of the Dallas Heart Study
  (Lucarelli RT, et al., AJNR Am J Neuroradiol, PMC7964497).
- Brain parenchymal fraction BPF = whole-brain volume / intracranial volume (Rudick RA, et al.
  Neurology 1999;53:1698-1704), reported, not graded.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from pathways.findings import PatientContext

Side = Literal["left", "right"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class BrainVolumes(_Frozen):
    """What the volumetry model measured (cm3 = ml); no patient identity."""

    intracranial_ml: float = Field(gt=0)
    brain_ml: float = Field(ge=0)
    hippocampus_left_ml: float = Field(ge=0)
    hippocampus_right_ml: float = Field(ge=0)


class HippocampalNorm(_Frozen):
    """Normal hippocampal volume (cm3) at `reference_age_years`, changing by `annual_change` per year."""

    reference_age_years: float = Field(default=63.5, description="midpoint of 50-77 (PMC3773349)")
    left_mean_ml: float = Field(default=3.26, gt=0, description="PMC3773349: left 3.26 cm3")
    left_sd_ml: float = Field(default=0.34, gt=0, description="PMC3773349: SD 0.34 cm3")
    right_mean_ml: float = Field(default=3.43, gt=0, description="PMC3773349: right 3.43 cm3")
    right_sd_ml: float = Field(default=0.32, gt=0, description="PMC3773349: SD 0.32 cm3")
    annual_change: float = Field(
        default=-0.0085, gt=-0.1, lt=0.1, description="Fraser 2015 NeuroImage 112:364: -0.85 %/year in healthy ageing"
    )

    def at_age(self, side: Side, age_years: float) -> tuple[float, float]:
        """(mean, sd) in cm3 at this age; both scale with the annual change (constant CV)."""
        factor = (1.0 + self.annual_change) ** (age_years - self.reference_age_years)
        if side == "left":
            return self.left_mean_ml * factor, self.left_sd_ml * factor
        return self.right_mean_ml * factor, self.right_sd_ml * factor


class DementiaThresholds(BaseModel):
    """The pathway designer's thresholds and norms; defaults cited in the module docstring."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    atrophy_below_percentile: float = Field(
        default=2.5, gt=0, lt=50, description="CLSI EP28-A3c: lower reference limit = 2.5th percentile"
    )
    asymmetry_above_percent: float = Field(
        default=9.8, gt=0, description="Dallas Heart Study, AJNR (PMC7964497): 90th percentile of |L-R|/(L+R), FSL-FIRST"
    )
    min_age_years: int = Field(default=50, ge=0, description="PMC3773349 norms cover ages 50-77")
    max_age_years: int = Field(default=90, ge=0, description="norms extrapolated by Fraser 2015 rate beyond 77")
    norms: dict[Literal["F", "M", "U"], HippocampalNorm] = Field(
        default_factory=lambda: {s: HippocampalNorm() for s in ("F", "M", "U")},
        description="per sex; PMC3773349 found no significant sex difference, so the defaults are equal",
    )


class HippocampusAssessment(_Frozen):
    side: Side
    volume_ml: float
    percentile: float | None  # None: age unknown or outside the norms' range
    z_score: float | None
    atrophy: bool


class DementiaAssessment(_Frozen):
    volumes: BrainVolumes
    hippocampi: tuple[HippocampusAssessment, HippocampusAssessment]
    asymmetry_percent: float
    asymmetric: bool
    smaller_side: Side
    brain_parenchymal_fraction: float
    atrophy: bool
    recommendation_code: Literal["no-atrophy", "hippocampal-atrophy", "norms-not-applicable"]
    recommendation: str
    urgent: bool = False  # volumetry never triggers urgent referral on its own
    guideline: str = "Hippocampal volume vs age norms (see pathways/dementia_mri.py)"


def normal_cdf(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def hippocampal_z_score(volume_ml: float, side: Side, age_years: float, norm: HippocampalNorm) -> float:
    mean, sd = norm.at_age(side, age_years)
    return (volume_ml - mean) / sd


def hippocampal_percentile(volume_ml: float, side: Side, age_years: float, norm: HippocampalNorm) -> float:
    """Percentile (0-100) of this volume among healthy people of this age (normal model)."""
    return 100.0 * normal_cdf(hippocampal_z_score(volume_ml, side, age_years, norm))


def asymmetry_index_percent(left_ml: float, right_ml: float) -> float:
    """|L - R| / (L + R) x 100 (PMC7964497, 'normalised to total volume'); 0 when both are 0."""
    total = left_ml + right_ml
    return 0.0 if total <= 0 else 100.0 * abs(left_ml - right_ml) / total


def _hippocampus(side: Side, volume: float, patient: PatientContext, t: DementiaThresholds) -> HippocampusAssessment:
    age = patient.age_years
    if age is None or not t.min_age_years <= age <= t.max_age_years:
        return HippocampusAssessment(side=side, volume_ml=volume, percentile=None, z_score=None, atrophy=False)
    norm = t.norms[patient.sex]
    z = hippocampal_z_score(volume, side, age, norm)
    pct = 100.0 * normal_cdf(z)
    return HippocampusAssessment(side=side, volume_ml=volume, percentile=round(pct, 2), z_score=round(z, 3),
                                 atrophy=pct < t.atrophy_below_percentile)


def assess_brain_study(
    volumes: BrainVolumes, patient: PatientContext, thresholds: DementiaThresholds = DementiaThresholds()
) -> DementiaAssessment:
    """Percentile and atrophy flag per hippocampus, asymmetry, BPF and a one-sentence conclusion."""
    t = thresholds
    left = _hippocampus("left", volumes.hippocampus_left_ml, patient, t)
    right = _hippocampus("right", volumes.hippocampus_right_ml, patient, t)
    ai = asymmetry_index_percent(volumes.hippocampus_left_ml, volumes.hippocampus_right_ml)
    asymmetric = ai > t.asymmetry_above_percent
    smaller: Side = "left" if volumes.hippocampus_left_ml <= volumes.hippocampus_right_ml else "right"
    bpf = volumes.brain_ml / volumes.intracranial_ml
    atrophied = [h.side for h in (left, right) if h.atrophy]
    asym = (f" Left/right asymmetry {ai:.1f}% (> {t.asymmetry_above_percent:g}%), {smaller} smaller."
            if asymmetric else "")
    if left.percentile is None:
        code, sentence = "norms-not-applicable", (
            f"Hippocampal volumes measured; age-normative percentiles not applied (age unknown or outside"
            f" {t.min_age_years}-{t.max_age_years} years): clinical interpretation required.{asym}"
        )
    elif atrophied:
        sides = " and ".join(atrophied)
        code, sentence = "hippocampal-atrophy", (
            f"Hippocampal volume below the {t.atrophy_below_percentile:g}th percentile for age and sex ({sides}):"
            f" consistent with hippocampal atrophy; correlate clinically (memory clinic assessment).{asym}"
        )
    else:
        code, sentence = "no-atrophy", (
            f"Hippocampal volumes within the normal range for age and sex (>= {t.atrophy_below_percentile:g}th"
            f" percentile).{asym}"
        )
    return DementiaAssessment(
        volumes=volumes, hippocampi=(left, right), asymmetry_percent=round(ai, 2), asymmetric=asymmetric,
        smaller_side=smaller, brain_parenchymal_fraction=round(bpf, 4), atrophy=bool(atrophied),
        recommendation_code=code, recommendation=sentence,
    )


def compare_to_truth(result_assessment: dict, truth: dict) -> str:
    """One line for the demo table: measured vs synthetic truth volumes (ml, % error)."""
    volumes = result_assessment["volumes"]
    pairs = (("ICV", "intracranial_ml", "intracranial_volume_ml"), ("brain", "brain_ml", "brain_volume_ml"),
             ("HC-L", "hippocampus_left_ml", "hippocampus_left_ml"), ("HC-R", "hippocampus_right_ml", "hippocampus_right_ml"))
    parts = []
    for label, got_key, truth_key in pairs:
        got, want = float(volumes[got_key]), float(truth[truth_key])
        parts.append(f"{label} {got:.{2 if 'HC' in label else 0}f}/{want:.{2 if 'HC' in label else 0}f} ml"
                     f" ({100 * (got - want) / want:+.1f}%)")
    return "; ".join(parts) + f" -> {result_assessment['recommendation_code']}"
