"""AI result against the radiologist's final report: per study, then per model version (issue 16).

Per study (lung): the AI is positive where it measured an actionable nodule (long axis at least
`actionable_mm`, 5 mm: below it BTS 2015 recommends no follow-up); the report is positive where it
affirms a nodule of that size, or a nodule with no size stated. A report that says nothing about
nodules is not comparable and is left out. Sizes agree where the AI's largest nodule is within
`size_tolerance_mm` (2 mm) of the largest the report states.

Per model version: true/false positives and negatives, sensitivity and specificity against the
report with Wilson score 95 % intervals (Wilson EB, J Am Stat Assoc 1927;22:209-12; the interval
recommended for binomial proportions by Brown, Cai and DasGupta, Stat Sci 2001;16:101-33).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from pathways.final_reports import LungReading

Outcome = Literal["TP", "FP", "FN", "TN", "not comparable"]
Z_95 = 1.959964
Z_95_ONE_SIDED = 1.644854


@dataclass(frozen=True)
class StudyConcordance:
    """One AI result beside the report of the same exam."""

    pathway: str
    model_version: str
    trust: str  # the ordering facility (MSH-4 of the order): per-trust figures
    outcome: Outcome
    ai_largest_mm: float | None = None
    reported_largest_mm: float | None = None

    @property
    def size_difference_mm(self) -> float | None:
        if self.ai_largest_mm is None or self.reported_largest_mm is None:
            return None
        return self.ai_largest_mm - self.reported_largest_mm


def lung_concordance(assessment: dict, reading: LungReading, *, pathway: str, model_version: str, trust: str,
                     actionable_mm: float = 5.0) -> StudyConcordance:
    """The lung AI's assessment (as recorded) against the report's reading."""
    sizes = [n["nodule"]["long_axis_mm"] for n in assessment.get("nodules", [])]
    ai_largest = max(sizes) if sizes else None
    ai_positive = ai_largest is not None and ai_largest >= actionable_mm
    reported = reading.largest_mm
    if not reading.mentions_nodules:
        outcome: Outcome = "not comparable"
    else:
        report_positive = reading.nodule_present and (reported is None or reported >= actionable_mm)
        outcome = {(True, True): "TP", (True, False): "FP", (False, True): "FN", (False, False): "TN"}[
            (ai_positive, report_positive)]
    return StudyConcordance(pathway, model_version, trust, outcome, ai_largest, reported)


def compare(pathway: str, model_version: str, trust: str, assessment: dict, reading: dict) -> StudyConcordance | None:
    """One recorded result against its pathway's reading of the report; None where the pathway
    has no comparison (it collects reports only)."""
    if pathway == "lung-cancer-ct":
        return lung_concordance(assessment, LungReading.model_validate(reading), pathway=pathway,
                                model_version=model_version, trust=trust)
    return None


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float] | None:
    """The Wilson score interval of successes/n; None for n = 0."""
    if n == 0:
        return None
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class VersionConcordance:
    """The figures of one pathway, model version and trust."""

    pathway: str
    model_version: str
    trust: str
    tp: int
    fp: int
    fn: int
    tn: int
    not_comparable: int
    size_pairs: int  # studies where both the AI and the report gave a size
    size_within_tolerance: int

    @property
    def sensitivity(self) -> float | None:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else None

    @property
    def specificity(self) -> float | None:
        return self.tn / (self.tn + self.fp) if self.tn + self.fp else None

    @property
    def sensitivity_ci(self) -> tuple[float, float] | None:
        return wilson_interval(self.tp, self.tp + self.fn)

    @property
    def specificity_ci(self) -> tuple[float, float] | None:
        return wilson_interval(self.tn, self.tn + self.fp)


def by_model_version(studies: Iterable[StudyConcordance], size_tolerance_mm: float = 2.0) -> list[VersionConcordance]:
    """Studies counted per (pathway, model version, trust), in that order."""
    groups: dict[tuple[str, str, str], list[StudyConcordance]] = defaultdict(list)
    for s in studies:
        groups[(s.pathway, s.model_version, s.trust)].append(s)
    rows = []
    for (pathway, version, trust), items in sorted(groups.items()):
        count = {o: sum(1 for s in items if s.outcome == o) for o in ("TP", "FP", "FN", "TN", "not comparable")}
        diffs = [s.size_difference_mm for s in items if s.size_difference_mm is not None]
        rows.append(VersionConcordance(pathway, version, trust, count["TP"], count["FP"], count["FN"], count["TN"],
                                       count["not comparable"], len(diffs),
                                       sum(1 for d in diffs if abs(d) <= size_tolerance_mm)))
    return rows


def concordance_table(rows: list[VersionConcordance]) -> list[dict]:
    """The radpath-concordance table (pure): counts, sensitivity and specificity with 95 % CIs."""

    def share(value: float | None, ci: tuple[float, float] | None) -> str:
        return "n/a" if value is None else f"{value:.0%} ({ci[0]:.0%}-{ci[1]:.0%})"

    return [{"pathway": r.pathway, "model version": r.model_version, "trust": r.trust or "-",
             "TP": r.tp, "FP": r.fp, "FN": r.fn, "TN": r.tn, "not comparable": r.not_comparable,
             "sensitivity (95% CI)": share(r.sensitivity, r.sensitivity_ci),
             "specificity (95% CI)": share(r.specificity, r.specificity_ci),
             "size within 2 mm": f"{r.size_within_tolerance}/{r.size_pairs}" if r.size_pairs else "n/a"}
            for r in rows]


@dataclass(frozen=True)
class LowAgreement:
    """A measure of one model version (and trust) below its spec minimum with 95 % confidence."""

    pathway: str
    model_version: str
    trust: str
    measure: Literal["sensitivity", "specificity"]
    value: float
    upper_bound: float  # one-sided 95 % Wilson upper bound
    minimum: float
    cases: int


def low_agreement(rows: Iterable[VersionConcordance], *, min_cases: int, min_sensitivity: float | None,
                  min_specificity: float | None) -> list[LowAgreement]:
    """Each measure whose one-sided 95 % upper bound lies below its minimum, from `min_cases` on:
    a drop the window's evidence shows, not a small count's noise."""
    found = []
    for r in rows:
        for measure, hits, n, minimum in (("sensitivity", r.tp, r.tp + r.fn, min_sensitivity),
                                          ("specificity", r.tn, r.tn + r.fp, min_specificity)):
            if minimum is None or n < min_cases:
                continue
            upper = wilson_interval(hits, n, Z_95_ONE_SIDED)[1]
            if upper < minimum:
                found.append(LowAgreement(r.pathway, r.model_version, r.trust, measure, hits / n, upper, minimum, n))
    return found
