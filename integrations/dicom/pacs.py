"""Order-triggered retrieval: when an order arrives whose images already sit in PACS, fetch them.

`radpath serve` runs `retrieve_for_waiting_orders` on every sweep: orders whose images have
not been pushed within `pacs_retrieve_after_seconds` are looked up by accession number.

Query by accession number (QIDO-RS via httpx, or C-FIND), then retrieve each study (WADO-RS,
series by series; or C-MOVE to radpath's own SCP; or C-GET on the same association). What
arrives goes through `ingest_instances` like any other image, so readiness then proceeds as
usual. Which protocol is the trust's choice (`Settings.pacs`, a `PacsSource`).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from pydicom import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from integrations.dicom.config import PacsSource
from integrations.dicom.scp import STORAGE_SOP_CLASSES, SUCCESS, decodable_transfer_syntaxes, quiet_pynetdicom, set_nodelay, status_for
from integrations.dicom.store import StoredInstance, ingest_instances, valid_uid
from integrations.dicom.stow import BadRequest, split_multipart
from integrations.errors import PermanentError, TransientError, masked
from integrations.settings import Settings, get_settings

log = logging.getLogger(__name__)
QIDO_STUDY_UID = "0020000D"
QIDO_SERIES_UID = "0020000E"


@dataclass(frozen=True)
class Retrieval:
    study_uids: tuple[str, ...]
    stored: int = 0
    duplicate: int = 0
    failed: int = 0


def _http(pacs: PacsSource, transport: httpx.BaseTransport | None = None) -> httpx.Client:
    if not pacs.dicomweb_url:
        raise PermanentError("PACS DICOMweb URL not configured")
    headers = {"Authorization": f"Bearer {pacs.bearer_token}"} if pacs.bearer_token else {}
    return httpx.Client(base_url=pacs.dicomweb_url.rstrip("/"), headers=headers, timeout=pacs.timeout_seconds, transport=transport)


def _uids_from(doc: list[dict], tag: str) -> list[str]:
    out = []
    for item in doc or []:
        value = ((item.get(tag) or {}).get("Value") or [""])[0]
        if valid_uid(str(value)):
            out.append(str(value))
    return list(dict.fromkeys(out))


def _get(client: httpx.Client, url: str, **kwargs) -> httpx.Response:  # noqa: ANN003
    try:
        response = client.get(url, **kwargs)
    except (httpx.TimeoutException, httpx.NetworkError) as exc:
        raise TransientError(f"PACS not reachable ({exc.__class__.__name__})") from None
    if response.status_code >= 500 or response.status_code in (408, 429):
        raise TransientError(f"PACS answered HTTP {response.status_code}")
    if response.status_code >= 400:
        raise PermanentError(f"PACS answered HTTP {response.status_code}")
    return response


def qido_find_studies(accession_number: str, pacs: PacsSource, transport: httpx.BaseTransport | None = None) -> list[str]:
    """Study Instance UIDs the PACS holds for an accession number (QIDO-RS)."""
    with _http(pacs, transport) as client:
        response = _get(client, "/studies", params={"AccessionNumber": accession_number, "includefield": QIDO_STUDY_UID})
        return _uids_from(response.json() if response.status_code == 200 else [], QIDO_STUDY_UID)


def wado_retrieve_study(study_uid: str, pacs: PacsSource, actor: str = "wado-rs", transport: httpx.BaseTransport | None = None) -> list[StoredInstance]:
    """Fetch a study series by series (WADO-RS) and ingest every instance."""
    accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
    stored: list[StoredInstance] = []
    with _http(pacs, transport) as client:
        series_doc = _get(client, f"/studies/{study_uid}/series", params={"includefield": QIDO_SERIES_UID}).json()
        for series_uid in _uids_from(series_doc, QIDO_SERIES_UID):
            response = _get(client, f"/studies/{study_uid}/series/{series_uid}", headers={"Accept": accept})
            try:
                parts = split_multipart(response.content, response.headers.get("content-type", ""))
            except BadRequest as exc:
                raise PermanentError(f"WADO-RS answer unreadable: {exc}") from None
            for _, data in parts:
                stored += ingest_instances([data], actor=actor)
    return stored


def _ae(pacs: PacsSource) -> AE:
    quiet_pynetdicom()
    ae = AE(ae_title=pacs.calling_ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = pacs.timeout_seconds
    return ae


def _associate(ae: AE, pacs: PacsSource, **kwargs):  # noqa: ANN003, ANN202
    if not pacs.host or not pacs.port:
        raise PermanentError("PACS host and port not configured")
    handlers = kwargs.pop("evt_handlers", []) + [(evt.EVT_CONN_OPEN, set_nodelay)]
    assoc = ae.associate(pacs.host, pacs.port, ae_title=pacs.called_ae_title, evt_handlers=handlers, **kwargs)
    if not assoc.is_established:
        raise TransientError(f"no association with {pacs.called_ae_title} (rejected, aborted or refused)")
    return assoc


def cfind_studies(accession_number: str, pacs: PacsSource) -> list[str]:
    """Study Instance UIDs for an accession number (C-FIND, Study Root, STUDY level)."""
    ae = _ae(pacs)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.AccessionNumber = accession_number
    query.StudyInstanceUID = ""
    assoc = _associate(ae, pacs)
    uids = []
    try:
        for status, identifier in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
            if status is None or "Status" not in status:
                raise TransientError("C-FIND got no answer")
            code = int(status.Status)
            if code in (0xFF00, 0xFF01) and identifier is not None and valid_uid(str(identifier.get("StudyInstanceUID", ""))):
                uids.append(str(identifier.StudyInstanceUID))
            elif code not in (0x0000, 0xFF00, 0xFF01):
                raise (TransientError if 0xA700 <= code <= 0xA7FF else PermanentError)(f"C-FIND failed: 0x{code:04X}")
    finally:
        if assoc.is_established:
            assoc.release()
    return list(dict.fromkeys(uids))


def _study_identifier(study_uid: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = study_uid
    return ds


def _final_status(responses, operation: str) -> int:  # noqa: ANN001
    final = None
    for status, _ in responses:
        if status is None or "Status" not in status:
            raise TransientError(f"{operation} got no answer")
        final = int(status.Status)
    if final is None:
        raise TransientError(f"{operation} got no answer")
    if final == 0x0000 or 0xB000 <= final <= 0xBFFF:
        return final
    raise (TransientError if 0xA700 <= final <= 0xA7FF else PermanentError)(f"{operation} failed: 0x{final:04X}")


def cmove_study(study_uid: str, pacs: PacsSource, move_destination: str | None = None) -> int:
    """Ask the PACS to C-MOVE a study to radpath's own SCP (which must be running and known to
    the PACS under `move_destination`). Returns the final status (0x0000 or a 0xBxxx warning)."""
    ae = _ae(pacs)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = _associate(ae, pacs)
    try:
        destination = move_destination or get_settings().dicom_ae_title
        return _final_status(assoc.send_c_move(_study_identifier(study_uid), destination, StudyRootQueryRetrieveInformationModelMove), "C-MOVE")
    finally:
        if assoc.is_established:
            assoc.release()


def cget_study(study_uid: str, pacs: PacsSource, actor: str = "c-get") -> list[StoredInstance]:
    """C-GET a study on one association, storing each instance the PACS sends back."""
    ae = _ae(pacs)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    syntaxes = decodable_transfer_syntaxes()
    roles = []
    for sop_class in STORAGE_SOP_CLASSES:
        ae.add_requested_context(sop_class, syntaxes)
        roles.append(build_role(sop_class, scp_role=True))
    stored: list[StoredInstance] = []

    def on_store(event: evt.Event) -> int:
        try:
            stored.extend(ingest_instances([event.encoded_dataset(include_meta=True)], actor=actor))
        except Exception as exc:  # noqa: BLE001 - refuse this instance, keep the retrieve going
            return status_for(exc)
        return SUCCESS

    assoc = _associate(ae, pacs, ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        _final_status(assoc.send_c_get(_study_identifier(study_uid), StudyRootQueryRetrieveInformationModelGet), "C-GET")
    finally:
        if assoc.is_established:
            assoc.release()
    return stored


def retrieve_for_accession(
    accession_number: str,
    pacs: PacsSource | None = None,
    *,
    skip_if: Callable[[str], bool] | None = None,
) -> Retrieval:
    """Query the PACS by accession number and retrieve what it holds, by the configured protocols.

    `skip_if(accession)` lets the caller skip when images are already local (ledger check).
    For C-MOVE, instances arrive through radpath's SCP; the count here covers only what the
    PACS reported, so the caller learns of them from the ledger as usual."""
    pacs = pacs or get_settings().pacs
    if pacs is None:
        raise PermanentError("no PACS configured for retrieval")
    if skip_if is not None and skip_if(accession_number):
        return Retrieval(())
    finder = qido_find_studies if pacs.query == "qido-rs" else cfind_studies
    study_uids = tuple(finder(accession_number, pacs))
    stored: list[StoredInstance] = []
    for study_uid in study_uids:
        if pacs.retrieve == "wado-rs":
            stored += wado_retrieve_study(study_uid, pacs)
        elif pacs.retrieve == "c-get":
            stored += cget_study(study_uid, pacs)
        else:
            cmove_study(study_uid, pacs)
    log.info("retrieval for an order: %d study(ies), %d instance(s) stored here", len(study_uids), len(stored))
    return Retrieval(
        study_uids=study_uids,
        stored=sum(s.outcome == "stored" for s in stored),
        duplicate=sum(s.outcome == "duplicate" for s in stored),
    )


def retrieve_for_waiting_orders(settings: Settings, now: dt.datetime | None = None) -> list[Retrieval]:
    """Orders still without images after `pacs_retrieve_after_seconds`: ask the PACS by accession
    and retrieve what it holds (`radpath serve` calls this every sweep). Each attempt is audited;
    an order is tried `pacs_retrieve_attempts` times, `pacs_retrieve_retry_seconds` apart."""
    from integrations.db.studies import accession_has_images, orders_to_retrieve, record_retrieval

    if settings.pacs is None:
        return []
    done = []
    for order_id, accession in orders_to_retrieve(now or dt.datetime.now(dt.UTC), after_s=settings.pacs_retrieve_after_seconds,
                                                  retry_s=settings.pacs_retrieve_retry_seconds,
                                                  attempts=settings.pacs_retrieve_attempts):
        try:
            retrieval = retrieve_for_accession(accession, settings.pacs, skip_if=accession_has_images)
        except (PermanentError, TransientError, OSError) as exc:
            record_retrieval(order_id, error=masked(f"{exc.__class__.__name__}: {exc}"))
            log.warning("retrieval from the PACS failed for an order (%s)", exc.__class__.__name__)
            continue
        record_retrieval(order_id, studies=len(retrieval.study_uids), stored=retrieval.stored)
        done.append(retrieval)
    return done
