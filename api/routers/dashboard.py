"""The dashboard: a static page (HTML, CSS, vanilla JS; no build step) at ``/`` that calls the REST API.

The page keeps the API key in ``sessionStorage`` and sends it as a bearer token like any client. Besides
the page, one small route serves it: a download link for an artifact that a browser can open directly
(a presigned S3 URL, or null when the store is a folder and the page fetches the bytes with its key).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from api.deps import SessionDep, SettingsDep, StoreDep, TenantDep
from api.params import ArtifactName, ObjectId
from api.responses import COMMON, errors
from api.services import jobs as service

STATIC = Path(__file__).resolve().parent.parent / "static"
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}

router = APIRouter(tags=["dashboard"])


@router.get("/", include_in_schema=False)
def index() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html", headers=_PAGE_HEADERS)


@router.get("/v1/jobs/{job_id}/artifacts/{name}/link", responses={**COMMON, **errors(404)})
def artifact_link(
    job_id: ObjectId,
    name: ArtifactName,
    session: SessionDep,
    store: StoreDep,
    tenant: TenantDep,
    settings: SettingsDep,
) -> dict[str, Any]:
    """``{"url": presigned URL or null, "expires_in": seconds}``: null means fetch the artifact route."""
    row = service.get_artifact(session=session, tenant=tenant, job_id=job_id, name=name)
    url = store.presigned_url(row.storage_key, filename=name, expires_in=settings.presign_expiry_seconds)
    return {"name": name, "url": url, "expires_in": settings.presign_expiry_seconds if url else None}


def mount_static(app: FastAPI) -> None:
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
