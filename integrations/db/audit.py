"""The audit trail made tamper-evident: a keyed hash chain over every audit event.

Writers add audit events as before (`ledger.audit`, or Core INSERTs on the HL7 hot path) and
never wait for the chain. `seal` then gives each unsealed event, oldest id first, the next
sequence number and `chain = HMAC-SHA256(key, previous chain | seq | the event's content)`;
`radpath serve` seals every few seconds and each reconciler pass seals too. `verify` recomputes
the chain: an edited event breaks its own link, a deleted one leaves a gap in the sequence, and
swapped events break both links. The key is derived from the installation's pseudonym secret
and is not stored in the ledger, so someone who can only write the database cannot re-chain
what they changed. Deleting the newest events leaves no gap: compare the head (`radpath audit
verify` prints it; `radpath audit export` writes it) with the last one exported to the trust's
SIEM.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from dataclasses import dataclass, field

from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from integrations.db.engine import session_scope
from integrations.db.models import AuditEvent
from integrations.settings import get_settings

GENESIS = "0" * 64
SEAL_BATCH = 5000
_PG_LOCK = 0x52414455  # pg_advisory_xact_lock key: one sealer at a time across processes


def chain_key() -> bytes:
    """The chain's HMAC key: derived from the pseudonym secret, never written to the ledger."""
    return hmac.new(get_settings().pseudonym_secret(), b"radpath audit chain v1", hashlib.sha256).digest()


def content(row: AuditEvent) -> bytes:
    """What the chain covers: every column but the chain itself, canonically encoded."""
    return json.dumps(
        {"seq": row.seq, "id": row.id, "at": row.at.isoformat(), "actor": row.actor, "action": row.action,
         "entity_type": row.entity_type, "entity_id": row.entity_id, "detail": row.detail},
        sort_keys=True, separators=(",", ":"), default=str,
    ).encode()


def link(key: bytes, previous: str, row: AuditEvent) -> str:
    return hmac.new(key, previous.encode() + b"|" + content(row), hashlib.sha256).hexdigest()


def seal(limit: int = SEAL_BATCH) -> int:
    """Chain the unsealed events (oldest id first); returns how many. Safe to run from several
    processes: PostgreSQL takes an advisory lock, and a sealer that loses a race on SQLite finds
    the sequence number taken and leaves the events to the next pass."""
    key = chain_key()
    try:
        with session_scope() as session:
            if session.get_bind().dialect.name == "postgresql":
                session.exec(text(f"SELECT pg_advisory_xact_lock({_PG_LOCK})"))
            head = session.exec(select(AuditEvent).where(AuditEvent.seq.is_not(None))
                                .order_by(AuditEvent.seq.desc()).limit(1)).first()
            seq, previous = (head.seq, head.chain) if head else (0, GENESIS)
            rows = session.exec(select(AuditEvent).where(AuditEvent.seq.is_(None))
                                .order_by(AuditEvent.id).limit(limit)).all()
            for row in rows:
                seq += 1
                row.seq = seq
                row.chain = previous = link(key, previous, row)
            return len(rows)
    except IntegrityError:
        return 0


@dataclass(frozen=True)
class Verification:
    sealed: int
    unsealed: int
    head_seq: int
    head_chain: str
    problems: tuple[str, ...] = field(default=())

    @property
    def intact(self) -> bool:
        return not self.problems


def verify() -> Verification:
    """Recompute the whole chain; each problem names the sequence number where it shows."""
    key = chain_key()
    problems: list[str] = []
    expected_seq, previous, sealed = 1, GENESIS, 0
    for row in sealed_events():
        if row.seq != expected_seq:
            problems.append(f"seq {expected_seq}–{row.seq - 1}: events missing (deleted)" if row.seq > expected_seq
                            else f"seq {row.seq}: out of order")
        if not hmac.compare_digest(row.chain or "", link(key, previous, row)):
            problems.append(f"seq {row.seq}: content or order changed (audit event id {row.id})")
        expected_seq, previous, sealed = row.seq + 1, row.chain or "", sealed + 1
    with session_scope() as session:
        unsealed = len(session.exec(select(AuditEvent.id).where(AuditEvent.seq.is_(None))).all())
    return Verification(sealed, unsealed, expected_seq - 1, previous, tuple(problems))


def sealed_events(after_seq: int = 0, batch: int = 2000) -> Iterator[AuditEvent]:
    """Sealed events in chain order, read in batches (an export or a verify of years of audit)."""
    while True:
        with session_scope() as session:
            rows = session.exec(select(AuditEvent).where(AuditEvent.seq > after_seq)
                                .order_by(AuditEvent.seq).limit(batch)).all()
            session.expunge_all()
        if not rows:
            return
        yield from rows
        after_seq = rows[-1].seq
