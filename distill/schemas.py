"""Response bodies of the REST API (``XRead``), shared by the API (``XRead.of(row)`` fills one from a
table row) and the Python client (which parses answers into them).

Pydantic only: the light client imports this module, so it must never import SQLAlchemy, torch or Celery.

Each model also reads like the JSON object it is (``job["id"]``, ``job.get("result")``) so that scripts
written against the 0.1 client, which returned plain dicts, keep working; attribute access is the typed
way (``job.id``, ``job.result``).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:  # the API fills these from rows; the client never imports SQLAlchemy
    from distill.tables import Artifact, File, Job, JobEvent, WebhookAttempt, WebhookDelivery, WebhookEndpoint

T = TypeVar("T")


class APIModel(BaseModel):
    """A response body: unknown fields from a newer server are kept (``extra="allow"``), never an error."""

    model_config = ConfigDict(extra="allow")

    def __getitem__(self, key: str) -> Any:
        if key not in type(self).model_fields and key not in (self.model_extra or {}):
            raise KeyError(key)
        return getattr(self, key)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and (key in type(self).model_fields or key in (self.model_extra or {}))

    def get(self, key: str, default: Any = None) -> Any:
        """``dict.get``: the field's value, or ``default`` when the model has no such field."""
        try:
            return self[key]
        except KeyError:
            return default

    def keys(self) -> Iterator[str]:
        yield from type(self).model_fields
        yield from self.model_extra or {}

    def to_dict(self) -> dict[str, Any]:
        """The JSON object, as the API sent it (datetimes as ISO strings)."""
        return self.model_dump(mode="json")


class ListRead(APIModel, Generic[T]):
    """One page of a list, newest first; ``has_more`` says to ask again with ``after`` = the last id."""

    object: Literal["list"] = "list"
    data: list[T]
    has_more: bool


class FileRead(APIModel):
    id: str
    object: Literal["file"] = "file"
    filename: str
    bytes: int
    sha256: str
    purpose: str
    created_at: datetime
    metadata: dict[str, Any]

    @classmethod
    def of(cls, row: File) -> FileRead:
        return cls(
            id=row.id,
            filename=row.filename,
            bytes=row.bytes,
            sha256=row.sha256,
            purpose=row.purpose,
            created_at=row.created_at,
            metadata=row.meta,
        )


class FileDeleted(APIModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool = True


class JobError(APIModel):
    code: str
    message: str


class JobRead(APIModel):
    id: str
    object: Literal["job"] = "job"
    status: str
    name: str | None
    spec: dict[str, Any]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    progress: dict[str, Any]
    result: dict[str, Any] | None
    """The job's figures (see the README); typed result models are on their way (distill/results.py)."""
    error: JobError | None
    cancel_requested: bool

    @classmethod
    def of(cls, row: Job) -> JobRead:
        return cls(
            id=row.id,
            status=row.status,
            name=row.name,
            spec=row.spec,
            created_at=row.created_at,
            started_at=row.started_at,
            finished_at=row.finished_at,
            progress=row.progress,
            result=row.result,
            error=JobError(**row.error) if row.error else None,
            cancel_requested=row.cancel_requested,
        )


class EventRead(APIModel):
    seq: int
    created_at: datetime
    level: str
    message: str
    data: dict[str, Any]

    @classmethod
    def of(cls, row: JobEvent) -> EventRead:
        return cls(
            seq=row.seq, created_at=row.created_at, level=row.level, message=row.message, data=row.data
        )


class ArtifactRead(APIModel):
    name: str
    bytes: int
    sha256: str
    created_at: datetime

    @classmethod
    def of(cls, row: Artifact) -> ArtifactRead:
        return cls(name=row.name, bytes=row.bytes, sha256=row.sha256, created_at=row.created_at)


class WebhookCreate(BaseModel):
    """``POST /v1/webhooks``: where to POST each job status change (``http(s)://``), and a note."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=2048)
    description: str | None = Field(default=None, max_length=200)


# -- webhooks (``/v1/webhooks``) -----------------------------------------------------------------------------


class WebhookRead(APIModel):
    """A registered endpoint (its secret is only in :class:`WebhookCreated`, the answer to ``POST``)."""

    id: str
    object: Literal["webhook"] = "webhook"
    url: str
    description: str | None
    created_at: datetime

    @classmethod
    def of(cls, row: WebhookEndpoint) -> WebhookRead:
        return cls(id=row.id, url=row.url, description=row.description, created_at=row.created_at)


class WebhookCreated(WebhookRead):
    secret: str
    """Shown once: the HMAC-SHA256 key of ``Distill-Signature``."""


class WebhookDeleted(APIModel):
    id: str
    object: Literal["webhook"] = "webhook"
    deleted: bool = True


class AttemptRead(APIModel):
    """One try of a delivery: the receiver's status code, or the error (timeout, refused...)."""

    number: int
    at: datetime
    status_code: int | None
    error: str | None
    duration_ms: int

    @classmethod
    def of(cls, row: WebhookAttempt) -> AttemptRead:
        return cls(
            number=row.number,
            at=row.at,
            status_code=row.status_code,
            error=row.error,
            duration_ms=row.duration_ms,
        )


class DeliveryRead(APIModel):
    """One job status change sent to one endpoint: ``state`` pending, succeeded or failed, and every try."""

    id: str
    object: Literal["webhook_delivery"] = "webhook_delivery"
    job_id: str
    type: str
    state: str
    attempts: list[AttemptRead]
    next_attempt_at: datetime | None
    created_at: datetime
    delivered_at: datetime | None
    payload: dict[str, Any]

    @classmethod
    def of(cls, row: WebhookDelivery, attempts: list[WebhookAttempt]) -> DeliveryRead:
        return cls(
            id=row.id,
            job_id=row.job_id,
            type=row.event_type,
            state=row.state,
            attempts=[AttemptRead.of(a) for a in attempts],
            next_attempt_at=row.next_attempt_at,
            created_at=row.created_at,
            delivered_at=row.delivered_at,
            payload=row.payload,
        )
