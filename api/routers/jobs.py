"""``/v1/jobs``: submit, list, inspect, cancel, and read a job's events and checkpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal, cast

from fastapi import APIRouter, Header, Query, Request, Response, status
from fastapi.responses import StreamingResponse

from api.deps import BearerDep, QueueDep, SessionDep, SettingsDep, StoreDep, TenantDep, read_owned
from api.idempotency import IdempotencyDep, fingerprint
from api.params import IdCursor, ObjectId, SeqCursor
from api.responses import COMMON, errors
from api.routers.streams import stream_events
from api.services import jobs as service
from api.services.ceilings import check_ceilings
from api.tenancy import get_owned
from distill.jobstate import JobStatus
from distill.schemas import APIModel, EventRead, JobRead, ListRead
from distill.spec import JobSpec
from distill.storage import delete_checkpoints, keeps_checkpoints, list_checkpoints
from distill.tables import Job

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=COMMON)

_SSE_EVENT = {
    "type": "object",
    "description": "A server-sent event: `id` is its seq, `data` the event as JSON; `event: end` closes",
    "properties": {"id": {"type": "string"}, "event": {"type": "string"}, "data": {"type": "string"}},
}
_EVENTS = "A page of the job's events, or with `stream=true` a server-sent event stream (`text/event-stream`)"


@router.post("", status_code=status.HTTP_201_CREATED, response_model=JobRead, responses=errors(400, 409))
def create_job(
    spec: JobSpec,
    session: SessionDep,
    queue: QueueDep,
    tenant: TenantDep,
    settings: SettingsDep,
    idempotency: IdempotencyDep,
) -> Response:
    def submit() -> JobRead:
        check_ceilings(session, tenant, spec, settings)
        return JobRead.of(
            service.create_job(session=session, queue=queue, tenant=tenant, spec=spec, settings=settings)
        )

    body = spec.model_dump(mode="json")
    return idempotency.respond(201, submit, request_sha256=fingerprint("POST /v1/jobs", body))


@router.get("")
def list_jobs(
    session: SessionDep,
    tenant: TenantDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: IdCursor = None,
    status: JobStatus | None = None,
) -> ListRead[JobRead]:
    page = service.list_jobs(session=session, tenant=tenant, limit=limit, after=after, status=status)
    return ListRead(data=[JobRead.of(r) for r in page.rows], has_more=page.has_more)


@router.get("/{job_id}", response_model=JobRead, responses=errors(404))
async def get_job(job_id: ObjectId, request: Request, credentials: BearerDep) -> Response:
    """The job's status, progress, result or error: the status poll, async end to end (one round trip to
    the database for the key and the job together; see ``api.deps.read_owned``)."""
    job = await read_owned(request, credentials, Job, job_id)  # the job's columns, as attributes
    return Response(JobRead.of(cast(Job, job)).model_dump_json(), media_type="application/json")


@router.post("/{job_id}/cancel", responses=errors(404, 409))
def cancel_job(job_id: ObjectId, session: SessionDep, tenant: TenantDep, store: StoreDep) -> JobRead:
    job = JobRead.of(service.cancel_job(session=session, tenant=tenant, job_id=job_id))
    if job.status == JobStatus.CANCELLED and not keeps_checkpoints(job.spec):
        # cancelled here (no live worker held it): a checkpoint of an earlier attempt has no use now; a
        # job whose worker stops it is cleaned up by that worker
        delete_checkpoints(store, tenant.id, job.id)
    return job


@router.get(
    "/{job_id}/events",
    response_model=ListRead[EventRead],
    responses={
        200: {"content": {"text/event-stream": {"schema": _SSE_EVENT}}, "description": _EVENTS},
        **errors(404),
    },
)
def list_events(
    job_id: ObjectId,
    request: Request,
    session: SessionDep,
    tenant: TenantDep,
    after: SeqCursor = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    stream: bool = False,
    last_event_id: Annotated[str | None, Header()] = None,
) -> ListRead[EventRead] | StreamingResponse:
    if stream:  # server-sent events (api/routers/streams.py)
        get_owned(session, Job, job_id, tenant)
        session.close()  # give the connection back now: the stream reads with short sessions of its own
        return stream_events(request, job_id, after, last_event_id)
    page = service.list_events(session=session, tenant=tenant, job_id=job_id, after=after, limit=limit)
    return ListRead(data=[EventRead.of(r) for r in page.rows], has_more=page.has_more)


class CheckpointRead(APIModel):
    """One checkpoint of a job's training (written by its worker; see README "Checkpoints")."""

    object: Literal["checkpoint"] = "checkpoint"
    step: int
    """Optimizer steps done."""
    epoch: int
    """Epochs finished."""
    bytes: int
    created_at: datetime


@router.get("/{job_id}/checkpoints", responses=errors(404))
def list_job_checkpoints(
    job_id: ObjectId, session: SessionDep, tenant: TenantDep, store: StoreDep
) -> ListRead[CheckpointRead]:
    """The job's checkpoints in the object store, oldest first: normally the newest one only while it
    runs, none once it has ended (unless ``training.keep_checkpoints``)."""
    job = get_owned(session, Job, job_id, tenant)
    session.close()  # the store may be slow: give the connection back first
    found = list_checkpoints(store, job.tenant_id, job.id)
    return ListRead(
        data=[
            CheckpointRead(step=c.step, epoch=c.epoch, bytes=c.bytes, created_at=c.created_at) for c in found
        ],
        has_more=False,
    )
