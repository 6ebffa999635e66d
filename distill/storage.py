"""Object storage: one small interface, two implementations (S3 through boto3, and a local folder).

Keys are namespaced by tenant (see the ``*_key`` helpers). Writes are atomic: a reader never sees a
half-written object (S3 PUTs are atomic; the local store writes a temp file and renames it). The database
row that points at an object is written only after the object is.
"""

from __future__ import annotations

import builtins
import logging
import mimetypes
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlparse

from distill.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


log = logging.getLogger(__name__)


class ObjectNotFound(KeyError):
    pass


@dataclass(frozen=True)
class StoredObject:
    """One object found by :meth:`ObjectStore.list`."""

    key: str
    bytes: int
    modified_at: datetime


class ObjectStore(Protocol):
    def put_file(self, key: str, path: Path) -> None: ...
    def put_bytes(self, key: str, data: bytes) -> None: ...
    def get_bytes(self, key: str) -> bytes: ...
    def download(self, key: str, dest: Path) -> None: ...
    def delete(self, key: str) -> None: ...
    def exists(self, key: str) -> bool: ...
    def iter_chunks(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]: ...
    def list(self, prefix: str) -> builtins.list[StoredObject]:
        """The objects whose key starts with ``prefix``, sorted by key (none: an empty list)."""
        ...

    def presigned_url(self, key: str, *, filename: str, expires_in: int) -> str | None:
        """A time-limited download URL, or None where the store cannot give one (the API streams then)."""
        ...


BINARY = "application/octet-stream"
MODEL_SUFFIXES = frozenset({".safetensors", ".onnx", ".pt"})
"""Model files are bytes: the system's MIME table may not know them, or maps ``.pt`` to something else."""


def content_type(name: str) -> str:
    """The media type a download of ``name`` is served with: ``image/svg+xml`` for ``curves.svg``,
    ``application/json`` for ``report.json``, and ``application/octet-stream`` for model files and for
    anything :func:`mimetypes.guess_type` does not know."""
    if any(name.endswith(suffix) for suffix in MODEL_SUFFIXES):
        return BINARY
    guessed, encoding = mimetypes.guess_type(name, strict=True)
    return guessed if guessed is not None and encoding is None else BINARY


def content_disposition(name: str) -> str:
    """Images open in the browser (``inline``); everything else is saved (``attachment``)."""
    kind = "inline" if content_type(name).startswith("image/") else "attachment"
    return f'{kind}; filename="{name}"'


def file_key(tenant_id: str, file_id: str) -> str:
    return f"tenants/{tenant_id}/files/{file_id}"


def artifact_key(tenant_id: str, job_id: str, name: str) -> str:
    return f"tenants/{tenant_id}/jobs/{job_id}/artifacts/{name}"


def teacher_outputs_key(tenant_id: str, digest: str) -> str:
    """Content-addressed: ``digest`` hashes the teachers, the inputs and what was captured."""
    return f"tenants/{tenant_id}/cache/teacher-outputs/{digest}"


def checkpoints_prefix(tenant_id: str, job_id: str) -> str:
    return f"tenants/{tenant_id}/jobs/{job_id}/checkpoints/"


def checkpoint_key(tenant_id: str, job_id: str, step: int, epoch: int) -> str:
    """A job's checkpoint after ``step`` optimizer steps and ``epoch`` finished epochs (zero-padded: the
    newest sorts last; see ``worker.checkpoints``)."""
    return f"{checkpoints_prefix(tenant_id, job_id)}step-{step:09d}-epoch-{epoch:05d}"


_CHECKPOINT_NAME = re.compile(r"^step-(\d+)-epoch-(\d+)$")


@dataclass(frozen=True)
class CheckpointInfo:
    key: str
    step: int
    """Optimizer steps done when it was written."""
    epoch: int
    """Epochs finished when it was written."""
    bytes: int
    created_at: datetime


def list_checkpoints(store: ObjectStore, tenant_id: str, job_id: str) -> list[CheckpointInfo]:
    """The job's checkpoints in the store, oldest first (objects of other names are skipped)."""
    found = []
    for obj in store.list(checkpoints_prefix(tenant_id, job_id)):
        match = _CHECKPOINT_NAME.match(obj.key.rsplit("/", 1)[-1])
        if match:
            step, epoch = int(match[1]), int(match[2])
            found.append(CheckpointInfo(obj.key, step, epoch, obj.bytes, obj.modified_at))
    return sorted(found, key=lambda c: c.step)


def keeps_checkpoints(spec: dict[str, Any]) -> bool:
    """Whether a job's (stored, validated) spec says ``training.keep_checkpoints``."""
    return bool((spec.get("training") or {}).get("keep_checkpoints", False))


def delete_checkpoints(store: ObjectStore, tenant_id: str, job_id: str) -> int:
    """Delete every object under the job's checkpoint prefix; returns how many. Never raises: a leftover
    is only storage (logged)."""
    deleted = 0
    try:
        for obj in store.list(checkpoints_prefix(tenant_id, job_id)):
            store.delete(obj.key)
            deleted += 1
    except Exception as error:
        log.warning("job %s: could not delete its checkpoints: %s: %s", job_id, type(error).__name__, error)
    return deleted


class LocalStore:
    """Objects as files under ``root`` (the embedded default)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(f"object key escapes the store: {key!r}")
        return path

    def _publish(self, key: str, write: Any) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as out:
                write(out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def put_file(self, key: str, path: Path) -> None:
        with path.open("rb") as src:
            self._publish(key, lambda out: shutil.copyfileobj(src, out, 1 << 20))

    def put_bytes(self, key: str, data: bytes) -> None:
        self._publish(key, lambda out: out.write(data))

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as exc:
            raise ObjectNotFound(key) from exc

    def download(self, key: str, dest: Path) -> None:
        try:
            shutil.copyfile(self._path(key), dest)
        except FileNotFoundError as exc:
            raise ObjectNotFound(key) from exc

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def iter_chunks(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        try:
            handle = self._path(key).open("rb")
        except FileNotFoundError as exc:
            raise ObjectNotFound(key) from exc
        with handle:
            while chunk := handle.read(chunk_size):
                yield chunk

    def list(self, prefix: str) -> builtins.list[StoredObject]:
        base = self._path(prefix.rsplit("/", 1)[0]) if "/" in prefix else self.root
        if not base.is_dir():
            return []
        found = []
        for path in base.rglob("*"):
            if not path.is_file() or path.name.startswith(".tmp-"):  # .tmp-: a write in progress
                continue
            key = path.relative_to(self.root).as_posix()
            if key.startswith(prefix):
                stat = path.stat()
                found.append(StoredObject(key, stat.st_size, datetime.fromtimestamp(stat.st_mtime, UTC)))
        return sorted(found, key=lambda o: o.key)

    def presigned_url(self, key: str, *, filename: str, expires_in: int) -> str | None:
        return None


class S3Store:
    """Objects in ``s3://bucket/prefix`` on AWS or any S3-compatible server (MinIO, moto…)."""

    def __init__(
        self,
        bucket: str,
        prefix: str,
        *,
        endpoint_url: str | None = None,
        public_endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
    ) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        options: dict[str, Any] = {
            "region_name": region,
            "aws_access_key_id": access_key_id,
            "aws_secret_access_key": secret_access_key,
            "config": Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        }
        self.client: S3Client = boto3.client("s3", endpoint_url=endpoint_url, **options)
        self.presign_client: S3Client = (
            boto3.client("s3", endpoint_url=public_endpoint_url, **options)
            if public_endpoint_url
            else self.client
        )

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def ensure_bucket(self) -> None:
        """Create the bucket when it does not exist (``distill migrate`` calls this)."""
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in {"404", "NoSuchBucket", "NotFound"}:
                raise
            self.client.create_bucket(Bucket=self.bucket)

    def put_file(self, key: str, path: Path) -> None:
        self.client.upload_file(str(path), self.bucket, self._key(key))

    def put_bytes(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def _get(self, key: str) -> Any:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except self.client.exceptions.NoSuchKey as exc:
            raise ObjectNotFound(key) from exc

    def get_bytes(self, key: str) -> bytes:
        body: bytes = self._get(key)["Body"].read()
        return body

    def download(self, key: str, dest: Path) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.download_file(self.bucket, self._key(key), str(dest))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey"}:
                raise ObjectNotFound(key) from exc
            raise

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                return False
            raise
        return True

    def iter_chunks(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        body = self._get(key)["Body"]
        yield from body.iter_chunks(chunk_size)

    def list(self, prefix: str) -> builtins.list[StoredObject]:
        strip = len(self._key(""))
        found = []
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self._key(prefix)
        )
        for page in pages:
            for item in page.get("Contents", []):
                found.append(StoredObject(item["Key"][strip:], item["Size"], item["LastModified"]))
        return sorted(found, key=lambda o: o.key)

    def presigned_url(self, key: str, *, filename: str, expires_in: int) -> str | None:
        return self.presign_client.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": self.bucket,
                "Key": self._key(key),
                "ResponseContentDisposition": content_disposition(filename),
                "ResponseContentType": content_type(filename),
            },
            ExpiresIn=expires_in,
        )


def make_store(settings: Settings) -> LocalStore | S3Store:
    """The store that ``DISTILL_STORAGE_URL`` names: ``s3://bucket/prefix`` or a folder."""
    url = settings.storage_url
    if url.startswith("s3://"):
        parsed = urlparse(url)
        if not parsed.netloc:
            raise ValueError(f"DISTILL_STORAGE_URL={url!r}: expected s3://bucket/prefix")
        return S3Store(
            parsed.netloc,
            parsed.path,
            endpoint_url=settings.s3_endpoint_url,
            public_endpoint_url=settings.s3_public_endpoint_url,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=settings.s3_secret_access_key,
        )
    return LocalStore(Path(url.removeprefix("file://")))
