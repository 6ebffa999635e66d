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
    worker_devices: int = Field(default=0, ge=0, le=64)
    """How many devices this worker offers one job (``resources.gpus`` up to it train data-parallel, one
    process per device). 0: every CUDA device it sees when it trains on CUDA, else 1. On a CPU worker a
    number above 1 runs that many gloo processes (for testing the data-parallel path without GPUs)."""
    worker_device_memory_mb: int = Field(default=0, ge=0)
    """CPU workers: the memory one training process may give a student's training state (parameters,
    gradients, Adam's moments) when a data-parallel job's ``resources.sharding`` is ``auto``: a student
    needing more is sharded with FSDP. 0: no limit (DDP). CUDA workers measure their devices' free memory."""
    distributed_timeout_seconds: float = Field(default=600.0, gt=0.0)
    """Data-parallel jobs: how long a rank waits for the others (rendezvous, a collective) before the job
    fails; rank 0 evaluates after each epoch while the others wait, so keep it above an evaluation's time."""

    # -- live events, webhooks, observability (helper E) --
    queues: str = ""
    """Comma-separated queue names a job may ask for in ``resources.queue`` (one per worker pool / GPU class);
    empty: any name. The default queue (``queue_name``) is always allowed."""
    log_format: str = Field(default="text", pattern="^(text|json)$")
    """``json``: one JSON object per log line, carrying ``job_id`` and ``tenant`` when known."""
    webhooks_dispatch: bool = True
    """Run the webhook dispatcher in the API process (every replica may: deliveries are claimed with
    ``SKIP LOCKED``)."""
    webhook_poll_seconds: float = Field(default=1.0, gt=0.0, le=60.0)
    webhook_timeout_seconds: float = Field(default=10.0, gt=0.0, le=60.0)
    webhook_max_attempts: int = Field(default=8, ge=1, le=20)
    webhook_retry_base_seconds: float = Field(default=10.0, gt=0.0, le=3600.0)
    """Retry ``n`` waits ``base * 2**(n-1)`` seconds (capped at an hour): 10 s, 20 s, 40 s… by default."""
    stream_poll_seconds: float = Field(default=0.5, gt=0.0, le=10.0)
    """How often an open event stream looks for new events."""
    stream_keepalive_seconds: float = Field(default=15.0, gt=0.0, le=300.0)
    worker_metrics_port: int = Field(default=0, ge=0, le=65535)
    """A worker's own Prometheus exporter (``/metrics``: its GPUs' memory and utilisation); 0: none."""
    worker_metrics_host: str = "0.0.0.0"
    """Where the worker's exporter listens (all interfaces, so Prometheus can scrape a container)."""

    # -- reliability: leases, the reconciler, retries and timeouts ------------------------------------
    lease_seconds: float = Field(default=60.0, gt=0.0)
    """A running job's lease: a worker that has not renewed it for this long is presumed lost."""
    heartbeat_seconds: float = Field(default=10.0, gt=0.0)
    """How often a worker renews its lease (and learns of a cancel): well under ``lease_seconds``."""
    reconcile_seconds: float = Field(default=10.0, gt=0.0)
    """How often the reconciler (a thread of every ``distill worker``) sweeps expired leases and wake-ups."""
    wakeup_resend_seconds: float = Field(default=600.0, gt=0.0)
    """A queued job whose wake-up went out this long ago gets another (the broker may have lost it)."""
    max_attempts: int = Field(default=3, ge=1)
    """Attempts (claims) before a job whose workers keep getting lost fails with ``worker_lost``."""
    max_running_jobs_per_tenant: int = Field(default=0, ge=0)
    """Jobs one tenant may have ``running`` at once (0: no limit). A worker leaves a job of a tenant at its
    limit queued and takes the next message; the tenant's next job is woken when one of its jobs ends."""
    db_retry_seconds: float = Field(default=30.0, ge=0.0)
    """How long a worker retries a failing database write (with backoff) before giving its job up."""
    storage_retry_seconds: float = Field(default=60.0, ge=0.0)
    """How long a worker retries a failing artifact upload (with backoff) before failing the job."""
    checkpoint_every_steps: int = Field(default=500, ge=0)
    """A running job checkpoints its student every this many optimizer steps (0: only at each epoch's
    end, which it always does); a job taken over by another worker resumes from its last checkpoint."""
    db_connect_timeout_seconds: int = Field(default=2, ge=1)
    """libpq ``connect_timeout`` (Postgres): a database that does not answer fails fast."""
    db_statement_timeout_seconds: float = Field(default=1.5, gt=0.0)
    """Postgres ``statement_timeout``, and the client-side deadline after which a silent server's
    connection is cut (so no request hangs)."""
    db_pool_timeout_seconds: float = Field(default=1.5, gt=0.0)
    """How long a request waits for a free database connection."""
    retry_after_seconds: int = Field(default=5, ge=1)
    """``Retry-After`` of a 503 while the database (or the broker) is unavailable."""

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
    max_gpus: int = Field(default=8, ge=1, le=64)
    """The most devices (``resources.gpus``) a job may ask for: the most any worker pool of this deployment
    has on one node."""

    # ---- uploads: bounded memory (helper H: issue 9, item 7) ----
    max_dataset_array_bytes: int = Field(default=2 * 1024**3, ge=1)
    """The most bytes an uploaded NPZ's arrays may inflate to (the zip's declared sizes are checked before
    anything is inflated, so a small zip bomb answers 422 at once). The default matches
    ``max_upload_bytes``: an NPZ may hold no more than an uncompressed upload could."""

    # ---- Hugging Face model archives (helper hfin: issue 8, items 1 and 6) ----
    max_archive_files: int = Field(default=64, ge=1, le=10_000)
    """The most files a model archive (zip, tar, tar.gz) may hold."""
    max_archive_bytes: int = Field(default=4 * 1024**3, ge=1)
    """The most bytes a model archive's files may add up to, uncompressed (checked from the archive's headers
    before anything is extracted, and again while extracting)."""

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
