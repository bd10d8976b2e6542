"""The pathway spec: what a pathway designer declares and changes without touching plumbing.

One YAML file per pathway in `pathways/specs/`. Unknown keys are errors (`extra="forbid"`),
so a typo never silently changes clinical behaviour.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pathways.codes import as_fhir_system
from pathways.report import Code

Mode = Literal["shadow", "qa", "clinical"]
# dicom-kos: key images (Key Object Selection); dicom-sc: a rendered summary (Secondary Capture)
# for viewers without SR/SEG support, labelled AI output and preliminary.
OutputFormat = Literal["dicom-sr", "dicom-seg", "dicom-kos", "dicom-sc", "fhir-bundle", "hl7-oru"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Eligibility(_Strict):
    """Which orders the pathway claims."""

    procedure_codes: tuple[Code, ...] = Field(min_length=1)
    modalities: tuple[str, ...] = Field(min_length=1)
    min_age_years: int | None = Field(default=None, ge=0)
    max_age_years: int | None = Field(default=None, ge=0)


class SeriesRule(_Strict):
    """Which series of a study the model needs (first matching rule wins ties by `prefer`)."""

    modality: str
    orientation: Literal["axial", "coronal", "sagittal", "any"] = "axial"
    max_slice_thickness_mm: float | None = Field(default=None, gt=0)
    min_instances: int = Field(default=1, ge=1)
    description_include: tuple[str, ...] = ()  # regular expressions, any must match
    description_exclude: tuple[str, ...] = ()  # regular expressions, none may match
    prefer: Literal["thinnest", "most-instances"] = "thinnest"

    @field_validator("description_include", "description_exclude")
    @classmethod
    def _compiles(cls, patterns: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in patterns:
            re.compile(pattern)
        return patterns


class ModelRef(_Strict):
    name: str
    path: str  # relative to the project root, or absolute
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class Destination(_Strict):
    """Where results go, by name. How a name is reached (file drop, MLLP, FHIR, DICOM) is
    the trust's configuration (`RADPATH_DESTINATIONS` / radpath.toml), not the pathway's."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    formats: tuple[OutputFormat, ...] = Field(min_length=1)
    clinical: bool = True  # False: an evaluation destination that also receives shadow results
    # Which result statuses (pathways.result_status) this destination may receive. Without
    # "preliminary" it gets only a result a named reviewer accepted: its rows are held for
    # review in every mode (a trust that wants no unreviewed AI output in its EHR).
    statuses: tuple[Literal["preliminary", "final"], ...] = ("preliminary", "final")

    @model_validator(mode="after")
    def _statuses(self) -> Destination:
        if "final" not in self.statuses:
            raise ValueError(f"destination {self.name}: statuses must include final (a reviewed result)")
        if not self.clinical and "preliminary" not in self.statuses:
            raise ValueError(f"destination {self.name}: an evaluation destination is never reviewed; it takes preliminary")
        return self

    @property
    def final_only(self) -> bool:
        return "preliminary" not in self.statuses


class Review(_Strict):
    required: bool = False
    timeout_minutes: int = Field(default=24 * 60, gt=0)


class Sla(_Strict):
    """Turnaround targets, order received → result delivered, per lane (pathways.orders.urgency)."""

    turnaround_minutes: int = Field(gt=0, description="order received → result delivered (routine orders)")
    urgent_turnaround_minutes: int | None = Field(
        default=None, gt=0, description="the same for urgent orders (stat, asap, urgent); default: turnaround_minutes")

    def target_minutes(self, lane: str) -> int:
        """The target of a lane, "routine" or "urgent"."""
        if lane == "urgent" and self.urgent_turnaround_minutes is not None:
            return self.urgent_turnaround_minutes
        return self.turnaround_minutes


class Readiness(_Strict):
    """When a study counts as complete: quiet for `quiet_period_seconds` (or, once the RIS has
    reported the exam completed, `completed_quiet_seconds`; or not at all once the modality's
    MPPS listed instances have all arrived) and holding a series the `series` rule accepts, or,
    failing the series, quiet and older than `force_ready_seconds`.
    `late_images`: what images arriving after a run started do (re-run and supersede the
    earlier run, or be recorded and otherwise ignored)."""

    quiet_period_seconds: int = Field(default=60, ge=0)
    # Once the RIS reports the exam completed (HL7 ORC-5 "CM"), the silence still required after
    # both that report and the last image: it says the exam ended, not how many images to expect
    completed_quiet_seconds: int = Field(default=5, ge=0)
    expect_series: bool = True
    force_ready_seconds: int = Field(default=30 * 60, ge=0)
    late_images: Literal["supersede", "ignore"] = "supersede"


@dataclass(frozen=True)
class FollowUp:
    """A follow-up scan one result's recommendation calls for: `days` after the baseline study,
    escalated by the failsafe `grace_days` after that."""

    recommendation_code: str
    days: int
    grace_days: int


class Surveillance(_Strict):
    """Follow-up scans the pathway's recommendations call for, and how long after the due date
    a missing follow-up is escalated (the failsafe, `flows/surveillance.py`).

    `follow_up_days`: recommendation code (the assessment's `recommendation_code`) → days from the
    baseline study to the follow-up scan. Empty: the pathway opens no surveillance plans."""

    follow_up_days: dict[str, int] = Field(default_factory=dict)
    grace_days: int = Field(default=28, ge=0, description="after the due date, before the failsafe alerts (trust policy)")
    realert_days: int = Field(default=7, ge=1, description="a plan still overdue is alerted again this often (trust policy)")
    discharge_codes: list[str] = Field(default_factory=list,
                                       description="recommendation codes of a follow-up that end surveillance")

    def outcome(self, recommendation_code: str | None) -> str:
        """Where the follow-up's recommendation leaves the patient: "on surveillance" (another
        follow-up scan), "discharged" (a `discharge_codes` code), else "referred" (anything
        beyond surveillance: clinical review, PET-CT, a suspected cancer pathway)."""
        if self.follow_up(recommendation_code) is not None:
            return "on surveillance"
        return "discharged" if recommendation_code in self.discharge_codes else "referred"

    @field_validator("follow_up_days")
    @classmethod
    def _positive(cls, days: dict[str, int]) -> dict[str, int]:
        bad = sorted(code for code, n in days.items() if n <= 0)
        if bad:
            raise ValueError(f"follow-up days must be positive: {', '.join(bad)}")
        return days

    def follow_up(self, recommendation_code: str | None) -> FollowUp | None:
        """The follow-up a recommendation code calls for; None where it calls for none."""
        days = self.follow_up_days.get(recommendation_code or "")
        return FollowUp(recommendation_code, days, self.grace_days) if days else None


class Monitoring(_Strict):
    """The evidence loop's alert (flows/monitor.py): agreement of each model version with the
    radiologists' signed reports over the last `window_days`. An alert says a measure is below
    its minimum with 95 % one-sided confidence (the Wilson interval's upper bound is below it), and
    only once at least `min_cases` studies count towards that measure. Empty minimums: figures only."""

    window_days: int = Field(default=30, ge=1)
    min_cases: int = Field(default=30, ge=1, description="studies counting towards a measure before it can alert")
    min_sensitivity: float | None = Field(default=None, gt=0, lt=1)
    min_specificity: float | None = Field(default=None, gt=0, lt=1)


class PathwaySpec(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    version: str
    title: str
    flow: str = Field(description="module:function of the Prefect flow")
    mode: Mode = "clinical"
    eligibility: Eligibility
    series: SeriesRule
    readiness: Readiness = Readiness()
    model: ModelRef | None = Field(default=None, description="None: a rules-only pathway (e.g. Agatston scoring)")
    rules_model: str = Field(description="module:Class of the pydantic model that validates `rules`")
    rules: dict[str, Any] = Field(default_factory=dict, description="the pathway's thresholds (defaults: the cited guideline)")
    review: Review = Review()
    destinations: tuple[Destination, ...] = Field(min_length=1)
    sla: Sla
    surveillance: Surveillance = Surveillance()
    monitoring: Monitoring = Monitoring()
    citations: dict[str, str] = Field(default_factory=dict, description="source of each code and threshold")

    def claims(self, procedure_code: str, modality: str, system: str = "") -> bool:
        """True for a claimed code (of the same coding system, where the order names one: HL7 v2
        "SCT" and FHIR "http://snomed.info/sct" are the same) and a claimed modality."""
        return any(c.code == procedure_code and (not system or as_fhir_system(system) == as_fhir_system(c.system))
                   for c in self.eligibility.procedure_codes) and (not modality or modality in self.eligibility.modalities)


def load_spec(path: Path) -> PathwaySpec:
    """Parse one spec file; raises pydantic.ValidationError or yaml.YAMLError."""
    data = yaml.safe_load(path.read_text())
    return PathwaySpec.model_validate(data)
