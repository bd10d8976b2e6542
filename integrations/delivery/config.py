"""How a trust reaches each destination a pathway spec names.

A pathway spec says *what* goes *where* by name ("ORU to ris"); the trust's settings say
how "ris" is reached (file drop, MLLP, FHIR, DICOM). A name with no configuration is a
file-drop folder under the outbox, so the embedded defaults deliver somewhere visible.
"""

from __future__ import annotations

import datetime as dt
import random
import warnings
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetrySchedule(_Config):
    """When the outbox tries a transiently failed delivery again, and when it gives up.

    The wait after the n-th failure is drawn below a ceiling of `base_s * factor**(n-1)`,
    capped at `cap_s`: "equal" jitter waits between half the ceiling and the ceiling, "full"
    between 0 and the ceiling, "none" the ceiling itself. A longer Retry-After from the peer
    wins. The row is dead-lettered when an attempt fails at or after `window_s` since its
    first attempt (the last try is made at the window's end), not after a count of tries.
    """

    base_s: float = Field(default=10.0, gt=0, description="Ceiling of the first wait")
    factor: float = Field(default=2.0, ge=1, description="Growth of the ceiling per failure")
    cap_s: float = Field(default=900.0, gt=0, description="Longest wait between two tries")
    jitter: Literal["equal", "full", "none"] = "equal"
    window_s: float = Field(default=86400.0, gt=0, description="Dead-letter after this long since the first attempt")

    def ceiling_s(self, failures: int) -> float:
        return min(self.cap_s, self.base_s * self.factor ** min(max(failures, 1) - 1, 64))

    def delay_s(self, failures: int, *, retry_after_s: float | None = None, rand: float | None = None) -> float:
        """Seconds to wait after the `failures`-th failure (rand in [0, 1]: the jitter draw)."""
        ceiling = self.ceiling_s(failures)
        draw = random.random() if rand is None else rand
        delay = {"equal": ceiling / 2 * (1 + draw), "full": ceiling * draw, "none": ceiling}[self.jitter]
        return max(delay, retry_after_s) if retry_after_s is not None else delay

    def next_attempt_at(self, *, failures: int, first_attempt_at: dt.datetime, now: dt.datetime,
                        retry_after_s: float | None = None, rand: float | None = None) -> dt.datetime | None:
        """When to try again after a transient failure at `now`; None: the window is over (dead letter)."""
        deadline = first_attempt_at + dt.timedelta(seconds=self.window_s)
        if now >= deadline:
            return None
        due = now + dt.timedelta(seconds=self.delay_s(failures, retry_after_s=retry_after_s, rand=rand))
        return min(due, deadline)


# Keys destinations took when adapters retried in-process (before the outbox scheduled retries).
_RETIRED_KEYS = ("attempts", "backoff_s", "max_attempts", "max_retry_after_s")


class _Destination(_Config):
    retry: RetrySchedule = Field(default_factory=RetrySchedule, description="The outbox's schedule for this destination")

    @model_validator(mode="before")
    @classmethod
    def _drop_retired_keys(cls, data: Any) -> Any:
        if isinstance(data, dict) and any(k in data for k in _RETIRED_KEYS):
            retired = sorted(k for k in _RETIRED_KEYS if k in data)
            warnings.warn(f"destination keys {retired} are ignored: the outbox schedules retries "
                          "(set `retry` instead)", DeprecationWarning, stacklevel=2)
            data = {k: v for k, v in data.items() if k not in _RETIRED_KEYS}
        return data


class _Hl7Options(_Destination):
    """How HL7 v2 messages for this destination are written."""

    hl7_version: Literal["2.4", "2.5.1"] = "2.4"
    receiving_application: str = "RIS"
    receiving_facility: str = ""
    # How this RIS raises an exam's priority on an urgent AI finding, agreed with its supplier
    # (sent only in clinical mode, to a clinical destination, with the unreviewed result; never
    # in shadow or qa mode): "orm-xo", an ORM^O01 order update (ORC-1 XO, table 0119) before
    # the ORU^R01, priority in ORC-7 and OBR-27 (TQ component 6, table 0027); "oru-obr27",
    # the priority in the ORU^R01's own OBR-27; "none", the urgent flag only (OBX-8 AA).
    priority_update: Literal["none", "orm-xo", "oru-obr27"] = "none"
    urgent_priority: Literal["S", "A"] = "S"  # HL7 table 0027: S stat, A ASAP


class FileDropDestination(_Hl7Options):
    kind: Literal["file-drop"] = "file-drop"
    path: Path | None = None  # default: <outbox>/<destination name>


class MllpDestination(_Hl7Options):
    """A RIS reached by HL7 v2 over MLLP: ORU^R01 results (and priority updates), acknowledged per message."""

    kind: Literal["mllp"] = "mllp"
    host: str
    port: int = Field(ge=1, le=65535)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    ack_timeout_s: float = Field(default=30.0, gt=0)
    # What an ACK other than AA/CA means. HL7 v2 (chapter 2): AE/CE, an error in the message
    # (a resend of the same message cannot fix it); AR/CR, rejected for reasons other than
    # content (receiver unavailable, processing failure). A trust whose RIS answers otherwise
    # says so here.
    on_ae: Literal["dead-letter", "retry"] = "dead-letter"
    on_ar: Literal["retry", "dead-letter"] = "retry"


class DicomDestination(_Destination):
    """A PACS reached by C-STORE (SCU): SR and SEG objects."""

    kind: Literal["dicom"] = "dicom"
    host: str
    port: int = Field(ge=1, le=65535)
    called_ae_title: str = Field(default="PACS", max_length=16)
    calling_ae_title: str = Field(default="RADPATH", max_length=16)
    timeout_seconds: float = Field(default=30.0, gt=0)


class StowDestination(_Destination):
    """A PACS reached by STOW-RS (PS3.18 §10.5) at its DICOMweb root URL."""

    kind: Literal["stow-rs"] = "stow-rs"
    base_url: str = Field(description="DICOMweb root; instances are POSTed to <base_url>/studies")
    auth: Literal["none", "bearer"] = "none"
    bearer_token: str | None = None
    timeout_seconds: float = Field(default=30.0, gt=0)


class FhirDestination(_Destination):
    """A FHIR R4 server (the EHR) that takes transaction Bundles.

    auth: "none"; "bearer" (a static token from `bearer_token` or the file `bearer_token_file`);
    "smart" (SMART Backend Services: client credentials with a private_key_jwt assertion
    signed RS384 or ES384 by the key at `private_key_path`, registered at the EHR as `client_id`).
    """

    kind: Literal["fhir"] = "fhir"
    base_url: str
    auth: Literal["none", "bearer", "smart"] = "none"
    bearer_token: SecretStr | None = None
    bearer_token_file: Path | None = None
    client_id: str | None = None
    token_url: str | None = None
    private_key_path: Path | None = None
    alg: Literal["RS384", "ES384"] = "RS384"
    kid: str | None = None  # default: the key's RFC 7638 thumbprint
    scope: str = "system/Patient.crs system/Observation.cus system/DiagnosticReport.cus"
    connect_timeout_s: float = Field(default=10.0, gt=0)
    timeout_s: float = Field(default=60.0, gt=0)
    verify_tls: bool | Path = True  # True: system CAs; a path: that CA bundle; False only for tests
    # How this EHR raises an exam's priority on an urgent AI finding: "task", a FHIR Task in the
    # report's transaction (code fulfill, focus the ServiceRequest, priority below) that the
    # reporting worklist acts on; "none", the urgent flag only (Observation.interpretation AA).
    # With "task" and SMART auth, add system/Task.c to `scope`.
    priority_update: Literal["none", "task"] = "none"
    urgent_priority: Literal["urgent", "asap", "stat"] = "stat"  # FHIR R4 request-priority

    @model_validator(mode="after")
    def _auth_complete(self) -> "FhirDestination":
        if not self.base_url.startswith(("https://", "http://")):
            raise ValueError("base_url must be an http(s) URL")
        if self.auth == "bearer" and not (self.bearer_token or self.bearer_token_file):
            raise ValueError("auth 'bearer' needs bearer_token or bearer_token_file")
        if self.auth == "smart":
            missing = [n for n in ("client_id", "token_url", "private_key_path") if not getattr(self, n)]
            if missing:
                raise ValueError(f"auth 'smart' needs {', '.join(missing)}")
        return self


DestinationConfig = Annotated[FileDropDestination | DicomDestination | StowDestination | FhirDestination | MllpDestination, Field(discriminator="kind")]
