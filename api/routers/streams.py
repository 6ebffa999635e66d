"""A job's live view: its events as server-sent events, and its metrics as time series.

``GET /v1/jobs/{id}/events?stream=true`` is answered here (``jobs.list_events`` hands over), so that the
paged list and the stream share one URL.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from api.deps import SessionDep, StoreDep, TenantDep
from api.errors import Invalid
from api.params import ObjectId
from api.responses import COMMON, errors
from api.services.streams import job_metrics, sse_events
from api.tenancy import get_owned
from distill.settings import Settings
from distill.tables import Job

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=COMMON)


def stream_events(
    request: Request, job_id: str, after: int | None, last_event_id: str | None
) -> StreamingResponse:
    """The SSE answer, resuming after ``Last-Event-ID`` (what EventSource resends) or ``after``."""
    start = after or 0
    if last_event_id:
        try:
            start = max(start, int(last_event_id))
        except ValueError:
            raise Invalid("Last-Event-ID: must be an event seq (an integer)", field="Last-Event-ID") from None
    settings: Settings = request.app.state.settings
    body = sse_events(
        request.app.state.session_factory,
        job_id,
        start,
        poll_seconds=settings.stream_poll_seconds,
        keepalive_seconds=settings.stream_keepalive_seconds,
    )
    return StreamingResponse(
        body,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get("/{job_id}/metrics", responses=errors(404))
def get_metrics(job_id: ObjectId, session: SessionDep, store: StoreDep, tenant: TenantDep) -> dict[str, Any]:
    """Losses, validation accuracy, learning rate and throughput per epoch; baseline and teacher known."""
    job = get_owned(session, Job, job_id, tenant)
    return job_metrics(session, store, job)
