"""The radiologist's final report, as radpath reads it back (issue 16: the evidence loop).

A `FinalReport` is what the RIS sends when the radiologist signs the exam (HL7 ORU^R01, OBR-25
F or C). Each pathway reads what it can compare with its AI result from the report's text
(`READERS`); the reading, not the text, is what the ledger keeps beyond the trust's retention.

Reading a report is rule-based and sentence by sentence, in the manner of NegEx (Chapman et
al., J Biomed Inform 2001;34:301-10): a finding term in a sentence that opens with a negation
cue ("no", "without", "negative for", "no evidence of") or closes with one ("is not seen",
"has resolved") is negated; a hedge ("possible", "probable", "cannot be excluded") is kept as
a positive mention, as radiologists use it for findings they want followed. medspaCy's
ConText implements the same algorithm; its rules, not a statistical model, are what matters
here, and a short rule set keeps radpath free of a spaCy model download on a trust's host.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict


@dataclass(frozen=True)
class FinalReport:
    """One signed radiology report from the RIS (identity data stays in the ledger)."""

    sending_application: str
    sending_facility: str
    control_id: str
    message_type: str
    accession_number: str
    placer_order_number: str
    result_status: Literal["final", "corrected"]  # OBR-25 F / C (HL7 table 0123)
    text: str  # the report's narrative (OBX TX/FT values, in order)
    reported_at: dt.datetime | None = None  # OBR-22 results report/status change time


class LungReading(BaseModel):
    """What a chest CT report says about pulmonary nodules."""

    model_config = ConfigDict(frozen=True)

    mentions_nodules: bool  # the report says anything about nodules (negated or not)
    nodule_present: bool  # at least one nodule affirmed (hedged counts)
    sizes_mm: tuple[float, ...] = ()  # the affirmed nodules' stated sizes, largest first
    follow_up_days: int | None = None  # the shortest CT follow-up interval the report asks for (days)

    @property
    def largest_mm(self) -> float | None:
        return self.sizes_mm[0] if self.sizes_mm else None


_SENTENCE = re.compile(r"(?<=[.;:\n])\s+|\n+")
_NODULE = re.compile(r"\b(nodules?|nodularity|mass(?:es)?|opacit(?:y|ies)|lesions?)\b", re.I)
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*(?:x\s*\d+(?:\.\d+)?\s*)?(mm|cm)\b", re.I)
_PRE_NEGATION = re.compile(
    r"\b(no|without|negative for|free of|absence of|no evidence of|no suspicious|nor|there are no|there is no)\b", re.I)
_POST_NEGATION = re.compile(
    r"\b(is|are|was|were)?\s*(not (seen|identified|present|demonstrated|visible)|no longer (seen|visible|present)|"
    r"has resolved|have resolved|resolved)\b", re.I)
_CLEAR = re.compile(r"\blungs? (are|is) clear\b", re.I)
# "CT in 3 months", "repeat CT at 12 months", "follow-up CT in 6 weeks", "3-month CT", "CT in one year"
_NUMBER = r"(\d+|one|two|three|six|twelve)"
_FOLLOW_UP = re.compile(
    rf"\b(?:(?:follow[- ]?up|repeat|interval|surveillance)\s+)?CT(?:\s+\w+){{0,3}}?\s+(?:in|at|after)\s+{_NUMBER}\s*"
    rf"(weeks?|months?|years?)\b|\b{_NUMBER}[- ](week|month|year)\s+(?:follow[- ]?up\s+)?CT\b", re.I)
_WORDS = {"one": 1, "two": 2, "three": 3, "six": 6, "twelve": 12}
_DAYS = {"week": 7, "month": 365.25 / 12, "year": 365.25}
_NOT_NEEDED = re.compile(r"\b(no|not)\b[^.]*\b(follow[- ]?up|further (CT|imaging))\b|"
                         r"\b(not|no longer) (required|needed|necessary|indicated)\b", re.I)


def follow_up_days(text: str) -> int | None:
    """The shortest CT follow-up interval a report asks for, in days (a month is 365.25/12 days,
    so 3 months = 91 days, the lung spec's CT at 3 months); None where it asks for none."""
    found = []
    for sentence in _sentences(text):
        if _NOT_NEEDED.search(sentence):
            continue
        for m in _FOLLOW_UP.finditer(sentence):
            number, unit = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
            count = int(number) if number.isdigit() else _WORDS[number.lower()]
            found.append(round(count * _DAYS[unit.lower().rstrip("s")]))
    return min(found) if found else None


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.split(text) if s.strip()]


def _negated(sentence: str, term: re.Match) -> bool:
    before, after = sentence[:term.start()], sentence[term.end():]
    # a negation cue within the five words before the term, or a closing cue after it
    window = " ".join(before.split()[-5:])
    return bool(_PRE_NEGATION.search(window)) or bool(_POST_NEGATION.search(after))


def read_lung_report(text: str) -> LungReading:
    """Nodules a chest CT report affirms or denies, and their stated sizes (mm; cm converted)."""
    mentions, present, sizes = False, False, []
    for sentence in _sentences(text):
        if _CLEAR.search(sentence):
            mentions = True
        term = _NODULE.search(sentence)
        if term is None:
            continue
        mentions = True
        if _negated(sentence, term):
            continue
        present = True
        for value, unit in _SIZE.findall(sentence):
            size = float(value) * (10.0 if unit.lower() == "cm" else 1.0)
            if 0 < size < 200:
                sizes.append(size)
    return LungReading(mentions_nodules=mentions, nodule_present=present,
                       sizes_mm=tuple(sorted(sizes, reverse=True)), follow_up_days=follow_up_days(text))


# Pathway → how its reports are read (a pathway without one collects reports, compares nothing).
READERS: dict[str, Callable[[str], BaseModel]] = {"lung-cancer-ct": read_lung_report}


def readings(pathways: list[str], text: str) -> dict[str, dict]:
    """The report read by each pathway of the order that can read it (JSON-ready)."""
    return {p: READERS[p](text).model_dump(mode="json") for p in pathways if p in READERS}
