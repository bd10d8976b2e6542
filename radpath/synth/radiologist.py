"""A simulated radiologist: the signed report of a synthetic chest CT, written from its truth
(issue 16: known truth for the evidence loop).

The report is free text in the phrasings UK chest CT reports use (affirmed, hedged and negated
nodules, "unchanged", sizes in mm or cm, findings that are not nodules) and goes to radpath as the
RIS sends it: an HL7 v2.4 ORU^R01 (OBR-25 F), the narrative in OBX TX segments under LOINC 18782-3
(Radiology Study observation (narrative)). With probability `disagreement` the radiologist differs
from the truth: misses the largest nodule, or reports one where there is none. `what_was_written`
is the truth of the report itself, which a reader of the text must recover.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_LOBES = {"RUL": "right upper lobe", "RML": "right middle lobe", "RLL": "right lower lobe",
          "LUL": "left upper lobe", "LLL": "left lower lobe"}
_TYPES = {"solid": "solid", "part-solid": "part-solid", "ground-glass": "ground-glass"}
_POSITIVE = (
    "There is {a} {d} mm {t} nodule in the {lobe}.",
    "{Lobe}: {d} mm {t} nodule.",
    "{A_t} nodule measuring {d} mm is seen in the {lobe}.",
    "Probable {d} mm {t} nodule in the {lobe}.",
    "{t_cap} nodule in the {lobe}, {cm} cm.",
    "{d} x {d2} mm {t} nodule in the {lobe}, unchanged in appearance.",
)
_NEGATIVE = ("No pulmonary nodules.", "No suspicious pulmonary nodule or mass is seen.", "The lungs are clear.",
             "No evidence of pulmonary nodule.")
_OTHER = ("Heart size is normal.", "No pleural effusion.", "No mediastinal or hilar lymphadenopathy by size criteria.",
          "The ascending aorta measures 34 mm.", "Mild centrilobular emphysema in both upper lobes.",
          "No destructive bone lesion.")
REPORTED_MIN_MM = 3  # a radiologist does not report what is smaller


@dataclass(frozen=True)
class WrittenReport:
    text: str
    nodule_present: bool  # what the report affirms
    largest_mm: float | None  # the largest size it states
    disagrees: bool  # the radiologist departed from the image truth


def write_chest_ct_report(nodules: list[dict], rng: np.random.Generator, disagreement: float = 0.0) -> WrittenReport:
    """The report of a chest CT whose true nodules are `nodules` (truth.json's entries)."""
    seen = sorted((n for n in nodules if n["diameter_mm"] >= REPORTED_MIN_MM), key=lambda n: -n["diameter_mm"])
    disagrees = bool(rng.random() < disagreement)
    if disagrees:
        seen = seen[1:] if seen else [{"diameter_mm": float(rng.uniform(5, 12)), "nodule_type": "solid",
                                       "lobe": str(rng.choice(list(_LOBES)))}]
    findings, sizes = [], []
    for n in seen:
        d = max(REPORTED_MIN_MM, int(round(n["diameter_mm"] + rng.normal(0, 0.7))))
        sizes.append(float(d))
        lobe = _LOBES[n["lobe"]]
        template = str(rng.choice(_POSITIVE))
        kind = _TYPES[n["nodule_type"]]
        findings.append(template.format(d=d, d2=max(1, d - 1), t=kind, lobe=lobe, a="an" if str(d)[0] == "8" or d in (11, 18) else "a",
                                        A_t=("An " if kind[0] in "aeiou" else "A ") + kind,
                                        Lobe=lobe[:1].upper() + lobe[1:], t_cap=kind.capitalize(),
                                        cm=f"{d / 10:.1f}"))
    if seen and rng.random() < 0.5:
        findings.append("No other pulmonary nodules.")
    if not seen:
        findings.append(str(rng.choice(_NEGATIVE)))
    other = list(rng.choice(_OTHER, size=2, replace=False))
    impression = ("Pulmonary nodule(s) as described; management as per BTS guidance." if seen
                  else "No pulmonary nodule.")
    text = "\n".join(["CT CHEST", "Findings:", *findings, *other, "Impression:", impression])
    largest = max(sizes) if sizes else None
    return WrittenReport(text, bool(seen), largest, disagrees)


def _escape(text: str) -> str:
    return (text.replace("\\", "\\E\\").replace("|", "\\F\\").replace("^", "\\S\\").replace("&", "\\T\\")
            .replace("~", "\\R\\"))


def report_message(order_path: Path, report: WrittenReport, *, control_id: str, signed_at: dt.datetime,
                   status: str = "F") -> str:
    """The RIS's ORU^R01 of the exam the ORM^O01 at `order_path` ordered (same PID, placer, accession)."""
    order = {s[:3]: s for s in Path(order_path).read_bytes().decode().split("\r") if s}
    orc, obr = order["ORC"].split("|"), order["OBR"].split("|")
    obr += [""] * (26 - len(obr))
    when = signed_at.strftime("%Y%m%d%H%M%S")
    segments = [
        f"MSH|^~\\&|RIS|RXX01|RADPATH|RADPATH|{when}||ORU^R01^ORU_R01|{control_id}|P|2.4",
        order["PID"],
        f"ORC|RE|{orc[2]}|{orc[3] if len(orc) > 3 else ''}||CM",
        "|".join(["OBR", "1", obr[2], obr[3], obr[4]] + [""] * 13 + [obr[18]] + ["", "", ""] + [when, "", "", status]),
    ]
    for i, line in enumerate(report.text.split("\n"), start=1):
        segments.append(f"OBX|{i}|TX|18782-3^Radiology Study observation (narrative)^LN||{_escape(line)}||||||{status}")
    return "\r".join(segments) + "\r"
