"""The radiologist's signed reports: the one write path of `RadiologistReport` rows, and the
evidence loop's read (issue 16).

A report (ORU^R01 from the RIS, inside the MLLP intake's transaction) is matched to its order by
accession number; each of the order's pathways that can read reports keeps its reading
(`pathways.final_reports.READERS`). A correction (OBR-25 C) replaces the reading and text, and is
counted. A report for an exam radpath holds no order for is acknowledged and kept only as the
inbound message (a RIS sends every exam's report). The text, and the raw message that carried it,
go after `report_text_retention_days` (`purge_texts`); the readings stay.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlmodel import Session, select

from integrations.db import messages, surveillance
from integrations.db.engine import session_scope
from integrations.db.ledger import audit
from integrations.db.models import Order, PathwayRun, RadiologistReport, Result, utcnow
from pathways.concordance import VersionConcordance, by_model_version, compare
from pathways.final_reports import FinalReport, readings


def record_report(session: Session, report: FinalReport, message_id: str, *, actor: str) -> RadiologistReport | None:
    """Keep the report of the order whose accession number it names; None: no such order."""
    order = session.exec(select(Order).where(Order.accession_number == report.accession_number)
                         .order_by(Order.received_at.desc())).first()
    if order is None:
        audit(session, actor, "report.unmatched", "inbound_message", message_id)
        return None
    pathways = sorted(set(session.exec(select(PathwayRun.pathway).where(PathwayRun.order_id == order.id)).all()))
    row = session.exec(select(RadiologistReport).where(RadiologistReport.order_id == order.id)).first()
    corrected = row is not None
    row = row or RadiologistReport(order_id=order.id, message_id=message_id, result_status=report.result_status)
    row.message_id, row.result_status, row.text, row.text_purged_at = message_id, report.result_status, report.text, None
    row.readings, row.reported_at, row.received_at = readings(pathways, report.text), report.reported_at, utcnow()
    row.corrections += 1 if corrected else 0
    session.add(row)
    for pathway, reading in row.readings.items():  # a follow-up the radiologist asks for is tracked too
        if reading.get("follow_up_days"):
            surveillance.follow_up_from_report(session, order.id, pathway, reading["follow_up_days"], actor=actor)
    audit(session, actor, "report.corrected" if corrected else "report.received", "radiologist_report", row.id,
          order_id=order.id, status=report.result_status, read_by=sorted(row.readings))
    return row


@dataclass(frozen=True)
class ReportOutcome:
    """What became of a report sent to the FHIR door."""

    report_id: str | None  # None: no order has this accession number (nothing kept but the message)
    duplicate: bool  # the same resource was received before
    corrected: bool  # it replaced an earlier report of the exam


def commit_report(report: FinalReport, raw: str, *, protocol: str, actor: str) -> ReportOutcome:
    """Record one report and its message in one transaction (the FHIR door; the HL7 intake runs
    `record_report` inside its batched commit). A resend writes nothing."""
    with session_scope() as session:
        earlier = messages.received_message(session, report.sending_application, report.sending_facility,
                                            report.control_id)
        if earlier is not None:
            row = session.exec(select(RadiologistReport).where(RadiologistReport.message_id == earlier.id)).first()
            return ReportOutcome(row.id if row else None, duplicate=True, corrected=False)
        message = messages.add_message(session, application=report.sending_application,
                                       facility=report.sending_facility, control_id=report.control_id,
                                       message_type=report.message_type, raw=raw, protocol=protocol)
        row = record_report(session, report, message.id, actor=actor)
        return ReportOutcome(row.id if row else None, duplicate=False, corrected=bool(row and row.corrections))


REPORT_MESSAGE_TYPES = ("ORU^R01", "DiagnosticReport")


def purge_texts(now: dt.datetime, retention_days: int) -> int:
    """Delete report texts older than the retention, and the raw text of every report message
    (earlier versions a correction replaced, and reports of exams radpath holds no order for,
    too); the count of reports purged."""
    cutoff = now - dt.timedelta(days=retention_days)
    with session_scope() as session:
        rows = session.exec(select(RadiologistReport).where(RadiologistReport.text.is_not(None),
                                                            RadiologistReport.received_at <= cutoff)).all()
        for row in rows:
            row.text, row.text_purged_at = None, now
            audit(session, "retention", "report.text-purged", "radiologist_report", row.id)
        messages.redact(session, REPORT_MESSAGE_TYPES, cutoff)
        return len(rows)


@dataclass(frozen=True)
class ReportedResult:
    """An AI result beside the reading of the same exam's report (no identifiers)."""

    pathway: str
    model_version: str
    trust: str  # the ordering facility (the order sender's facility: HL7 MSH-4)
    assessment: dict
    reading: dict


def reported_results(since: dt.datetime | None = None) -> list[ReportedResult]:
    """Every current (not superseded) AI result whose exam has a report its pathway read (received
    since `since`, where given); shadow results too: that is the evidence for going live."""
    with session_scope() as session:
        query = (select(Result, RadiologistReport, Order.sender)
                 .join(PathwayRun, PathwayRun.id == Result.run_id)
                 .join(Order, Order.id == PathwayRun.order_id)
                 .join(RadiologistReport, RadiologistReport.order_id == Order.id)
                 .where(Result.superseded_by.is_(None)))
        if since is not None:
            query = query.where(RadiologistReport.received_at >= since)
        rows = session.exec(query).all()
        return [ReportedResult(result.pathway, result.model_version, (sender or "").rpartition("^")[2], dict(result.assessment),
                               report.readings[result.pathway])
                for result, report, sender in rows if result.pathway in report.readings]


def concordance(since: dt.datetime | None = None) -> list[VersionConcordance]:
    """The evidence loop's figures: every reported result (since `since`) compared, per pathway,
    model version and trust (`radpath monitor`, the demo, flows/monitor.py)."""
    return by_model_version(c for r in reported_results(since)
                            if (c := compare(r.pathway, r.model_version, r.trust, r.assessment, r.reading)) is not None)
