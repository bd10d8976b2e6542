"""What must never reach Prefect, and the scan of what Prefect stored (its database, events,
logs, artifacts and result files, and the files' names) for it. Used after flow tests under
the test harness (tests/test_ops_flows.py) and after a run through `radpath serve`
(tests/test_serve.py)."""

from __future__ import annotations

from pathlib import Path

from sqlmodel import select

from integrations.db.engine import session_scope


def identity_forms(order) -> list[str]:  # noqa: ANN001 - integrations.hl7.orders.ParsedOrder
    """The NHS number (bare and spaced), names, and birth date as ISO, HL7 and UK text."""
    forms = [order.family_name, order.given_name]
    if order.nhs_number:
        n = order.nhs_number
        forms += [n, f"{n[:3]} {n[3:6]} {n[6:]}"]
    if order.birth_date:
        b = order.birth_date
        forms += [b.isoformat(), b.strftime("%Y%m%d"), b.strftime("%d/%m/%Y")]
    return [f for f in forms if f and len(f) >= 3]


def linkable_values(accession: str, study_uid: str) -> list[str]:
    """The accession and every study, series and SOP instance UID of a study in the ledger: not
    identity, but they link a pseudonymous study key back to the RIS and PACS."""
    from integrations.db.models import Instance, Series, Study

    with session_scope() as s:
        rows = s.exec(select(Series.series_uid, Instance.sop_instance_uid).join(Instance, Instance.series_id == Series.id)
                      .join(Study, Study.id == Series.study_id).where(Study.study_uid == study_uid)).all()
    return [accession, study_uid, *sorted({uid for row in rows for uid in row})]


def assert_prefect_holds_none(roots: list[Path], identities: list[str], linkable: list[str], study_key: str) -> None:
    """Every file under `roots` (and its name) is free of the identities (UTF-8 and UTF-16) and
    the linkable values; `study_key` must be seen, so the scan is known to cover the runs."""
    stored = [p for root in roots for p in root.rglob("*") if p.is_file()]
    blobs = [p.read_bytes() for p in stored]
    names = [str(p).encode() for p in stored]
    assert blobs and any(study_key.encode() in b for b in blobs), "the scan sees the runs (their study keys)"
    assert identities and linkable
    for identity in identities:
        for encoding in ("utf-8", "utf-16-le"):
            assert not any(identity.encode(encoding) in b for b in blobs), "a patient identifier reached Prefect"
    for value in linkable:  # task parameters, cache keys, state data, events, logs, result files and their names
        assert not any(value.encode() in b for b in blobs + names), "an accession or DICOM UID reached Prefect"
