"""The health checks of `radpath serve`: its three front doors and every destination (issue 22).

Every `health_check_seconds` the serve loop calls `HealthChecker.check_all`: each listener is
asked whether it is serving, and the MLLP and HTTP doors are then connected to on loopback as
a peer would (the DICOM door checks its listening socket and accept thread instead); each
destination gets the harmless exchange of `radpath deliveries test` (C-ECHO, FHIR `metadata`,
a TCP connect to an MLLP RIS, a writable folder). Results go to the ledger
(`integrations.db.health.record_check`); a change of state emits `radpath.door.down|up` or
`radpath.destination.down|up`, which the automations turn into alerts naming the peer's error.

`/health` checks the ledger and the doors live and reads the destinations' last checks: 200
when all is well, 503 naming what is not. `/health/live` answers 200 while the process serves
HTTP at all (for a liveness probe that must not restart radpath because a RIS is down).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from integrations.db import health
from integrations.delivery.probe import Probe, check_destination

log = logging.getLogger("radpath.health")

CONNECT_TIMEOUT_S = 3.0


def loopback(bind_host: str) -> str:
    """Where a listener bound to `bind_host` is reached from this machine."""
    return {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(bind_host, bind_host)


async def _accepts(host: str, port: int) -> str | None:
    """None when a TCP connection to host:port opens, else why not."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError) as exc:
        return exc.__class__.__name__ + (f" ({exc.strerror})" if getattr(exc, "strerror", None) else "")
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
    return None


class HealthChecker:
    """Checks of one running `radpath serve`: `doors` maps each door to a callable saying whether
    its server is serving, and to the port it listens on, to connect to on loopback, and whether
    to connect (the DICOM door is not connected to: see ScpHandle.accepting)."""

    def __init__(self, settings: Any, destinations: list[str],
                 doors: dict[str, tuple[Callable[[], bool], int, bool]],
                 emit_change: Callable[..., None]):
        self.settings, self.destinations, self.doors, self.emit_change = settings, sorted(set(destinations)), doors, emit_change

    async def check_doors(self) -> dict[str, Probe]:
        host = loopback(self.settings.bind_host)

        async def check(door: str, serving: Callable[[], bool], port: int, connect: bool) -> Probe:
            where = f"{door.upper()} {self.settings.bind_host}:{port}"
            if not serving():
                return Probe(False, f"{where}: the listener has stopped")
            if not connect:
                return Probe(True, f"{where}: listening")
            refused = await _accepts(host, port)
            return Probe(refused is None, f"{where}: " + ("accepting connections" if refused is None
                                                           else f"not accepting connections: {refused}"))

        probes = await asyncio.gather(*(check(door, *spec) for door, spec in self.doors.items()))
        return dict(zip(self.doors, probes))

    async def check_destinations(self) -> dict[str, Probe]:
        def check(name: str) -> Probe:
            return check_destination(self.settings.destination(name), periodic=True)

        probes = await asyncio.gather(*(asyncio.to_thread(check, name) for name in self.destinations))
        return dict(zip(self.destinations, probes))

    async def check_all(self) -> None:
        """One round of checks, recorded; each change of state announced once."""
        doors, destinations = await asyncio.gather(self.check_doors(), self.check_destinations())
        for kind, probes in (("door", doors), ("destination", destinations)):
            for name, probe in probes.items():
                peer = health.peer_name(kind, name)
                change = await asyncio.to_thread(health.record_check, peer, probe.ok, probe.detail)
                if change:
                    (log.warning if change == "down" else log.info)("%s %s: %s", peer, change, probe.detail)
                    self.emit_change(peer, change, probe.detail)

    async def report(self) -> tuple[int, dict[str, Any]]:
        """`/health`: the HTTP status (200 or 503) and a body of states and counts. No peer
        detail text: the endpoint needs no credentials, and details name internal addresses
        (they are in `radpath status` and the radpath-health table)."""
        doors = await self.check_doors()
        ledger_ok = await asyncio.to_thread(health.ledger_reachable)
        stale_after = 3 * self.settings.health_check_seconds  # a stalled check loop reads "unknown", not a stale "up"
        rows = (await asyncio.to_thread(lambda: health.health_rows(self.destinations, (), stale_after_s=stale_after))
                if ledger_ok else [])
        door_rows = [health.PeerStatus("door", name, "up" if probe.ok else "down", None, None, probe.detail)
                     for name, probe in doors.items()]
        found = health.problems([*door_rows, *rows], ledger_ok)
        body = {
            "status": "unhealthy" if found else "ok",
            "problems": found,
            "ledger": "up" if ledger_ok else "down",
            "doors": {row.name: row.state for row in door_rows},
            "destinations": {row.name: {"state": row.state, "paused": row.paused, "pending": row.pending,
                                        "dead_letters": row.dead_letters,
                                        "checked_at": row.checked_at.isoformat() if row.checked_at else None}
                             for row in rows},
        }
        return (503 if found else 200), body

    async def run_forever(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.check_all()
            except Exception:  # the next round checks again
                log.warning("health checks failed", exc_info=True)
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.settings.health_check_seconds)
            except TimeoutError:
                pass
