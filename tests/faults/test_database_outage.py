"""Postgres stopped, and Postgres silent (accepts connections, answers nothing), under load.

Invariants: no request hangs past its timeout (each answers a JSON 503 with Retry-After while the database
is away) and the API recovers by itself; a running job rides the outage out (its writes are retried) and
succeeds, once. The API and the worker reach the shared Postgres server through a proxy of this test's own,
which the test stops (closes every connection, refuses new ones) or silences (accepts, forwards nothing);
the shared server itself is never stopped (initdb refuses to run as root on CI machines).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from faultkit import FaultStack, Proxy
from helpers import wait_for
from sqlalchemy.engine import make_url

pytestmark = pytest.mark.integration

SPEC = {
    "data": {"train": {"builtin": "digits"}},
    "model": {"arch": "mlp", "hidden": [16]},
    "training": {"epochs": 120},
}


@pytest.fixture
def proxy(base_env) -> Iterator[Proxy]:
    proxy = Proxy(make_url(base_env["DISTILL_DATABASE_URL"]).port or 5432)
    yield proxy
    proxy.close()


@pytest.fixture
def stack(base_env, proxy, tmp_path) -> Iterator[FaultStack]:
    direct = make_url(base_env["DISTILL_DATABASE_URL"])
    env = {
        **base_env,
        "DISTILL_DATABASE_URL": direct.set(host="127.0.0.1", port=proxy.port).render_as_string(False),
        # a lease long enough to outlive the outage: the worker retries, nobody takes the job over
        "DISTILL_LEASE_SECONDS": "30",
        "DISTILL_HEARTBEAT_SECONDS": "1",
        "DISTILL_DB_RETRY_SECONDS": "25",
    }
    stack = FaultStack(env, tmp_path)
    yield stack
    stack.close()


def assert_unavailable(stack: FaultStack, job_id: str) -> None:
    """Every kind of request, the async status poll included, answers a JSON 503 with Retry-After within
    the deadlines (stack.http gives up after 10 s)."""
    for method, path in [
        ("GET", "/v1/jobs"),
        ("POST", "/v1/jobs"),
        ("GET", "/readyz"),
        ("GET", f"/v1/jobs/{job_id}"),
    ]:
        started = time.monotonic()
        answer = stack.http(method, path, json=SPEC if method == "POST" else None)
        assert answer.status_code == 503, (path, answer.text)
        assert time.monotonic() - started < 8, path
        assert answer.headers["Retry-After"].isdigit()
        assert answer.json()["error"]["code"] == "unavailable"


def recovered(stack: FaultStack, job_id: str) -> bool:
    return (
        stack.http("GET", "/v1/jobs").status_code == 200
        and stack.http("GET", "/readyz").status_code == 200
        and stack.http("GET", f"/v1/jobs/{job_id}").status_code == 200
    )


def test_a_stopped_database_answers_503_and_a_running_job_survives(stack, proxy):
    stack.start_workers("a")
    job_id = stack.client().create_job(SPEC)["id"]
    wait_for(lambda: stack.job_row(job_id).progress.get("epoch", 0) >= 2, timeout=120, interval=0.1)

    proxy.down()
    assert_unavailable(stack, job_id)
    proxy.up()

    wait_for(lambda: recovered(stack, job_id), timeout=30, interval=0.2)
    final = stack.client().wait(job_id, poll_interval=0.3, timeout=180)
    assert final["status"] == "succeeded", final["error"]
    assert stack.job_row(job_id).attempts == 1
    assert [a["name"] for a in stack.client().list_artifacts(job_id)["data"]]


def test_a_silent_database_answers_503_and_a_running_job_survives(stack, proxy):
    stack.start_workers("a")
    job_id = stack.client().create_job(SPEC)["id"]
    wait_for(lambda: stack.job_row(job_id).progress.get("epoch", 0) >= 2, timeout=120, interval=0.1)

    proxy.silence()
    assert_unavailable(stack, job_id)
    proxy.up()

    wait_for(lambda: recovered(stack, job_id), timeout=30, interval=0.2)
    final = stack.client().wait(job_id, poll_interval=0.3, timeout=180)
    assert final["status"] == "succeeded", final["error"]
    assert stack.job_row(job_id).attempts == 1
