"""radpath's FHIR front door: ServiceRequest in, committed to the ledger before the answer.

Mount `fhir_router(...)` at `/fhir` on radpath's HTTP app:

- `POST /fhir/ServiceRequest` (and `PUT /fhir/ServiceRequest/{id}`, which is how a classic
  R4 rest-hook Subscription with a payload delivers a resource): 201 for a new order, 200
  for one already recorded (resend, or the same order via HL7), 200 for a cancellation,
  409 for an order whose placer number or accession already names another patient's order
  (the identity rule of `integrations/db/orders.py`; refused and audited, the order already
  recorded untouched).
- `POST /fhir/DiagnosticReport`: the radiologist's signed report of an exam (the evidence
  loop, integrations/fhir/diagnostic_report.py): 201 kept, 200 for a resend, a correction or
  an exam radpath holds no order for, 422 for a report not yet signed.
- `POST /fhir/notification`: a Subscriptions R4 Backport notification Bundle (type
  `history`, first entry the `Parameters` subscription status) with full-resource content.

Answers are OperationOutcomes naming the problem: 400 malformed, 422 not an order radpath
can take, 401 without a valid bearer token (when `fhir_inbound_tokens` is set), 413 too
large, 415 not FHIR JSON. Callbacks run after the answer is sent (commit, answer, emit).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, BackgroundTasks, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from integrations.db.orders import Conflict, OrderChange, OrderOutcome, commit_order
from integrations.db.radiologist_reports import commit_report
from integrations.fhir.diagnostic_report import parse_diagnostic_report
from integrations.fhir.servicerequest import (
    FhirInputError,
    contained_resolver,
    operation_outcome,
    outcome_for,
    parse_service_request,
)
from integrations.db.ledger import record_audit
from integrations.http_auth import CHALLENGE, REFUSED, bearer_client
from integrations.settings import Settings
from pathways.registry import Registry, default_registry

log = logging.getLogger(__name__)
FHIR_JSON = "application/fhir+json"
ACCEPTED_MEDIA = {"application/fhir+json", "application/json", "application/json+fhir"}
BACKPORT_STATUS_PROFILE = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription-status-r4"

OnCommitted = Callable[[OrderOutcome], None]
OnCancelled = Callable[[OrderChange], None]


class _Refused(Exception):
    def __init__(self, status: int, outcome: dict[str, Any], headers: dict[str, str] | None = None):
        self.status, self.outcome, self.headers = status, outcome, headers or {}


def _answer(status: int, outcome: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(outcome, status_code=status, media_type=FHIR_JSON, headers=headers)


def _client_name(request: Request, settings: Settings) -> str:
    """The configured client whose bearer token this is; 'fhir' when authentication is off."""
    client = bearer_client(request.headers.get("authorization", ""), settings.fhir_inbound_tokens, anonymous="fhir")
    if client is None:
        _audit_refused(request, "fhir")
        raise _Refused(401, operation_outcome("a valid bearer token is required", code="login"), CHALLENGE)
    return client


def _audit_refused(request: Request, door: str) -> None:
    try:
        record_audit(door, REFUSED, "peer_address", request.client.host if request.client else "-",
                     reason="no valid bearer token")
    except Exception:  # an audit failure must not change the answer
        log.exception("could not audit a refused request")


async def _read_json(request: Request, limit: int) -> Any:
    too_large = _Refused(413, operation_outcome(f"request body over {limit} bytes", code="too-costly"))
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in ACCEPTED_MEDIA:
        raise _Refused(415, operation_outcome("send FHIR JSON (application/fhir+json)", code="not-supported"))
    body, size = bytearray(), 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large
            body.extend(chunk)
    except ClientDisconnect:  # one line, not an ASGI traceback: nothing was read, nothing is kept
        log.info("fhir client closed the connection mid-body after %d bytes", size)
        raise _Refused(400, operation_outcome("the client closed the connection before the body ended",
                                              code="structure")) from None
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _Refused(400, operation_outcome(f"body is not JSON (line {getattr(exc, 'lineno', 1)})",
                                              code="structure")) from None
    except RecursionError:
        document = None
    if document is None or _nesting_depth(document) > MAX_JSON_DEPTH:
        raise _Refused(400, operation_outcome(f"JSON nested deeper than {MAX_JSON_DEPTH} levels", code="structure"))
    return document


MAX_JSON_DEPTH = 64  # a FHIR resource (with contained resources and extensions) nests far less


def _nesting_depth(document: Any) -> int:
    """How deep arrays and objects nest, counted without recursion (a JSON bomb must not overflow the stack)."""
    deepest, stack = 0, [(document, 1)]
    while stack:
        value, depth = stack.pop()
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_JSON_DEPTH:
            break
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _entries(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    """Bundle.entry, checked for shape before anything reads it (fuzzed bodies made these 500s)."""
    entries = bundle.get("entry") or []
    if not isinstance(entries, list) or not all(
            isinstance(e, dict) and isinstance(e.get("resource") or {}, dict) for e in entries):
        raise FhirInputError("Bundle.entry must be an array of entries, each with a resource object", status=400,
                             code="structure", expression="Bundle.entry")
    return entries


def _bundle_resolver(bundle: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for entry in _entries(bundle):
        resource = entry.get("resource") or {}
        if entry.get("fullUrl"):
            found[entry["fullUrl"]] = resource
        if resource.get("resourceType") and resource.get("id"):
            found[f"{resource['resourceType']}/{resource['id']}"] = resource
    return found


def _notification_type(bundle: dict[str, Any]) -> str:
    """The Backport subscription-status `type` (handshake | heartbeat | event-notification ...)."""
    if bundle.get("resourceType") != "Bundle" or bundle.get("type") != "history":
        raise FhirInputError("a subscription notification is a Bundle of type 'history'", status=400,
                             code="structure", expression="Bundle.type")
    entries = _entries(bundle)
    status = (entries[0].get("resource") or {}) if entries else {}
    if status.get("resourceType") == "SubscriptionStatus":  # R4B / R5 shape
        return status.get("type", "")
    if status.get("resourceType") != "Parameters":
        raise FhirInputError("first entry must be the subscription status (Parameters)", status=400,
                             code="structure", expression="Bundle.entry[0].resource")
    parameters = status.get("parameter") or []
    for parameter in parameters if isinstance(parameters, list) else []:
        if isinstance(parameter, dict) and parameter.get("name") == "type":
            return parameter.get("valueCode", "")
    raise FhirInputError("subscription status has no 'type'", status=400, code="required",
                         expression="Bundle.entry[0].resource.parameter")


def fhir_router(
    registry: Registry | None = None,
    *,
    settings: Settings,
    on_order_committed: OnCommitted | None = None,
    on_order_cancelled: OnCancelled | None = None,
) -> APIRouter:
    """The FHIR intake routes; mount with `app.include_router(fhir_router(...), prefix="/fhir")`.
    `settings`: the inbound tokens and body limit (injected: the router reads no global settings)."""
    router = APIRouter()
    registry_ = registry or default_registry()

    def intake(resource: dict[str, Any], client: str, resolve, tasks: BackgroundTasks) -> tuple[int, dict[str, Any], dict]:
        order = parse_service_request(resource, client=client, resolve=resolve)
        reason = f"ServiceRequest.status {resource.get('status')}"
        outcome = commit_order(order, json.dumps(resource), registry_, protocol="fhir", actor=f"fhir:{client}", reason=reason)
        if isinstance(outcome, Conflict):
            log.info("fhir order refused: %s conflict", outcome.field)
            return 409, operation_outcome(outcome.text, code="conflict", expression="ServiceRequest.identifier"), {}
        if outcome is None:
            return 200, operation_outcome("no order with this placer order number and accession; nothing to "
                                          f"{'mark completed' if order.order_control == 'SC' else 'cancel'}",
                                          severity="warning", code="not-found"), {}
        if isinstance(outcome, OrderChange) and outcome.action == "status-noted":
            return 200, operation_outcome(f"order {outcome.order_id}: exam completed noted", severity="information",
                                          code="informational"), {}
        if isinstance(outcome, OrderChange):
            log.info("fhir cancellation order=%s cancelled_runs=%d", outcome.order_id, len(outcome.run_ids))
            if on_order_cancelled and not outcome.duplicate:
                tasks.add_task(on_order_cancelled, outcome)
            return 200, operation_outcome(
                f"order {outcome.order_id} cancelled: {len(outcome.run_ids)} pathway runs stopped, "
                f"{len(outcome.kept_run_ids)} already started or finished", severity="information",
                code="informational"), {}
        log.info("fhir order=%s duplicate=%s runs=%d", outcome.order_id, outcome.duplicate, len(outcome.run_ids))
        if outcome.duplicate:
            return 200, operation_outcome(f"order {outcome.order_id} already recorded", severity="information",
                                          code="duplicate"), {}
        if on_order_committed:
            tasks.add_task(on_order_committed, outcome)
        words = f"order {outcome.order_id} recorded; {len(outcome.run_ids)} pathway runs waiting for images"
        return 201, operation_outcome(words, severity="information", code="informational"), {
            "Location": f"ServiceRequest/{outcome.order_id}"}

    async def handle(request: Request, tasks: BackgroundTasks, expected_id: str | None = None) -> JSONResponse:
        try:
            client = _client_name(request, settings)
            resource = await _read_json(request, settings.fhir_max_body_bytes)
            if expected_id is not None and isinstance(resource, dict) and resource.get("id") not in (None, expected_id):
                raise FhirInputError("resource id does not match the URL", status=400, code="invariant",
                                     expression="ServiceRequest.id")
            resolve = contained_resolver(resource) if isinstance(resource, dict) else None
            status, body, headers = await run_in_threadpool(intake, resource, client, resolve, tasks)
            return _answer(status, body, headers)
        except _Refused as refused:
            return _answer(refused.status, refused.outcome, refused.headers)
        except FhirInputError as exc:
            log.info("fhir order refused: %s", exc.expression)
            return _answer(exc.status, outcome_for(exc))

    @router.post("/ServiceRequest")
    async def create_service_request(request: Request, tasks: BackgroundTasks) -> JSONResponse:
        return await handle(request, tasks)

    @router.put("/ServiceRequest/{resource_id}")
    async def update_service_request(resource_id: str, request: Request, tasks: BackgroundTasks) -> JSONResponse:
        return await handle(request, tasks, expected_id=resource_id)

    @router.post("/DiagnosticReport")
    async def diagnostic_report(request: Request) -> JSONResponse:
        """The radiologist's signed report (the evidence loop): 201 kept, 200 a resend, a
        correction, or an exam radpath holds no order for."""
        try:
            client = _client_name(request, settings)
            resource = await _read_json(request, settings.fhir_max_body_bytes)
            report = parse_diagnostic_report(resource, client=client)
            outcome = await run_in_threadpool(commit_report, report, json.dumps(resource), protocol="fhir",
                                              actor=f"fhir:{client}")
        except _Refused as refused:
            return _answer(refused.status, refused.outcome, refused.headers)
        except FhirInputError as exc:
            log.info("fhir report refused: %s", exc.expression)
            return _answer(exc.status, outcome_for(exc))
        if outcome.report_id is None and not outcome.duplicate:
            return _answer(200, operation_outcome("no order with this accession number: report not kept",
                                                  severity="warning", code="not-found"))
        if outcome.duplicate or outcome.corrected:
            words = "report already received" if outcome.duplicate else f"report {outcome.report_id} corrected"
            return _answer(200, operation_outcome(words, severity="information", code="informational"))
        return _answer(201, operation_outcome(f"report {outcome.report_id} recorded", severity="information",
                                              code="informational"), {"Location": f"DiagnosticReport/{outcome.report_id}"})

    @router.post("/notification")
    async def subscription_notification(request: Request, tasks: BackgroundTasks) -> JSONResponse:
        try:
            client = _client_name(request, settings)
            bundle = await _read_json(request, settings.fhir_max_body_bytes)
            if not isinstance(bundle, dict):
                raise FhirInputError("expected a Bundle", status=400, code="structure")
            kind = _notification_type(bundle)
            if kind not in ("event-notification", "query-event"):
                return _answer(200, operation_outcome(f"{kind or 'notification'} acknowledged",
                                                      severity="information", code="informational"))
            requests = [e.get("resource") for e in _entries(bundle)[1:]
                        if (e.get("resource") or {}).get("resourceType") == "ServiceRequest"]
            if not requests:
                raise FhirInputError("no ServiceRequest in the notification: radpath needs full-resource content",
                                     code="not-supported", expression="Bundle.entry")
            others = _bundle_resolver(bundle)
            answers = []
            for resource in requests:
                resolve = contained_resolver(resource, others)
                answers.append(await run_in_threadpool(intake, resource, client, resolve, tasks))
            issues = [issue for _, body, _ in answers for issue in body["issue"]]
            return _answer(200, {"resourceType": "OperationOutcome", "issue": issues})
        except _Refused as refused:
            return _answer(refused.status, refused.outcome, refused.headers)
        except FhirInputError as exc:
            log.info("fhir notification refused: %s", exc.expression)
            return _answer(exc.status, outcome_for(exc))

    return router
