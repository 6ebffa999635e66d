"""Files: validated on upload (nothing is stored when validation fails), then stored and recorded."""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy.orm import Session

from api.errors import Invalid, TooLarge
from api.pagination import Page, paginate
from api.tenancy import get_owned, scoped
from distill.datasets import DatasetError, inspect_dataset
from distill.hfarchive import ArchiveError, extract_archive, inspect_model_dir, is_archive_name
from distill.ids import new_file_id
from distill.modelfile import ModelFileError, TextModelInfo, inspect_any_model_file
from distill.storage import ObjectStore, file_key
from distill.tables import File, Tenant

PURPOSES = ("dataset", "model")
MAX_FILENAME = 255
UNSAFE_IN_NAMES = frozenset('"\\/')


def safe_basename(filename: str) -> str:
    """The name a file is stored under: the last part of a path (``/`` or ``\\``), without control
    characters, quotes or leading dots (no hidden files, no ``..``), at most :data:`MAX_FILENAME`
    characters with its extension kept. ``""`` when nothing is left."""
    name = filename.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable() and ch not in UNSAFE_IN_NAMES)
    name = name.strip().lstrip(".").strip()
    if len(name) > MAX_FILENAME:
        suffix = Path(name).suffix[:16]
        name = name[: MAX_FILENAME - len(suffix)] + suffix
    return name


def _spool(source: BinaryIO, dest: BinaryIO, max_bytes: int) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    while chunk := source.read(1 << 20):
        size += len(chunk)
        if size > max_bytes:
            raise TooLarge(f"file: larger than the limit of {max_bytes} bytes", field="file")
        digest.update(chunk)
        dest.write(chunk)
    return size, digest.hexdigest()


@dataclass(frozen=True)
class ArchiveLimits:
    """How much a model archive may hold (``DISTILL_MAX_ARCHIVE_BYTES``, ``DISTILL_MAX_ARCHIVE_FILES``)."""

    max_bytes: int = 4 * 1024**3
    max_files: int = 64


def _validate(
    path: Path, filename: str, purpose: str, max_array_bytes: int | None, archive_limits: ArchiveLimits
) -> dict[str, Any]:
    try:
        if purpose == "dataset":
            return inspect_dataset(path, filename, max_array_bytes=max_array_bytes).to_meta()
        if is_archive_name(filename):
            return _inspect_archive(path, archive_limits)
        if not filename.lower().endswith(".safetensors"):
            raise ModelFileError(
                "a model must be one .safetensors file, or a Hugging Face model archive (.zip, .tar, "
                ".tar.gz, "
                ".tgz of the folder save_pretrained writes); weights are never unpickled"
            )
        found, parameters = inspect_any_model_file(path)
        if isinstance(found, TextModelInfo):
            return {**found.to_meta(), "parameters": parameters}
        return {"config": found.model_dump(mode="json"), "parameters": parameters}
    except (DatasetError, ModelFileError, ArchiveError) as exc:
        raise Invalid(f"file: {exc}", field="file", code=f"invalid_{purpose}") from exc


def _inspect_archive(path: Path, limits: ArchiveLimits) -> dict[str, Any]:
    """A Hugging Face model archive, extracted (strictly, within ``limits``) beside the spooled upload and
    described: its ``HFModelInfo`` metadata. The extracted files go when the upload's folder does."""
    folder = extract_archive(
        path, path.parent / "archive", max_bytes=limits.max_bytes, max_files=limits.max_files
    )
    return inspect_model_dir(folder).to_meta()


def upload_file(
    *,
    session: Session,
    store: ObjectStore,
    tenant: Tenant,
    source: BinaryIO,
    filename: str,
    purpose: str,
    max_bytes: int,
    max_array_bytes: int | None = None,
    archive_limits: ArchiveLimits | None = None,
    on_spooled: Callable[[int, str], None] | None = None,
) -> File:
    """Spool, validate, store and record an upload; ``on_spooled(size, sha256)`` runs once the content's
    hash is known, before validation (the Idempotency-Key claim: the upload is read once)."""
    if purpose not in PURPOSES:
        raise Invalid(f"purpose: must be one of {', '.join(PURPOSES)}, not {purpose!r}", field="purpose")
    filename = safe_basename(filename or "")
    if not filename:
        raise Invalid("file: the upload has no filename", field="file")
    tenant_id = tenant.id
    # End the request's read transaction (authentication) before the long part: spooling, validating and
    # storing a large upload takes longer than Postgres lets a transaction sit idle
    # (idle_in_transaction_session_timeout), which would cut the connection under the final INSERT.
    session.commit()
    with tempfile.TemporaryDirectory(prefix="distill-upload-") as tmp:
        path = Path(tmp) / "upload"
        with path.open("wb") as out:
            size, sha256 = _spool(source, out, max_bytes)
        if on_spooled is not None:
            on_spooled(size, sha256)
        if size == 0:
            raise Invalid("file: the file is empty", field="file")
        meta = _validate(path, filename, purpose, max_array_bytes, archive_limits or ArchiveLimits())
        file_id = new_file_id()
        key = file_key(tenant_id, file_id)
        store.put_file(key, path)
    row = File(
        id=file_id,
        tenant_id=tenant_id,
        purpose=purpose,
        filename=filename,
        bytes=size,
        sha256=sha256,
        storage_key=key,
        meta=meta,
    )
    session.add(row)
    try:
        session.commit()
    except BaseException:
        session.rollback()
        store.delete(key)
        raise
    return row


def list_files(
    *, session: Session, tenant: Tenant, limit: int, after: str | None, purpose: str | None
) -> Page[File]:
    query = scoped(File, tenant)
    if purpose is not None:
        query = query.where(File.purpose == purpose)
    return paginate(session, query, File.id, limit=limit, after=after)


def delete_file(*, session: Session, store: ObjectStore, tenant: Tenant, file_id: str) -> None:
    row = get_owned(session, File, file_id, tenant)
    key = row.storage_key
    session.delete(row)
    session.commit()
    store.delete(key)
