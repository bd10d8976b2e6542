"""An httpx FHIR R4 client with radpath's retry policy.

Retried: connection errors and timeouts, 429 (waiting what Retry-After says, up to a cap),
and 5xx. Never retried: other 4xx, which become `FhirRejected` (a PermanentError) carrying
the server's OperationOutcome with digit runs masked, so no NHS number is kept from an echo.
Retries are safe because radpath writes with conditional creates/updates on business
identifiers. TLS verification is on unless a destination turns it off explicitly.
"""

from __future__ import annotations

import email.utils
import json
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from integrations.errors import PermanentError, TransientError

FHIR_JSON = "application/fhir+json"


class RetryLater(TransientError):
    """Transient, with the server's Retry-After (seconds) when it gave one."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class FhirRejected(PermanentError):
    """The server refused the request (4xx other than 429); `outcome` is the masked OperationOutcome."""

    def __init__(self, status: int, outcome: dict[str, Any] | None):
        self.status, self.outcome = status, outcome
        detail = json.dumps(outcome, separators=(",", ":")) if outcome else "no OperationOutcome"
        super().__init__(f"FHIR server refused with {status}: {detail}")


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as delta-seconds or an HTTP-date (RFC 9110 section 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (now if now is not None else time.time()))


_DIGITS = re.compile(r"\d{6,}")


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
            kept["diagnostics"] = _DIGITS.sub("#", str(issue["diagnostics"]))[:300]
        details = (issue.get("details") or {}).get("coding")
        if details:
            kept["details"] = {"coding": [{k: c[k] for k in ("system", "code") if k in c} for c in details]}
        issues.append(kept)
    return {"resourceType": "OperationOutcome", "issue": issues}


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 3
    backoff_s: float = 0.5  # doubled each try, with full jitter
    max_backoff_s: float = 8.0
    max_retry_after_s: float = 60.0  # a longer Retry-After is handed back to the caller's scheduler

    def backoff(self, attempt: int) -> float:
        return random.uniform(0, min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1)))


class FhirClient:
    """Talks JSON FHIR to one server. `transport` is the seam tests use to inject failures."""

    def __init__(
        self,
        base_url: str,
        *,
        auth: httpx.Auth | None = None,
        timeout: httpx.Timeout | None = None,
        verify: bool | str = True,
        policy: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.base_url = base_url.rstrip("/")
        self.policy = policy or RetryPolicy()
        self._sleep = sleep
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
        """Send with retries; return a 2xx response or raise RetryLater / FhirRejected."""
        url = f"{self.base_url}/{path.lstrip('/')}" if path else self.base_url
        last = "no attempt made"
        for attempt in range(1, self.policy.max_attempts + 1):
            wait: float | None = None
            try:
                response = self._http.request(method, url, **kwargs)
            except httpx.TransportError as exc:  # connect/read errors and timeouts
                last = f"{exc.__class__.__name__} talking to the FHIR server"
            else:
                if response.is_success:
                    return response
                if response.status_code == 429 or response.status_code >= 500:
                    wait = retry_after_seconds(response.headers.get("Retry-After"))
                    last = f"FHIR server answered {response.status_code}"
                    if wait is not None and wait > self.policy.max_retry_after_s:
                        raise RetryLater(f"{last}; Retry-After {wait:.0f} s", retry_after=wait)
                else:
                    raise FhirRejected(response.status_code, masked_outcome(response))
            if attempt < self.policy.max_attempts:
                self._sleep(wait if wait is not None else self.policy.backoff(attempt))
        raise RetryLater(f"{last} (after {self.policy.max_attempts} tries)", retry_after=wait)

    def transaction(self, bundle: dict[str, Any]) -> dict[str, Any]:
        """POST a transaction Bundle; return the transaction-response Bundle."""
        response = self.request("POST", "", content=json.dumps(bundle).encode(),
                                headers={"Content-Type": FHIR_JSON})
        return response.json()

    def search(self, resource_type: str, **params: str) -> dict[str, Any]:
        return self.request("GET", resource_type, params=params).json()

    def read(self, reference: str) -> dict[str, Any]:
        return self.request("GET", reference).json()
