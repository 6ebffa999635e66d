"""``/v1/files``: datasets and models, validated on upload."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Form, Query, Request, Response, UploadFile, status
from fastapi.routing import APIRoute
from starlette.types import Message

from api.deps import SessionDep, SettingsDep, StoreDep, TenantDep
from api.errors import Invalid, TooLarge
from api.idempotency import IdempotencyDep, fingerprint
from api.params import PRINTABLE, IdCursor, ObjectId
from api.responses import COMMON, errors
from api.services import files as service
from api.tenancy import get_owned
from distill.schemas import FileDeleted, FileRead, ListRead
from distill.tables import File

router = APIRouter(prefix="/v1/files", tags=["files"], responses=COMMON)

MAX_FILENAME = 255
FORM_OVERHEAD = 64 * 1024
"""Bytes a multipart body may hold beyond the file itself (boundaries, part headers, ``purpose``)."""


class BoundedUploadRoute(APIRoute):
    """The upload route with the size limit enforced while the body streams in, before the form is parsed
    and spooled: a ``Content-Length`` over the limit answers 413 at once, and a body that passes the limit
    as it arrives (chunked, or a lying length) is cut off there, so an oversized upload is never stored
    whole anywhere. The service checks the file's exact size against ``max_upload_bytes`` again."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def bounded(request: Request) -> Response:
            max_bytes: int = request.app.state.settings.max_upload_bytes
            limit = max_bytes + FORM_OVERHEAD
            too_large = f"file: larger than the limit of {max_bytes} bytes"
            declared = request.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limit:
                raise TooLarge(too_large, field="file")
            received = 0
            receive = request.receive

            async def counted() -> Message:
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > limit:
                        raise TooLarge(too_large, field="file")
                return message

            try:
                return await handler(Request(request.scope, counted))
            except Exception as exc:
                if received > limit:  # FastAPI wraps errors while parsing the body into a 400
                    raise TooLarge(too_large, field="file") from exc
                raise

        return bounded


def _check_filename(filename: str) -> None:
    """The stored name is a VARCHAR(255) without control characters: anything else answers 422."""
    if len(filename) > MAX_FILENAME:
        raise Invalid(f"file: the filename is longer than {MAX_FILENAME} characters", field="file")
    if not filename.isprintable():
        raise Invalid("file: the filename holds control characters (NUL, newline...)", field="file")


def upload_file(
    file: UploadFile,
    purpose: Annotated[str, Form(max_length=32, pattern=PRINTABLE)],
    session: SessionDep,
    store: StoreDep,
    tenant: TenantDep,
    settings: SettingsDep,
    idempotency: IdempotencyDep,
) -> Response:
    filename = file.filename or ""
    _check_filename(filename)

    def claim(size: int, sha256: str) -> None:
        body = {"purpose": purpose, "filename": filename, "bytes": size, "sha256": sha256}
        idempotency.claim(fingerprint("POST /v1/files", body))

    def upload() -> FileRead:
        row = service.upload_file(
            session=session,
            store=store,
            tenant=tenant,
            source=file.file,
            filename=filename,
            purpose=purpose,
            max_bytes=settings.max_upload_bytes,
            max_array_bytes=settings.max_dataset_array_bytes,
            archive_limits=service.ArchiveLimits(settings.max_archive_bytes, settings.max_archive_files),
            on_spooled=claim,
        )
        return FileRead.of(row)

    return idempotency.respond(201, upload)


router.add_api_route(
    "",
    upload_file,
    methods=["POST"],
    status_code=status.HTTP_201_CREATED,
    response_model=FileRead,
    responses=errors(400, 409, 413),
    route_class_override=BoundedUploadRoute,
)


@router.get("")
def list_files(
    session: SessionDep,
    tenant: TenantDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: IdCursor = None,
    purpose: Literal["dataset", "model"] | None = None,
) -> ListRead[FileRead]:
    page = service.list_files(session=session, tenant=tenant, limit=limit, after=after, purpose=purpose)
    return ListRead(data=[FileRead.of(r) for r in page.rows], has_more=page.has_more)


@router.get("/{file_id}", responses=errors(404))
def get_file(file_id: ObjectId, session: SessionDep, tenant: TenantDep) -> FileRead:
    return FileRead.of(get_owned(session, File, file_id, tenant))


@router.delete("/{file_id}", responses=errors(404))
def delete_file(file_id: ObjectId, session: SessionDep, store: StoreDep, tenant: TenantDep) -> FileDeleted:
    service.delete_file(session=session, store=store, tenant=tenant, file_id=file_id)
    return FileDeleted(id=file_id)
