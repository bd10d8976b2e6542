"""Health of each front door and destination: the last check, and what the outbox holds (issue 22).

`record_check` is the only writer of `peer_health`. Two kinds of evidence write it: the
checks `radpath serve` makes every `health_check_seconds` (its own listeners, a harmless
exchange with each destination: integrations/delivery/probe.py), and each delivery attempt
(a success is "up"; a transient failure, the peer not answering, is "down"). A change of
state is claimed by one conditional UPDATE, so of two writers seeing the same change only one
reports it (and emits its event). `/health`, `radpath status` and the radpath-health table
read `health_rows`; `problems` (pure) says what makes the service unhealthy.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import func, text, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from integrations.db.engine import session_scope
from integrations.db.models import Delivery, DeliveryStatus, DestinationPause, PeerHealth, utcnow

DOORS = ("mllp", "dicom", "http")


def peer_name(kind: str, name: str) -> str:
    """The `peer_health` key of a door ("door:mllp") or a destination ("destination:ris")."""
    return f"{kind}:{name}"


def record_check(name: str, ok: bool, detail: str, now: dt.datetime | None = None) -> str | None:
    """Record one check of `name` (see `peer_name`); the new state ("up"/"down") when it changed,
    else None. A first check reports "down" (news) but not "up" (the expected state)."""
    state, now = ("up" if ok else "down"), now or utcnow()
    seen = {"last_up_at": now} if ok else {"last_down_at": now}
    with session_scope() as session:
        changed = session.execute(update(PeerHealth).where(PeerHealth.name == name, PeerHealth.state != state)
                                  .values(state=state, since=now, checked_at=now, detail=detail, **seen)).rowcount
        if changed:
            return state
        if session.execute(update(PeerHealth).where(PeerHealth.name == name)
                           .values(checked_at=now, detail=detail, **seen)).rowcount:
            return None
    try:
        with session_scope() as session:
            session.add(PeerHealth(name=name, state=state, since=now, checked_at=now, detail=detail, **seen))
    except IntegrityError:  # another writer made the row first: this check is then an update
        return record_check(name, ok, detail, now)
    return None if ok else "down"


@dataclass(frozen=True)
class PeerStatus:
    """One row of the health table: a front door or a destination."""

    kind: str  # door | destination
    name: str  # mllp | dicom | http, or the destination's name
    state: str  # up | down | unknown (never checked, or not checked for `stale_after`)
    since: dt.datetime | None
    checked_at: dt.datetime | None
    detail: str  # scrubbed: addresses, status codes, the peer's masked words
    paused: bool = False
    pending: int = 0  # deliveries waiting to be sent (due or retrying)
    dead_letters: int = 0
    last_delivered_at: dt.datetime | None = None

    def as_row(self) -> dict[str, str | int]:
        """A table row for people (`radpath status`, the Prefect table artifact)."""
        def stamp(value: dt.datetime | None) -> str:
            return f"{value:%Y-%m-%d %H:%M:%S}" if value else ""

        row: dict[str, str | int] = {"kind": self.kind, "name": self.name,
                                     "state": self.state + (" (paused)" if self.paused else ""),
                                     "since (UTC)": stamp(self.since), "checked (UTC)": stamp(self.checked_at)}
        destination = self.kind == "destination"  # a door has no outbox: its cells stay empty
        row |= {"pending": self.pending if destination else "", "dead letters": self.dead_letters if destination else "",
                "last delivered (UTC)": stamp(self.last_delivered_at)}
        return row | {"detail": self.detail}


def health_rows(destinations: Iterable[str], doors: Sequence[str] = DOORS, *, stale_after_s: float | None = None,
                now: dt.datetime | None = None) -> list[PeerStatus]:
    """The doors, then the destinations, each with its last check and, for a destination, its
    outbox: pending rows, dead letters, last delivery and whether ops paused it."""
    now = now or utcnow()
    destinations = sorted(set(destinations))
    with session_scope() as session:
        checks = {row.name: row for row in session.exec(select(PeerHealth)).all()}
        counts = {f"{destination}|{status}": n for destination, status, n in session.exec(
            select(Delivery.destination, Delivery.status, func.count())
            .where(Delivery.status.in_((DeliveryStatus.PENDING, DeliveryStatus.DEAD_LETTER))).group_by(Delivery.destination, Delivery.status)).all()}
        delivered = dict(session.exec(select(Delivery.destination, func.max(Delivery.delivered_at))
                                      .where(Delivery.status == DeliveryStatus.DELIVERED).group_by(Delivery.destination)).all())
        paused = set(session.exec(select(DestinationPause.destination)).all())

    def status(kind: str, name: str, **outbox: object) -> PeerStatus:
        check = checks.get(peer_name(kind, name))
        if check is None:
            return PeerStatus(kind, name, "unknown", None, None, "never checked", **outbox)
        stale = stale_after_s is not None and (now - check.checked_at).total_seconds() > stale_after_s
        state = "unknown" if stale else check.state
        detail = f"not checked since {check.checked_at:%H:%M:%S} UTC (is radpath serve running?); " if stale else ""
        return PeerStatus(kind, name, state, check.since, check.checked_at, detail + check.detail, **outbox)

    rows = [status("door", door) for door in doors]
    for name in destinations:
        rows.append(status("destination", name, paused=name in paused, pending=counts.get(f"{name}|pending", 0),
                           dead_letters=counts.get(f"{name}|dead_letter", 0), last_delivered_at=delivered.get(name)))
    return rows


def health_table(destinations: Iterable[str]) -> list[dict[str, str | int]]:
    """`health_rows` as table rows for people (`radpath status`, the radpath-health artifact).
    A row not checked for three check intervals reads "unknown": radpath serve is not checking."""
    from integrations.settings import get_settings

    rows = health_rows(destinations, stale_after_s=3 * get_settings().health_check_seconds)
    return [row.as_row() for row in rows]


def problems(rows: Iterable[PeerStatus], ledger_ok: bool = True) -> list[str]:
    """What makes the service unhealthy (pure): the ledger unreachable, a door not up, a
    destination down that ops have not paused. Dead letters are work for ops, not an outage."""
    found = [] if ledger_ok else ["ledger: cannot be reached"]
    for row in rows:
        if row.kind == "door" and row.state != "up":
            found.append(f"door {row.name}: {row.state}")
        elif row.kind == "destination" and row.state == "down" and not row.paused:
            found.append(f"destination {row.name}: down")
    return found


def ledger_reachable() -> bool:
    """One round trip to the ledger database."""
    try:
        with session_scope() as session:
            session.execute(text("SELECT 1"))
        return True
    except Exception:  # noqa: BLE001 - any failure means the ledger cannot serve
        return False
