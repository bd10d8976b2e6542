"""Choose the series a pathway's model needs, from what the study holds (pure)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict

from pathways.spec import SeriesRule


class SeriesInfo(BaseModel):
    model_config = ConfigDict(frozen=True)

    series_uid: str
    modality: str
    description: str = ""
    slice_thickness_mm: float | None = None
    orientation: tuple[float, ...] = ()  # ImageOrientationPatient (6 direction cosines)
    n_instances: int = 0


def plane_of(orientation: Sequence[float]) -> str:
    """'axial' | 'coronal' | 'sagittal' | 'oblique' from the slice normal (row × column)."""
    if len(orientation) != 6:
        return "unknown"
    r, c = orientation[:3], orientation[3:]
    normal = (r[1] * c[2] - r[2] * c[1], r[2] * c[0] - r[0] * c[2], r[0] * c[1] - r[1] * c[0])
    norm = math.sqrt(sum(v * v for v in normal)) or 1.0
    axis = max(range(3), key=lambda i: abs(normal[i]))
    if abs(normal[axis]) / norm < 0.9:  # more than ~25° off a main plane
        return "oblique"
    return ("sagittal", "coronal", "axial")[axis]


def rejection_reason(series: SeriesInfo, rule: SeriesRule) -> str | None:
    """Why a series does not fit the rule, or None when it does."""
    if series.modality != rule.modality:
        return f"modality {series.modality} is not {rule.modality}"
    if rule.orientation != "any" and plane_of(series.orientation) != rule.orientation:
        return f"plane {plane_of(series.orientation)} is not {rule.orientation}"
    if rule.max_slice_thickness_mm is not None and (
        series.slice_thickness_mm is None or series.slice_thickness_mm > rule.max_slice_thickness_mm
    ):
        return f"slice thickness {series.slice_thickness_mm} mm exceeds {rule.max_slice_thickness_mm} mm"
    if series.n_instances < rule.min_instances:
        return f"{series.n_instances} instances, fewer than {rule.min_instances}"
    if rule.description_include and not any(re.search(p, series.description) for p in rule.description_include):
        return "description matches no include pattern"
    if any(re.search(p, series.description) for p in rule.description_exclude):
        return "description matches an exclude pattern"
    return None


def select_series(candidates: Sequence[SeriesInfo], rule: SeriesRule) -> tuple[SeriesInfo | None, dict[str, str]]:
    """The best fitting series (or None) and, for every other series, why it was passed over."""
    reasons = {s.series_uid: r for s in candidates if (r := rejection_reason(s, rule))}
    fitting = [s for s in candidates if s.series_uid not in reasons]
    if not fitting:
        return None, reasons
    if rule.prefer == "thinnest":
        key = lambda s: (s.slice_thickness_mm or math.inf, -s.n_instances)  # noqa: E731
    else:
        key = lambda s: (-s.n_instances, s.slice_thickness_mm or math.inf)  # noqa: E731
    best, *others = sorted(fitting, key=key)
    reasons.update({s.series_uid: "a better fitting series was chosen" for s in others})
    return best, reasons
