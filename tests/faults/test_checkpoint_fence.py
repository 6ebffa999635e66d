"""worker.checkpoints.Checkpointer against real Postgres and S3 (moto), no worker process: a checkpoint is
recorded on the job only under a live lease, the previous one is deleted once the new one is recorded, a
worker whose lease was taken over records nothing, and the reconciler deletes the checkpoints of a job it
ends."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
import torch
from services_app import settings_from_env
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from distill import lifecycle
from distill.clock import utcnow
from distill.db import make_engine, make_session_factory, migrate, transaction
from distill.events import append_event
from distill.ids import new_job_id
from distill.keys import create_key
from distill.settings import Settings
from distill.storage import ObjectStore, list_checkpoints, make_store
from distill.tables import Job, Tenant
from worker.checkpoints import Checkpointer, decode
from worker.engine.loop import LoopState
from worker.failures import LeaseLost
from worker.lease import JobLease
from worker.reconciler import Reconciler

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(base_env: dict[str, str]) -> Settings:
    return settings_from_env(base_env)


@pytest.fixture
def sessions(settings: Settings) -> Iterator[sessionmaker[Session]]:
    migrate(settings.database_url)
    engine = make_engine(settings.database_url)
    factory = make_session_factory(engine)
    with transaction(factory) as session:
        create_key(session, tenant_name="acme")
    yield factory
    engine.dispose()


@pytest.fixture
def store(settings: Settings) -> ObjectStore:
    return make_store(settings)


DIGITS = {"data": {"train": {"builtin": "digits"}}}


def claimed(sessions: sessionmaker[Session], settings: Settings, keep: bool = False) -> Job:
    spec = {**DIGITS, "training": {"keep_checkpoints": keep}}
    with transaction(sessions) as session:
        tenant = session.query(Tenant).one()
        job = Job(id=new_job_id(), tenant_id=tenant.id, spec=spec, status="queued")
        session.add(job)
        session.flush()
        append_event(session, job.id, "job queued")
        job_id = job.id
    return take(sessions, settings, job_id)


def take(sessions: sessionmaker[Session], settings: Settings, job_id: str, owner: str = "w1/a") -> Job:
    with transaction(sessions) as session:
        assert lifecycle.claim(session, job_id, owner, settings.lease_seconds)
        return session.get_one(Job, job_id)


def lease_of(job: Job, owner: str, settings: Settings, sessions: sessionmaker[Session]) -> JobLease:
    return JobLease(job, owner, settings=settings, sessions=sessions, shutting_down=threading.Event())


def state(step: int, epoch: int) -> LoopState:
    model = torch.nn.Linear(3, 2)
    return LoopState(
        epoch=epoch,
        position=0,
        step=step,
        model=model.state_dict(),
        optimizer={"state": {}, "param_groups": []},
        scheduler=None,
        shuffle=torch.Generator().get_state(),
        rng=torch.get_rng_state(),
        totals=torch.zeros(1),
    )


def recorded(sessions: sessionmaker[Session], job_id: str) -> str | None:
    with sessions() as session:
        return session.get_one(Job, job_id).last_checkpoint_key


def expire(sessions: sessionmaker[Session], job_id: str) -> None:
    with transaction(sessions) as session:
        session.execute(
            update(Job).where(Job.id == job_id).values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )


def test_the_newest_checkpoint_is_recorded_and_the_previous_deleted(sessions, settings, store):
    job = claimed(sessions, settings)
    save = Checkpointer(
        store, lease_of(job, "w1/a", settings, sessions), tenant_id=job.tenant_id, job_id=job.id
    )
    save(state(10, 1))
    first = recorded(sessions, job.id)
    assert first is not None and first.endswith("/checkpoints/step-000000010-epoch-00000")
    save(state(20, 2))
    newest = recorded(sessions, job.id)
    assert newest is not None and newest.endswith("step-000000020-epoch-00001")
    assert [(c.step, c.epoch) for c in list_checkpoints(store, job.tenant_id, job.id)] == [(20, 1)]
    assert decode(store.get_bytes(newest)).step == 20


def test_a_worker_whose_job_was_taken_over_records_nothing(sessions, settings, store):
    job = claimed(sessions, settings)
    old = Checkpointer(
        store, lease_of(job, "w1/a", settings, sessions), tenant_id=job.tenant_id, job_id=job.id
    )
    old(state(10, 1))
    expire(sessions, job.id)
    with transaction(sessions) as session:
        lifecycle.reclaim_expired(session, settings.max_attempts)
    take(sessions, settings, job.id, owner="w2/b")
    mine = recorded(sessions, job.id)
    with pytest.raises(LeaseLost):
        old(state(30, 3))
    assert recorded(sessions, job.id) == mine  # the new holder's record stands
    # the old worker's object stays until the job ends (it never deletes what it could not record)
    assert [c.step for c in list_checkpoints(store, job.tenant_id, job.id)] == [10, 30]


@pytest.mark.parametrize("keep", [False, True])
def test_the_reconciler_deletes_the_checkpoints_of_a_job_it_fails_unless_kept(
    sessions, settings, store, keep
):
    job = claimed(sessions, settings, keep)
    save = Checkpointer(
        store, lease_of(job, "w1/a", settings, sessions), tenant_id=job.tenant_id, job_id=job.id
    )
    save(state(10, 1))
    with transaction(sessions) as session:
        session.execute(update(Job).where(Job.id == job.id).values(attempts=settings.max_attempts))
    expire(sessions, job.id)
    reconciler = Reconciler(settings=settings, session_factory=sessions, queue=None, store=store)  # type: ignore[arg-type]
    reclaimed, _ = reconciler.once()
    assert [(r.job_id, r.status) for r in reclaimed] == [(job.id, "failed")]
    assert len(list_checkpoints(store, job.tenant_id, job.id)) == (1 if keep else 0)


def test_the_heartbeat_threads_log_lines_carry_the_jobs_log_context(sessions, settings, caplog):
    from distill.logs import ContextFilter, log_context

    job = claimed(sessions, settings)
    fast = settings.model_copy(update={"heartbeat_seconds": 0.05})
    with log_context(job_id=job.id, tenant="acme"):
        lease = lease_of(job, "w1/a", fast, sessions)
    with transaction(sessions) as session:  # another worker holds the job now
        session.execute(update(Job).where(Job.id == job.id).values(lease_owner="w2/b"))
    handler_filter = ContextFilter()
    caplog.handler.addFilter(handler_filter)
    try:
        with caplog.at_level("WARNING", logger="worker.lease"):
            lease.start()
            lease._thread.join(timeout=10)  # it returns once it finds the lease gone
    finally:
        caplog.handler.removeFilter(handler_filter)
    lines = [r for r in caplog.records if "heartbeat found the lease gone" in r.getMessage()]
    assert lines and all(getattr(r, "job_id", None) == job.id for r in lines)
    assert all(getattr(r, "tenant", None) == "acme" for r in lines)
