"""One order, whichever front door it came through.

An HL7 ORM and a FHIR ServiceRequest for the same examination carry the same placer order
number and accession number, but different senders ("RIS^TRUST" vs the FHIR client).
Intake looks an order up by that pair, across senders, before inserting one, in the same
transaction as the insert.
"""

from __future__ import annotations

from sqlmodel import Session, select

from integrations.db.models import Order


def same_order(
    session: Session, placer_order_number: str, accession_number: str, *, other_sender: str | None = None
) -> Order | None:
    """The order already recorded under this placer order number and accession, if any.

    With `other_sender`, only an order from a different sender counts (the same sender's
    repeat is governed by the (sender, placer order number) unique constraint as before).
    """
    if not placer_order_number or not accession_number:
        return None
    query = select(Order).where(
        Order.placer_order_number == placer_order_number, Order.accession_number == accession_number
    )
    if other_sender is not None:
        query = query.where(Order.sender != other_sender)
    return session.exec(query.order_by(Order.received_at)).first()
