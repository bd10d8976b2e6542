"""How a trust reaches each destination a pathway spec names.

A pathway spec says *what* goes *where* by name ("ORU to ris"); the trust's settings say
how "ris" is reached (file drop, MLLP, FHIR, DICOM). A name with no configuration is a
file-drop folder under the outbox, so the embedded defaults deliver somewhere visible.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FileDropDestination(_Config):
    kind: Literal["file-drop"] = "file-drop"
    path: Path | None = None  # default: <outbox>/<destination name>
    hl7_version: Literal["2.4", "2.5.1"] = "2.4"
    receiving_application: str = "RIS"
    receiving_facility: str = ""


class MllpDestination(_Config):
    """A RIS reached by HL7 v2 over MLLP: ORU^R01 results, acknowledged per message."""

    kind: Literal["mllp"] = "mllp"
    host: str
    port: int = Field(ge=1, le=65535)
    hl7_version: Literal["2.4", "2.5.1"] = "2.4"
    receiving_application: str = "RIS"
    receiving_facility: str = ""
    connect_timeout_s: float = Field(default=5.0, gt=0)
    ack_timeout_s: float = Field(default=30.0, gt=0)
    attempts: int = Field(default=3, ge=1, le=10)  # tries within one delivery attempt
    backoff_s: float = Field(default=1.0, ge=0)  # first wait between tries; doubles, with jitter
    on_ae: Literal["dead-letter", "retry"] = "dead-letter"
    on_ar: Literal["retry", "dead-letter"] = "retry"


class DicomDestination(_Config):
    """A PACS reached by C-STORE (SCU): SR and SEG objects."""

    kind: Literal["dicom"] = "dicom"
    host: str
    port: int = Field(ge=1, le=65535)
    called_ae_title: str = Field(default="PACS", max_length=16)
    calling_ae_title: str = Field(default="RADPATH", max_length=16)
    timeout_seconds: float = Field(default=30.0, gt=0)


class StowDestination(_Config):
    """A PACS reached by STOW-RS (PS3.18 §10.5) at its DICOMweb root URL."""

    kind: Literal["stow-rs"] = "stow-rs"
    base_url: str = Field(description="DICOMweb root; instances are POSTed to <base_url>/studies")
    auth: Literal["none", "bearer"] = "none"
    bearer_token: str | None = None
    timeout_seconds: float = Field(default=30.0, gt=0)


class FhirDestination(_Config):
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
    max_attempts: int = Field(default=3, ge=1, le=10)  # tries within one delivery attempt
    max_retry_after_s: float = Field(default=60.0, ge=0)  # longest Retry-After waited in-process

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
