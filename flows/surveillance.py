"""The surveillance failsafe: a scheduled flow that finds follow-up scans that never happened.

A result whose recommendation names a follow-up scan (lung: CT at 3 or 12 months, BTS 2015)
opened a surveillance plan in the ledger; a later study of the same patient for the same
pathway closes it. Missed follow-up of incidental nodules is a recurring NHS patient-safety
incident, so a plan still open past its due date plus the spec's `surveillance.grace_days` is
announced (`radpath.surveillance.overdue`, which the automation "radpath: follow-up overdue"
turns into an alert), again every `surveillance.realert_days` while it stays overdue, and stays on the radpath-surveillance table and `radpath
surveillance list` until a study comes. Pseudonymous keys only: the responsible team finds
the patient with `radpath surveillance list` on the ledger host.
"""

from __future__ import annotations

import datetime as dt

from prefect import flow
from prefect.states import Completed, State

from integrations.db import surveillance
from integrations.db.models import utcnow
from pathways.registry import default_registry
from tasks.artifacts import publish_surveillance_table
from tasks.events import emit


@flow(name="surveillance-failsafe", flow_run_name="failsafe", persist_result=False)
def surveillance_failsafe(as_of: dt.datetime | None = None) -> State:
    """One failsafe pass at `as_of` (default now): alert each overdue plan not alerted within its
    spec's realert_days."""
    now = as_of or utcnow()
    open_plans = surveillance.plans(now)
    overdue = [plan for plan in open_plans if plan.status == surveillance.OVERDUE]
    alerted = 0
    registry = default_registry()
    for plan in overdue:
        # Claimed before the event: two passes never alert together; an event lost on the way still
        # leaves the plan overdue on the table and in `radpath surveillance list`, and it is
        # alerted again after the spec's realert_days.
        realert = registry.get(plan.pathway).surveillance.realert_days
        if surveillance.claim_alert(plan.plan_id, now, realert):
            emit("surveillance.overdue", "surveillance_plan", plan.plan_id, related={"pathway": plan.pathway},
                 pathway=plan.pathway, patient_key=plan.patient_key, study_key=plan.study_key,
                 recommendation=plan.recommendation_code, due=plan.due_on.isoformat(),
                 days_overdue=(now.date() - plan.due_on).days, repeated=plan.alerted,
                 follow_up_ordered=plan.follow_up_ordered)
            alerted += 1
    publish_surveillance_table(surveillance.surveillance_rows(open_plans))
    return Completed(name="FailsafeChecked",
                     message=f"{len(open_plans)} plans open, {len(overdue)} overdue, {alerted} newly alerted")
