"""STOW-RS (PS3.18 §10.5): POST multipart/related; type="application/dicom" to /studies.

Same guarantees as the C-STORE SCP: each part goes through `ingest_instances` (checked,
fsync, ledger commit) before it is reported stored. The answer is the standard response
body (application/dicom+json): ReferencedSOPSequence for stored instances, FailedSOPSequence
with a FailureReason for refused ones. 200 all stored; 202 some refused; 409 none stored;
507 none stored because the store is below its free-space watermark; 400/413/415 for a
request that is not a readable, bounded multipart/related of application/dicom.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from email.message import Message
from io import BytesIO

import pydicom
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from integrations.dicom.scp import CANNOT_UNDERSTAND, DATASET_MISMATCH, OUT_OF_RESOURCES, SOP_CLASS_NOT_SUPPORTED, STORAGE_SOP_CLASSES, status_for
from integrations.dicom.store import StoredInstance, StoreFull, ingest_instances
from integrations.errors import InvalidInput
from integrations.db.ledger import record_audit
from integrations.http_auth import CHALLENGE, REFUSED, bearer_client
from integrations.settings import Settings

log = logging.getLogger(__name__)
DICOM_JSON = "application/dicom+json"


class BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _content_type(value: str) -> tuple[str, dict[str, str]]:
    msg = Message()
    msg["content-type"] = value
    params = {k.lower(): v for k, v in msg.get_params()[1:]} if msg.get_params() else {}
    return msg.get_content_type(), params


def split_multipart(body: bytes, content_type: str) -> list[tuple[str, bytes]]:
    """(part content type, part bytes) for each part of a multipart/related body."""
    kind, params = _content_type(content_type)
    if kind != "multipart/related":
        raise BadRequest(415, "expected multipart/related")
    root_type = params.get("type", "application/dicom").lower()
    if root_type != "application/dicom":
        raise BadRequest(415, "only type=application/dicom parts are accepted")
    boundary = params.get("boundary")
    if not boundary:
        raise BadRequest(400, "multipart boundary missing")
    delimiter = b"--" + boundary.encode("latin-1")
    chunks = body.split(delimiter)
    if len(chunks) < 3:
        raise BadRequest(400, "no parts in the multipart body")
    parts = []
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):
            break  # closing delimiter
        head, sep, content = chunk.partition(b"\r\n\r\n")
        if not sep:
            raise BadRequest(400, "a part has no header/body separator")
        if content.endswith(b"\r\n"):
            content = content[:-2]
        headers = Message()
        for line in head.decode("latin-1").strip().split("\r\n"):
            name, _, value = line.partition(":")
            if name:
                headers[name.strip()] = value.strip()
        parts.append(((headers.get_content_type() if headers.get("content-type") else root_type), content))
    if not parts:
        raise BadRequest(400, "no parts in the multipart body")
    return parts


def _uids(data: bytes) -> tuple[str, str, str]:
    try:
        ds = pydicom.dcmread(BytesIO(data), stop_before_pixels=True, specific_tags=["SOPClassUID", "SOPInstanceUID", "StudyInstanceUID"])
        return str(ds.get("SOPClassUID", "")), str(ds.get("SOPInstanceUID", "")), str(ds.get("StudyInstanceUID", ""))
    except Exception:  # noqa: BLE001 - unreadable: reported as a failure without UIDs
        return "", "", ""


def _item(sop_class: str, sop_uid: str, **extra: dict) -> dict:
    item = {"00081150": {"vr": "UI", "Value": [sop_class]} if sop_class else {"vr": "UI"},
            "00081155": {"vr": "UI", "Value": [sop_uid]} if sop_uid else {"vr": "UI"}}
    item.update(extra)
    return item


def store_part(kind: str, data: bytes, study_uid: str | None, actor: str) -> tuple[str, str, int | None, StoredInstance | None]:
    """Ingest one part: (SOP class, SOP instance UID, failure reason or None, stored instance)."""
    sop_class, sop_uid, part_study = _uids(data)
    if kind != "application/dicom":
        return sop_class, sop_uid, CANNOT_UNDERSTAND, None
    if sop_class and sop_class not in STORAGE_SOP_CLASSES:
        return sop_class, sop_uid, SOP_CLASS_NOT_SUPPORTED, None
    if study_uid and part_study and part_study != study_uid:
        return sop_class, sop_uid, DATASET_MISMATCH, None
    try:
        (stored,) = ingest_instances([data], actor=actor)
    except (InvalidInput, StoreFull, OSError) as exc:
        return sop_class, sop_uid, status_for(exc), None
    except Exception as exc:  # noqa: BLE001 - the node keeps serving; the part is reported failed
        log.warning("STOW-RS part failed: %s", exc.__class__.__name__)
        return sop_class, sop_uid, status_for(exc), None
    return sop_class, sop_uid, None, stored


async def _read_bounded(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise BadRequest(413, "request body exceeds the configured ceiling")
    buffer = bytearray()
    try:
        async for chunk in request.stream():
            buffer += chunk
            if len(buffer) > limit:
                raise BadRequest(413, "request body exceeds the configured ceiling")
    except ClientDisconnect:  # one line, not an ASGI traceback: no part of a cut body is stored
        log.info("STOW-RS client closed the connection mid-body after %d bytes", len(buffer))
        raise BadRequest(400, "the client closed the connection before the body ended") from None
    return bytes(buffer)


def _audit_refused(request: Request) -> None:
    try:
        record_audit("stow-rs", REFUSED, "peer_address", request.client.host if request.client else "-",
                     reason="no valid bearer token")
    except Exception:  # an audit failure must not change the answer
        log.exception("could not audit a refused request")


def build_router(settings: Settings, on_instance_committed: Callable[[StoredInstance], None] | None = None) -> APIRouter:
    """STOW-RS routes `/studies` and `/studies/{study_uid}` (include under e.g. prefix "/dicomweb").
    `settings`: the inbound tokens and the body limit (injected: no global settings read here)."""
    router = APIRouter()

    async def stow(request: Request, study_uid: str | None = None) -> JSONResponse:
        client = bearer_client(request.headers.get("authorization", ""), settings.stow_inbound_tokens, anonymous="")
        if client is None:
            _audit_refused(request)
            return JSONResponse({"error": "a valid bearer token is required"}, status_code=401, headers=CHALLENGE)
        actor = f"stow-rs:{client}" if client else "stow-rs"
        try:
            body = await _read_bounded(request, settings.dicom_max_stow_bytes)
            parts = split_multipart(body, request.headers.get("content-type", ""))
        except BadRequest as exc:
            return JSONResponse({"error": str(exc)}, status_code=exc.status)
        del body
        base = str(request.base_url).rstrip("/") + request.url.path.rsplit("/studies", 1)[0]
        referenced, failed, reasons = [], [], []
        for kind, data in parts:
            sop_class, sop_uid, reason, stored = await run_in_threadpool(store_part, kind, data, study_uid, actor)
            if reason is not None:
                failed.append(_item(sop_class, sop_uid, **{"00081197": {"vr": "US", "Value": [reason]}}))
                reasons.append(reason)
                continue
            url = f"{base}/studies/{stored.study_uid}/series/{stored.series_uid}/instances/{stored.sop_instance_uid}"
            referenced.append(_item(sop_class, sop_uid, **{"00081190": {"vr": "UR", "Value": [url]}}))
            if on_instance_committed is not None:
                try:
                    on_instance_committed(stored)
                except Exception:  # committed already; the answer must not change
                    log.exception("on_instance_committed failed")
        response: dict = {}
        if study_uid:
            response["00081190"] = {"vr": "UR", "Value": [f"{base}/studies/{study_uid}"]}
        if failed:
            response["00081198"] = {"vr": "SQ", "Value": failed}
        if referenced:
            response["00081199"] = {"vr": "SQ", "Value": referenced}
        if not failed:
            status = 200
        elif referenced:
            status = 202
        elif all(r == OUT_OF_RESOURCES for r in reasons):
            status = 507
        else:
            status = 409
        return JSONResponse(response, status_code=status, media_type=DICOM_JSON)

    router.add_api_route("/studies", stow, methods=["POST"], name="stow-rs")
    router.add_api_route("/studies/{study_uid}", stow, methods=["POST"], name="stow-rs-study")
    return router


def create_app(settings: Settings, on_instance_committed: Callable[[StoredInstance], None] | None = None,
               prefix: str = "/dicomweb") -> FastAPI:
    """A stand-alone ASGI app serving STOW-RS under `prefix` (tests; `radpath serve` mounts the router)."""
    app = FastAPI(title="radpath STOW-RS", docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(build_router(settings, on_instance_committed), prefix=prefix)
    return app
