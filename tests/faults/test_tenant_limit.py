"""The per-tenant running-job limit (``DISTILL_MAX_RUNNING_JOBS_PER_TENANT``).

Invariants: a tenant never has more jobs ``running`` than its limit, even when several workers claim its jobs
at the same moment; a job left queued by the limit is never lost or failed: it runs once a slot frees; one
tenant's backlog does not hold back another tenant's job.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from itertools import pairwise

import pytest
from faultkit import FaultStack
from services_app import new_key
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from distill import lifecycle
from distill.client.sdk import Client
from distill.db import make_engine, make_session_factory, migrate, transaction
from distill.ids import new_job_id
from distill.keys import create_key
from distill.tables import Job, Tenant

pytestmark = pytest.mark.integration


@pytest.fixture
def sessions(base_env: dict[str, str]) -> Iterator[sessionmaker[Session]]:
    url = base_env["DISTILL_DATABASE_URL"]
    migrate(url)
    engine = make_engine(url, statement_timeout=10.0, pool_timeout=10.0)  # the API's and workers' engine
    factory = make_session_factory(engine)
    with transaction(factory) as session:
        create_key(session, tenant_name="acme")
        create_key(session, tenant_name="beta")
    yield factory
    engine.dispose()


def queued_jobs(sessions: sessionmaker[Session], tenant: str, count: int) -> list[str]:
    with transaction(sessions) as session:
        tenant_id = session.scalar(select(Tenant.id).where(Tenant.name == tenant))
        ids = [new_job_id() for _ in range(count)]
        session.add_all(Job(id=job_id, tenant_id=tenant_id, spec={}, status="queued") for job_id in ids)
        return ids


def test_workers_claiming_one_tenants_jobs_at_once_never_pass_its_limit(sessions):
    acme = queued_jobs(sessions, "acme", 8)
    (beta,) = queued_jobs(sessions, "beta", 1)
    start = threading.Barrier(len(acme))
    outcomes: dict[str, lifecycle.Claim] = {}

    def claim(job_id: str) -> None:
        start.wait()
        with transaction(sessions) as session:
            outcomes[job_id] = lifecycle.claim(session, job_id, f"w/{job_id}", 60, max_running_per_tenant=2)

    threads = [threading.Thread(target=claim, args=(job_id,)) for job_id in acme]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sorted(o.value for o in outcomes.values()) == ["at_limit"] * 6 + ["claimed"] * 2
    with sessions() as session:
        states = dict(session.execute(select(Job.id, Job.status).where(Job.id.in_(acme))).all())
        assert sorted(states.values()) == ["queued"] * 6 + ["running"] * 2  # left queued, not failed
    with transaction(sessions) as session:  # another tenant is not held back by acme's jobs
        assert (
            lifecycle.claim(session, beta, "w/beta", 60, max_running_per_tenant=2) is lifecycle.Claim.CLAIMED
        )
    running = next(job_id for job_id, state in states.items() if state == "running")
    with transaction(sessions) as session:  # a running job is not claimable, whatever the limit says
        assert lifecycle.claim(session, running, "w/again", 60, max_running_per_tenant=2) is (
            lifecycle.Claim.NOT_CLAIMABLE
        )
    with transaction(sessions) as session:  # no limit (0): claims as before
        waiting = next(job_id for job_id, state in states.items() if state == "queued")
        assert lifecycle.claim(session, waiting, "w/free", 60) is lifecycle.Claim.CLAIMED


def test_next_queued_is_the_tenants_oldest_waiting_job(sessions):
    first, second = queued_jobs(sessions, "acme", 2)
    with sessions() as session:
        tenant_id = session.get_one(Job, first).tenant_id
        assert list(lifecycle.next_queued(session, tenant_id)) == [first]
        assert list(lifecycle.next_queued(session, tenant_id, limit=5)) == [first, second]


def spec(epochs: int, name: str) -> dict:
    return {
        "name": name,
        "data": {"train": {"builtin": "digits"}},
        "model": {"arch": "mlp", "hidden": [16]},
        "training": {"epochs": epochs, "batch_size": 64},
    }


@pytest.fixture
def stack(base_env, tmp_path) -> Iterator[FaultStack]:
    stack = FaultStack({**base_env, "DISTILL_MAX_RUNNING_JOBS_PER_TENANT": "1"}, tmp_path)
    yield stack
    stack.close()


def test_a_tenant_at_its_limit_does_not_hold_every_worker_and_all_its_jobs_finish(stack):
    stack.start_workers("w1", "w2")
    acme = stack.client()
    beta = Client(stack.url, new_key(stack.settings, "beta"))
    a_jobs = [acme.create_job(spec(15, f"a{i}"))["id"] for i in range(3)]
    b_job = beta.create_job(spec(15, "b"))["id"]
    sessions = make_session_factory(stack.engine)

    most_running = 0
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        with sessions() as session:
            states = dict(
                session.execute(select(Job.id, Job.status).where(Job.id.in_([*a_jobs, b_job]))).all()
            )
            running_a = session.scalar(
                select(func.count()).where(Job.id.in_(a_jobs), Job.status == "running")
            )
        most_running = max(most_running, running_a or 0)
        if all(s in ("succeeded", "failed", "cancelled") for s in states.values()):
            break
        time.sleep(0.05)
    assert most_running == 1, "tenant acme had more than one job running at once"

    rows = {job_id: stack.job_row(job_id) for job_id in [*a_jobs, b_job]}
    assert {job_id: row.status for job_id, row in rows.items()} == dict.fromkeys(rows, "succeeded")
    assert all(row.attempts == 1 for row in rows.values())  # left queued, never claimed and given back
    a_rows = sorted((rows[j] for j in a_jobs), key=lambda r: r.started_at)
    for earlier, later in pairwise(a_rows):  # acme's jobs ran one after the other
        assert earlier.finished_at <= later.started_at
    # beta's job ran beside acme's first instead of waiting for all three
    assert rows[b_job].started_at < a_rows[0].finished_at
    assert any("left queued" in w.text() for w in stack.workers)
