"""`radpath demo`: the main job on embedded defaults, from order to delivered results."""

from __future__ import annotations

import asyncio
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from integrations.db import ledger
from integrations.db.engine import session_scope
from sqlmodel import select

from integrations.db.models import Delivery, Order, PathwayRun, Result, Study
from integrations.dicom.store import ingest_instances
from integrations.hl7.orders import parse_order
from integrations.settings import get_settings
from pathways.registry import default_registry
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


def _ingest(study, console: Console) -> DemoRow:  # noqa: ANN001
    registry = default_registry()
    raw = Path(study.order_path).read_text()
    outcome = ledger.record_order(parse_order(raw), raw, registry, actor="demo")
    files = sorted(Path(study.dicom_dir).rglob("*.dcm"))
    for start in range(0, len(files), 64):
        ingest_instances((f.read_bytes() for f in files[start : start + 64]), actor="demo")
    run_ids = ledger.attach_study(study.study_uid)
    truth = json.loads(Path(study.truth_path).read_text())
    row = DemoRow(study_key=ledger.study_key(study.study_uid), truth=truth.get("nodules", []))
    row.run_id = run_ids[0] if run_ids else (outcome.run_ids[0] if outcome.run_ids else None)
    return row


async def _run_all(rows: list[DemoRow], progress: Progress) -> None:
    from flows.dispatch import ensure_concurrency_limits, run_pathway

    await ensure_concurrency_limits()
    bar = progress.add_task("pathway runs", total=len(rows))
    for row in rows:
        if row.run_id is None:
            row.state = "no pathway run"
            progress.advance(bar)
            continue
        start = time.perf_counter()
        state = await run_pathway(row.run_id)
        row.state, row.seconds = state.name, time.perf_counter() - start
        progress.advance(bar)


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
        bar = progress.add_task("orders + images into the ledger", total=len(generated))
        rows = []
        for study in generated:
            rows.append(_ingest(study, console))
            progress.advance(bar)
        asyncio.run(_run_all(rows, progress))
    return _report(rows, console)


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
