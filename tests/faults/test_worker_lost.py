"""Workers that die, shut down or get the same job twice; jobs that run too long.

Invariants: every job reaches a terminal state; at most one worker runs a job at any moment; a job is
succeeded exactly when its artifacts exist.
"""

from __future__ import annotations

import hashlib
import re
import signal
from collections.abc import Iterator

import pytest
from faultkit import FaultStack, Worker
from helpers import wait_for
from sqlalchemy import update

from distill.db import make_session_factory
from distill.queue import enqueue_job, make_celery
from distill.storage import checkpoint_key, make_store
from distill.tables import Job

pytestmark = pytest.mark.integration


def spec(epochs: int, **training: object) -> dict:
    return {
        "data": {"train": {"builtin": "digits"}},
        "model": {"arch": "mlp", "hidden": [16]},
        "training": {"epochs": epochs, "batch_size": 64, **training},
    }


@pytest.fixture
def stack(base_env, tmp_path) -> Iterator[FaultStack]:
    # jobs that must outlive a kill or a time limit ask for more epochs than the default ceiling allows
    stack = FaultStack({**base_env, "DISTILL_MAX_EPOCHS": "10000"}, tmp_path)
    yield stack
    stack.close()


def holder(stack: FaultStack, job_id: str) -> Worker:
    """The worker whose lease the running job is under (lease owner = worker id / claim token)."""
    owner = stack.job_row(job_id).lease_owner or ""
    return next(w for w in stack.workers if owner.startswith(f"{w.name}/"))


def training(stack: FaultStack, job_id: str, epoch: int = 2) -> bool:
    job = stack.job_row(job_id)
    return job.status == "running" and job.progress.get("epoch", 0) >= epoch


def assert_succeeded_with_artifacts(stack: FaultStack, job_id: str, tmp_path) -> None:
    client = stack.client()
    job = client.get_job(job_id)
    assert job["status"] == "succeeded", job["error"]
    artifacts = {a["name"]: a for a in client.list_artifacts(job_id)["data"]}
    assert "model.safetensors" in artifacts
    path = client.download_artifact(job_id, "model.safetensors", tmp_path)  # checks the sha256 too
    assert hashlib.sha256(path.read_bytes()).hexdigest() == artifacts["model.safetensors"]["sha256"]


def test_a_worker_killed_mid_training_is_replaced_and_the_job_resumes_from_its_checkpoint(stack, tmp_path):
    stack.start_workers("a", "b")
    job_id = stack.client().create_job(spec(40))["id"]
    # an epoch's end has been checkpointed (and recorded on the job under the lease)
    wait_for(
        lambda: training(stack, job_id) and stack.job_row(job_id).last_checkpoint_key is not None,
        timeout=120,
        interval=0.1,
    )
    listed = stack.http("GET", f"/v1/jobs/{job_id}/checkpoints").json()["data"]
    assert listed and listed[-1]["epoch"] >= 1 and listed[-1]["bytes"] > 0
    dead = holder(stack, job_id)
    dead.process.send_signal(signal.SIGKILL)
    dead.process.wait(timeout=10)

    final = stack.client().wait(job_id, poll_interval=0.3, timeout=180)
    assert final["status"] == "succeeded", final["error"]
    assert stack.job_row(job_id).attempts == 2
    events = stack.events(job_id)
    assert any(m.startswith(f"job taken back: worker {dead.name}/") for m in events)
    started = [m for m in events if m.startswith("job started")]
    assert len(started) == 2 and "attempt 2" in started[1]
    resumed = [m for m in events if m.startswith("resumed from checkpoint")]
    assert len(resumed) == 1, events
    match = re.fullmatch(r"resumed from checkpoint at epoch (\d+) step (\d+) \(attempt 2\)", resumed[0])
    assert match, resumed
    epoch, step = int(match[1]), int(match[2])
    assert 1 <= epoch < 40 and step > 0
    # after the takeover only the new attempt wrote, and the epochs before the checkpoint were not trained
    # again: it goes on from the next one, each once
    after = events[events.index(started[1]) :]
    assert [m for m in after if m.startswith("epoch ")] == [f"epoch {i}/40" for i in range(epoch + 1, 41)]
    assert_succeeded_with_artifacts(stack, job_id, tmp_path)
    # the job ended: its checkpoints went with it
    assert stack.http("GET", f"/v1/jobs/{job_id}/checkpoints").json()["data"] == []


def test_a_job_that_keeps_its_checkpoints_lists_the_last_one_after_it_ends(stack):
    stack.start_workers("a")
    kept = stack.client().create_job(spec(3, keep_checkpoints=True))["id"]
    plain = stack.client().create_job(spec(3))["id"]
    for job_id in (kept, plain):
        final = stack.client().wait(job_id, poll_interval=0.3, timeout=180)
        assert final["status"] == "succeeded", final["error"]
    listed = stack.http("GET", f"/v1/jobs/{kept}/checkpoints").json()["data"]
    assert [c["epoch"] for c in listed] == [3]  # only the newest is kept while it runs
    assert listed[0]["step"] == stack.job_row(kept).progress["steps"]
    assert stack.http("GET", f"/v1/jobs/{plain}/checkpoints").json()["data"] == []


def test_an_unreadable_checkpoint_is_reported_and_the_job_starts_from_the_beginning(stack, tmp_path):
    job_id = stack.client().create_job(spec(3))["id"]  # no worker yet: it stays queued
    tenant = stack.job_row(job_id).tenant_id
    key = checkpoint_key(tenant, job_id, 40, 2)
    make_store(stack.settings).put_bytes(key, b"not a checkpoint")  # what a lost attempt left, damaged
    with make_session_factory(stack.engine).begin() as session:
        session.execute(update(Job).where(Job.id == job_id).values(last_checkpoint_key=key))
    stack.start_workers("a")

    final = stack.client().wait(job_id, poll_interval=0.3, timeout=180)
    assert final["status"] == "succeeded", final["error"]
    events = stack.events(job_id)
    assert any(
        m.startswith("checkpoint step-000000040-epoch-00002 could not be read")
        and m.endswith("restarting from the beginning (attempt 1)")
        for m in events
    ), events
    assert [m for m in events if m.startswith("epoch ")] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    assert_succeeded_with_artifacts(stack, job_id, tmp_path)
    assert stack.http("GET", f"/v1/jobs/{job_id}/checkpoints").json()["data"] == []


def test_cancel_reaches_a_job_whose_worker_died(stack):
    stack.start_workers("a")
    job_id = stack.client().create_job(spec(5000))["id"]
    wait_for(lambda: training(stack, job_id), timeout=120, interval=0.1)
    worker = holder(stack, job_id)
    worker.process.send_signal(signal.SIGKILL)
    worker.process.wait(timeout=10)

    answer = stack.http("POST", f"/v1/jobs/{job_id}/cancel")
    assert answer.status_code == 200, answer.text
    stack.start_workers("b")  # its reconciler settles a cancel that found the lease still running
    final = stack.client().wait(job_id, poll_interval=0.3, timeout=120)
    assert final["status"] == "cancelled"
    assert stack.client().list_artifacts(job_id)["data"] == []
    assert len([m for m in stack.events(job_id) if m.startswith("job started")]) == 1


def test_two_workers_given_the_same_job_train_it_once(stack):
    workers = stack.start_workers("a", "b")
    job_id = stack.client().create_job(spec(20))["id"]
    celery = make_celery(stack.settings)
    for _ in range(3):  # the same wake-up again, as a broker redelivery or a resend would
        enqueue_job(celery, job_id)
    final = stack.client().wait(job_id, poll_interval=0.3, timeout=120)
    assert final["status"] == "succeeded", final["error"]
    wait_for(lambda: sum(w.text().count(f"job {job_id}: not claimed") for w in workers) >= 3, timeout=60)
    assert len([m for m in stack.events(job_id) if m.startswith("job started")]) == 1
    assert stack.job_row(job_id).attempts == 1


def test_a_warm_shutdown_hands_the_job_back(stack, tmp_path):
    stack.start_workers("a", "b")
    job_id = stack.client().create_job(spec(40))["id"]
    wait_for(lambda: training(stack, job_id), timeout=120, interval=0.1)
    leaving = holder(stack, job_id)
    leaving.process.send_signal(signal.SIGTERM)
    leaving.process.wait(timeout=60)

    final = stack.client().wait(job_id, poll_interval=0.3, timeout=180)
    assert final["status"] == "succeeded", final["error"]
    events = stack.events(job_id)
    assert any(m.startswith(f"job handed back: worker {leaving.name} is shutting down") for m in events)
    assert stack.job_row(job_id).attempts == 2
    assert_succeeded_with_artifacts(stack, job_id, tmp_path)


def test_max_runtime_ends_the_job_as_failed_with_timeout(stack):
    stack.start_workers("a")
    job_id = stack.client().create_job(spec(5000, max_runtime_s=2))["id"]
    final = stack.client().wait(job_id, poll_interval=0.3, timeout=120)
    assert final["status"] == "failed"
    assert final["error"]["code"] == "timeout"
    assert "training.max_runtime_s" in final["error"]["message"]
    assert stack.client().list_artifacts(job_id)["data"] == []
