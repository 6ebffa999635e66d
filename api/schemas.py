"""Response bodies (``XRead``) of the REST API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel

from distill.tables import Artifact, File, Job, JobEvent

T = TypeVar("T")


class ListRead(BaseModel, Generic[T]):
    object: Literal["list"] = "list"
    data: list[T]
    has_more: bool


class FileRead(BaseModel):
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


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool = True


class JobError(BaseModel):
    code: str
    message: str


class JobRead(BaseModel):
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


class EventRead(BaseModel):
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


class ArtifactRead(BaseModel):
    name: str
    bytes: int
    sha256: str
    created_at: datetime

    @classmethod
    def of(cls, row: Artifact) -> ArtifactRead:
        return cls(name=row.name, bytes=row.bytes, sha256=row.sha256, created_at=row.created_at)
