"""An urgent AI finding raises the exam's priority at the RIS, in the way the trust's RIS takes it
(an ORM^O01 XO order update, or OBR-27 in the ORU^R01), and moves it ahead of routine exams on
the RIS's reporting worklist; an EHR that takes FHIR gets a stat Task for the order; a shadow-mode
pathway never changes priority.

The RIS is radpath's RIS simulator (an MLLP server keeping a worklist) over real sockets; the
messages are parsed by python-hl7, an HL7 library radpath does not use to write them. The EHR is
a real FHIR R4 server (SEKMET) on loopback.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import hl7
import httpx
import pytest

from integrations.delivery.config import MllpDestination
from integrations.delivery.mllp import send_oru
from integrations.hl7.oru import build_oru_r01
from integrations.hl7.priority import build_priority_update, priority_control_id
from integrations.settings import reset_settings
from pathways.spec import Destination
from radpath.ris_simulator import RisSimulator
from tests.conftest import ingest_synthetic_study
from tests.fhir_server import fhir_server  # noqa: F401 - fixture: a real FHIR R4 server
from tests.test_outputs import assessment, content, ctx  # noqa: F401 - fixtures: a lung report and its context

URGENT_CHEST_CT_SEED = 2026  # the demo's first chest CT: a nodule taking the BTS PET-CT branch (urgent)


@pytest.mark.parametrize("version", ["2.4", "2.5.1"])
def test_the_order_update_names_the_same_order_with_priority_stat(content, ctx, version):  # noqa: F811
    text = build_priority_update(ctx, priority="S", version=version, control_id=priority_control_id(ctx.result_id, "ris"))
    message = hl7.parse(text)
    assert str(message.segment("MSH")[9]) == "ORM^O01^ORM_O01" and str(message.segment("MSH")[12]) == version
    orc, obr = message.segment("ORC"), message.segment("OBR")
    assert str(orc[1]) == "XO"  # HL7 table 0119: change order
    assert str(orc[7][0][5]) == "S" and str(obr[27][0][5]) == "S"  # TQ.6 priority, HL7 table 0027
    oru = hl7.parse(build_oru_r01(content, ctx, version=version))
    for number in (2, 3):  # the same placer and filler as the result: the RIS finds its exam
        assert str(orc[number]) == str(oru.segment("ORC")[number]) and str(obr[number]) == str(oru.segment("OBR")[number])
    assert str(obr[4]) == str(oru.segment("OBR")[4]) and str(obr[18]) == ctx.accession_number
    with pytest.raises(ValueError, match="table 0027"):
        build_priority_update(ctx, priority="X", control_id="C1")


def test_the_ris_reorders_its_worklist_on_either_kind_of_message(content, ctx, tmp_path):  # noqa: F811
    """Through the real MLLP delivery adapter: the order update moves the exam to the top; so
    does a result carrying OBR-27 priority; a result without it changes nothing."""
    with RisSimulator() as ris:
        for accession in ("ACC-R1", "ACC-R2", ctx.accession_number, "ACC-R3"):
            ris.worklist.add(accession)
        config = MllpDestination(host="127.0.0.1", port=ris.port)
        plain = tmp_path / "oru-r01.hl7"
        plain.write_text(build_oru_r01(content, ctx, control_id="C-PLAIN"))
        send_oru(config, [str(plain)])
        assert ris.worklist.order()[0] == "ACC-R1"
        update = tmp_path / "orm-o01-priority.hl7"
        update.write_text(build_priority_update(ctx, control_id="C-XO"))
        assert send_oru(config, [str(update)]).startswith("ACK AA C-XO")
        assert ris.worklist.order() == [ctx.accession_number, "ACC-R1", "ACC-R2", "ACC-R3"]

        ris.worklist.add("ACC-R4")
        ctx_r4 = ctx.model_copy(update={"accession_number": "ACC-R4", "filler_order_number": "ACC-R4"})
        flagged = tmp_path / "oru-priority.hl7"
        flagged.write_text(build_oru_r01(content, ctx_r4, control_id="C-OBR27", priority="A"))
        send_oru(config, [str(flagged)])
        assert ris.worklist.order()[:2] == [ctx.accession_number, "ACC-R4"]  # stat, then ASAP


@pytest.mark.parametrize("mode", ["clinical", "shadow"])
def test_an_urgent_lung_finding_moves_its_exam_ahead_only_in_clinical_mode(prefect_api, radpath_env, registry, tmp_path,
                                                                         monkeypatch, mode, fhir_server):  # noqa: F811
    from flows.dispatch import run_pathway

    ehr = fhir_server
    with RisSimulator() as ris:
        monkeypatch.setenv("RADPATH_DESTINATIONS", json.dumps(
            {"ris": {"kind": "mllp", "host": "127.0.0.1", "port": ris.port, "priority_update": "orm-xo"},
             "ehr": {"kind": "fhir", "base_url": ehr.base_url, "priority_update": "task"}}))
        reset_settings()
        original = registry.specs["lung-cancer-ct"]
        evaluation = Destination(name="evaluation", formats=("hl7-oru",), clinical=False)  # another RIS feed, for shadow
        registry.specs["lung-cancer-ct"] = original.model_copy(
            update={"mode": mode, "destinations": original.destinations + (evaluation,)})
        try:
            study, run_id = ingest_synthetic_study(tmp_path, registry, "chest-ct", URGENT_CHEST_CT_SEED)
            accession = _accession(study)
            for booked in ("ACC-R1", "ACC-R2", accession):
                ris.worklist.add(booked)
            state = asyncio.run(run_pathway(run_id))
        finally:
            registry.specs["lung-cancer-ct"] = original
        from integrations.db import ops

        assert state.is_completed(), state.message
        assert ops.run_outcome(run_id).urgent  # the finding this test is about
        types = [m.message_type for m in ris.received]
        if mode == "clinical":
            assert types == ["ORM^O01", "ORU^R01"]  # the update first, in the same delivery
            assert ris.worklist.order() == [accession, "ACC-R1", "ACC-R2"]
        else:
            assert "ORM^O01" not in types and ris.worklist.changes == []  # shadow: nothing reaches the clinical RIS
            assert ris.worklist.order() == ["ACC-R1", "ACC-R2", accession]
        tasks = httpx.get(f"{ehr.base_url}/Task", params={"priority": "stat"}).json()
        if mode == "clinical":  # the EHR's worklist gets one stat Task for this order, citing the AI report
            (task,) = [e["resource"] for e in tasks.get("entry", [])]
            assert task["focus"]["identifier"]["value"] == _placer(study) and task["code"]["coding"][0]["code"] == "fulfill"
            report = httpx.get(f"{ehr.base_url}/{task['reasonReference']['reference']}").json()
            assert report["resourceType"] == "DiagnosticReport" and report["status"] == "preliminary"
        else:
            assert tasks.get("total", 0) == 0  # shadow: the clinical EHR gets nothing, so no Task
        evaluation_files = list((radpath_env.outbox_dir / "evaluation").rglob("*.hl7"))
        assert evaluation_files and all(f.name != "orm-o01-priority.hl7" for f in evaluation_files)


def _placer(study) -> str:  # noqa: ANN001
    order = hl7.parse(Path(study.order_path).read_bytes().decode().replace("\n", "\r"))
    return str(order.segment("ORC")[2][0][0])


def _accession(study) -> str:  # noqa: ANN001
    order = hl7.parse(Path(study.order_path).read_bytes().decode().replace("\n", "\r"))
    return str(order.segment("OBR")[18]) or str(order.segment("ORC")[3])


@pytest.mark.slow
def test_radpath_serve_moves_an_urgent_exam_to_the_top_of_the_ris_worklist(tmp_path, served_ledger):
    """As a trust runs it: the order over MLLP, the images over C-STORE, the served lung
    deployment, and the RIS (configured `priority_update = "orm-xo"`) reorders its worklist."""
    import time

    from integrations.dicom.scu import push_folder
    from integrations.hl7.client import send_messages
    from radpath.synth import generate
    from tests.served import radpath_serve

    with RisSimulator() as ris:
        destinations = {"ris": {"kind": "mllp", "host": "127.0.0.1", "port": ris.port, "priority_update": "orm-xo"}}
        with radpath_serve(tmp_path, extra_env={"RADPATH_DESTINATIONS": json.dumps(destinations)}) as served:
            served_ledger(served.data_dir)
            (study,) = generate("chest-ct", 1, URGENT_CHEST_CT_SEED, tmp_path / "synthetic")
            accession = _accession(study)
            for booked in ("ACC-R1", "ACC-R2", accession, "ACC-R3"):
                ris.worklist.add(booked)
            acks = send_messages("127.0.0.1", served.mllp_port, [Path(study.order_path).read_bytes().decode()])
            assert [a.code for a in acks] == ["AA"]
            assert push_folder(study.dicom_dir, "127.0.0.1", served.dicom_port).failed == 0
            deadline = time.monotonic() + 300
            while not any(m.message_type == "ORU^R01" for m in ris.received):
                assert time.monotonic() < deadline, served.log_tail()
                time.sleep(1)
    assert [m.message_type for m in ris.received] == ["ORM^O01", "ORU^R01"]
    assert ris.worklist.order() == [accession, "ACC-R1", "ACC-R2", "ACC-R3"]
