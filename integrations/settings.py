"""radpath settings: `RADPATH_*` environment variables, then an optional `radpath.toml`.

Read when needed (`get_settings()`), never at import time, so tests and the CLI can
point radpath at another data directory or database before anything touches it.
"""

from __future__ import annotations

import functools
import os
import secrets
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from integrations.delivery.config import DestinationConfig, FileDropDestination
from integrations.dicom.config import PacsSource
from integrations.errors import PermanentError
from integrations.inference.config import InferenceService
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


class ConfigurationError(PermanentError):
    """A setting radpath cannot run with. The message names the setting and what to do; the CLI
    prints it as one line and exits non-zero (a trust must never run on defaults it did not choose)."""


def describe_invalid_settings(exc: Exception) -> str:
    """One line naming each bad `RADPATH_*` setting, from pydantic's ValidationError or SettingsError."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        return "; ".join(f"RADPATH_{'_'.join(str(p) for p in e['loc'][:1]).upper()}: {e['msg']}" for e in errors())
    text = str(exc)  # SettingsError: 'error parsing value for field "dicom_peers" from source "EnvSettingsSource"'
    if 'field "' in text:
        field = text.split('field "', 1)[1].split('"', 1)[0]
        return f"RADPATH_{field.upper()}: not valid JSON for this setting"
    return text.splitlines()[0]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RADPATH_", extra="ignore")

    data_dir: Path = Field(default=Path(".radpath"), description="Ledger, image store and outbox files")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; default SQLite in data_dir")
    trust: str = Field(default="demo-trust", description="Trust code shown in run tags")
    pseudonym_key: str | None = Field(
        default=None, description="Secret for pseudonymous keys; default a key file in data_dir"
    )
    inference_threads: int = Field(default=2, ge=1)
    inference_services: dict[str, InferenceService] = Field(
        default_factory=dict, description="Models (by the spec's model name) run on a remote Open Inference "
        "Protocol server instead of onnxruntime here")
    filedrop_dir: Path | None = Field(default=None, description="File-drop destination; default data_dir/outbox")
    destinations: dict[str, DestinationConfig] = Field(
        default_factory=dict, description="How each destination named by a pathway spec is reached"
    )

    # --- Listeners (`radpath serve`). Each front door keeps its own settings in its section.
    bind_host: str = Field(default="127.0.0.1", description="Address the listeners bind to")

    # --- HL7 v2 / MLLP (integrations/hl7)
    mllp_port: int = Field(default=2575, ge=0, le=65535)
    mllp_max_frame_bytes: int = Field(default=1 << 20, ge=1024, description="Largest MLLP frame accepted")
    mllp_idle_timeout_s: float = Field(default=300.0, gt=0, description="Close a connection idle this long")
    mllp_max_connections: int = Field(default=32, ge=1, description="Concurrent MLLP connections")
    mllp_on_commit_failure: Literal["AR", "close"] = Field(
        default="AR", description="Answer when the ledger cannot commit: AR, or close without an ACK"
    )
    mllp_default_charset: str = Field(default="ASCII", description="Character set when MSH-18 is empty")
    mllp_application: str = Field(default="RADPATH", description="MSH-3 of radpath's ACKs")
    mllp_facility: str = Field(default="", description="MSH-4 of radpath's ACKs")
    mllp_parse_processes: int = Field(
        default=1, ge=0, description="Worker processes parsing HL7 (0: a thread of the listener process)"
    )

    # --- DICOM (integrations/dicom)
    dicom_port: int = Field(default=11112, ge=0, le=65535)
    dicom_ae_title: str = Field(default="RADPATH", max_length=16)
    dicom_peers: dict[str, tuple[str, ...]] = Field(
        default_factory=lambda: {"RADPATH_DEMO": ("127.0.0.1",)},
        description="Calling AE titles allowed to associate, each with its allowed source addresses (empty: any)",
    )
    dicom_require_called_ae: bool = Field(
        default=True, description="Refuse an association addressed to another AE title (A-ASSOCIATE-RJ, called AE "
        "title not recognised); False accepts any called AE title")
    dicom_max_associations: int = Field(default=8, ge=1)
    dicom_timeout_seconds: float = Field(default=30.0, gt=0, description="ACSE, DIMSE and network timeouts")
    dicom_min_free_mb: int = Field(default=1024, ge=0, description="Free-space watermark of the image store")
    dicom_max_pixel_bytes: int = Field(default=2 * 1024**3, gt=0, description="Ceiling on one instance's declared pixel size")
    stow_inbound_tokens: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="STOW-RS clients allowed to store images: client name -> bearer token. Empty: no inbound "
        "authentication (loopback and demo only)",
    )
    dicom_max_stow_bytes: int = Field(default=2 * 1024**3, gt=0, description="Ceiling on one STOW-RS request body")
    dicom_quiet_period_seconds: dict[str, int] = Field(
        default_factory=dict, description="Per-modality quiet period overriding the pathway spec's"
    )
    dicom_orphan_after_seconds: int = Field(default=3600, ge=0, description="Study without an order: orphaned after")
    pacs: PacsSource | None = Field(default=None, description="Where order-triggered retrieval queries")
    pacs_retrieve_after_seconds: float = Field(
        default=30.0, ge=0, description="How long an order waits for images to be pushed before radpath asks the PACS")
    pacs_retrieve_retry_seconds: float = Field(default=300.0, gt=0, description="Between two retrievals for one order")
    pacs_retrieve_attempts: int = Field(default=3, ge=1, description="Retrievals tried per order that still has no images")

    # --- HTTP: STOW-RS and FHIR (integrations/http)
    http_port: int = Field(default=8080, ge=0, le=65535)

    # --- FHIR (integrations/fhir)
    fhir_inbound_tokens: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="FHIR clients allowed to send orders: client name -> bearer token. Empty: no inbound "
        "authentication (loopback and demo only)",
    )
    fhir_max_body_bytes: int = Field(default=1_048_576, ge=1024, description="Largest FHIR request body accepted (413 above)")

    # --- TLS on every inbound door: MLLP, DICOM and HTTP (integrations/tls.py)
    tls_cert_file: Path | None = Field(default=None, description="PEM certificate (chain) the listeners present; "
                                       "with tls_key_file, every door speaks TLS 1.2+ only")
    tls_key_file: Path | None = Field(default=None, description="PEM private key of tls_cert_file")
    tls_client_ca_file: Path | None = Field(default=None, description="PEM CA bundle: clients must present a "
                                            "certificate it issued (mutual TLS)")

    # --- Operations (issue 7): leases, reconciler, notifications
    run_lease_seconds: float = Field(default=1800, gt=0, description="A running flow's claim on its run; a dead one's lapses after this")
    delivery_lease_seconds: float = Field(default=300, gt=0, description="A sender's claim on one delivery")
    reconcile_grace_seconds: float = Field(default=60, ge=0, description="Left to the event-driven path before the reconciler acts")
    notify_webhook_url: str | None = Field(default=None, description="Where automations post (radpath automations apply)")
    health_check_seconds: float = Field(
        default=30, gt=0, description="`radpath serve` checks each front door and destination this often (/health, "
        "`radpath status`, the radpath-health table; a change of state emits radpath.destination.down/up)")
    ui_auth: SecretStr | None = Field(
        default=None, description='"user:password": HTTP basic auth in front of the Prefect UI and API that `radpath '
        'serve` and `radpath ui` start (the UI asks for it; every Prefect client radpath starts sends it)')
    prefect_retention_days: int = Field(
        default=90, ge=1, description="The Prefect server radpath starts deletes finished flow runs (their logs, "
        "artifacts and task runs) this many days after they ended, and events after Prefect's 7 days, so its "
        "database does not grow without end; the ledger keeps the clinical record and the audit")
    report_text_retention_days: int = Field(
        default=30, ge=0, description="The radiologist's report text (ORU^R01 from the RIS) is kept this many days, "
        "then deleted from the ledger with its raw message; what each pathway read from it stays (the evidence loop)")
    prefect_port: int = Field(default=4200, ge=0, le=65535,
                              description="`radpath serve` without PREFECT_API_URL: port of the local Prefect server and UI")
    runner_limit: int = Field(default=2, ge=1, description="Routine flow runs (and the reconciler) `radpath serve` runs "
                              "at once, each in a subprocess")
    urgent_runner_limit: int = Field(default=1, ge=1, description="Flow runs of the urgent queue (urgent pathway runs, "
                                     "clinical review) `radpath serve` runs at once, beside the routine ones")
    serve_deployments: bool = Field(
        default=True, description="`radpath serve` runs the flows itself; False: front doors only, process workers on "
        "the `radpath` work pool run them (scale-out, `radpath deploy`)")

    @field_validator("ui_auth")
    @classmethod
    def _user_and_password(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        user, _, password = value.get_secret_value().partition(":")
        if not (user and password):
            raise ValueError('give "user:password", both non-empty')
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = Path(os.environ.get("RADPATH_CONFIG", "radpath.toml"))
        if os.environ.get("RADPATH_CONFIG") and not toml_file.is_file():
            raise ConfigurationError(f"RADPATH_CONFIG={toml_file}: no such file (unset it to use radpath.toml or "
                                     "the defaults)")
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=toml_file),
        )

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'ledger.sqlite3').resolve()}"

    @property
    def store_dir(self) -> Path:
        return self.data_dir / "store"

    @property
    def work_dir(self) -> Path:
        return self.data_dir / "work"

    @property
    def outbox_dir(self) -> Path:
        return self.filedrop_dir or (self.data_dir / "outbox")

    def destination(self, name: str) -> DestinationConfig:
        """The trust's configuration for a destination; unconfigured names are file drops
        (a file drop without a path writes to <outbox>/<name>)."""
        config = self.destinations.get(name) or FileDropDestination()
        if isinstance(config, FileDropDestination) and config.path is None:
            config = config.model_copy(update={"path": self.outbox_dir / name})
        return config

    def pseudonym_secret(self) -> bytes:
        """The HMAC key behind pseudonymous ids; created once per data directory."""
        if self.pseudonym_key:
            return self.pseudonym_key.encode()
        key_file = self.data_dir / "pseudonym.key"
        if not key_file.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            key_file.write_text(secrets.token_hex(32))
            key_file.chmod(0o600)
        return key_file.read_text().strip().encode()


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def reset_settings() -> None:
    """Forget cached settings (tests and the CLI change the environment)."""
    get_settings.cache_clear()
