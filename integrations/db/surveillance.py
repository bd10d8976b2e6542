"""Surveillance plans: the one write path of `SurveillancePlan` rows, and the failsafe's reads.

A plan's life (issue 17): opened with the result whose recommendation names a follow-up scan
(`open_plan`, inside `ledger.record_result`'s transaction) → received when a later study of
the same patient is handed to a run of the same pathway (`study_arrived`, inside the readiness
sweep's transaction) → or cancelled when its result is rejected at review or superseded by a
later revision of the same study (`cancel_for_result`), or when an ADT message records the
patient deceased (`cancel_for_patient`). An ADT^A40 merge moves the prior patient's plans to the
surviving patient (`merge_patient`). The radiologist's signed report may ask for a follow-up too
(`follow_up_from_report`): it opens a plan where the AI asked for none, or brings one forward.
A plan still due past `overdue_at` is overdue: the failsafe claims each alert with a conditional
UPDATE (`claim_alert`), so two failsafe passes never alert together, and alerts again every
`realert_days` while it stays overdue.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import update
from sqlmodel import Session, select

from integrations.db.engine import session_scope
from integrations.db.ledger import audit, study_key
from integrations.db.models import Order, PathwayRun, Result, ReviewStatus, Study, SurveillancePlan, utcnow
from pathways.spec import FollowUp

DUE, RECEIVED, CANCELLED = "due", "received", "cancelled"
OVERDUE = "overdue"  # a due plan past its grace period (derived, never stored)


def open_plan(session: Session, result: Result, follow_up: FollowUp) -> SurveillancePlan:
    """The plan of a newly recorded result, due `follow_up.days` after its baseline scan."""
    run = session.get(PathwayRun, result.run_id)
    order = session.get(Order, run.order_id)
    study = session.get(Study, run.study_id)
    baseline = baseline_time(result.assessment.get("study_date"), study.first_received_at)
    due = baseline + dt.timedelta(days=follow_up.days)
    plan = SurveillancePlan(result_id=result.id, patient_key=order.patient_key, pathway=result.pathway,
                            recommendation_code=follow_up.recommendation_code, baseline_at=baseline, due_at=due,
                            overdue_at=due + dt.timedelta(days=follow_up.grace_days))
    session.add(plan)
    audit(session, "pathway", "surveillance.opened", "surveillance_plan", plan.id, result_id=result.id,
          recommendation=follow_up.recommendation_code, due=due.date().isoformat())
    return plan


def follow_up_from_report(session: Session, order_id: str, pathway: str, days: int, *, actor: str) -> None:
    """The radiologist's report asks for a follow-up scan `days` after the baseline: the AI
    result's plan is brought forward where the report's date is earlier, or opened where the AI
    asked for none. Never later, never cancelled: a report only ever adds surveillance."""
    from pathways.registry import default_registry

    spec = default_registry().specs.get(pathway)
    row = session.exec(
        select(Result).join(PathwayRun, PathwayRun.id == Result.run_id)
        .where(PathwayRun.order_id == order_id, Result.pathway == pathway, Result.superseded_by.is_(None),
               (Result.review_status.is_(None)) | (Result.review_status != ReviewStatus.REJECTED))
        .order_by(Result.created_at.desc())).first()
    if row is None or spec is None:
        return
    plan = session.exec(select(SurveillancePlan).where(SurveillancePlan.result_id == row.id)).first()
    grace = dt.timedelta(days=spec.surveillance.grace_days)
    if plan is None:
        follow_up = FollowUp(f"report-ct-{days}d", days, spec.surveillance.grace_days)
        opened = open_plan(session, row, follow_up)
        audit(session, actor, "surveillance.from-report", "surveillance_plan", opened.id, days=days)
        return
    due = plan.baseline_at + dt.timedelta(days=days)
    if plan.status == DUE and due < plan.due_at:
        plan.due_at, plan.overdue_at = due, due + grace
        audit(session, actor, "surveillance.brought-forward", "surveillance_plan", plan.id, days=days,
              due=due.date().isoformat())


def baseline_time(study_date: str | None, arrived_at: dt.datetime) -> dt.datetime:
    """When the follow-up interval starts: the day the scan was made (DICOM Study Date, as the
    assessment records it; BTS 2015 counts from the scan), or when radpath received it where the
    date is unknown or later (a study that arrives weeks late is not given weeks more)."""
    try:
        scanned = dt.datetime.combine(dt.date.fromisoformat(study_date), dt.time(), dt.timezone.utc) if study_date else None
    except ValueError:
        scanned = None
    arrived = arrived_at if arrived_at.tzinfo else arrived_at.replace(tzinfo=dt.timezone.utc)
    return min(scanned, arrived) if scanned else arrived


def study_arrived(session: Session, run: PathwayRun, study: Study, patient_key: str) -> None:
    """A study handed to `run`: it is the follow-up of every due plan of the same patient and
    pathway whose baseline study is another, earlier one."""
    plans = session.exec(
        select(SurveillancePlan, Result.study_uid)
        .join(Result, Result.id == SurveillancePlan.result_id)
        .where(SurveillancePlan.patient_key == patient_key, SurveillancePlan.pathway == run.pathway,
               SurveillancePlan.status == DUE, SurveillancePlan.baseline_at < study.first_received_at)
    ).all()
    for plan, baseline_uid in plans:
        if baseline_uid != study.study_uid:
            _close(session, plan, RECEIVED, f"follow-up study received ({study_key(study.study_uid)})",
                   actor="readiness", run_id=run.id)


def cancel_for_result(session: Session, result_id: str, reason: str, actor: str) -> None:
    """The plan of a result that no longer stands (rejected at review, superseded) is cancelled."""
    plan = session.exec(select(SurveillancePlan).where(SurveillancePlan.result_id == result_id,
                                                       SurveillancePlan.status == DUE)).first()
    if plan is not None:
        _close(session, plan, CANCELLED, reason, actor=actor)


def cancel_for_patient(session: Session, patient_keys: set[str], reason: str, actor: str) -> None:
    """Every due plan of the patient is cancelled (recorded deceased)."""
    if not patient_keys:
        return
    for plan in session.exec(select(SurveillancePlan).where(SurveillancePlan.patient_key.in_(patient_keys),
                                                            SurveillancePlan.status == DUE)).all():
        _close(session, plan, CANCELLED, reason, actor=actor)


def merge_patient(session: Session, prior_keys: set[str], surviving_key: str, actor: str) -> None:
    """ADT^A40: the prior patient's plans (due or closed) become the surviving patient's."""
    for plan in session.exec(select(SurveillancePlan).where(SurveillancePlan.patient_key.in_(prior_keys))).all():
        plan.patient_key = surviving_key
        audit(session, actor, "surveillance.patient-merged", "surveillance_plan", plan.id, into=surviving_key)


def _close(session: Session, plan: SurveillancePlan, status: str, reason: str, *, actor: str,
           run_id: str | None = None) -> None:
    plan.status, plan.closed_at, plan.close_reason, plan.closed_by_run_id = status, utcnow(), reason, run_id
    audit(session, actor, f"surveillance.{status}", "surveillance_plan", plan.id, reason=reason, run_id=run_id)


def claim_alert(plan_id: str, now: dt.datetime, realert_days: int) -> bool:
    """True for the one caller that may alert on this overdue plan now: never alerted, or last
    alerted `realert_days` ago (a conditional UPDATE, so two failsafe passes never both alert)."""
    again = now - dt.timedelta(days=realert_days)
    with session_scope() as session:
        claimed = session.execute(
            update(SurveillancePlan)
            .where(SurveillancePlan.id == plan_id, SurveillancePlan.status == DUE, SurveillancePlan.overdue_at <= now,
                   SurveillancePlan.alerted_at.is_(None) | (SurveillancePlan.alerted_at <= again))
            .values(alerted_at=now)
        ).rowcount == 1
        if claimed:
            audit(session, "failsafe", "surveillance.overdue-alerted", "surveillance_plan", plan_id)
        return claimed


@dataclass(frozen=True)
class PlanRow:
    """One plan as ops and the responsible team see it: pseudonymous keys, dates, status."""

    plan_id: str
    pathway: str
    patient_key: str
    study_key: str  # the baseline study
    accession_number: str  # of the baseline order: for the responsible team's terminal, never Prefect
    recommendation_code: str
    due_on: dt.date
    overdue_on: dt.date
    status: str  # due | overdue | received | cancelled
    follow_up_ordered: bool  # an order of the same pathway for the patient came after the baseline
    alerted: bool
    closed_reason: str
    # Where the patient stands: on surveillance (due, or the follow-up asked for another scan),
    # discharged or referred (the follow-up's recommendation), awaiting result, or cancelled.
    outcome: str = "on surveillance"


def plans(now: dt.datetime | None = None, *, include_closed: bool = False) -> list[PlanRow]:
    """Surveillance plans, earliest due first; `status` says overdue where the grace has passed."""
    now = now or utcnow()
    with session_scope() as session:
        query = (select(SurveillancePlan, Result.study_uid, Result.run_id, Order.accession_number)
                 .join(Result, Result.id == SurveillancePlan.result_id)
                 .join(PathwayRun, PathwayRun.id == Result.run_id)
                 .join(Order, Order.id == PathwayRun.order_id))
        if not include_closed:
            query = query.where(SurveillancePlan.status == DUE)
        rows = session.exec(query.order_by(SurveillancePlan.due_at)).all()
        ordered = _ordered_since(session, [(plan, run_id) for plan, _, run_id, _ in rows if plan.status == DUE])
        follow_ups = _follow_up_recommendations(session, [plan.closed_by_run_id for plan, *_ in rows
                                                          if plan.status == RECEIVED])
        return [PlanRow(plan.id, plan.pathway, plan.patient_key, study_key(uid), accession, plan.recommendation_code,
                        plan.due_at.date(), plan.overdue_at.date(),
                        OVERDUE if plan.status == DUE and plan.overdue_at <= now else plan.status,
                        plan.id in ordered, plan.alerted_at is not None, plan.close_reason,
                        _outcome(plan, follow_ups.get(plan.closed_by_run_id)))
                for plan, uid, _, accession in rows]


def _follow_up_recommendations(session: Session, run_ids: list[str]) -> dict[str, str]:
    """The recommendation code of each follow-up run's current result."""
    if not run_ids:
        return {}
    results = session.exec(select(Result.run_id, Result.assessment)
                           .where(Result.run_id.in_(run_ids), Result.superseded_by.is_(None))).all()
    return {run_id: assessment.get("recommendation_code", "") for run_id, assessment in results}


def _outcome(plan: SurveillancePlan, follow_up_code: str | None) -> str:
    from pathways.registry import default_registry

    if plan.status == CANCELLED:
        return "cancelled"
    if plan.status == DUE:
        return "on surveillance"
    if follow_up_code is None:
        return "awaiting result"
    spec = default_registry().specs.get(plan.pathway)
    outcome = spec.surveillance.outcome(follow_up_code) if spec is not None else "referred"
    return f"{outcome} ({follow_up_code})"


def surveillance_rows(rows: list[PlanRow]) -> list[dict]:
    """The radpath-surveillance table (pure): pseudonymous keys and dates, no accession number."""
    return [{"pathway": r.pathway, "patient": r.patient_key, "baseline study": r.study_key,
             "recommendation": r.recommendation_code, "due": r.due_on.isoformat(),
             "escalated from": r.overdue_on.isoformat(), "status": r.status,
             "follow-up ordered": "yes" if r.follow_up_ordered else "no", "alerted": "yes" if r.alerted else "no",
             "outcome": r.outcome}
            for r in rows]



def _ordered_since(session: Session, due: list[tuple[SurveillancePlan, str]]) -> set[str]:
    """Plans (with their baseline run) whose patient has another order of the same pathway,
    received after the baseline study: the follow-up was booked, though no study has come yet."""
    from integrations.db.orders import OrderStatus  # orders imports this module

    if not due:
        return set()
    orders = session.exec(
        select(Order.patient_key, PathwayRun.pathway, PathwayRun.id, Order.received_at)
        .join(PathwayRun, PathwayRun.order_id == Order.id)
        .where(Order.patient_key.in_({plan.patient_key for plan, _ in due}), Order.status != OrderStatus.CANCELLED)
    ).all()
    return {plan.id for plan, baseline_run in due
            if any(key == plan.patient_key and pathway == plan.pathway and run != baseline_run and at > plan.baseline_at
                   for key, pathway, run, at in orders)}


@dataclass(frozen=True)
class PriorResult:
    """The patient's latest earlier result on the same pathway: what a new study is compared with."""

    result_id: str
    study_key: str
    assessment: dict


def prior_result(run_id: str) -> PriorResult | None:
    """The current (not superseded, not rejected) result of the same pathway and patient whose
    study arrived before this run's study, latest first; None for a first study."""
    with session_scope() as session:
        run = session.get(PathwayRun, run_id)
        order = session.get(Order, run.order_id)
        study = session.get(Study, run.study_id)
        row = session.exec(
            select(Result, Study.study_uid)
            .join(PathwayRun, PathwayRun.id == Result.run_id)
            .join(Order, Order.id == PathwayRun.order_id)
            .join(Study, Study.study_uid == Result.study_uid)
            .where(Order.patient_key == order.patient_key, Result.pathway == run.pathway,
                   Result.superseded_by.is_(None), Result.study_uid != study.study_uid,
                   Study.first_received_at <= study.first_received_at,
                   (Result.review_status.is_(None)) | (Result.review_status != ReviewStatus.REJECTED))
            .order_by(Study.first_received_at.desc())
        ).first()
        if row is None:
            return None
        result, uid = row
        return PriorResult(result.id, study_key(uid), dict(result.assessment))
