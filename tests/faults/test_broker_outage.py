"""Redis restarted without persistence (messages lost) and a submission while Redis is down.

Invariants: nothing a user submitted is lost (every job runs and reaches a terminal state); /readyz tells
the truth about the broker. Uses a Redis server of this test's own.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from faultkit import FaultStack, OwnRedis
from helpers import wait_for

pytestmark = pytest.mark.integration


def spec(epochs: int) -> dict:
    return {
        "data": {"train": {"builtin": "digits"}},
        "model": {"arch": "mlp", "hidden": [16]},
        "training": {"epochs": epochs},
    }


@pytest.fixture
def own_redis(tmp_path) -> Iterator[OwnRedis]:
    redis = OwnRedis(tmp_path)
    yield redis
    redis.kill()


@pytest.fixture
def stack(base_env, own_redis, tmp_path) -> Iterator[FaultStack]:
    stack = FaultStack({**base_env, "DISTILL_BROKER_URL": own_redis.url}, tmp_path)
    yield stack
    stack.close()


def test_jobs_queued_running_and_submitted_during_a_redis_restart_all_finish(stack, own_redis):
    stack.start_workers("a")
    client = stack.client()
    running = client.create_job(spec(60))["id"]
    wait_for(lambda: stack.job_row(running).status == "running", timeout=120, interval=0.1)
    queued = client.create_job(spec(5))["id"]  # waits behind the running one: its message is in Redis

    own_redis.kill()  # no persistence: the queued job's message is gone
    ready = stack.http("GET", "/readyz")
    assert ready.status_code == 503
    assert ready.json()["error"]["checks"]["broker"] != "ok"
    assert ready.headers["Retry-After"]
    during = stack.http("POST", "/v1/jobs", json=spec(5))
    assert during.status_code == 201, during.text  # the row is the truth; the wake-up follows later
    submitted_while_down = during.json()["id"]
    own_redis.start()

    for job_id in (running, queued, submitted_while_down):
        final = client.wait(job_id, poll_interval=0.3, timeout=240)
        assert final["status"] == "succeeded", (job_id, final["error"])
    assert stack.http("GET", "/readyz").status_code == 200
