"""SMART Backend Services authorisation (SMART App Launch 2.x, "Backend Services").

The client proves itself with a signed JWT (private_key_jwt, RFC 7523): iss = sub = client
id, aud = the token endpoint, exp at most five minutes ahead, a fresh jti each time, header
kid naming the key registered at the EHR, alg RS384 or ES384 (the two SMART requires
servers to support). The access token it gets back is cached until shortly before it
expires, and dropped when the FHIR server answers 401. Keys, assertions and tokens are never
logged and never appear in exception messages or reprs.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
import uuid
from collections.abc import Generator
from pathlib import Path

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from integrations.errors import PermanentError, TransientError

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MAX_ASSERTION_LIFETIME_S = 300  # SMART Backend Services: exp no more than five minutes ahead


def load_private_key(path: Path, alg: str):  # noqa: ANN201 - a cryptography private key
    """Load a PEM private key and check it fits the algorithm (RSA for RS384, P-384 for ES384)."""
    key = load_pem_private_key(Path(path).read_bytes(), password=None)
    if alg == "RS384" and not isinstance(key, rsa.RSAPrivateKey):
        raise PermanentError("RS384 needs an RSA private key")
    if alg == "ES384" and not (isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1"):
        raise PermanentError("ES384 needs an EC P-384 private key")
    return key


def public_jwk(private_key) -> dict[str, str]:  # noqa: ANN001
    """The public half as a JWK (what a trust registers at the EHR, or serves as a JWKS)."""
    public = private_key.public_key()
    algorithm = RSAAlgorithm if isinstance(public, rsa.RSAPublicKey) else ECAlgorithm
    return algorithm.to_jwk(public, as_dict=True)


def jwk_thumbprint(jwk: dict[str, str]) -> str:
    """RFC 7638 thumbprint: SHA-256 of the required members, sorted, no whitespace; base64url."""
    required = ("e", "kty", "n") if jwk["kty"] == "RSA" else ("crv", "kty", "x", "y")
    canonical = json.dumps({k: jwk[k] for k in required}, sort_keys=True, separators=(",", ":"))
    return base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()


class SmartBackendAuth(httpx.Auth):
    """httpx auth that fetches, caches and refreshes a SMART Backend Services access token."""

    def __init__(
        self,
        *,
        client_id: str,
        token_url: str,
        private_key_path: Path,
        alg: str = "RS384",
        scope: str,
        kid: str | None = None,
        assertion_lifetime_s: int = MAX_ASSERTION_LIFETIME_S,
        refresh_margin_s: float = 60.0,
        timeout: httpx.Timeout | float = 30.0,
        verify: bool | str = True,
        transport: httpx.BaseTransport | None = None,
    ):
        if alg not in ("RS384", "ES384"):
            raise PermanentError("SMART Backend Services signs with RS384 or ES384")
        self.client_id, self.token_url, self.alg, self.scope = client_id, token_url, alg, scope
        self._key = load_private_key(private_key_path, alg)
        self.kid = kid or jwk_thumbprint(public_jwk(self._key))
        self.assertion_lifetime_s = min(assertion_lifetime_s, MAX_ASSERTION_LIFETIME_S)
        self.refresh_margin_s = refresh_margin_s
        self._http = httpx.Client(timeout=timeout, verify=verify, transport=transport)
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires_at = 0.0
        self.tokens_fetched = 0

    def __repr__(self) -> str:
        return f"SmartBackendAuth(client_id={self.client_id!r}, token_url={self.token_url!r}, alg={self.alg})"

    def client_assertion(self) -> str:
        now = int(time.time())
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": self.token_url,
            "iat": now,
            "exp": now + self.assertion_lifetime_s,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self._key, algorithm=self.alg, headers={"kid": self.kid, "typ": "JWT"})

    def _fetch(self) -> None:
        form = {
            "grant_type": "client_credentials",
            "scope": self.scope,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": self.client_assertion(),
        }
        try:
            response = self._http.post(self.token_url, data=form, headers={"Accept": "application/json"})
        except httpx.TransportError as exc:
            raise TransientError(f"SMART token endpoint unreachable ({exc.__class__.__name__})") from None
        if response.status_code == 429 or response.status_code >= 500:
            raise TransientError(f"SMART token endpoint answered {response.status_code}")
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code != 200 or not body.get("access_token"):
            error = str(body.get("error", "no access_token"))[:80]
            description = str(body.get("error_description", ""))[:200]
            raise PermanentError(f"SMART token request refused ({response.status_code} {error}: {description})")
        self._token = body["access_token"]
        lifetime = float(body.get("expires_in", 300))
        self._expires_at = time.monotonic() + max(lifetime - self.refresh_margin_s, lifetime / 2)
        self.tokens_fetched += 1

    def access_token(self) -> str:
        """A cached token, fetched anew when missing or close to expiry."""
        with self._lock:
            if self._token is None or time.monotonic() >= self._expires_at:
                self._fetch()
            return self._token  # type: ignore[return-value]

    def invalidate(self) -> None:
        with self._lock:
            self._token, self._expires_at = None, 0.0

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self.access_token()}"
        response = yield request
        if response.status_code == 401:  # revoked or expired early: one fresh token, one retry
            self.invalidate()
            request.headers["Authorization"] = f"Bearer {self.access_token()}"
            yield request


class BearerAuth(httpx.Auth):
    """A static bearer token (kept out of reprs)."""

    def __init__(self, token: str):
        self._token = token

    def __repr__(self) -> str:
        return "BearerAuth(***)"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._token}"
        yield request
