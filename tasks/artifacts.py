"""Artifacts for people: one markdown summary per pathway run in the Prefect UI.

Everything here is pseudonymous: study keys, findings and timings, never identity.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from pathways.report import ReportContent


def run_summary_markdown(
    pathway: str,
    study_key: str,
    content: ReportContent,
    timings_s: Mapping[str, float],
    receipts: Sequence[str],
) -> str:
    """The ops summary of one run (pure)."""
    lines = [
        f"# {content.title}",
        f"**Pathway** `{pathway}` · **Study** `{study_key}` · **Urgent** {'YES' if content.urgent else 'no'}",
        "",
        f"**Conclusion:** {content.conclusion}",
        "",
        "## Findings",
    ]
    if content.findings:
        lines += ["| Finding | Site | Measurements | Notes |", "|---|---|---|---|"]
        for f in content.findings:
            measures = ", ".join(
                f"{m.concept.display} {m.value:.4g}" + ("" if m.unit.code == "1" else f" {m.unit.code}")  # UCUM "1": unitless
                for m in f.measurements
            )
            notes = ", ".join(q.value.display for q in f.qualitative)
            lines.append(f"| {f.label} | {f.site.display if f.site else ''} | {measures} | {notes} |")
    else:
        lines.append("None.")
    lines += ["", "## Step timings", "| Step | Seconds |", "|---|---|"]
    lines += [f"| {step} | {seconds:.2f} |" for step, seconds in timings_s.items()]
    lines += ["", "## Deliveries"] + [f"- {r}" for r in receipts] or ["- none"]
    return "\n".join(lines)


@task(name="publish-run-summary", cache_policy=NO_CACHE)
def publish_run_summary(
    pathway: str, study_key: str, content: ReportContent, timings_s: dict[str, float], receipts: list[str]
) -> str:
    markdown = run_summary_markdown(pathway, study_key, content, timings_s, receipts)
    create_markdown_artifact(
        markdown=markdown,
        key=f"{pathway}-{study_key}".lower(),
        description=f"{pathway} result for study {study_key}",
    )
    return markdown


def not_measurable_markdown(pathway: str, study_key: str, reasons: Sequence[str], timings_s: Mapping[str, float]) -> str:
    """The ops summary of a run that ended not measurable (pure): the reasons, no conclusion."""
    lines = [
        f"# {pathway}: not measurable",
        f"**Pathway** `{pathway}` · **Study** `{study_key}`",
        "",
        "The AI result was withheld: no clinical conclusion was made or delivered. The study is read as usual.",
        "",
        "## Reasons",
        *[f"- {r}" for r in reasons],
        "",
        "## Step timings",
        "| Step | Seconds |",
        "|---|---|",
        *[f"| {step} | {seconds:.2f} |" for step, seconds in timings_s.items()],
    ]
    return "\n".join(lines)


@task(name="publish-not-measurable-summary", cache_policy=NO_CACHE)
def publish_not_measurable_summary(pathway: str, study_key: str, reasons: list[str], timings_s: dict[str, float]) -> str:
    markdown = not_measurable_markdown(pathway, study_key, reasons, timings_s)
    create_markdown_artifact(markdown=markdown, key=f"{pathway}-{study_key}".lower(),
                             description=f"{pathway}: study {study_key} not measurable")
    return markdown


@task(name="publish-ops-tables", cache_policy=NO_CACHE)
def publish_ops_tables() -> None:
    """Keyed table artifacts for ops (each key keeps its history in the UI): turnaround per
    pathway, SLA per pathway and lane, open work, queue depth, health, surveillance, dead letters. Counts,
    times, pseudonymous study keys and opaque ids only."""
    from integrations.db import ops
    from integrations.db.health import health_table
    from integrations.db.surveillance import plans, surveillance_rows
    from pathways.registry import default_registry

    create_table_artifact(key="radpath-turnaround", table=ops.turnaround_table() or [{"pathway": "none yet"}],
                          description="Turnaround per pathway, minutes (order received → study ready → inference done → delivered)")
    depth = [{"queue": f"{kind}: {status}", "count": n} for kind, counts in ops.status_counts().items() for status, n in sorted(counts.items())]
    create_table_artifact(key="radpath-queue-depth", table=depth or [{"queue": "empty", "count": 0}],
                          description="Orders, studies, pathway runs and deliveries by status")
    create_table_artifact(key="radpath-sla", table=ops.sla_table() or [{"pathway": "none yet"}],
                          description="Turnaround against target per pathway and lane (order received → result "
                          "delivered; the spec's sla): delivered within target, late, open past target")
    create_table_artifact(key="radpath-open-work", table=ops.open_work_table() or [{"open work": "none"}],
                          description="Pathway runs with work left, oldest order first: the stage each waits in, "
                          "for how long, and whether it is past its SLA target")
    create_table_artifact(key="radpath-health", table=health_table(default_registry().destination_names()),
                          description="Front doors and destinations: the last check of each (every health_check_seconds "
                          "while radpath serve runs), pending deliveries, dead letters, last delivery")
    publish_surveillance_table.fn(surveillance_rows(plans()))
    create_table_artifact(key="radpath-dead-letters", table=dead_letter_rows(ops.dead_letters()),
                          description="Deliveries that will not be retried; act on each: fix the peer, then "
                          "`radpath deliveries retry --destination NAME` (or the deliveries-admin deployment)")


@task(name="publish-surveillance-table", cache_policy=NO_CACHE)
def publish_surveillance_table(rows: list[dict]) -> None:
    """The radpath-surveillance table (`integrations.db.surveillance.surveillance_rows`: no
    accession numbers): open follow-up plans, earliest due first."""
    create_table_artifact(key="radpath-surveillance", table=rows or [{"surveillance": "no open plans"}],
                          description="Follow-up scans recommended and not yet received, earliest due first: due date, "
                          "when the failsafe escalates, whether a follow-up is ordered. `radpath surveillance list` "
                          "on the ledger host shows the accession numbers")


def publish_concordance_table(rows: list[dict]) -> None:
    """The radpath-concordance table (`pathways.concordance.concordance_table` rows)."""
    create_table_artifact(key="radpath-concordance", table=rows or [{"concordance": "no AI result has a report yet"}],
                          description="The evidence loop: each model version's AI results against the radiologists' "
                          "signed reports over its pathway's monitoring window, per trust (sensitivity and "
                          "specificity with 95 % Wilson intervals)")


def dead_letter_rows(letters) -> list[dict]:  # noqa: ANN001 - ops.DeadLetter rows
    """The dead-letter table (pure). The peer's last answer stays in the ledger (`radpath
    deliveries list`): it may quote patient data. Empty says so in words, never a row that
    looks like a delivery."""
    rows = [{k: v for k, v in vars(d).items() if k != "last_response"} for d in letters]
    return rows or [{"dead letters": "no dead letters"}]
