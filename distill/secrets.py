"""A job's secrets (an endpoint teacher's API key): kept apart from the job's spec, read only by the worker.

At submission :func:`split_secrets` takes each secret out of the spec (the stored spec shows ``"***"``);
:func:`store_secrets` writes them to ``job_secrets`` in the job's transaction. The API answers the stored
spec, so the key is never in a job, a list, an event or a webhook. The worker reads them with
:func:`load_secrets` and hands them to the HTTP client only. They are deleted when the job ends (the
runner, a cancel of a queued job, and the reconciler's sweep of ended jobs).
"""

from __future__ import annotations

import copy
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from distill.jobstate import JobStatus
from distill.spec import EndpointTeacher, JobSpec, SpecError
from distill.spec_rules import REDACTED
from distill.tables import Job, JobSecret

ENDPOINT_API_KEY = "teacher.endpoint.api_key"
ENDED = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


def split_secrets(spec: JobSpec) -> tuple[dict[str, Any], dict[str, str]]:
    """The spec as it is stored (each secret replaced by ``"***"``) and the secrets by their place. A key
    that is the placeholder itself (a stored spec sent again) raises :class:`SpecError`."""
    stored = spec.model_dump(mode="json")
    secrets: dict[str, str] = {}
    if isinstance(spec.teacher, EndpointTeacher) and spec.teacher.endpoint.api_key == REDACTED:
        raise SpecError(
            ENDPOINT_API_KEY,
            f"{ENDPOINT_API_KEY}: {REDACTED!r} is the placeholder a stored job shows; give the real key "
            "(or leave api_key out for a server that needs none)",
        )
    if isinstance(spec.teacher, EndpointTeacher) and spec.teacher.endpoint.api_key is not None:
        secrets[ENDPOINT_API_KEY] = spec.teacher.endpoint.api_key
        stored = copy.deepcopy(stored)
        stored["teacher"]["endpoint"]["api_key"] = REDACTED
    return stored, secrets


def store_secrets(session: Session, job_id: str, secrets: dict[str, str]) -> None:
    session.add_all([JobSecret(job_id=job_id, name=name, value=value) for name, value in secrets.items()])


def load_secrets(session: Session, job_id: str) -> dict[str, str]:
    rows = session.scalars(select(JobSecret).where(JobSecret.job_id == job_id))
    return {row.name: row.value for row in rows}


def delete_secrets(session: Session, job_id: str) -> None:
    session.execute(delete(JobSecret).where(JobSecret.job_id == job_id))


def delete_ended_secrets(session: Session) -> int:
    """Delete the secrets of every job that has ended (whoever ended it); returns how many went."""
    ended = select(Job.id).where(Job.status.in_([str(s) for s in ENDED]))
    result = session.execute(delete(JobSecret).where(JobSecret.job_id.in_(ended)))
    return int(getattr(result, "rowcount", 0) or 0)
