"""The ledger's image index: the study, series and instance rows the image store commits.

The store (integrations/dicom/store.py) writes the files and decides what to send here; this
module owns every SQL statement on `study`, `series` and `instance` that ingest makes. An
instance header is anything with the `InstanceHeader` attributes (the store's
`PreparedInstance`): this module reads no DICOM itself.
"""

from __future__ import annotations

import datetime as dt
import random
import time
from collections.abc import Sequence
from typing import Any, Literal, Protocol

from sqlalchemy import insert, update
from sqlalchemy import select as sa_select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import Session

from integrations.db.engine import concurrent_write_conflict, get_engine, session_scope
from integrations.db.ledger import audit
from integrations.db.models import Instance, Series, Study, new_id, utcnow
from pathways.readiness import StudyStatus

IndexOutcome = Literal["stored", "duplicate", "redundant", "conflict"]
"""stored: a new row; duplicate: nothing written (a resend of committed bytes); redundant: the
same bytes were indexed meanwhile under another file name (the new file is surplus); conflict:
the SOP Instance UID is indexed with other bytes (audited; the new file is to be kept aside)."""


class InstanceHeader(Protocol):
    """What the index needs of one received instance."""

    study_uid: str
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    digest: str  # sha256 of the Part 10 bytes
    size: int

    def study_values(self) -> dict[str, Any]: ...  # Study columns, for the first instance of a study

    def series_values(self) -> dict[str, Any]: ...  # Series columns, for the first instance of a series

    def instance_values(self) -> dict[str, Any]: ...  # instance_number, position_z_mm


Group = tuple[str, Sequence[tuple[InstanceHeader, str | None]]]
"""One caller's instances: (actor, [(header, store-relative path or None for a resend)])."""


def known_digests(sop_uids: list[str]) -> dict[str, str]:
    """SHA-256 of instances already committed under these SOP Instance UIDs."""
    out: dict[str, str] = {}
    with get_engine().connect() as conn:
        for i in range(0, len(sop_uids), 500):
            chunk = sop_uids[i : i + 500]
            rows = conn.execute(sa_select(Instance.sop_instance_uid, Instance.sha256).where(Instance.sop_instance_uid.in_(chunk)))
            out.update({uid: sha for uid, sha in rows})
    return out


COMMIT_ATTEMPTS = 6  # a unit of work that lost to another process is run again this many times


def commit_groups(groups: Sequence[Group]) -> list[list[IndexOutcome]]:
    """Index the groups in one transaction and commit it, run again if another process created
    the same study or series first (or, on PostgreSQL, deadlocked with this one)."""
    for attempt in range(COMMIT_ATTEMPTS):
        try:
            with session_scope() as session:
                return index_groups(session, groups)
        except (IntegrityError, OperationalError) as exc:
            if attempt == COMMIT_ATTEMPTS - 1 or not concurrent_write_conflict(exc):
                raise
            time.sleep(random.uniform(0, 0.005 * 2**attempt))  # let the winner finish
    raise AssertionError("unreachable")


def index_groups(session: Session, groups: Sequence[Group]) -> list[list[IndexOutcome]]:
    """Index every written instance of the groups in the caller's transaction: a few set-wise
    lookups, one bulk insert, and one counter UPDATE per touched study and series (plain SQL:
    no ORM load of existing rows). Returns one outcome per instance, in order."""
    now = utcnow()
    written = [(header, rel) for _, items in groups for header, rel in items if rel is not None]
    sop_uids = [h.sop_instance_uid for h, _ in written]
    existing = _existing(session, sop_uids)
    studies = _ids_by_uid(session, Study.study_uid, Study.id, Study.status, {h.study_uid for h, _ in written})
    series_uids = {h.series_uid for h, _ in written}
    series_ids = {uid: sid for uid, (sid, _) in _ids_by_uid(session, Series.series_uid, Series.id, Series.id, series_uids).items()}
    fresh = [h for h, _ in written if h.sop_instance_uid not in existing]
    for header in fresh:  # parents first, so that their rows can be locked before the final check
        if header.study_uid not in studies:
            study = Study(study_uid=header.study_uid, **header.study_values())
            session.add(study)
            session.flush()  # no ORM relationship orders study before series: insert it now
            studies[header.study_uid] = (study.id, study.status)
        if header.series_uid not in series_ids:
            series = Series(study_id=studies[header.study_uid][0], series_uid=header.series_uid, **header.series_values())
            session.add(series)
            series_ids[header.series_uid] = series.id
    session.flush()
    if fresh and session.get_bind().dialect.name == "postgresql":
        # Another process may be indexing the same instances right now. Lock their series rows (one
        # order for every process), then look again: what it committed meanwhile is now visible
        # (READ COMMITTED), so the same instance is never inserted twice.
        lock = sa_select(Series.id).where(Series.id.in_(sorted({series_ids[h.series_uid] for h in fresh})))
        session.execute(lock.order_by(Series.id).with_for_update())
        existing = _existing(session, sop_uids)
    study_counts: dict[str, list[int]] = {}  # study id -> [instances, late instances]
    series_counts: dict[str, int] = {}
    rows, results = [], []
    for actor, items in groups:
        out: list[IndexOutcome] = []
        for header, rel in items:
            out.append(_index_one(session, actor, header, rel, existing, now, rows) if rel is not None else "duplicate")
            if out[-1] != "stored":
                continue
            study_id, status = studies[header.study_uid]
            counts = study_counts.setdefault(study_id, [0, 0])
            counts[0] += 1
            if status == StudyStatus.READY:  # images after the study was handed to runs: readiness decides
                counts[1] += 1
            series_id = series_ids[header.series_uid]
            series_counts[series_id] = series_counts.get(series_id, 0) + 1
            rows[-1]["series_id"] = series_id
        results.append(out)
    for study_id, (_, late) in sorted(study_counts.items()):  # one lock order for every process
        values: dict[str, Any] = {"last_received_at": now}
        if late:
            values["late_instances"] = Study.late_instances + late
        session.execute(update(Study).where(Study.id == study_id).values(**values))
    for series_id, n in sorted(series_counts.items()):
        session.execute(update(Series).where(Series.id == series_id).values(n_instances=Series.n_instances + n))
    if rows:
        session.execute(insert(Instance), rows)
    return results


def _index_one(session: Session, actor: str, header: InstanceHeader, rel: str, existing: dict, now: dt.datetime,
               rows: list[dict]) -> IndexOutcome:
    if header.sop_instance_uid in existing:
        instance_id, digest, path = existing[header.sop_instance_uid]
        if digest != header.digest:
            audit(session, actor, "instance.conflict", "instance", instance_id, sha256=header.digest[:16])
            return "conflict"
        return "redundant" if path != rel else "duplicate"
    row = {
        "id": new_id(),
        "sop_instance_uid": header.sop_instance_uid,
        "sop_class_uid": header.sop_class_uid,
        **header.instance_values(),
        "path": rel,
        "sha256": header.digest,
        "size_bytes": header.size,
        "received_at": now,
    }
    existing[header.sop_instance_uid] = (row["id"], header.digest, rel)
    rows.append(row)
    return "stored"


def _existing(session: Session, sop_uids: list[str]) -> dict[str, tuple[str, str, str]]:
    out = {}
    for i in range(0, len(sop_uids), 500):
        query = sa_select(Instance.sop_instance_uid, Instance.id, Instance.sha256, Instance.path)
        for uid, instance_id, digest, path in session.execute(query.where(Instance.sop_instance_uid.in_(sop_uids[i : i + 500]))):
            out[uid] = (instance_id, digest, path)
    return out


def _ids_by_uid(session: Session, uid_col, id_col, extra_col, uids: set[str]) -> dict[str, tuple]:  # noqa: ANN001
    """{uid: (id, extra)} for the rows whose uid is in `uids` (one plain SELECT)."""
    if not uids:
        return {}
    query = sa_select(uid_col, id_col, extra_col).where(uid_col.in_(sorted(uids)))
    return {uid: (row_id, extra) for uid, row_id, extra in session.execute(query)}


def series_instances(series_uid: str) -> list[tuple[str, str]]:
    """(store-relative path, SOP Instance UID) of a series' instances, ordered along the slice
    normal (then instance number)."""
    with get_engine().connect() as conn:
        query = (sa_select(Instance.path, Instance.sop_instance_uid, Instance.position_z_mm, Instance.instance_number)
                 .join(Series, Series.id == Instance.series_id).where(Series.series_uid == series_uid))
        rows = conn.execute(query).all()
        if not rows and conn.execute(sa_select(Series.id).where(Series.series_uid == series_uid)).first() is None:
            raise LookupError("no such series in the ledger")
    rows = sorted(rows, key=lambda r: (r.position_z_mm if r.position_z_mm is not None else 0.0, r.instance_number or 0))
    return [(r.path, r.sop_instance_uid) for r in rows]


def indexed_paths(received_after: dt.datetime | None) -> set[str]:
    """Store-relative paths of indexed instances (received at or after `received_after`)."""
    query = sa_select(Instance.path)
    if received_after is not None:
        query = query.where(Instance.received_at >= received_after)
    with get_engine().connect() as conn:
        return {path for (path,) in conn.execute(query)}
