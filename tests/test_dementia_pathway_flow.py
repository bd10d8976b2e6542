"""The dementia MRI flow end to end under Prefect's test harness, on one synthetic brain.

order → ingest → ready → flow → SR/SEG/FHIR/ORU → file drop; outputs checked by dciodvfy,
hl7apy (strict) and the FHIR R4B models; the measured volumes checked against the phantom truth.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pydicom
import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message
from sqlmodel import select

from integrations.db.engine import session_scope
from integrations.db.models import Delivery, PathwayRun, Result
from integrations.fhir.report import validate_r4
from pathways.dementia_mri import compare_to_truth
from tests.conftest import dciodvfy_errors, ingest_synthetic_study

pytestmark = pytest.mark.slow


def test_brain_mri_flow_delivers_valid_outputs(prefect_api, radpath_env, registry, tmp_path):
    from flows.dispatch import run_pathway

    study, run_id = ingest_synthetic_study(tmp_path, registry, "brain-mri", 21)

    state = asyncio.run(run_pathway(run_id))
    assert state.is_completed() and state.name == "Delivered", state.message
    with session_scope() as s:
        result = s.exec(select(Result)).one()
        deliveries = s.exec(select(Delivery)).all()
        assert s.get(PathwayRun, run_id).status == "completed"
    assert {d.destination for d in deliveries} == {"pacs", "ris", "ehr"}
    assert all(d.status == "delivered" for d in deliveries)

    truth = json.loads(Path(study.truth_path).read_text())["truth"]
    volumes = result.assessment["volumes"]
    assert abs(volumes["intracranial_ml"] - truth["intracranial_volume_ml"]) / truth["intracranial_volume_ml"] < 0.01
    for side in ("left", "right"):
        key = f"hippocampus_{side}_ml"
        assert abs(volumes[key] - truth[key]) / truth[key] < 0.03
    assert "-> " in compare_to_truth(result.assessment, truth)

    out = radpath_env.data_dir / "results" / result.id
    seg_path, sr_path = out / "seg.dcm", out / "sr.dcm"
    assert dciodvfy_errors(seg_path) == [] and dciodvfy_errors(sr_path) == []
    seg = pydicom.dcmread(seg_path)
    assert [(i.SegmentNumber, i.SegmentLabel) for i in seg.SegmentSequence] == [(1, "Left hippocampus"), (2, "Right hippocampus")]
    oru = (out / "ris" / "oru-r01.hl7").read_bytes().decode()  # segments end in \r: no newline translation
    message = parse_message(oru, validation_level=VALIDATION_LEVEL.STRICT)
    assert message.validate() is True
    assert "121415^" in oru  # percentile ranking OBX (synthetic ages 55-90 are within the norms)
    validate_r4(json.loads((out / "ehr" / "report-bundle.json").read_text()))
