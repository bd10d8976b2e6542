"""The heart failure flows end to end under Prefect's test harness: echo and cardiac CT.

One synthetic study each: order → ingest → ready → flow → outputs → file drop, then the
outputs checked with dciodvfy, hl7apy (strict) and the FHIR R4B models, and the result
checked against the generator's truth.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message
from sqlmodel import select

from integrations.db.engine import session_scope
from integrations.db.models import Delivery, Result
from integrations.fhir.report import validate_r4
from pathways.heart_failure import cac_drs
from tests.conftest import dciodvfy_errors, ingest_synthetic_study

pytestmark = pytest.mark.slow


def _run(tmp_path: Path, registry, kind: str, seed: int):
    from flows.dispatch import run_pathway

    study, run_id = ingest_synthetic_study(tmp_path, registry, kind, seed)
    state = asyncio.run(run_pathway(run_id))
    assert state.is_completed() and state.name == "Delivered", state.message
    with session_scope() as s:
        result = s.exec(select(Result)).one()
        deliveries = s.exec(select(Delivery)).all()
    assert {d.destination for d in deliveries} == {"pacs", "ris", "ehr"}
    assert all(d.status == "delivered" for d in deliveries)
    return json.loads(Path(study.truth_path).read_text())["truth"], result


def _check_outputs(data_dir: Path, result_id: str, expect_seg: bool) -> None:
    out = data_dir / "results" / result_id
    names = ["sr.dcm", "seg.dcm"] if expect_seg else ["sr.dcm"]
    assert (out / "seg.dcm").exists() == expect_seg
    for name in names:
        assert dciodvfy_errors(out / name) == [], name
    er7 = (out / "ris" / "oru-r01.hl7").read_bytes().decode()  # keep the \r separators
    assert parse_message(er7, validation_level=VALIDATION_LEVEL.STRICT).validate() is True
    validate_r4(json.loads((out / "ehr" / "report-bundle.json").read_text()))


def test_echo_flow_measures_ef_close_to_truth(prefect_api, radpath_env, registry, tmp_path):
    truth, result = _run(tmp_path, registry, "echo", seed=5)
    a = result.assessment
    assert a["measurable"], a.get("reason")
    assert abs(a["ef_percent"] - truth["ef"] * 100) <= 6.0  # model card: held-out EF error
    assert abs(a["edv_ml"] - truth["edv_ml"]) / truth["edv_ml"] <= 0.15
    assert result.report["conclusion_codes"][0]["code"].startswith("esc2021-lvef-")
    _check_outputs(radpath_env.data_dir, result.id, expect_seg=False)


def test_cardiac_ct_flow_scores_agatston_exactly(prefect_api, radpath_env, registry, tmp_path):
    truth, result = _run(tmp_path, registry, "cardiac-ct", seed=3)
    a = result.assessment
    assert truth["agatston_total"] > 0  # this seed has lesions, so the SEG is exercised
    assert a["agatston_total"] == pytest.approx(truth["agatston_total"], abs=1e-6)
    assert a["cac_drs"] == cac_drs(truth["agatston_total"])
    assert len(a["lesions"]) == len(truth["lesions"])
    assert not a["vessels_labelled"] and "territory labels" in result.report["text"]
    _check_outputs(radpath_env.data_dir, result.id, expect_seg=True)
