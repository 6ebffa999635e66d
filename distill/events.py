"""The job event log, written by the API (queued, cancelled) and by the worker (everything else)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from distill.tables import Job, JobEvent


def append_event(
    session: Session, job_id: str, message: str, *, level: str = "info", data: dict[str, Any] | None = None
) -> int:
    """Append an event with the job's next ``seq`` (one atomic increment on the job row) and return it."""
    seq = session.execute(
        update(Job).where(Job.id == job_id).values(event_seq=Job.event_seq + 1).returning(Job.event_seq)
    ).scalar_one()
    session.add(JobEvent(job_id=job_id, seq=seq, level=level, message=message, data=data or {}))
    return int(seq)
