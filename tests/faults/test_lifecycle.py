"""The lifecycle's transitions on real Postgres (no worker): the fence, takeover, attempts, cancel races.

Invariants: only the current lease holder writes a running job; an expired lease is taken back once;
attempts are counted and bounded; a cancel either wins against success or finds the job finished.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from distill import lifecycle
from distill.clock import utcnow
from distill.db import make_engine, make_session_factory, migrate, transaction
from distill.events import append_event
from distill.ids import new_job_id
from distill.keys import create_key
from distill.tables import Job, JobEvent, Tenant

pytestmark = pytest.mark.integration


@pytest.fixture
def sessions(base_env: dict[str, str]) -> Iterator[sessionmaker[Session]]:
    url = base_env["DISTILL_DATABASE_URL"]
    migrate(url)
    engine = make_engine(url)
    factory = make_session_factory(engine)
    with transaction(factory) as session:
        create_key(session, tenant_name="acme")
    yield factory
    engine.dispose()


def new_job(sessions: sessionmaker[Session]) -> str:
    with transaction(sessions) as session:
        tenant = session.query(Tenant).one()
        job = Job(id=new_job_id(), tenant_id=tenant.id, spec={}, status="queued")
        session.add(job)
        session.flush()
        append_event(session, job.id, "job queued")
        return job.id


def expire(sessions: sessionmaker[Session], job_id: str) -> None:
    """What a lost worker leaves: a running job whose lease ran out."""
    with transaction(sessions) as session:
        session.execute(
            update(Job).where(Job.id == job_id).values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )


def row(sessions: sessionmaker[Session], job_id: str) -> Job:
    with sessions() as session:
        return session.get_one(Job, job_id)


def messages(sessions: sessionmaker[Session], job_id: str) -> list[str]:
    with sessions() as session:
        return [e.message for e in session.query(JobEvent).filter_by(job_id=job_id).order_by(JobEvent.seq)]


def test_a_duplicate_claim_gets_nothing_and_only_the_lease_holder_writes(sessions):
    job_id = new_job(sessions)
    with transaction(sessions) as session:
        assert lifecycle.claim(session, job_id, "w1/a", 60)
        assert not lifecycle.claim(session, job_id, "w2/b", 60)
    with transaction(sessions) as session:
        assert not lifecycle.heartbeat(session, job_id, "w2/b", 60).held
        assert not lifecycle.succeed(session, job_id, "w2/b", {"x": 1})
        assert lifecycle.heartbeat(session, job_id, "w1/a", 60).held
    assert row(sessions, job_id).attempts == 1


def test_an_expired_lease_is_taken_back_once_and_fences_out_the_old_worker(sessions):
    job_id = new_job(sessions)
    with transaction(sessions) as session:
        lifecycle.claim(session, job_id, "w1/a", 60)
    expire(sessions, job_id)
    with transaction(sessions) as session:  # the old worker, back from a pause: its writes bounce
        assert not lifecycle.heartbeat(session, job_id, "w1/a", 60).held
        assert not lifecycle.succeed(session, job_id, "w1/a", {})
    with transaction(sessions) as session:
        reclaimed = lifecycle.reclaim_expired(session, max_attempts=3)
    with transaction(sessions) as session:  # a second reconciler finds nothing left to do
        assert lifecycle.reclaim_expired(session, max_attempts=3) == []
    assert reclaimed == [lifecycle.Reclaimed(job_id, lifecycle.JobStatus.QUEUED)]
    job = row(sessions, job_id)
    assert job.status == "queued" and job.lease_owner is None and job.wakeup_sent_at is None
    assert any(m.startswith("job taken back: worker w1/a") for m in messages(sessions, job_id))
    with sessions() as session:  # the event says the status it records (webhooks and streams key on it)
        back = (
            session.query(JobEvent)
            .filter(JobEvent.job_id == job_id, JobEvent.message.like("job taken%"))
            .one()
        )
        assert back.data["status"] == "queued" and back.data["worker"] == "w1/a"
    with sessions() as session:
        assert job_id in lifecycle.wakeups_due(session, resend_after_seconds=600)
    with transaction(sessions) as session:
        assert lifecycle.claim(session, job_id, "w2/b", 60)
    assert row(sessions, job_id).attempts == 2


def test_past_the_attempt_limit_a_lost_job_fails_with_worker_lost(sessions):
    job_id = new_job(sessions)
    for attempt in range(2):
        with transaction(sessions) as session:
            assert lifecycle.claim(session, job_id, f"w{attempt}/x", 60)
        expire(sessions, job_id)
        with transaction(sessions) as session:
            lifecycle.reclaim_expired(session, max_attempts=2)
    job = row(sessions, job_id)
    assert job.status == "failed"
    assert job.error is not None and job.error["code"] == "worker_lost"
    assert "w1/x" in job.error["message"] and "2 times" in job.error["message"]
    with sessions() as session:
        last = session.query(JobEvent).filter_by(job_id=job_id).order_by(JobEvent.seq.desc()).first()
        assert last is not None and last.data["status"] == "failed"


def test_cancel_of_a_job_whose_worker_died_is_immediate(sessions):
    job_id = new_job(sessions)
    with transaction(sessions) as session:
        lifecycle.claim(session, job_id, "w1/a", 60)
    expire(sessions, job_id)
    with transaction(sessions) as session:
        assert lifecycle.request_cancel(session, job_id) is lifecycle.CancelOutcome.CANCELLED
    assert row(sessions, job_id).status == "cancelled"


def test_a_cancel_before_success_wins_and_after_success_is_refused(sessions):
    job_id = new_job(sessions)
    with transaction(sessions) as session:
        lifecycle.claim(session, job_id, "w1/a", 60)
    with transaction(sessions) as session:
        assert lifecycle.request_cancel(session, job_id) is lifecycle.CancelOutcome.REQUESTED
    with transaction(sessions) as session:
        assert not lifecycle.succeed(session, job_id, "w1/a", {"x": 1})  # the cancel landed first
        assert lifecycle.finish_cancelled(session, job_id, "w1/a")
    assert row(sessions, job_id).status == "cancelled"

    other = new_job(sessions)
    with transaction(sessions) as session:
        lifecycle.claim(session, other, "w1/b", 60)
    with transaction(sessions) as session:
        assert lifecycle.succeed(session, other, "w1/b", {"x": 1})
    with transaction(sessions) as session:
        assert lifecycle.request_cancel(session, other) is lifecycle.CancelOutcome.FINISHED
    assert row(sessions, other).status == "succeeded"


def test_an_expired_lease_with_a_pending_cancel_ends_cancelled(sessions):
    job_id = new_job(sessions)
    with transaction(sessions) as session:
        lifecycle.claim(session, job_id, "w1/a", 60)
    with transaction(sessions) as session:
        lifecycle.request_cancel(session, job_id)
    expire(sessions, job_id)
    with transaction(sessions) as session:
        assert lifecycle.reclaim_expired(session, max_attempts=3)[0].status == "cancelled"
    assert row(sessions, job_id).status == "cancelled"
