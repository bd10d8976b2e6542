"""FHIR destination: POST each payload transaction Bundle to the EHR; receipt names what exists.

The Bundles carry conditional creates/updates on business identifiers, so a retried or
replayed delivery leaves one DiagnosticReport, not two. The receipt lists the references
the server gave (e.g. `DiagnosticReport/123 created`), which the ledger keeps.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from integrations.delivery.config import FhirDestination
from integrations.errors import PermanentError
from integrations.fhir.client import FhirClient
from integrations.fhir.smart import BearerAuth, SmartBackendAuth

_auth_cache: dict[tuple, httpx.Auth] = {}
_auth_lock = threading.Lock()
_REFERENCE = re.compile(r"(?:^|/)([A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$")


def auth_for(config: FhirDestination) -> httpx.Auth | None:
    """One auth object per destination identity, so SMART tokens are reused across deliveries."""
    if config.auth == "none":
        return None
    if config.auth == "bearer":
        if config.bearer_token is not None:
            return BearerAuth(config.bearer_token.get_secret_value())
        return BearerAuth(Path(config.bearer_token_file).read_text().strip())
    key = (config.token_url, config.client_id, str(config.private_key_path), config.alg, config.kid, config.scope)
    with _auth_lock:
        if key not in _auth_cache:
            _auth_cache[key] = SmartBackendAuth(
                client_id=config.client_id, token_url=config.token_url, private_key_path=config.private_key_path,
                alg=config.alg, scope=config.scope, kid=config.kid,
                timeout=httpx.Timeout(config.timeout_s, connect=config.connect_timeout_s),
                verify=_verify(config),
            )
        return _auth_cache[key]


def _verify(config: FhirDestination) -> bool | str:
    return str(config.verify_tls) if isinstance(config.verify_tls, Path) else config.verify_tls


def client_for(config: FhirDestination, transport: httpx.BaseTransport | None = None) -> FhirClient:
    return FhirClient(
        config.base_url,
        auth=auth_for(config),
        timeout=httpx.Timeout(config.timeout_s, connect=config.connect_timeout_s),
        verify=_verify(config),
        transport=transport,
    )


def _summarise(response: dict[str, Any]) -> list[str]:
    """'Type/id created|existing|updated' for each transaction-response entry."""
    lines = []
    for entry in response.get("entry") or []:
        answer = entry.get("response") or {}
        match = _REFERENCE.search(answer.get("location", ""))
        reference = match.group(1) if match else (entry.get("resource") or {}).get("resourceType", "?")
        status = answer.get("status", "").split(" ")[0]
        lines.append(f"{reference} {'created' if status == '201' else 'existing' if status == '200' else status}")
    return lines


def deliver_bundles(
    config: FhirDestination, idempotency_key: str, payloads: Sequence[str],
    transport: httpx.BaseTransport | None = None,
) -> str:
    """Send every payload Bundle; return one receipt line listing the server's references."""
    bundles = []
    for payload in payloads:
        path = Path(payload)
        if not path.exists():
            raise PermanentError(f"payload file missing: {path.name}")
        bundle = json.loads(path.read_text())
        if bundle.get("resourceType") != "Bundle" or bundle.get("type") != "transaction":
            raise PermanentError(f"{path.name} is not a FHIR transaction Bundle")
        bundles.append(bundle)
    results: list[str] = []
    with client_for(config, transport) as client:
        for bundle in bundles:
            results += _summarise(client.transaction(bundle))
    reports = [r for r in results if r.startswith("DiagnosticReport/")]
    others = [r for r in results if not r.startswith("DiagnosticReport/")]
    created = sum(r.endswith(" created") for r in others)
    return f"{'; '.join(reports) or 'no DiagnosticReport'}; {len(others)} other resources ({created} created)"


def report_references(receipt: str) -> list[str]:
    """The DiagnosticReport references in a receipt line (for `radpath demo` and ops)."""
    return re.findall(r"DiagnosticReport/[A-Za-z0-9\-.]+", receipt or "")


def delivered_reports(destination: str | None = None) -> list[tuple[str, str]]:
    """(destination, DiagnosticReport reference) for every delivered FHIR outbox row."""
    from integrations.db.deliveries import delivered_receipts

    return [(name, ref) for name, receipt in delivered_receipts("fhir", destination) for ref in report_references(receipt)]
