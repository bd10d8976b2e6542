"""Inbound bearer-token authentication, one rule for every HTTP door (FHIR, STOW-RS)."""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from pydantic import SecretStr

CHALLENGE = {"WWW-Authenticate": 'Bearer realm="radpath"'}


REFUSED = "auth.refused"  # the audit action of a request refused for its credentials (a security alert)


def bearer_client(authorization: str, tokens: Mapping[str, SecretStr], *, anonymous: str) -> str | None:
    """The configured client whose token the `Authorization` header carries; `anonymous` when the
    door has no tokens configured (loopback and demo only); None when the header does not match."""
    if not tokens:
        return anonymous
    scheme, _, credential = authorization.partition(" ")
    if scheme.lower() != "bearer" or not credential:
        return None
    for name, token in tokens.items():  # compare every token in constant time
        if hmac.compare_digest(credential.encode(), token.get_secret_value().encode()):
            return name
    return None
