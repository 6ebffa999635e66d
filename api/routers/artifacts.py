"""``/v1/jobs/{id}/artifacts``: what a job produced. Downloads redirect to S3 or stream from a folder."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import RedirectResponse, Response, StreamingResponse

from api.deps import SessionDep, SettingsDep, StoreDep, TenantDep
from api.params import ArtifactName, ObjectId
from api.responses import COMMON, errors
from api.services import jobs as service
from distill.schemas import ArtifactRead, ListRead
from distill.storage import content_disposition, content_type

router = APIRouter(prefix="/v1/jobs/{job_id}/artifacts", tags=["artifacts"], responses=COMMON)


@router.get("", responses=errors(404))
def list_artifacts(job_id: ObjectId, session: SessionDep, tenant: TenantDep) -> ListRead[ArtifactRead]:
    rows = service.list_artifacts(session=session, tenant=tenant, job_id=job_id)
    return ListRead(data=[ArtifactRead.of(r) for r in rows], has_more=False)


@router.get(
    "/{name}",
    response_model=None,
    responses={
        **errors(307, 404),
        200: {"description": "The artifact's bytes", "content": {"application/octet-stream": {}}},
    },
)
def download_artifact(
    job_id: ObjectId,
    name: ArtifactName,
    session: SessionDep,
    store: StoreDep,
    tenant: TenantDep,
    settings: SettingsDep,
) -> Response:
    row = service.get_artifact(session=session, tenant=tenant, job_id=job_id, name=name)
    url = store.presigned_url(row.storage_key, filename=name, expires_in=settings.presign_expiry_seconds)
    if url is not None:
        return RedirectResponse(url, status_code=307)
    return StreamingResponse(
        store.iter_chunks(row.storage_key),
        media_type=content_type(name),
        headers={
            "Content-Length": str(row.bytes),
            "Content-Disposition": content_disposition(name),
            "X-Content-SHA256": row.sha256,
            "X-Content-Type-Options": "nosniff",
            # curves.svg opens inline: whatever an SVG could carry, it runs nothing here.
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
        },
    )
