"""``/v1/files``: datasets and models, validated on upload."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Form, Query, UploadFile, status

from api.deps import SessionDep, SettingsDep, StoreDep, TenantDep
from api.services import files as service
from api.tenancy import get_owned
from distill.schemas import FileDeleted, FileRead, ListRead
from distill.tables import File

router = APIRouter(prefix="/v1/files", tags=["files"])


@router.post("", status_code=status.HTTP_201_CREATED)
def upload_file(
    file: UploadFile,
    purpose: Annotated[str, Form()],
    session: SessionDep,
    store: StoreDep,
    tenant: TenantDep,
    settings: SettingsDep,
) -> FileRead:
    row = service.upload_file(
        session=session,
        store=store,
        tenant=tenant,
        source=file.file,
        filename=file.filename or "",
        purpose=purpose,
        max_bytes=settings.max_upload_bytes,
    )
    return FileRead.of(row)


@router.get("")
def list_files(
    session: SessionDep,
    tenant: TenantDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: str | None = None,
    purpose: Literal["dataset", "model"] | None = None,
) -> ListRead[FileRead]:
    page = service.list_files(session=session, tenant=tenant, limit=limit, after=after, purpose=purpose)
    return ListRead(data=[FileRead.of(r) for r in page.rows], has_more=page.has_more)


@router.get("/{file_id}")
def get_file(file_id: str, session: SessionDep, tenant: TenantDep) -> FileRead:
    return FileRead.of(get_owned(session, File, file_id, tenant))


@router.delete("/{file_id}")
def delete_file(file_id: str, session: SessionDep, store: StoreDep, tenant: TenantDep) -> FileDeleted:
    service.delete_file(session=session, store=store, tenant=tenant, file_id=file_id)
    return FileDeleted(id=file_id)
