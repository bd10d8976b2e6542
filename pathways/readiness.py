"""Study readiness: DICOM has no "study complete" message, so radpath decides from ledger state.

A pathway run waiting on an order becomes ready for a study when (1) the study's accession
number matches the order and the patient keys agree, (2) no image has arrived for the quiet
period (per modality, from settings, else the pathway spec), or the spec's shorter
`completed_quiet_seconds` once the RIS reported the exam completed, or no wait at all once the
modality's MPPS said the acquisition is complete and every instance it lists is here, and (3)
the study holds a series the spec's `series` rule accepts — or, when it never does, the
force-ready timeout has passed. Images after a run started follow the spec's `late_images` policy. Decisions
are pure functions of a snapshot; `integrations/db/studies.py` loads and applies them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from pathways.series_selection import SeriesInfo, select_series
from pathways.spec import PathwaySpec

Action = Literal["wait", "ready", "force-ready", "patient-mismatch"]
LateAction = Literal["none", "wait", "rerun", "ignore"]


class StudyStatus(StrEnum):
    """A study's status in the ledger; the stored strings are the values."""

    RECEIVING = "receiving"  # images arriving; no run has it yet
    READY = "ready"  # handed to its runs (later images are late: the spec's late-image policy decides)
    ORPHANED = "orphaned"  # no order came for it within the orphan window (visible to ops, kept)


@dataclass(frozen=True)
class RunSnapshot:
    run_id: str
    pathway: str
    status: str  # waiting | ready | running | completed | failed | not_eligible | not_measurable
    order_patient_key: str
    started_at: dt.datetime | None = None
    exam_completed_at: dt.datetime | None = None  # the RIS reported the exam completed (ORC-5 CM)


@dataclass(frozen=True)
class Completion:
    """What the modality said through MPPS (PS3.4 Annex F): its steps still in progress, those
    completed, and how many of the instances the completed steps list are here."""

    in_progress: int
    completed: int
    listed: int
    received: int

    @property
    def all_received(self) -> bool:
        return self.completed > 0 and self.in_progress == 0 and 0 < self.listed <= self.received

    def describe(self) -> str:
        if self.in_progress:
            return "MPPS in progress"
        return f"MPPS completed, {self.received} of {self.listed} listed instances received"


@dataclass(frozen=True)
class StudySnapshot:
    study_id: str
    status: str  # receiving | ready | orphaned
    patient_keys: tuple[str, ...]
    first_received_at: dt.datetime
    last_received_at: dt.datetime
    series: tuple[SeriesInfo, ...]
    late_instances: int = 0
    waiting: tuple[RunSnapshot, ...] = ()  # runs of orders with this accession, not yet attached
    attached: tuple[RunSnapshot, ...] = ()  # runs already handed this study
    completion: Completion | None = None  # the modality's MPPS, where it sends one

    @property
    def modalities(self) -> set[str]:
        return {s.modality for s in self.series}


@dataclass(frozen=True)
class RunDecision:
    run_id: str
    action: Action
    reason: str
    # A wait that ends by itself (a quiet period running out): seconds until it does, so the
    # sweep can look again then rather than at its next tick
    due_in_s: float | None = None


@dataclass(frozen=True)
class StudyDecision:
    runs: tuple[RunDecision, ...] = ()
    orphan: bool = False
    late: LateAction = "none"
    rerun_ids: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())


def quiet_period(spec: PathwaySpec, modalities: set[str], overrides: Mapping[str, int]) -> int:
    """Seconds of silence required: the longest per-modality override present, else the spec's."""
    chosen = [overrides[m] for m in modalities if m in overrides]
    return max(chosen) if chosen else spec.readiness.quiet_period_seconds


def decide_run(study: StudySnapshot, run: RunSnapshot, spec: PathwaySpec, now: dt.datetime, overrides: Mapping[str, int]) -> RunDecision:
    """Whether one waiting run can take this study now, and why (not)."""
    if study.patient_keys and run.order_patient_key and run.order_patient_key not in study.patient_keys:
        return RunDecision(run.run_id, "patient-mismatch", "accession matches but the patient does not")
    quiet = quiet_period(spec, study.modalities, overrides)
    silent = (now - study.last_received_at).total_seconds()
    signal = study.completion
    if signal is not None and signal.all_received:
        # The modality's own word, checked against the images: no need to wait for silence.
        because = f"MPPS completed and all {signal.listed} listed instances received"
    elif run.exam_completed_at is not None and min(
            silent, (now - run.exam_completed_at).total_seconds()) >= spec.readiness.completed_quiet_seconds:
        because = f"the RIS reported the exam completed and no image came for {spec.readiness.completed_quiet_seconds} s"
    elif silent < quiet:
        said = f"; {signal.describe()}" if signal is not None and signal.completed + signal.in_progress else ""
        due = quiet - silent
        if run.exam_completed_at is not None:
            said += "; the RIS reported the exam completed"
            due = min(due, spec.readiness.completed_quiet_seconds - min(silent, (now - run.exam_completed_at).total_seconds()))
        return RunDecision(run.run_id, "wait", f"quiet for {silent:.0f} s of {quiet} s{said}", due_in_s=max(due, 0.0))
    else:
        because = "quiet period passed"
    if not spec.readiness.expect_series:
        return RunDecision(run.run_id, "ready", because)
    chosen, _ = select_series(study.series, spec.series)
    if chosen is not None:
        return RunDecision(run.run_id, "ready", f"{because} and the expected series is present")
    age = (now - study.first_received_at).total_seconds()
    if age >= spec.readiness.force_ready_seconds:
        return RunDecision(run.run_id, "force-ready", f"expected series absent after {age:.0f} s; forced")
    return RunDecision(run.run_id, "wait", "expected series not present yet")


def decide_late(study: StudySnapshot, specs: Mapping[str, PathwaySpec], now: dt.datetime, overrides: Mapping[str, int]) -> tuple[LateAction, tuple[str, ...]]:
    """Images that came after the study was handed to runs: re-run started runs once the study
    is quiet again (policy "supersede"), or record and ignore them (policy "ignore")."""
    if study.late_instances == 0 or not study.attached:
        return "none", ()
    started = [
        r for r in study.attached
        if r.pathway in specs and (r.started_at is not None or r.status in {"running", "completed", "failed", "not_eligible", "not_measurable"})
    ]
    if not started:
        return "none", ()  # no run has read the images yet: it will see the late ones too
    if any(r.status == "running" for r in started):
        return "wait", ()  # never re-run under a run that is still reading
    quiet = max(quiet_period(specs[r.pathway], study.modalities, overrides) for r in started)
    if (now - study.last_received_at).total_seconds() < quiet:
        return "wait", ()
    rerun = tuple(r.run_id for r in started if specs[r.pathway].readiness.late_images == "supersede")
    return ("rerun", rerun) if rerun else ("ignore", ())


def decide_study(
    study: StudySnapshot,
    specs: Mapping[str, PathwaySpec],
    now: dt.datetime,
    overrides: Mapping[str, int],
    orphan_after_seconds: int,
) -> StudyDecision:
    """Everything the sweep does to one study: attach runs, orphan it, or handle late images."""
    runs = tuple(decide_run(study, r, specs[r.pathway], now, overrides) for r in study.waiting if r.pathway in specs)
    late, rerun_ids = decide_late(study, specs, now, overrides)
    orphan = (
        study.status == StudyStatus.RECEIVING
        and not study.waiting
        and not study.attached
        and (now - study.last_received_at).total_seconds() >= orphan_after_seconds
    )
    return StudyDecision(runs=runs, orphan=orphan, late=late, rerun_ids=rerun_ids)


def due_in(decisions: Sequence[StudyDecision]) -> float | None:
    """Seconds until the soonest self-ending wait among `decisions` ends, if any."""
    due = [r.due_in_s for d in decisions for r in d.runs if r.action == "wait" and r.due_in_s is not None]
    return min(due) if due else None


def series_infos(rows: Sequence[object]) -> tuple[SeriesInfo, ...]:
    """Ledger Series rows → the pure SeriesInfo that series selection reads."""
    out = []
    for row in rows:
        orientation = tuple(float(v) for v in row.orientation.split("\\") if v) if row.orientation else ()
        out.append(
            SeriesInfo(
                series_uid=row.series_uid,
                modality=row.modality,
                description=row.description,
                slice_thickness_mm=row.slice_thickness_mm,
                orientation=orientation,
                n_instances=row.n_instances,
            )
        )
    return tuple(out)
