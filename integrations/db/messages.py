"""The inbound-message record: every message as received (HL7 v2 or FHIR), the answer radpath
gave it, and quarantined bytes. The only writer of `inbound_message` and `hl7_quarantine`.

Functions take the caller's session: the MLLP listener batches several messages into one
transaction (group commit), and the FHIR door commits message and order together.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select as sa_select
from sqlmodel import Session, select

from integrations.db.engine import get_engine
from integrations.db.ledger import audit
from integrations.db.models import Hl7Quarantine, InboundMessage, column_values


def stored_ack(session: Session, application: str, facility: str, control_id: str) -> str | None:
    """Only the ACK stored for that message (one column, no ORM object: asked for every message)."""
    query = sa_select(InboundMessage.ack).where(InboundMessage.sender_application == application,
                                                InboundMessage.sender_facility == facility,
                                                InboundMessage.control_id == control_id)
    return session.connection().execute(query).scalar()


def stored_ack_now(application: str, facility: str, control_id: str) -> str | None:
    """`stored_ack` in its own read-only connection (asked before a message is queued to commit)."""
    with Session(get_engine()) as session:
        return stored_ack(session, application, facility, control_id)


def received_message(session: Session, application: str, facility: str, control_id: str) -> InboundMessage | None:
    """The message already received from this sender under this control id (HL7 MSH-3/4/10), if any."""
    return session.exec(
        select(InboundMessage).where(
            InboundMessage.sender_application == application,
            InboundMessage.sender_facility == facility,
            InboundMessage.control_id == control_id,
        )
    ).first()


def add_message(session: Session, *, application: str, facility: str, control_id: str, message_type: str,
                raw: str, status: str = "accepted", error: str | None = None, protocol: str = "hl7v2") -> InboundMessage:
    message = InboundMessage(**message_values(application=application, facility=facility, control_id=control_id,
                                              message_type=message_type, raw=raw, status=status, error=error,
                                              protocol=protocol))
    session.add(message)
    session.flush()  # rows referring to it (order, quarantine) are inserted after it
    return message


def answer(message: InboundMessage, ack: str, *, rejected: str | None = None) -> None:
    """Store the ACK sent for a message (a resend gets the same) and, when it was refused, why."""
    message.ack = ack
    if rejected is not None:
        message.status, message.error = "rejected", rejected


def message_values(*, application: str, facility: str, control_id: str, message_type: str, raw: str,
                   status: str = "accepted", error: str | None = None, ack: str | None = None,
                   protocol: str = "hl7v2") -> dict[str, Any]:
    """An inbound message's columns (for a Core INSERT on the HL7 intake's hot path)."""
    return column_values(InboundMessage, protocol=protocol, sender_application=application, sender_facility=facility,
                         control_id=control_id, message_type=message_type, raw=raw, status=status, error=error,
                         ack=ack)


def redact(session: Session, message_types: tuple[str, ...], received_before: dt.datetime) -> int:
    """Delete the raw text of messages of these types (accepted or refused) received before the
    cutoff (the retention of radiologists' reports); the row, its identity and its ACK stay, so a
    resend is still answered as before."""
    rows = session.exec(select(InboundMessage).where(InboundMessage.message_type.in_(message_types),
                                                     InboundMessage.received_at <= received_before,
                                                     InboundMessage.raw != "")).all()
    for row in rows:
        row.raw = ""
    ids = [row.id for row in rows]
    if ids:  # a refused report's bytes kept in quarantine go too
        for kept in session.exec(select(Hl7Quarantine).where(Hl7Quarantine.message_id.in_(ids))).all():
            kept.raw = b""
    return len(rows)


def quarantine(session: Session, *, raw: bytes, reason: str, location: str, peer: str,
               control_id: str | None = None, message_id: str | None = None, ack: str | None = None,
               size: int | None = None) -> str:
    """Keep rejected bytes exactly as received (first 64 KiB of an oversized frame)."""
    row = Hl7Quarantine(peer=peer, reason=reason[:500], location=location, control_id=control_id,
                        message_id=message_id, size_bytes=size or len(raw), raw=raw, ack=ack)
    session.add(row)
    audit(session, "hl7", "message.quarantined", "hl7_quarantine", row.id, location=location)
    return row.id
