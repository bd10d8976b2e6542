"""`radpath serve`: the front doors (MLLP, DICOM, HTTP) and the served deployments in one process.

Listeners commit first, acknowledge second, and only then call back here, where events go
to Prefect. A periodic sweep over the ledger finds studies ready for their orders and emits
`radpath.run.ready`; the pathway deployments' triggers turn each into a flow run, which a
Prefect `Runner` in this process executes in a subprocess. Each work queue has a runner of
its own, so urgent runs (up to `urgent_runner_limit` at once) never wait behind routine ones
(up to `runner_limit`); on the scale-out route the urgent queue's priority does that. The
runners also serve the clinical-review flow (suspended runs resume here once a reviewer
answers in the Prefect UI) and the scheduled reconciler, which re-drives anything an event
or a crash lost: nothing depends on an event having been seen.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("radpath.serve")

MIN_SWEEP_GAP_S = 0.5  # woken sweeps under a burst of associations: at most two a second

LISTENERS = (("RADPATH_MLLP_PORT", "mllp_port"), ("RADPATH_DICOM_PORT", "dicom_port"), ("RADPATH_HTTP_PORT", "http_port"))


def listen_socket(settings: Any, setting: str, port: int) -> socket.socket:
    """A TCP socket bound to bind_host:port, or a ConfigurationError naming the setting."""
    from integrations.settings import ConfigurationError

    sock = socket.socket(socket.AF_INET6 if ":" in settings.bind_host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((settings.bind_host, port))
    except OSError as exc:
        sock.close()
        raise ConfigurationError(f"{setting}={port}: cannot listen on {settings.bind_host}:{port} ({exc.strerror}); "
                                 "choose a free port or stop what holds it") from None
    return sock


def http_config(app: Any, settings: Any) -> Any:
    """uvicorn's configuration of the HTTP door (STOW-RS, FHIR), with TLS when configured."""
    import uvicorn

    from integrations.tls import server_tls

    tls = server_tls(settings)
    options: dict[str, Any] = {}
    if tls:
        options |= {"ssl_certfile": str(tls.cert_file), "ssl_keyfile": str(tls.key_file)}
        if tls.client_ca_file:
            options |= {"ssl_ca_certs": str(tls.client_ca_file), "ssl_cert_reqs": ssl.CERT_REQUIRED}
    return uvicorn.Config(app, host=settings.bind_host, port=settings.http_port, log_level="warning", **options)


def check_listeners(settings: Any) -> None:
    """Fail before anything starts (a Prefect server takes seconds) if a front door's port is
    taken or its TLS files cannot be used."""
    from integrations.tls import server_context

    server_context(settings)
    for setting, field in LISTENERS:
        port = getattr(settings, field)
        if port:
            listen_socket(settings, setting, port).close()


def _safely(fn: Callable[..., None]) -> Callable[..., None]:
    """Callbacks run after the commit and the answer: a failure here must not reach the peer."""

    def wrapper(*args: Any) -> None:
        try:
            fn(*args)
        except Exception:
            log.warning("post-commit callback %s failed", fn.__name__, exc_info=True)

    return wrapper


async def serve(*, stop: asyncio.Event | None = None, ready_file: Path | None = None, sweep_seconds: float = 5.0) -> None:
    """Run until `stop` is set (or SIGINT/SIGTERM), against the configured Prefect API (a
    server: triggers, suspended runs and schedules need one)."""
    import uvicorn
    from fastapi import FastAPI

    from prefect.runner import Runner

    from deployments.served import runner_deployments
    from integrations.db.audit import seal as seal_audit
    from integrations.db.models import utcnow
    from integrations.db.radiologist_reports import purge_texts as purge_report_texts
    from integrations.dicom.pacs import retrieve_for_waiting_orders
    from integrations.db.studies import sweep_readiness
    from integrations.dicom.scp import start_scp
    from integrations.dicom.store import reconcile_store
    from integrations.dicom.stow import build_router as stow_router
    from integrations.fhir.api import fhir_router
    from integrations.hl7.listener import serve_mllp
    from integrations.settings import get_settings
    from pathways.registry import default_registry
    from integrations.db.ops import audit_spec_modes
    from tasks.events import emit, emit_health_change, emit_order_received, emit_runs_ready
    from radpath.health import HealthChecker

    settings = get_settings()
    registry = default_registry()
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread (tests)
            pass

    @_safely
    def on_order(outcome) -> None:  # noqa: ANN001 - integrations.db.orders.OrderOutcome
        emit_order_received(outcome.order_id, outcome.run_ids, outcome.eligible)

    @_safely
    def on_hl7_event(event) -> None:  # noqa: ANN001 - integrations.hl7.intake.IntakeEvent
        if event.event != "order.received":  # order.received already went out through on_order
            emit(event.event, event.kind, event.entity_id, **event.payload)

    @_safely
    def on_ready(ready) -> None:  # noqa: ANN001 - integrations.db.studies.ReadyStudy
        emit("study.ready", "study", ready.study_id, runs=len(ready.run_ids), forced=ready.forced, rerun=ready.rerun)
        emit_runs_ready(ready.run_ids)  # the deployments' triggers start the flow runs

    changed = audit_spec_modes({name: spec.mode for name, spec in registry.specs.items()})
    if changed:
        log.warning("pathway modes recorded: %s", ", ".join(f"{n}={registry.get(n).mode}" for n in changed))
    check_listeners(settings)  # the same check the CLI makes, for callers that start here
    mllp = await serve_mllp(settings, on_order_committed=on_order, on_event=on_hl7_event)
    swept = await asyncio.to_thread(reconcile_store, settings)  # files a crash left without their ledger row
    if swept.indexed or swept.quarantined or swept.failed:
        log.warning("image store sweep: %d indexed, %d quarantined, %d failed", swept.indexed, swept.quarantined, swept.failed)
    wake = asyncio.Event()  # an MPPS completion or a finished C-STORE association: sweep readiness now
    scp = start_scp(settings, wake_readiness=lambda: loop.call_soon_threadsafe(wake.set))
    app = FastAPI(title="radpath", docs_url=None, redoc_url=None)
    app.include_router(stow_router(settings), prefix="/dicomweb")
    app.include_router(fhir_router(registry, settings=settings, on_order_committed=on_order), prefix="/fhir")

    http = uvicorn.Server(http_config(app, settings))
    http_socket = listen_socket(settings, "RADPATH_HTTP_PORT", settings.http_port)  # uvicorn would sys.exit(1)
    http_task = asyncio.create_task(http.serve(sockets=[http_socket]))
    checker = HealthChecker(
        settings, registry.destination_names(),
        doors={"mllp": (lambda: mllp.server is not None and mllp.server.is_serving(), mllp.port, True),
               "dicom": (scp.accepting, scp.port, False),
               "http": (lambda: http.started and not http_task.done(), http_socket.getsockname()[1], True)},
        emit_change=_safely(emit_health_change))

    @app.get("/health")
    async def health():  # noqa: ANN202 - a JSON response, 200 or 503
        from fastapi.responses import JSONResponse

        code, body = await checker.report()
        return JSONResponse(body, status_code=code)

    @app.get("/health/live")
    async def live() -> dict[str, str]:
        return {"status": "ok"}

    async def sweep_forever() -> None:
        purged_at = 0.0
        due: list[float] = []  # seconds until the soonest quiet period ends, from the last sweep
        swept_at = 0.0
        while not stop.is_set():
            # a sweep holds the ledger's index lock (shared with the C-STORE group commit): woken
            # after every storing association, sweeps keep at least MIN_SWEEP_GAP_S apart under load
            gap = MIN_SWEEP_GAP_S - (time.monotonic() - swept_at)
            if gap > 0:
                try:  # wait_for cancels the inner wait on timeout: no task left behind per sweep
                    await asyncio.wait_for(stop.wait(), timeout=gap)
                    break
                except TimeoutError:
                    pass
            swept_at = time.monotonic()
            if time.monotonic() - purged_at > 60:  # radiologists' report texts past the trust's retention
                purged_at = time.monotonic()
                try:
                    await asyncio.to_thread(purge_report_texts, utcnow(), settings.report_text_retention_days)
                except Exception:  # the next minute tries again
                    log.warning("report text retention failed", exc_info=True)
            try:
                await asyncio.to_thread(retrieve_for_waiting_orders, settings)  # images for orders the PACS holds
            except Exception:  # each order's attempts are audited; the next pass goes on
                log.warning("retrieval from the PACS failed", exc_info=True)
            try:
                due.clear()
                await asyncio.to_thread(sweep_readiness, None, registry, on_ready, due.append)
            except Exception:  # the next sweep retries from ledger state
                log.warning("readiness sweep failed", exc_info=True)
            try:
                await asyncio.to_thread(seal_audit)  # the audit chain trails the writers by seconds
            except Exception:  # the next pass seals what is left
                log.warning("audit sealing failed", exc_info=True)
            waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())]
            # the next tick, or sooner where a waiting run's quiet period ends before it
            timeout = min([sweep_seconds, *(d + 0.05 for d in due)])
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            for waiting in waits:
                waiting.cancel()
            wake.clear()

    workers = [asyncio.create_task(sweep_forever())]
    runners = []
    if settings.serve_deployments:  # else process workers on the `radpath` work pool run the flows
        limits = {"urgent": settings.urgent_runner_limit, "routine": settings.runner_limit}
        for queue, deployments in (await runner_deployments()).items():
            runner = Runner(name=f"radpath-{queue}", query_seconds=1, limit=limits[queue], pause_on_shutdown=False)
            for deployment in deployments:
                await runner.add_deployment(deployment)
            runners.append(runner)

        async def serve_deployments(runner: Runner) -> None:
            """A runner takes SIGTERM over (it cancels its in-flight runs, which the reconciler
            re-drives); when one ends, so does the service."""
            try:
                await runner.start()
            finally:
                stop.set()

        workers += [asyncio.create_task(serve_deployments(runner)) for runner in runners]
    while not http.started and not http_task.done():  # the first health check sees every door open
        await asyncio.sleep(0.05)
    workers.append(asyncio.create_task(checker.run_forever(stop)))
    if ready_file:
        ready_file.write_text(f"mllp={mllp.port} dicom={settings.dicom_port} http={settings.http_port}\n")
    log.warning("radpath serving: MLLP %s:%s, DICOM %s %s:%s, HTTP %s:%s", settings.bind_host, mllp.port,
                settings.dicom_ae_title, settings.bind_host, settings.dicom_port, settings.bind_host, settings.http_port)
    try:
        await stop.wait()
    finally:
        for runner in runners:
            if runner.started:
                await runner.astop()
        for worker in workers:
            worker.cancel()
        http.should_exit = True
        await http_task
        scp.shutdown()
        await mllp.stop()
