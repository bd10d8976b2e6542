"""Deterministic DICOM UIDs, so that a retried build produces byte-identical identifiers.

DICOM PS3.5 B.2: a UUID may be written as a UID under the root "2.25" followed by the
UUID's 128-bit value as a decimal integer. We use name-based UUIDs (RFC 4122 version 5,
SHA-1) of "<result_id>/<purpose>" in a fixed radpath namespace.
"""

from __future__ import annotations

import uuid

# Fixed namespace for every radpath-derived UID (uuid5 of the DNS name "radpath.uid").
RADPATH_UID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_DNS, "radpath.uid")


def uid_from_name(name: str) -> str:
    """A 2.25 UID derived from any stable name (at most 44 characters, within the 64 limit)."""
    return f"2.25.{uuid.uuid5(RADPATH_UID_NAMESPACE, name).int}"


def result_uid(result_id: str, purpose: str) -> str:
    """The UID for one purpose ("sr-series", "seg-instance", ...) of one result."""
    if not result_id or not purpose:
        raise ValueError("result_id and purpose are both required")
    return uid_from_name(f"{result_id}/{purpose}")


def algorithm_device_uid(model_name: str, model_version: str, model_sha256: str) -> str:
    """The Device UID (0018,1002) of an algorithm: IHE AI Results (Rev 1.1, 6.5.3.1) wants one
    that changes with every model version; derived from name, version and the model file's
    sha256, so the same model always has the same UID and any changed file a new one."""
    return uid_from_name(f"algorithm/{model_name}/{model_version}/{model_sha256}")
