"""radpath settings: `RADPATH_*` environment variables, then an optional `radpath.toml`.

Read when needed (`get_settings()`), never at import time, so tests and the CLI can
point radpath at another data directory or database before anything touches it.
"""

from __future__ import annotations

import functools
import os
import secrets
from pathlib import Path

from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RADPATH_", extra="ignore")

    data_dir: Path = Field(default=Path(".radpath"), description="Ledger, image store and outbox files")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; default SQLite in data_dir")
    trust: str = Field(default="demo-trust", description="Trust code shown in run tags")
    pseudonym_key: str | None = Field(
        default=None, description="Secret for pseudonymous keys; default a key file in data_dir"
    )
    inference_threads: int = Field(default=2, ge=1)
    filedrop_dir: Path | None = Field(default=None, description="File-drop destination; default data_dir/outbox")

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
