"""`radpath demo`: the main job on embedded defaults, from order to delivered results."""

from __future__ import annotations

import asyncio
import json
import math
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from sqlmodel import select

from integrations.db import ledger
from integrations.db.engine import session_scope
from integrations.db.models import Delivery, Order, PathwayRun, Result, Study
from integrations.db.studies import sweep_readiness
from integrations.delivery.fhir import delivered_reports
from integrations.dicom.scp import start_scp
from integrations.dicom.scu import push_folder
from integrations.fhir.local_server import LocalFhirServer, start_local_fhir_server
from integrations.hl7.client import send_messages
from integrations.hl7.listener import serve_mllp
from integrations.settings import get_settings, reset_settings
from radpath.pacs_simulator import PacsSimulator
from radpath.ris_simulator import RisSimulator
from radpath.runtime import prepare_ledger


@dataclass
class DemoRow:
    study_key: str
    truth: list[dict]
    run_id: str | None = None
    state: str = "not run"
    seconds: float = 0.0


def match_count(truth: list[dict], found: list[dict]) -> tuple[int, int]:
    """(truth nodules found, false positives): a detection matches a truth nodule whose centre
    lies within max(its radius, 5 mm)."""
    unmatched = list(found)
    hits = 0
    for t in truth:
        radius = max(t["diameter_mm"] / 2, 5.0)
        best = min(unmatched, key=lambda f: math.dist(f["centre_xyz_mm"], t["centre_xyz_mm"]), default=None)
        if best is not None and math.dist(best["centre_xyz_mm"], t["centre_xyz_mm"]) <= radius:
            hits += 1
            unmatched.remove(best)
    return hits, len(unmatched)


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
            "ris": {"kind": "mllp", "host": "127.0.0.1", "port": peers.ris.port},
            "pacs": {"kind": "dicom", "host": "127.0.0.1", "port": peers.pacs.port, "called_ae_title": peers.pacs.ae_title},
            "ehr": {"kind": "fhir", "base_url": peers.ehr.base_url},
        }
    )
    os.environ["RADPATH_DICOM_QUIET_PERIOD_SECONDS"] = json.dumps({"CT": 0})
    os.environ["RADPATH_MLLP_PORT"] = str(_free_port())
    os.environ["RADPATH_DICOM_PORT"] = str(_free_port())
    reset_settings()


async def _through_front_doors(generated: list, progress: Progress) -> list[DemoRow]:
    """Orders over MLLP, images over C-STORE, readiness from the ledger, then the pathway."""
    from flows.dispatch import ensure_concurrency_limits, run_pathway

    settings = get_settings()
    mllp = await serve_mllp(settings)
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
        rows.append(DemoRow(study_key=ledger.study_key(study.study_uid), truth=truth["truth"]["nodules"], run_id=run_ids[0] if run_ids else None))
    await ensure_concurrency_limits()
    bar = progress.add_task("pathway runs", total=len(rows))
    for row in rows:
        if row.run_id is None:
            row.state = "not ready"
        else:
            start = time.perf_counter()
            state = await run_pathway(row.run_id)
            row.state, row.seconds = state.name, time.perf_counter() - start
        progress.advance(bar)
    return rows


def run_demo(studies: int, seed: int, console: Console) -> bool:
    from radpath.synth import generate

    settings = get_settings()
    prepare_ledger()
    console.print(f"radpath demo — data in [bold]{settings.data_dir.resolve()}[/bold], ledger {settings.resolved_database_url.split(':')[0]}")
    with Progress(console=console) as progress:
        bar = progress.add_task("synthetic chest CTs", total=studies)
        generated = generate(
            "chest-ct", studies, seed, settings.data_dir / "synthetic", progress=lambda d, t: progress.update(bar, completed=d)
        )
        progress.add_task("starting local RIS, PACS and FHIR server", total=None)
        with RisSimulator() as ris, PacsSimulator(settings.data_dir / "pacs") as pacs, start_local_fhir_server(
            settings.data_dir / "fhir-server"
        ) as ehr:
            peers = DemoPeers(ris=ris, pacs=pacs, ehr=ehr)
            _point_radpath_at(peers)
            rows = asyncio.run(_through_front_doors(generated, progress))
    ok = _report(rows, console)
    return _report_peers(peers, console) and ok


def _report_peers(peers: DemoPeers, console: Console) -> bool:
    """What the clinical systems received: exactly once each."""
    oru = [m for m in peers.ris.received if m.message_type.startswith("ORU")]
    control_ids = [m.control_id for m in oru]
    console.print(f"RIS (MLLP):  {len(oru)} ORU^R01 received, {len(control_ids) - len(set(control_ids))} duplicates")
    console.print(
        f"PACS (DICOM): {sum(peers.pacs.modalities.values())} objects received "
        f"({', '.join(f'{n} {m}' for m, n in sorted(peers.pacs.modalities.items()))}), {peers.pacs.duplicates} duplicates"
    )
    reports = delivered_reports("ehr")
    console.print(f"EHR (FHIR):  {len(reports)} DiagnosticReports at {peers.ehr.base_url}: {', '.join(r for _, r in reports)}")
    return len(control_ids) == len(set(control_ids)) and peers.pacs.duplicates == 0


def _report(rows: list[DemoRow], console: Console) -> bool:
    table = Table(title="lung-cancer-ct: results")
    for col in ("study", "nodules found / truth", "false +", "max Brock %", "recommendation", "urgent", "turnaround s", "delivered", "state"):
        table.add_column(col)
    ok = True
    with session_scope() as session:
        for row in rows:
            run = session.get(PathwayRun, row.run_id) if row.run_id else None
            order = session.get(Order, run.order_id) if run else None
            study = session.get(Study, run.study_id) if run and run.study_id else None
            result = (
                session.exec(select(Result).where(Result.study_uid == study.study_uid, Result.pathway == run.pathway)).first()
                if study
                else None
            )
            deliveries = session.exec(select(Delivery).where(Delivery.result_id == result.id)).all() if result else []
            delivered = [d for d in deliveries if d.status == "delivered"]
            all_delivered = bool(deliveries) and len(delivered) == len(deliveries)
            ok &= all_delivered and row.state == "Delivered"
            if result is None:
                table.add_row(row.study_key, "-", "-", "-", "-", "-", "-", "0/0", row.state)
                continue
            nodules = [n["nodule"] for n in result.assessment["nodules"]]
            brocks = [n["brock_probability"] for n in result.assessment["nodules"] if n["brock_probability"] is not None]
            hits, false_pos = match_count(row.truth, nodules)
            turnaround = (max(d.delivered_at for d in delivered) - order.received_at).total_seconds() if all_delivered else None
            table.add_row(
                row.study_key,
                f"{hits} / {len(row.truth)}",
                str(false_pos),
                f"{100 * max(brocks):.1f}" if brocks else "-",
                result.assessment["recommendation_code"],
                "YES" if result.urgent else "no",
                f"{turnaround:.1f}" if turnaround is not None else "-",
                f"{len(delivered)}/{len(deliveries)}",
                row.state,
            )
    console.print(table)
    console.print(f"outbox: {get_settings().outbox_dir.resolve()}")
    if not ok:
        console.print("[red]some studies were not delivered[/red]")
    return ok
