"""One settings object, read from ``DISTILL_*`` environment variables.

With nothing set, everything lives under ``DISTILL_HOME`` (default: the per-user data folder,
``~/.local/share/distill`` on Linux, so every command finds the same data whatever folder it runs in):
SQLite for the tables, Celery's filesystem transport for the queue and a local folder for objects. That
is the embedded default that ``distill standalone`` runs; production sets the three URLs to Postgres,
Redis and S3.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from platformdirs import user_data_path
from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_home() -> Path:
    """The per-user data folder (``$XDG_DATA_HOME/distill``, else ``~/.local/share/distill`` on Linux)."""
    return user_data_path("distill")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DISTILL_", extra="ignore")

    home: Path = Field(default_factory=default_home)
    database_url: str = ""
    """SQLAlchemy URL. Empty: ``sqlite:///$DISTILL_HOME/distill.db``."""
    broker_url: str = ""
    """Celery broker URL (``redis://…``). Empty: the filesystem transport under ``$DISTILL_HOME/queue``."""
    storage_url: str = ""
    """``s3://bucket/prefix`` or a folder. Empty: ``$DISTILL_HOME/objects``."""

    s3_endpoint_url: str | None = None
    """For MinIO, moto or any S3-compatible server; unset for AWS."""
    s3_public_endpoint_url: str | None = None
    """Endpoint used in presigned download URLs when clients reach S3 by another name than the API does."""
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None
    presign_expiry_seconds: int = Field(default=600, ge=1, le=900)

    queue_name: str = "distill"
    max_upload_bytes: int = Field(default=2 * 1024**3, ge=1)
    device: str = "auto"
    """``auto`` (CUDA when there is one), ``cpu`` or ``cuda[:N]``."""
    worker_id: str = ""
    """Names this worker in job leases; empty: hostname and pid."""
    cancel_poll_seconds: float = Field(default=0.5, ge=0.0)
    torch_threads: int = Field(default=0, ge=0)
    """CPU threads for PyTorch in a worker; 0 keeps PyTorch's default (one per core). On a small or shared
    CPU, fewer threads than cores avoid oversubscription (two threads fighting for a busy core)."""

    @model_validator(mode="after")
    def _embedded_defaults(self) -> Settings:
        self.home = self.home.expanduser().resolve()
        if not self.database_url:
            self.database_url = f"sqlite:///{self.home / 'distill.db'}"
        if not self.broker_url:
            self.broker_url = "filesystem://"
        if not self.storage_url:
            self.storage_url = str(self.home / "objects")
        return self

    @property
    def queue_folder(self) -> Path:
        """Where the filesystem transport keeps its messages (embedded default only)."""
        return self.home / "queue"

    @property
    def cache_folder(self) -> Path:
        return self.home / "cache"


@lru_cache
def get_settings() -> Settings:
    """The process's settings, read once from the environment on first use (never at import)."""
    return Settings()
