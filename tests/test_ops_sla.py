"""SLA against target per pathway and lane, and the open work ops see (radpath status, the
radpath-sla and radpath-open-work artifacts)."""

from __future__ import annotations

import datetime as dt

from typer.testing import CliRunner

from integrations.db.ops import TURNAROUND_LEGS, Turnaround, open_work_table, sla_rows, sla_table, turnaround_rows
from integrations.db.models import utcnow
from tests.conftest import ingest_synthetic_study

T0 = dt.datetime(2026, 12, 7, 9, 0, tzinfo=dt.timezone.utc)


def _delivered(pathway: str, lane: str, minutes: float | None, status: str = "completed") -> Turnaround:
    done = None if minutes is None else T0 + dt.timedelta(minutes=minutes)
    return Turnaround(pathway, T0, T0, done, done, lane, status)


def test_sla_rows_count_within_late_and_open_past_target_per_lane():
    """Worked values: lung routine target 60 min, urgent 30 (as lung_cancer_ct.yaml); the table
    is read at T0 + 90 min."""
    items = [
        _delivered("lung-cancer-ct", "routine", 50),  # within 60
        _delivered("lung-cancer-ct", "routine", 70),  # late
        _delivered("lung-cancer-ct", "routine", None, "awaiting_review"),  # open, 90 min old: past target
        Turnaround("lung-cancer-ct", T0 + dt.timedelta(minutes=80), None, None, None, "routine", "waiting"),  # open, 10 min
        _delivered("lung-cancer-ct", "routine", None, "not_measurable"),  # no result due: not counted
        _delivered("lung-cancer-ct", "urgent", 20),  # within 30
        _delivered("lung-cancer-ct", "urgent", 40),  # late
    ]
    targets = {"routine": 60, "urgent": 30}
    rows = sla_rows(items, lambda pathway, lane: targets[lane], T0 + dt.timedelta(minutes=90))
    assert rows == [
        {"pathway": "lung-cancer-ct", "lane": "routine", "target (min)": 60, "delivered": 2, "within target": 1,
         "late": 1, "open": 2, "open past target": 1, "% within target": 33.3},  # 1 of the 3 due
        {"pathway": "lung-cancer-ct", "lane": "urgent", "target (min)": 30, "delivered": 2, "within target": 1,
         "late": 1, "open": 0, "open past target": 0, "% within target": 50.0},
    ]
    assert sla_rows([], lambda p, lane: 60, T0) == []


def test_open_work_shows_each_unfinished_run_its_stage_and_whether_it_is_past_target(radpath_env, registry, tmp_path,
                                                                                     monkeypatch):
    from integrations.db import ledger
    from pathways.orders import urgency
    from radpath import cli
    from radpath.cli import app

    study, run_id = ingest_synthetic_study(tmp_path, registry, "cardiac-ct", 31)
    key = ledger.study_key(study.study_uid)
    (row,) = open_work_table()
    assert row["pathway"] == "heart-failure-cardiac-ct" and row["lane"] == urgency(ledger.run_view(run_id).priority)
    assert (row["stage"], row["study"], row["target (min)"], row["past target"]) == ("ready, not started", key, 60, "")
    (late,) = open_work_table(now=utcnow() + dt.timedelta(hours=2))
    assert late["past target"] == "yes" and late["since order (min)"] > 119
    (sla,) = sla_table(now=utcnow() + dt.timedelta(hours=2))
    assert (sla["lane"], sla["delivered"], sla["open past target"], sla["% within target"]) == (row["lane"], 0, 1, 0.0)

    monkeypatch.setattr(cli.console, "width", 300)
    result = CliRunner().invoke(app, ["status"])
    assert result.exit_code == 0, result.output
    assert "open work (1 runs" in result.output and "SLA: order received" in result.output
    (line,) = [line for line in result.output.splitlines() if "ready, not started" in line]
    assert key in line and "heart-failure-cardiac-ct" in line
    assert study.accession_number not in result.output and study.study_uid not in result.output


def test_the_ops_tables_reach_prefect_as_keyed_artifacts(prefect_api, radpath_env, registry, tmp_path):
    import asyncio

    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from tasks.artifacts import publish_ops_tables

    study, _ = ingest_synthetic_study(tmp_path, registry, "cardiac-ct", 31)
    publish_ops_tables()

    async def latest(key: str):  # noqa: ANN202
        async with get_client() as client:
            (artifact,) = await client.read_latest_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
            return artifact.data

    work = asyncio.run(latest("radpath-open-work"))
    assert "ready, not started" in work and "heart-failure-cardiac-ct" in work
    assert study.study_uid not in work and study.accession_number not in work
    assert "open past target" in asyncio.run(latest("radpath-sla"))


def test_turnaround_has_every_leg_of_the_journey_per_pathway_and_lane():
    """Worked values: images 2 min after the order, ready 1 min after the last image, inference
    0.5 min, delivery 0.5 min, the radiologist's report 60 min after delivery."""
    at = lambda minutes: T0 + dt.timedelta(minutes=minutes)  # noqa: E731
    urgent = Turnaround("lung-cancer-ct", T0, at(3), at(3.5), at(4), "urgent", "completed",
                        images_complete=at(2), reported=at(64))
    waiting = Turnaround("lung-cancer-ct", T0, None, None, None, "urgent", "waiting")
    routine = Turnaround("lung-cancer-ct", T0, at(10), at(11), at(12), "routine", "completed", images_complete=at(9))
    rows = {row["lane"]: row for row in turnaround_rows([urgent, waiting, routine])}
    first = rows["urgent"]
    assert (first["pathway"], first["runs"], first["delivered"]) == ("lung-cancer-ct", 2, 1)
    assert [first[f"{leg} p50 (min)"] for leg, _, _ in TURNAROUND_LEGS] == [2.0, 1.0, 0.5, 0.5, 4.0, 60.0]
    assert rows["routine"]["images→ready p50 (min)"] == 1.0 and rows["routine"]["delivered→reported p50 (min)"] is None
