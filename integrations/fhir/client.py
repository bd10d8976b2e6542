"""An httpx FHIR R4 client that tries once and says what the server answered.

Each call is one try: the outbox (integrations/db/ledger.py) decides when to try again.
Transient: connection errors and timeouts, 408/429 and 5xx, raised as `RetryLater` carrying
the status and the server's Retry-After (seconds or an HTTP-date). Permanent: other 4xx,
raised as `FhirRejected` carrying the server's OperationOutcome with digit runs masked, so
no NHS number is kept from an echo. Retrying is safe because radpath writes with
conditional creates/updates on business identifiers. TLS verification is on unless a
destination turns it off explicitly.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from integrations.errors import HttpRejected, HttpUnavailable, http_is_transient, masked, retry_after_seconds

FHIR_JSON = "application/fhir+json"
__all__ = ["FhirClient", "FhirRejected", "RetryLater", "masked_outcome", "retry_after_seconds"]


class RetryLater(HttpUnavailable):
    """Transient: the server unreachable (status None) or busy/failing; `retry_after` in seconds
    when it gave one."""


class FhirRejected(HttpRejected):
    """The server refused the request; `outcome` is the masked OperationOutcome."""

    def __init__(self, status: int, outcome: dict[str, Any] | None):
        self.outcome = outcome
        detail = json.dumps(outcome, separators=(",", ":")) if outcome else "no OperationOutcome"
        super().__init__(f"FHIR server refused with {status}: {detail}", status=status,
                         peer={"outcome": _issue_lines(outcome)} if outcome else None)


def _issue_lines(outcome: dict[str, Any]) -> list[str]:
    """Each issue as one short line (severity, code, where, what the server said)."""
    lines = []
    for issue in outcome.get("issue") or []:
        where = ",".join(issue.get("expression") or issue.get("location") or [])
        lines.append(" ".join(p for p in (issue.get("severity"), issue.get("code"), where,
                                          issue.get("diagnostics")) if p))
    return lines


def masked_outcome(response: httpx.Response) -> dict[str, Any] | None:
    """The OperationOutcome's issues with long digit runs masked (identifiers), text capped."""
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict) or body.get("resourceType") != "OperationOutcome":
        return None
    issues = []
    for issue in body.get("issue") or []:
        kept = {k: issue[k] for k in ("severity", "code", "expression", "location") if k in issue}
        if issue.get("diagnostics"):
            kept["diagnostics"] = masked(issue["diagnostics"])
        details = (issue.get("details") or {}).get("coding")
        if details:
            kept["details"] = {"coding": [{k: c[k] for k in ("system", "code") if k in c} for c in details]}
        issues.append(kept)
    return {"resourceType": "OperationOutcome", "issue": issues}


class FhirClient:
    """Talks JSON FHIR to one server. `transport` is the seam tests use to inject failures."""

    def __init__(
        self,
        base_url: str,
        *,
        auth: httpx.Auth | None = None,
        timeout: httpx.Timeout | None = None,
        verify: bool | str = True,
        transport: httpx.BaseTransport | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            auth=auth, timeout=timeout or httpx.Timeout(60.0, connect=10.0), verify=verify, transport=transport,
            headers={"Accept": FHIR_JSON}, follow_redirects=False,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> FhirClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send once; return a 2xx response or raise RetryLater / FhirRejected."""
        url = f"{self.base_url}/{path.lstrip('/')}" if path else self.base_url
        try:
            response = self._http.request(method, url, **kwargs)
        except httpx.TransportError as exc:  # connect/read errors and timeouts
            raise RetryLater(f"{exc.__class__.__name__} talking to the FHIR server",
                             peer={"connection": exc.__class__.__name__}) from None
        if response.is_success:
            return response
        status = response.status_code
        if http_is_transient(status):
            wait = retry_after_seconds(response.headers.get("Retry-After"))
            said = f"; Retry-After {wait:.0f} s" if wait is not None else ""
            raise RetryLater(f"FHIR server answered {status}{said}", status=status, retry_after=wait)
        raise FhirRejected(status, masked_outcome(response))

    def transaction(self, bundle: dict[str, Any]) -> dict[str, Any]:
        """POST a transaction Bundle; return the transaction-response Bundle."""
        response = self.request("POST", "", content=json.dumps(bundle).encode(),
                                headers={"Content-Type": FHIR_JSON})
        return response.json()

    def search(self, resource_type: str, **params: str) -> dict[str, Any]:
        return self.request("GET", resource_type, params=params).json()

    def read(self, reference: str) -> dict[str, Any]:
        return self.request("GET", reference).json()
