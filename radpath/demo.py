"""`radpath demo`: the main job on embedded defaults, from order to delivered results."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from integrations.db import ledger, ops
from integrations.db.studies import sweep_readiness
from integrations.delivery.fhir import delivered_reports
from integrations.dicom.scp import start_scp
from integrations.dicom.scu import push_folder
from integrations.fhir.local_server import LocalFhirServer, start_local_fhir_server
from integrations.hl7.client import send_messages
from integrations.hl7.listener import serve_mllp
from integrations.settings import get_settings, reset_settings
from pathways import dementia_mri, heart_failure, lung_cancer_ct
from radpath.pacs_simulator import PacsSimulator
from radpath.ris_simulator import RisSimulator
from radpath.runtime import prepare_ledger


@dataclass
class DemoRow:
    kind: str
    study_key: str
    truth: dict
    run_id: str | None = None
    state: str = "not run"
    seconds: float = 0.0


# One line per pathway comparing its stored assessment with the synthetic truth.
TRUTH_COMPARISONS = {
    "lung-cancer-ct": lung_cancer_ct.compare_to_truth,
    "dementia-mri": dementia_mri.compare_to_truth,
    "heart-failure-echo": heart_failure.compare_to_truth,
    "heart-failure-cardiac-ct": heart_failure.compare_to_truth,
}
# The other pathways' studies, one each, beside the chest CTs.
OTHER_KINDS = ("brain-mri", "echo", "cardiac-ct")
# Generator seed of the demo's never-followed-up chest CT: a 7.5 mm solid nodule of 220 mm3, CT at
# 3 months (BTS 2015 Algorithm 1); tests/test_surveillance.py uses the same study.
SURVEILLANCE_SEED = 17


@dataclass
class DemoPeers:
    """The clinical systems around radpath, all local: a RIS (MLLP), a PACS (DICOM), an EHR (FHIR)."""

    ris: RisSimulator
    pacs: PacsSimulator
    ehr: LocalFhirServer


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _point_radpath_at(peers: DemoPeers) -> None:
    """Trust configuration for the demo: destinations are the local peers; no quiet period."""
    os.environ["RADPATH_DESTINATIONS"] = json.dumps(
        {
            # The demo RIS reorders its worklist on an ORM^O01 XO priority update (urgent AI findings).
            "ris": {"kind": "mllp", "host": "127.0.0.1", "port": peers.ris.port, "priority_update": "orm-xo"},
            "pacs": {"kind": "dicom", "host": "127.0.0.1", "port": peers.pacs.port, "called_ae_title": peers.pacs.ae_title},
            "ehr": {"kind": "fhir", "base_url": peers.ehr.base_url},
        }
    )
    os.environ["RADPATH_DICOM_QUIET_PERIOD_SECONDS"] = json.dumps({"CT": 0, "MR": 0, "US": 0})
    os.environ["RADPATH_MLLP_PORT"] = str(_free_port())
    os.environ["RADPATH_DICOM_PORT"] = str(_free_port())
    reset_settings()


async def _through_front_doors(generated: list, progress: Progress) -> list[DemoRow]:
    """Orders over MLLP, images over C-STORE, readiness from the ledger, then the pathway."""
    from flows.dispatch import run_pathway
    from tasks.artifacts import publish_ops_tables
    from tasks.events import emit_order_received

    settings = get_settings()
    # As under radpath serve: each committed order starts its pathways' SLA clocks (an event).
    mllp = await serve_mllp(settings, on_order_committed=lambda o: emit_order_received(o.order_id, o.run_ids, o.eligible))
    scp = start_scp(settings)
    try:
        orders = [Path(s.order_path).read_text() for s in generated]
        acks = await asyncio.to_thread(send_messages, settings.bind_host, mllp.port, orders)
        refused = [a.code for a in acks if not a.accepted]
        if refused:
            raise RuntimeError(f"the MLLP listener refused demo orders: {refused}")
        bar = progress.add_task("C-STORE studies into radpath", total=len(generated))
        for study in generated:
            report = await asyncio.to_thread(push_folder, study.dicom_dir, settings.bind_host, scp.port)
            if report.failed:
                raise RuntimeError(f"{report.failed} instances were refused by the SCP")
            progress.advance(bar)
        ready = {r for outcome in sweep_readiness() for r in outcome.run_ids}
    finally:
        scp.shutdown()
        await mllp.stop()

    rows = []
    for study in generated:
        truth = json.loads(Path(study.truth_path).read_text())
        run_ids = [r for r in ready if ledger.run_view(r).study_uid == study.study_uid]
        rows.append(
            DemoRow(kind=study.kind, study_key=ledger.study_key(study.study_uid), truth=truth["truth"], run_id=run_ids[0] if run_ids else None)
        )
    bar = progress.add_task("pathway runs", total=len(rows))
    for row in rows:
        if row.run_id is None:
            row.state = "not ready"
        else:
            start = time.perf_counter()
            state = await run_pathway(row.run_id)
            row.state, row.seconds = state.name, time.perf_counter() - start
        progress.advance(bar)
    publish_ops_tables()  # the ops tables a reconciler pass would publish in a service
    return rows


def run_demo(studies: int, seed: int, console: Console, all_pathways: bool = True) -> bool:
    from radpath.synth import FollowUpPlan, generate, generate_follow_up

    # The first chest CT's follow-up: nodule 1 grows 80 % in 91 days (VDT about 107 days, in the
    # range of lung cancer), nodule 2 is stable, and the patient lies elsewhere in the scanner.
    follow_up = FollowUpPlan(days=91, volume_ratio={1: 1.8, 2: 1.05}, shift_xyz_mm=(10.0, -6.0, 14.0))

    settings = get_settings()
    prepare_ledger()
    console.print(f"radpath demo — data in [bold]{settings.data_dir.resolve()}[/bold], ledger {settings.resolved_database_url.split(':')[0]}")
    with Progress(console=console) as progress:
        bar = progress.add_task("synthetic studies", total=studies + 2 + len(OTHER_KINDS))
        generated = generate("chest-ct", studies, seed, settings.data_dir / "synthetic", progress=lambda d, t: progress.update(bar, completed=d))
        # The first chest CT's patient again, 91 days later: compared with the prior (growth, VDT).
        generated.append(generate_follow_up(seed, follow_up, settings.data_dir / "synthetic"))
        # A chest CT whose nodule calls for CT at 3 months (BTS 2015), never followed up: the failsafe's case.
        generated += generate("chest-ct", 1, SURVEILLANCE_SEED, settings.data_dir / "synthetic" / "surveillance")
        progress.advance(bar)
        if all_pathways:
            for kind in OTHER_KINDS:
                generated += generate(kind, 1, seed, settings.data_dir / "synthetic")
                progress.advance(bar)
        progress.add_task("starting local RIS, PACS and FHIR server", total=None)
        with RisSimulator() as ris, PacsSimulator(settings.data_dir / "pacs") as pacs, start_local_fhir_server(
            settings.data_dir / "fhir-server"
        ) as ehr:
            peers = DemoPeers(ris=ris, pacs=pacs, ehr=ehr)
            for study in generated:  # the RIS books each exam routine; radpath's urgent findings move them
                ris.worklist.add(study.accession_number)
            _point_radpath_at(peers)
            rows = asyncio.run(_through_front_doors(generated, progress))
    ok = _report(rows, console)
    ok = _report_peers(peers, console) and ok
    ok = _report_failsafe(console) and ok
    return _report_concordance(generated, seed, console) and ok


def _report_concordance(generated: list, seed: int, console: Console) -> bool:
    """A simulated radiologist signs each chest CT (one in ten disagreeing with the images), the RIS
    sends the reports over MLLP, and the evidence loop compares them with the AI's results."""
    from integrations.db.radiologist_reports import concordance
    from pathways.concordance import concordance_table
    from radpath.synth.radiologist import report_message, write_chest_ct_report

    rng = np.random.default_rng([seed, 0x5AD])
    signed = dt.datetime.now(dt.UTC)
    reports = [report_message(s.order_path, write_chest_ct_report(json.loads(Path(s.truth_path).read_text())["truth"]["nodules"],
                                                                  rng, disagreement=0.1),
                              control_id=f"DEMO-RPT-{i}", signed_at=signed)
               for i, s in enumerate(g for g in generated if g.kind == "chest-ct")]

    async def send() -> list:
        settings = get_settings()
        mllp = await serve_mllp(settings)
        try:
            return await asyncio.to_thread(send_messages, settings.bind_host, mllp.port, reports)
        finally:
            await mllp.stop()

    acks = asyncio.run(send())
    rows = concordance_table(concordance())
    table = Table(*rows[0], title=f"evidence loop: AI against {len(acks)} radiologists' reports") if rows else None
    for row in rows:
        table.add_row(*(str(v) for v in row.values()))
    if table is not None:
        console.print(table)
    return bool(rows) and all(a.accepted for a in acks)


def _report_failsafe(console: Console) -> bool:
    """The surveillance plans the results opened, then the failsafe with its clock moved past the
    due date plus grace: the follow-up that never came is alerted (radpath.surveillance.overdue)."""
    import datetime as dt

    from flows.surveillance import surveillance_failsafe
    from integrations.db.models import utcnow
    from integrations.db.surveillance import plans

    due = plans()
    for plan in due:
        console.print(f"surveillance: {plan.pathway} study {plan.study_key}: {plan.recommendation_code} due {plan.due_on}, "
                      f"escalated from {plan.overdue_on}")
    if not due:
        console.print("[red]surveillance: no follow-up plan was opened[/red]")
        return False
    # The synthetic scans are dated 2025, so their plans may already be overdue today; else the
    # clock moves past the latest escalation date.
    later = max(max(plan.overdue_on for plan in due) + dt.timedelta(days=1), utcnow().date())
    state = surveillance_failsafe(as_of=utcnow() + (later - utcnow().date()), return_state=True)
    console.print(f"surveillance failsafe as of {later} (no follow-up came): {state.message}")
    return "newly alerted" in state.message and not state.message.endswith(" 0 newly alerted")


def _report_peers(peers: DemoPeers, console: Console) -> bool:
    """What the clinical systems received: exactly once each."""
    oru = [m for m in peers.ris.received if m.message_type.startswith("ORU")]
    control_ids = [m.control_id for m in oru]
    console.print(f"RIS (MLLP):  {len(oru)} ORU^R01 received, {len(control_ids) - len(set(control_ids))} duplicates; "
                  f"{len(peers.ris.worklist.changes)} exam(s) raised to stat by an urgent AI finding (ORM^O01 XO), "
                  "now first on the RIS worklist")
    console.print(
        f"PACS (DICOM): {sum(peers.pacs.modalities.values())} objects received "
        f"({', '.join(f'{n} {m}' for m, n in sorted(peers.pacs.modalities.items()))}), {peers.pacs.duplicates} duplicates"
    )
    reports = delivered_reports("ehr")
    console.print(f"EHR (FHIR):  {len(reports)} DiagnosticReports at {peers.ehr.base_url}: {', '.join(r for _, r in reports)}")
    return len(control_ids) == len(set(control_ids)) and peers.pacs.duplicates == 0


def _short(text: str, limit: int = 48) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _report(rows: list[DemoRow], console: Console) -> bool:
    table = Table(title="radpath demo: every study from order to delivered result")
    for col in ("pathway", "study", "result vs truth", "conclusion", "urgent", "TAT s", "sent", "state"):
        table.add_column(col, overflow="fold")
    ok = True
    for row in rows:
        outcome = ops.run_outcome(row.run_id) if row.run_id else None
        ok &= outcome is not None and outcome.delivered == outcome.deliveries > 0 and row.state == "Delivered"
        if outcome is None:
            table.add_row(row.kind, row.study_key, "-", "-", "-", "-", "0/0", row.state)
            continue
        table.add_row(
            outcome.pathway,
            row.study_key,
            TRUTH_COMPARISONS[outcome.pathway](outcome.assessment, row.truth),
            _short(outcome.assessment.get("recommendation_code") or outcome.conclusion),
            "YES" if outcome.urgent else "no",
            f"{outcome.turnaround_s:.0f}" if outcome.turnaround_s is not None else "-",
            f"{outcome.delivered}/{outcome.deliveries}",
            row.state,
        )
    console.print(table)
    console.print(f"outbox: {get_settings().outbox_dir.resolve()}")
    if not ok:
        console.print("[red]some studies were not delivered[/red]")
    return ok
