"""One settings object, read from ``DISTILL_*`` environment variables.

With nothing set, everything lives under ``DISTILL_HOME`` (default ``./.distill``): SQLite for the tables,
Celery's filesystem transport for the queue and a local folder for objects. That is the embedded default
that ``distill standalone`` runs; production sets the three URLs to Postgres, Redis and S3.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DISTILL_", extra="ignore")

    home: Path = Path(".distill")
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

    # ---- edge: idempotency, rate limits, spec ceilings (helper F: issue 9, items 5 and 6) ----
    idempotency_ttl_seconds: int = Field(default=24 * 3600, ge=24 * 3600)
    """How long an ``Idempotency-Key`` and its first answer are kept (at least 24 hours)."""
    idempotency_lock_seconds: int = Field(default=3600, ge=1)
    """A claim still ``in_progress`` after this long belongs to a request that died; a retry takes it."""
    rate_limit: str = "1200/minute"
    """Per API key, in the ``limits`` notation (``"20/second;1200/minute"``); empty: no rate limit. Counted
    in Redis when the broker is Redis (shared by every API process), else in the process."""
    max_parameters: int = Field(default=100_000_000, ge=1)
    """The most parameters a student may have (a larger spec answers 422 on ``model``)."""
    max_epochs: int = Field(default=1000, ge=1)
    max_runtime_s: int = Field(default=24 * 3600, ge=1)
    """The longest ``training.max_runtime_s`` a job may ask for."""

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
