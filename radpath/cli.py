"""The `radpath` command line."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Column, Table

app = typer.Typer(help="radpath: radiology AI clinical pathways for NHS trusts", no_args_is_help=True)
pathways_app = typer.Typer(help="List and validate pathway specs", no_args_is_help=True)
db_app = typer.Typer(help="The ledger database", no_args_is_help=True)
app.add_typer(pathways_app, name="pathways")
app.add_typer(db_app, name="db")
# Piped output (CI logs, `make demo | tee`) gets a readable width instead of 80 columns.
console = Console(width=None if sys.stdout.isatty() else 160)


@app.command()
def demo(
    studies: int = typer.Option(4, min=1, help="How many synthetic chest CTs to run"),
    seed: int = typer.Option(2026, help="Seed for the synthetic studies"),
    all_pathways: bool = typer.Option(True, help="Also one brain MRI, echo and cardiac CT for the other pathways"),
) -> None:
    """Synthetic studies with orders, through the front doors, every pathway, delivered, reported."""
    from radpath.runtime import configure_prefect

    configure_prefect()
    from radpath.demo import run_demo

    ok = run_demo(studies=studies, seed=seed, console=console, all_pathways=all_pathways)
    raise typer.Exit(code=0 if ok else 1)


@app.command()
def serve(
    ready_file: Path | None = typer.Option(None, help="Write the listening ports here once serving"),
) -> None:
    """Start the MLLP, DICOM and HTTP front doors and serve the pathway, review and reconciler
    deployments. Without PREFECT_API_URL, a local Prefect server and UI start too."""
    import asyncio
    import logging
    import os
    import signal
    import socket

    from integrations.settings import get_settings
    from radpath.runtime import configure_prefect, prepare_ledger

    from radpath.serve import check_listeners

    settings = get_settings()
    prepare_ledger()
    check_listeners(settings)  # a taken port is named now, not after a Prefect server has started
    server = None
    if not os.environ.get("PREFECT_API_URL"):
        from radpath.ui import api_url, server_answers, start_server

        port = settings.prefect_port
        if port == 0:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        if server_answers("127.0.0.1", port):  # e.g. `make ui` in another terminal
            console.print(f"using the Prefect server already on port {port}")
        else:
            server = start_server("127.0.0.1", port, settings.data_dir / "prefect-server.log")
        os.environ["PREFECT_API_URL"] = api_url("127.0.0.1", port)
        console.print(f"Prefect UI: http://127.0.0.1:{port}")
    configure_prefect()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    from radpath.serve import serve as run_service

    try:
        asyncio.run(run_service(ready_file=ready_file))
    finally:
        if server is not None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)


@app.command()
def ui(
    host: str = typer.Option("127.0.0.1", help="Address to listen on"),
    port: int = typer.Option(4200, min=1, max=65535, help="Port for the Prefect API and UI"),
) -> None:
    """A local Prefect server and UI (database in radpath's data directory) to watch runs in."""
    import os

    from radpath.ui import api_url, prefect_home, server_command, server_env

    env = server_env(host, port)
    if "PREFECT_SERVER_API_AUTH_STRING" not in env and host not in {"127.0.0.1", "localhost", "::1"}:
        console.print(f"[yellow]the UI on {host} has no login: anyone who reaches it can read results and decide "
                      "reviews; set RADPATH_UI_AUTH=user:password[/yellow]")
    console.print(f"Prefect UI: http://{host}:{port}  (database in {prefect_home()})")
    console.print(f"Point runs at it:  PREFECT_API_URL={api_url(host, port)} radpath demo   (or radpath serve)")
    sys.stdout.flush()
    command = server_command(host, port)
    os.execve(command[0], command, env)  # the server replaces this process: signals reach it directly


@app.command()
def synth(
    kind: str = typer.Argument(..., help="chest-ct | brain-mri | echo | cardiac-ct"),
    count: int = typer.Option(1, min=1),
    seed: int = typer.Option(1),
    out: Path = typer.Option(Path("synthetic"), help="Output folder"),
    follow_up_days: int = typer.Option(0, min=0, help="chest-ct: also the first study's follow-up this many days later"),
    growth: str = typer.Option("", help='with --follow-up-days: volume ratio per nodule, e.g. "1=2.0,2=0" (0: resolved; default 1)'),
    new_nodules: int = typer.Option(0, min=0, help="with --follow-up-days: new nodules on the follow-up"),
    shift_mm: str = typer.Option("0,0,0", help="with --follow-up-days: where the patient lies this time, x,y,z mm"),
) -> None:
    """Write deterministic synthetic studies (DICOM + HL7 order + truth.json); for chest CT, also
    the same patient's follow-up with nodules grown, stable, resolved or new at known VDTs."""
    from rich.progress import Progress

    from radpath.synth import FollowUpPlan, generate, generate_follow_up

    if follow_up_days and kind != "chest-ct":
        console.print("[red]--follow-up-days is for chest-ct[/red]")
        raise typer.Exit(2)
    try:
        ratios = {int(k): float(v) for k, v in (item.split("=") for item in growth.split(",") if item.strip())}
        shift = tuple(float(v) for v in shift_mm.split(","))
    except ValueError:
        console.print('[red]--growth is "INDEX=RATIO,…" and --shift-mm "x,y,z"[/red]')
        raise typer.Exit(2) from None
    if len(shift) != 3:
        console.print('[red]--shift-mm is "x,y,z"[/red]')
        raise typer.Exit(2)
    with Progress(console=console) as progress:
        bar = progress.add_task(f"{kind} studies", total=count)
        studies = generate(kind, count, seed, out, progress=lambda done, total: progress.update(bar, completed=done))
    if follow_up_days:
        studies.append(generate_follow_up(seed, FollowUpPlan(follow_up_days, ratios, new_nodules, shift), out))
    for study in studies:
        console.print(f"{study.kind} {study.accession_number} → {study.dicom_dir.parent}")


@pathways_app.command("list")
def pathways_list() -> None:
    """The installed pathways and what they claim."""
    from pathways.registry import RegistryError, load_registry

    try:
        registry = load_registry()
    except RegistryError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    table = Table("pathway", "version", "mode", "procedures", "modalities", "destinations", "SLA (min)")
    for spec in registry.specs.values():
        table.add_row(
            spec.name,
            spec.version,
            spec.mode,
            ", ".join(f"{c.code} {c.display}" for c in spec.eligibility.procedure_codes),
            ", ".join(spec.eligibility.modalities),
            ", ".join(d.name for d in spec.destinations),
            str(spec.sla.turnaround_minutes),
        )
    console.print(table)
    mappings = registry.code_map.mappings
    if mappings:
        console.print(f"trust code map: {len(mappings)} ordered code(s) mapped, e.g. "
                      f"{mappings[0].ordered.system} {mappings[0].ordered.code} → {mappings[0].means.code}")


@pathways_app.command("validate")
def pathways_validate(
    files: list[Path] = typer.Argument(..., exists=True, dir_okay=False),
    code_map: Path = typer.Option(None, exists=True, dir_okay=False,
                                  help="the trust's procedure-code map (default: RADPATH_CODE_MAP, else the shipped one)"),
) -> None:
    """Validate spec files and the code map (schema and cross-checks); prints every error at once."""
    from pathways.registry import RegistryError, code_map_path, load_registry

    try:
        registry = load_registry(files, code_map=code_map)
    except RegistryError as exc:
        for error in exc.errors:
            console.print(f"[red]✗[/red] {error}")
        raise typer.Exit(1) from None
    for name in registry.specs:
        console.print(f"[green]✓[/green] {name}")
    console.print(f"[green]✓[/green] {(code_map or code_map_path()).name}: {len(registry.code_map.mappings)} mapping(s)")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply ledger schema migrations (safe to run at every start)."""
    from radpath.runtime import prepare_ledger

    prepare_ledger()
    console.print("ledger schema up to date")


@app.command()
def status() -> None:
    """A summary of the ledger: orders, runs, deliveries, follow-up plans."""
    from integrations.db.health import health_table
    from integrations.db.ops import dead_letters, open_work_table, sla_table, status_counts, turnaround_table
    from pathways.registry import default_registry
    from radpath.runtime import prepare_ledger

    prepare_ledger()
    for title, rows in status_counts().items():
        table = Table(title=title)
        table.add_column("status")
        table.add_column("count", justify="right")
        for key, count in rows.items():
            table.add_row(key, str(count))
        console.print(table)
    _print_rows("turnaround per pathway and lane, median minutes (p90 too in the radpath-turnaround artifact)",
                [{k.replace(" p50 (min)", ""): v for k, v in row.items() if " p90 " not in k} for row in turnaround_table()])
    _print_rows("SLA: order received → result delivered, per pathway and lane", sla_table())
    work = open_work_table()
    _print_rows(f"open work ({len(work)} runs, oldest order first)", work[:20])
    from integrations.db.surveillance import OVERDUE, plans

    open_plans = plans()
    overdue = sum(plan.status == OVERDUE for plan in open_plans)
    console.print(f"surveillance: {len(open_plans)} follow-up plan(s) open, {overdue} overdue"
                  + (" (`radpath surveillance list`)" if open_plans else ""))
    letters = dead_letters()
    console.print(f"dead-lettered deliveries: {len(letters)}" if letters else "no dead letters")
    for letter in letters[:10]:
        console.print(f"  {letter}")
    _print_rows("front doors and destinations (radpath serve checks them)",
                health_table(default_registry().destination_names()))


def _print_rows(title: str, rows: list[dict]) -> None:
    """Rows of dicts (the ops tables the Prefect artifacts show too) as one table; nothing when empty."""
    if not rows:
        return
    table = Table(*(Column(str(column), overflow="fold") for column in rows[0]), title=title)  # wrap, never cut a name
    for row in rows:
        table.add_row(*(f"{v:.1f}" if isinstance(v, float) else "" if v is None else str(v) for v in row.values()))
    console.print(table)


automations_app = typer.Typer(help="Prefect automations (deployments/automations.py)", no_args_is_help=True)
app.add_typer(automations_app, name="automations")


@automations_app.command("apply")
def automations_apply(
    webhook_url: str = typer.Option(None, help="Where notifications go (default: RADPATH_NOTIFY_WEBHOOK_URL)"),
) -> None:
    """Create or replace radpath's automations on the configured Prefect API (`PREFECT_API_URL`)."""
    import asyncio

    from radpath.runtime import configure_prefect

    configure_prefect()
    from deployments.automations import apply_automations
    from integrations.settings import get_settings
    from pathways.registry import default_registry

    url = webhook_url or get_settings().notify_webhook_url
    if not url:
        console.print("[red]set RADPATH_NOTIFY_WEBHOOK_URL or pass --webhook-url[/red]")
        raise typer.Exit(1)
    for name in asyncio.run(apply_automations(default_registry(), url)):
        console.print(f"[green]✓[/green] {name}")


@app.command()
def deploy() -> None:
    """Scale-out: register the deployments of deployments/prefect.yaml on the Prefect server
    at PREFECT_API_URL, on the `radpath` process work pool (queues urgent, then routine). Then
    run `prefect worker start --pool radpath` on each worker host and `radpath serve` with
    RADPATH_SERVE_DEPLOYMENTS=false for the front doors."""
    import asyncio
    import os
    import subprocess

    if not os.environ.get("PREFECT_API_URL"):
        console.print("[red]set PREFECT_API_URL to the Prefect server the workers poll[/red]")
        raise typer.Exit(1)
    from deployments.served import PREFECT_YAML, ensure_work_pool

    asyncio.run(ensure_work_pool())
    root = PREFECT_YAML.parents[1]
    env = {**os.environ, "RADPATH_HOME": os.environ.get("RADPATH_HOME", str(root))}
    command = [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all", "--prefect-file", str(PREFECT_YAML)]
    raise typer.Exit(subprocess.run(command, cwd=root, env=env).returncode)


review_app = typer.Typer(help="Clinical review from a terminal (the Prefect UI's review form does the same)",
                         no_args_is_help=True)
app.add_typer(review_app, name="review")


@review_app.command("list")
def review_list() -> None:
    """Results whose clinical deliveries wait for a review decision (urgent first)."""
    from radpath.runtime import prepare_ledger

    prepare_ledger()
    from integrations.db.ops import review_queue

    queue = review_queue()
    table = Table("result", "pathway", "study", "urgent", "status", "waiting since (UTC)", "algorithm's conclusion")
    for item in queue:
        table.add_row(item.result_id, item.pathway, item.study_key, "yes" if item.urgent else "", item.status,
                      f"{item.waiting_since:%Y-%m-%d %H:%M}", item.conclusion)
    console.print(table if queue else "no results wait for review")


@review_app.command("decide")
def review_decide(
    result_id: str = typer.Argument(..., help="From `radpath review list`"),
    decision: str = typer.Option(..., help="accept | amend | reject"),
    reviewer: str = typer.Option(..., help="Your name as it appears in the audit trail"),
    reason: str = typer.Option("", help="Why (required to amend or reject)"),
    conclusion: str = typer.Option("", help="To amend: the conclusion to report instead of the algorithm's"),
    send_now: bool = typer.Option(True, help="Send the released deliveries now (else the next reconciler pass does)"),
) -> None:
    """Accept, amend or reject a held result; a suspended review run then ends `AlreadyReviewed`."""
    import asyncio

    from pydantic import ValidationError

    from radpath.runtime import configure_prefect, prepare_ledger

    configure_prefect()
    prepare_ledger()
    from flows.review import ReviewDecision, apply_review
    from integrations.db.models import REVIEW_OPEN
    from integrations.db.ops import review_status

    try:
        answer = ReviewDecision(decision=decision, reviewer=reviewer, reason=reason, amended_conclusion=conclusion)
    except ValidationError as exc:
        console.print(f"[red]{'; '.join(e['loc'][0] + ': ' + e['msg'] for e in exc.errors())}[/red]")
        raise typer.Exit(2) from None
    if review_status(result_id) not in REVIEW_OPEN:
        console.print(f"[red]result {result_id} does not wait for review[/red]")
        raise typer.Exit(1)
    try:
        status, pending = apply_review(result_id, answer)
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    console.print(f"[green]✓[/green] {status}: {len(pending)} deliveries released")
    if pending and send_now:
        from flows.reconciler import reconciler

        state = asyncio.run(reconciler(grace_seconds=0, return_state=True))
        console.print(state.message)


deliveries_app = typer.Typer(help="The outbox: list, re-send or discard dead letters; pause, resume and test a destination",
                             no_args_is_help=True)
app.add_typer(deliveries_app, name="deliveries")


def _operator() -> str:
    import getpass

    return getpass.getuser()


def _selection(ids: list[str] | None, destination: str | None, study_key: str | None, accession: str | None):
    from integrations.db.deliveries import Selection

    return Selection(tuple(ids or ()), destination, study_key, accession)


_IDS = typer.Argument(None, help="Delivery ids (from `radpath deliveries list`)")
_DEST = typer.Option(None, "--destination", help="A destination name (ris, pacs, ehr, ...)")
_KEY = typer.Option(None, "--study-key", help="The pseudonymous study key")
_ACC = typer.Option(None, "--accession", help="An accession number, looked up in the ledger (never printed)")
_ACTOR = typer.Option(None, "--actor", help="Your name for the audit trail (default: the OS user)")


@deliveries_app.command("list")
def deliveries_list(
    status: str = typer.Option("dead-letter", help="dead-letter | pending | delivered | held | rejected | discarded | all"),
    destination: str = _DEST, study_key: str = _KEY, accession: str = _ACC,
) -> None:
    """Outbox rows by status (default the dead letters): pseudonymous keys and what the peer said."""
    from radpath.runtime import prepare_ledger

    prepare_ledger()
    from integrations.db.deliveries import list_deliveries, paused_destinations
    from integrations.db.models import DeliveryStatus

    wanted = status.replace("-", "_")
    if wanted != "all" and wanted not in set(DeliveryStatus):
        console.print(f"[red]no such status {status}: one of {', '.join(DeliveryStatus)} or all[/red]")
        raise typer.Exit(2)
    statuses = None if wanted == "all" else (DeliveryStatus(wanted),)
    rows = list_deliveries(_selection(None, destination, study_key, accession), statuses)
    paused = paused_destinations()
    for name, pause in paused.items():
        console.print(f"[yellow]{name} paused since {pause.paused_at:%Y-%m-%d %H:%M} UTC by {pause.paused_by}[/yellow]")
    if not rows:
        console.print("no dead letters" if statuses == (DeliveryStatus.DEAD_LETTER,) else f"no deliveries with status {status}")
        return
    table = Table("delivery", "destination", "pathway", "study", "status", "attempts", "last error")
    for r in rows:
        table.add_row(r.delivery_id, r.destination, r.pathway, r.study_key, r.status, str(r.attempts),
                      r.last_response if r.status != DeliveryStatus.DELIVERED else "")
    console.print(table)


@deliveries_app.command("retry")
def deliveries_retry(
    ids: list[str] = _IDS, destination: str = _DEST, study_key: str = _KEY, accession: str = _ACC,
    actor: str = _ACTOR, reason: str = typer.Option("", help="Why (kept in the audit trail)"),
    now: bool = typer.Option(False, "--now", help="Send now (else the reconciler's next pass sends them)"),
) -> None:
    """Re-queue selected dead letters: the outbox sends each once more, with a fresh retry window."""
    selection = _selection(ids, destination, study_key, accession)
    if selection.empty:
        console.print("[red]refusing to re-queue every dead letter: name delivery ids, --destination, "
                      "--study-key or --accession[/red]")
        raise typer.Exit(2)
    from radpath.runtime import prepare_ledger

    prepare_ledger()
    from integrations.db.deliveries import requeue

    done = requeue(selection, actor or _operator(), reason)
    console.print(f"[green]✓[/green] {len(done)} deliveries re-queued" if done else "no dead letters matched")
    if done and now:
        from integrations.errors import RadpathError
        from tasks.delivery import attempt_delivery

        for delivery_id in done:
            try:
                console.print(f"  {delivery_id}: {attempt_delivery(delivery_id, owner=f'cli:{_operator()}')}")
            except RadpathError as exc:
                console.print(f"  [red]{delivery_id}: {exc.__class__.__name__} (the outbox retries it)[/red]")


@deliveries_app.command("discard")
def deliveries_discard(
    ids: list[str] = _IDS, destination: str = _DEST, study_key: str = _KEY, accession: str = _ACC,
    actor: str = _ACTOR, reason: str = typer.Option(..., help="Why they will not be sent (audited)"),
) -> None:
    """Mark selected dead letters discarded (terminal; they stop needing action), audited with the reason."""
    selection = _selection(ids, destination, study_key, accession)
    if selection.empty:
        console.print("[red]name delivery ids, --destination, --study-key or --accession to discard[/red]")
        raise typer.Exit(2)
    from radpath.runtime import prepare_ledger

    prepare_ledger()
    from integrations.db.deliveries import discard

    try:
        done = discard(selection, actor or _operator(), reason)
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    console.print(f"[green]✓[/green] {len(done)} deliveries discarded" if done else "no dead letters matched")


@deliveries_app.command("pause")
def deliveries_pause(destination: str = typer.Argument(..., help="A destination name"), actor: str = _ACTOR,
                     reason: str = typer.Option("", help="Why (audited)")) -> None:
    """Stop sending to a destination: its deliveries wait (never dead-lettered while paused)."""
    from radpath.runtime import prepare_ledger

    prepare_ledger()
    from integrations.db.deliveries import pause

    changed = pause(destination, actor or _operator(), reason)
    console.print(f"[green]✓[/green] {destination} paused" if changed else f"{destination} was already paused")


@deliveries_app.command("resume")
def deliveries_resume(destination: str = typer.Argument(..., help="A destination name"), actor: str = _ACTOR,
                      reason: str = typer.Option("", help="Why (audited)")) -> None:
    """Send to a paused destination again; the reconciler's next pass sends what waited."""
    from radpath.runtime import prepare_ledger

    prepare_ledger()
    from integrations.db.deliveries import resume

    waiting = resume(destination, actor or _operator(), reason)
    console.print(f"{destination} was not paused" if waiting is None
                  else f"[green]✓[/green] {destination} resumed: {waiting} deliveries waiting to be sent")


@deliveries_app.command("test")
def deliveries_test(destination: str = typer.Argument(..., help="A destination name")) -> None:
    """Test the connection with the destination's configuration: C-ECHO (PACS), an MLLP NMQ round trip
    (RIS), FHIR `GET metadata` (EHR). Exit status 1 when it fails."""
    from integrations.delivery.probe import check_destination
    from integrations.settings import get_settings

    probe = check_destination(get_settings().destination(destination))
    console.print(f"[green]ok[/green] {destination}: {probe.detail}" if probe.ok
                  else f"[red]failed[/red] {destination}: {probe.detail}", highlight=False, soft_wrap=True)
    raise typer.Exit(0 if probe.ok else 1)



audit_app = typer.Typer(help="The tamper-evident audit trail: verify its hash chain, export it for a SIEM",
                        no_args_is_help=True)
app.add_typer(audit_app, name="audit")


runs_app = typer.Typer(help="Pathway runs in the ledger and their Prefect flow runs", no_args_is_help=True)
app.add_typer(runs_app, name="runs")


@runs_app.command("find")
def runs_find(study_key: str = _KEY, accession: str = _ACC) -> None:
    """The pathway runs of an accession number or study key, with their Prefect UI links: how a
    radiologist's question about one exam reaches its runs (Prefect holds no accession)."""
    from radpath.runtime import prepare_ledger

    if not (study_key or accession):
        console.print("[red]give --accession or --study-key[/red]")
        raise typer.Exit(2)
    prepare_ledger()
    from integrations.db.ops import find_runs

    found = find_runs(accession=accession, study_key=study_key)
    if not found:
        console.print("no pathway run for that " + ("accession number" if accession else "study key"))
        raise typer.Exit(1)
    ui = _prefect_ui_url()
    _print_rows("pathway runs", [
        {"run": run.run_id, "pathway": run.pathway, "status": run.status + (f" ({run.reason})" if run.reason else ""),
         "study": run.study_key or "no images yet", "ordered (UTC)": f"{run.ordered_at:%Y-%m-%d %H:%M}",
         "flow run": f"{ui}/runs/flow-run/{run.flow_run_id}" if run.flow_run_id and ui else run.flow_run_id or "not started"}
        for run in found])


surveillance_app = typer.Typer(help="Follow-up scans recommended by results, and the failsafe for those that never happened",
                               no_args_is_help=True)
app.add_typer(surveillance_app, name="surveillance")


@surveillance_app.command("list")
def surveillance_list(
    show_closed: bool = typer.Option(False, "--all", help="Also plans received or cancelled"),
) -> None:
    """Surveillance plans, earliest due first, with the baseline accession number so the
    responsible team can act: overdue ones are past due date plus the spec's grace period."""
    from radpath.runtime import prepare_ledger

    prepare_ledger()
    from integrations.db.surveillance import plans

    found = plans(include_closed=show_closed)
    if not found:
        console.print("no surveillance plans" + ("" if show_closed else " open"))
        return
    _print_rows("surveillance plans", [
        {"plan": p.plan_id, "pathway": p.pathway, "accession": p.accession_number, "patient": p.patient_key,
         "recommendation": p.recommendation_code, "due": p.due_on.isoformat(), "escalated from": p.overdue_on.isoformat(),
         "status": p.status + (f" ({p.closed_reason})" if p.closed_reason else ""),
         "follow-up ordered": "yes" if p.follow_up_ordered else "no", "alerted": "yes" if p.alerted else "no",
         "outcome": p.outcome}
        for p in found])


@app.command("monitor")
def monitor() -> None:
    """The evidence loop: each pathway's AI results against the radiologists' signed reports, per
    model version and trust (true/false positives and negatives, sensitivity and specificity with
    95 % Wilson intervals, size agreement)."""
    from radpath.runtime import prepare_ledger

    prepare_ledger()
    from integrations.db.radiologist_reports import concordance
    from pathways.concordance import concordance_table

    rows = concordance()
    if not rows:
        console.print("no AI result has a radiologist's report yet")
        return
    _print_rows("concordance with the radiologists' reports", concordance_table(rows))


def _prefect_ui_url() -> str | None:
    """The Prefect UI's address: PREFECT_UI_URL, else the API URL without its /api."""
    import os

    url = os.environ.get("PREFECT_UI_URL") or (os.environ.get("PREFECT_API_URL") or "").removesuffix("/").removesuffix("/api")
    return url.rstrip("/") or None


@audit_app.command("verify")
def audit_verify() -> None:
    """Seal what is unsealed, then recompute the whole chain: exit 1 if any event was edited,
    deleted or reordered. Prints the head to compare with the last export."""
    from integrations.db.audit import seal, verify
    from radpath.runtime import prepare_ledger

    prepare_ledger()
    seal()
    report = verify()
    for problem in report.problems:
        console.print(f"[red]{problem}[/red]")
    console.print(f"{report.sealed} audit events chained, {report.unsealed} not yet sealed; "
                  f"head seq {report.head_seq} chain {report.head_chain}")
    if not report.intact:
        console.print(f"[red]audit chain broken in {len(report.problems)} place(s)[/red]")
        raise typer.Exit(1)
    console.print("audit chain intact")


@audit_app.command("export")
def audit_export(
    out: Path = typer.Option(..., "--out", help="NDJSON file of FHIR R4 AuditEvent resources (written whole, then renamed)"),
    after: int = typer.Option(0, "--after", help="Only events after this chain sequence number (the last export's head)"),
) -> None:
    """Sealed audit events, in chain order, as FHIR AuditEvent (DICOM audit message types)."""
    import json

    from integrations.db.audit import seal, sealed_events
    from integrations.durable import write_durably
    from integrations.fhir.audit_event import audit_event_resource
    from integrations.settings import get_settings
    from radpath.runtime import prepare_ledger

    prepare_ledger()
    seal()
    site = get_settings().trust
    written = []

    def lines():  # streamed: years of audit never sit in memory at once
        for row in sealed_events(after):
            written.append(row.seq)
            yield (json.dumps(audit_event_resource(row, site=site), separators=(",", ":")) + "\n").encode()

    write_durably(out, lines())
    head = f"; head seq {written[-1]}" if written else ""
    console.print(f"{len(written)} audit events written to {out}{head}")

def main() -> None:
    """The `radpath` entry point: a configuration radpath cannot run with is one line naming the
    setting and exit status 2, never a traceback (and never a silent run on defaults)."""
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from integrations.settings import ConfigurationError, describe_invalid_settings
    from pathways.registry import RegistryError

    try:
        app()
    except (ValidationError, SettingsError) as exc:
        problem = describe_invalid_settings(exc)
    except ConfigurationError as exc:
        problem = str(exc)
    except RegistryError as exc:
        problem = "; ".join(exc.errors)
    else:
        return
    Console(stderr=True, width=None if sys.stderr.isatty() else 160).print(
        f"[red]radpath: configuration error: {problem}[/red]", highlight=False, soft_wrap=True)
    raise SystemExit(2)


if __name__ == "__main__":
    main()
