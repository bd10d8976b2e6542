"""Every control in the hazard log names a test that exists (docs/clinical-safety/hazard-log.md)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOG = ROOT / "docs" / "clinical-safety" / "hazard-log.md"


def test_every_test_the_hazard_log_names_exists():
    named = set(re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", LOG.read_text()))
    assert len(named) >= 20
    missing = [f"{path}::{name}" for path, name in sorted(named)
               if not re.search(rf"^def {name}\(", (ROOT / path).read_text(), re.M)]
    assert missing == []


def test_every_hazard_has_a_control_and_a_residual_risk():
    rows = [line for line in LOG.read_text().splitlines() if re.match(r"\| H-\d\d \|", line)]
    assert len(rows) >= 10
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert len(cells) == 7 and all(cells), row[:40]
