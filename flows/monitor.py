"""The evidence loop's monitor: a scheduled flow that compares each model version with the
radiologists' signed reports and alerts when agreement has fallen (issue 16).

Per pathway, over its spec's `monitoring.window_days`: the radpath-concordance table (per model
version and trust), and `radpath.model.agreement_low` for each sensitivity or specificity whose
one-sided 95 % Wilson upper bound is below the spec's minimum once `min_cases` studies count
(the automation "radpath: model agreement low" turns it into an alert). Daily, so a drop that
lasts is announced every day until it is dealt with. Ids and figures only.
"""

from __future__ import annotations

import datetime as dt

from prefect import flow
from prefect.states import Completed, State

from integrations.db.models import utcnow
from integrations.db.radiologist_reports import concordance
from pathways.concordance import concordance_table, low_agreement
from pathways.registry import default_registry
from tasks.artifacts import publish_concordance_table
from tasks.events import emit


@flow(name="evidence-monitor", flow_run_name="evidence-monitor", persist_result=False)
def evidence_monitor(as_of: dt.datetime | None = None) -> State:
    """One pass at `as_of` (default now)."""
    now = as_of or utcnow()
    table, alerts = [], 0
    for spec in default_registry().specs.values():
        monitoring = spec.monitoring
        rows = [r for r in concordance(since=now - dt.timedelta(days=monitoring.window_days)) if r.pathway == spec.name]
        table += [{**row, "window (days)": monitoring.window_days} for row in concordance_table(rows)]
        for low in low_agreement(rows, min_cases=monitoring.min_cases, min_sensitivity=monitoring.min_sensitivity,
                                 min_specificity=monitoring.min_specificity):
            emit("model.agreement_low", "model", f"{low.pathway}/{low.model_version}", related={"pathway": low.pathway},
                 pathway=low.pathway, model_version=low.model_version, trust=low.trust, measure=low.measure,
                 value=round(low.value, 3), upper_bound=round(low.upper_bound, 3), minimum=low.minimum,
                 cases=low.cases, window_days=monitoring.window_days)
            alerts += 1
    publish_concordance_table(table)
    return Completed(name="AgreementChecked", message=f"{len(table)} model versions compared, {alerts} below minimum")
