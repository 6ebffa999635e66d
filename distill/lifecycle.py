"""A job's life in one place: every state change is one named, guarded transition.

``queued → running → succeeded | failed | cancelled``, and ``running → queued`` when a lease expires (or a
worker shutting down hands its job back). Each transition is a single ``UPDATE … WHERE status IN (…)``
that names the states it may leave; a worker's writes also say ``AND lease_owner = <its lease> AND
lease_expires_at > now``, so a worker whose lease ran out (or was taken over) can never write the job again.
Each function returns whether it applied; the caller (an API route or the runner) owns the transaction.

A lease owner is the worker's id plus a token drawn at claim time, so the same worker process claiming the
same job twice (after a takeover) still holds two different leases.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum, StrEnum
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session, aliased

from distill.clock import utcnow
from distill.db import affected
from distill.events import append_event
from distill.jobstate import JobStatus
from distill.tables import Job, Tenant

UNSENT_GRACE_SECONDS = 3.0


def new_lease_owner(worker_id: str) -> str:
    """The name of one claim: the worker plus a random token (unique per claim)."""
    return f"{worker_id}/{secrets.token_hex(4)}"


def _held(job_id: str, owner: str, now: datetime) -> Any:
    """The fence: this job, running, under this lease, and the lease has not run out."""
    return and_(
        Job.id == job_id,
        Job.status == JobStatus.RUNNING,
        Job.lease_owner == owner,
        Job.lease_expires_at > now,
    )


# -- the worker's transitions (fenced by the lease) ----------------------------------------------------


class Claim(Enum):
    """What a claim did. Truthy only when it claimed, so ``if lifecycle.claim(...)`` reads as before."""

    CLAIMED = "claimed"
    NOT_CLAIMABLE = "not_claimable"
    """Not queued any more (taken by another worker, finished, cancelled) or unknown: nothing to do."""
    AT_LIMIT = "at_limit"
    """Its tenant already runs ``max_running_per_tenant`` jobs: it stays queued, untouched."""

    def __bool__(self) -> bool:
        return self is Claim.CLAIMED


def claim(
    session: Session, job_id: str, owner: str, lease_seconds: float, *, max_running_per_tenant: int = 0
) -> Claim:
    """``queued → running`` under a new lease; counts the attempt. A duplicate message claims nothing.

    With ``max_running_per_tenant`` > 0 the job is claimed only while its tenant has fewer jobs running; the
    tenant's row is locked first (``SELECT … FOR UPDATE``), so two workers claiming jobs of one tenant decide
    one after the other and each counts the other's claim (SQLite serialises writers by itself). A job left
    queued this way is never failed: the runner that ends one of the tenant's jobs wakes the next
    (:func:`next_queued`), and the reconciler re-sends old wake-ups.
    """
    now = utcnow()
    guard = [Job.id == job_id, Job.status == JobStatus.QUEUED, Job.cancel_requested.is_(False)]
    if max_running_per_tenant > 0:
        tenant_id = session.scalar(select(Job.tenant_id).where(Job.id == job_id))
        if tenant_id is None:
            return Claim.NOT_CLAIMABLE
        session.execute(select(Tenant.id).where(Tenant.id == tenant_id).with_for_update())
        other = aliased(Job)
        running = (
            select(func.count())
            .select_from(other)
            .where(other.tenant_id == tenant_id, other.status == JobStatus.RUNNING)
            .scalar_subquery()
        )
        guard.append(running < max_running_per_tenant)
    claimed = affected(
        session.execute(
            update(Job)
            .where(*guard)
            .values(
                status=JobStatus.RUNNING,
                started_at=now,
                attempts=Job.attempts + 1,
                lease_owner=owner,
                lease_expires_at=now + timedelta(seconds=lease_seconds),
                heartbeat_at=now,
            )
        )
    )
    if claimed:
        return Claim.CLAIMED
    if max_running_per_tenant > 0:
        still = session.scalar(select(Job.id).where(*guard[:3]))
        if still is not None:
            return Claim.AT_LIMIT
    return Claim.NOT_CLAIMABLE


def next_queued(session: Session, tenant_id: str, limit: int = 1) -> dict[str, str | None]:
    """The tenant's oldest queued jobs (not being cancelled): job id -> its ``resources.queue``. The runner
    that ends one of a tenant's jobs sends these a wake-up, as a job left queued by the per-tenant limit
    has none coming."""
    rows = session.execute(
        select(Job.id, Job.spec)
        .where(Job.tenant_id == tenant_id, Job.status == JobStatus.QUEUED, Job.cancel_requested.is_(False))
        .order_by(Job.created_at, Job.id)
        .limit(limit)
    )
    return {job_id: ((spec or {}).get("resources") or {}).get("queue") for job_id, spec in rows}


@dataclass(frozen=True)
class Beat:
    """What a heartbeat learned: whether the lease is still held and whether a cancel was asked for."""

    held: bool
    cancel_requested: bool = False


def heartbeat(session: Session, job_id: str, owner: str, lease_seconds: float, **values: Any) -> Beat:
    """Renew the lease (and write ``values``, e.g. progress); says whether a cancel is pending."""
    now = utcnow()
    row = session.execute(
        update(Job)
        .where(_held(job_id, owner, now))
        .values(heartbeat_at=now, lease_expires_at=now + timedelta(seconds=lease_seconds), **values)
        .returning(Job.cancel_requested)
    ).first()
    if row is None:
        return Beat(held=False)
    return Beat(held=True, cancel_requested=bool(row[0]))


def report_progress(
    session: Session, job_id: str, owner: str, lease_seconds: float, progress: dict[str, Any]
) -> Beat:
    """A heartbeat that also records progress."""
    return heartbeat(session, job_id, owner, lease_seconds, progress=progress)


def succeed(session: Session, job_id: str, owner: str, result: dict[str, Any]) -> bool:
    """``running → succeeded``, unless a cancel arrived first (then the caller finishes it cancelled).

    The caller has stored the artifacts' objects before and adds their rows in the same transaction, so a
    job is succeeded exactly when its artifacts exist.
    """
    now = utcnow()
    return bool(
        affected(
            session.execute(
                update(Job)
                .where(_held(job_id, owner, now), Job.cancel_requested.is_(False))
                .values(status=JobStatus.SUCCEEDED, finished_at=now, lease_expires_at=None, result=result)
            )
        )
    )


def fail(session: Session, job_id: str, owner: str, code: str, message: str) -> bool:
    """``running → failed`` with ``error = {code, message}``."""
    now = utcnow()
    return bool(
        affected(
            session.execute(
                update(Job)
                .where(_held(job_id, owner, now))
                .values(
                    status=JobStatus.FAILED,
                    finished_at=now,
                    lease_expires_at=None,
                    error={"code": code, "message": message},
                )
            )
        )
    )


def finish_cancelled(session: Session, job_id: str, owner: str) -> bool:
    """``running → cancelled`` by the worker that stopped it."""
    now = utcnow()
    return bool(
        affected(
            session.execute(
                update(Job)
                .where(_held(job_id, owner, now))
                .values(status=JobStatus.CANCELLED, finished_at=now, lease_expires_at=None)
            )
        )
    )


def release(session: Session, job_id: str, owner: str) -> bool:
    """``running → queued``: a worker shutting down hands its job back (the attempt still counts)."""
    now = utcnow()
    return bool(
        affected(
            session.execute(
                update(Job)
                .where(_held(job_id, owner, now))
                .values(status=JobStatus.QUEUED, lease_owner=None, lease_expires_at=None, wakeup_sent_at=None)
            )
        )
    )


# -- the API's transition -------------------------------------------------------------------------------


class CancelOutcome(StrEnum):
    CANCELLED = "cancelled"
    """The job is cancelled now (it was queued, or its worker's lease had run out)."""
    REQUESTED = "requested"
    """The job is running under a live lease: its worker stops within a few seconds."""
    FINISHED = "finished"
    """Too late: the job had already finished."""


def request_cancel(session: Session, job_id: str) -> CancelOutcome:
    """Cancel a non-terminal job: at once when no live worker holds it (queued, or its worker's lease ran
    out), else ask its worker to stop. Against the worker's ``succeed`` the row lock decides: a cancel that
    lands first wins (the worker finishes the job cancelled), one that lands after finds it finished."""
    now = utcnow()
    cancelled = {"status": JobStatus.CANCELLED, "finished_at": now, "cancel_requested": True}
    if affected(
        session.execute(
            update(Job).where(Job.id == job_id, Job.status == JobStatus.QUEUED).values(**cancelled)
        )
    ):
        append_event(session, job_id, "job cancelled before it started", data=_status(JobStatus.CANCELLED))
        return CancelOutcome.CANCELLED
    lost = and_(Job.id == job_id, Job.status == JobStatus.RUNNING, Job.lease_expires_at <= now)
    if affected(session.execute(update(Job).where(lost).values(lease_expires_at=None, **cancelled))):
        append_event(
            session,
            job_id,
            "job cancelled (its worker had stopped renewing its lease)",
            data=_status(JobStatus.CANCELLED),
        )
        return CancelOutcome.CANCELLED
    running = and_(Job.id == job_id, Job.status == JobStatus.RUNNING)
    if affected(session.execute(update(Job).where(running).values(cancel_requested=True))):
        append_event(session, job_id, "cancellation requested; the job stops at its next step")
        return CancelOutcome.REQUESTED
    return CancelOutcome.FINISHED


def _status(status: JobStatus) -> dict[str, str]:
    """The data of an event that records a status change: ``{"status": ...}`` (what readers key on)."""
    return {"status": status.value}


# -- the reconciler's transitions ---------------------------------------------------------------------


@dataclass(frozen=True)
class Reclaimed:
    job_id: str
    status: JobStatus
    """``queued`` (another attempt), ``failed`` (``worker_lost``: out of attempts) or ``cancelled``."""


def reclaim_expired(session: Session, max_attempts: int, limit: int = 100) -> list[Reclaimed]:
    """Running jobs whose lease ran out: cancelled if a cancel was asked for, failed with ``worker_lost``
    after ``max_attempts`` attempts, else requeued (``running → queued``) for another worker."""
    now = utcnow()
    rows = session.execute(
        select(Job.id, Job.attempts, Job.lease_owner, Job.heartbeat_at, Job.cancel_requested)
        .where(Job.status == JobStatus.RUNNING, Job.lease_expires_at <= now)
        .order_by(Job.lease_expires_at)
        .limit(limit)
    ).all()
    done: list[Reclaimed] = []
    for job_id, attempts, owner, beat, cancel in rows:
        expired = and_(Job.id == job_id, Job.status == JobStatus.RUNNING, Job.lease_owner == owner)
        expired = and_(expired, Job.lease_expires_at <= now)
        seen = beat.isoformat(timespec="seconds") if beat else "never"
        why = f"worker {owner} stopped renewing its lease (last heartbeat {seen})"
        if cancel:
            values: dict[str, Any] = {"status": JobStatus.CANCELLED, "finished_at": now}
            status, message, level = JobStatus.CANCELLED, f"job cancelled: {why}", "info"
        elif attempts >= max_attempts:
            error = {
                "code": "worker_lost",
                "message": f"the job's worker was lost {attempts} times (limit {max_attempts}); last: {why}",
            }
            values = {"status": JobStatus.FAILED, "finished_at": now, "error": error}
            status, message, level = JobStatus.FAILED, f"job failed: {error['message']}", "error"
        else:
            values = {"status": JobStatus.QUEUED, "lease_owner": None, "wakeup_sent_at": None}
            status, level = JobStatus.QUEUED, "warning"
            message = f"job taken back: {why}; it restarts (attempt {attempts + 1} of {max_attempts})"
        if affected(session.execute(update(Job).where(expired).values(lease_expires_at=None, **values))):
            data = {"worker": owner, "attempts": attempts, **_status(status)}
            append_event(session, job_id, message, level=level, data=data)
            done.append(Reclaimed(job_id, status))
    return done


def wakeups_due(session: Session, resend_after_seconds: float, limit: int = 100) -> dict[str, str | None]:
    """Queued jobs whose wake-up message was never sent, or was sent long ago (and may have been lost):
    job id -> the queue it asked for (``resources.queue``; None: the default queue)."""
    now = utcnow()
    stale = now - timedelta(seconds=resend_after_seconds)
    # A job submitted a moment ago is being sent by the API right now: leave it a few seconds (a job
    # that ran before, requeued or handed back, is sent at once).
    settled = or_(
        Job.started_at.is_not(None), Job.created_at <= now - timedelta(seconds=UNSENT_GRACE_SECONDS)
    )
    unsent = and_(Job.wakeup_sent_at.is_(None), settled)
    rows = session.execute(
        select(Job.id, Job.spec)
        .where(
            Job.status == JobStatus.QUEUED,
            Job.cancel_requested.is_(False),
            or_(unsent, Job.wakeup_sent_at <= stale),
        )
        .order_by(Job.created_at)
        .limit(limit)
    )
    return {job_id: ((spec or {}).get("resources") or {}).get("queue") for job_id, spec in rows}


def wakeup_sent(session: Session, job_id: str) -> None:
    """Record that a wake-up message for this queued job went to the broker (the outbox's 'sent' mark)."""
    session.execute(
        update(Job).where(Job.id == job_id, Job.status == JobStatus.QUEUED).values(wakeup_sent_at=utcnow())
    )
