"""Fault tests: kill workers, restart Redis, stop or silence Postgres, cut the object store, and check the
invariants a user relies on:

- every job reaches a terminal state;
- at most one worker runs a job at any moment (one lease holder; a duplicate message trains nothing);
- a job is ``succeeded`` exactly when its artifacts exist;
- nothing a user submitted is lost.

Each test that stops a server starts its own (Redis, Postgres) or puts a proxy of its own in front of the
shared one; the shared services are never stopped. Leases and sweeps are short (``faultkit.FAST``), and
each test has a database and a queue of its own (no other test's worker or reconciler sees its jobs).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from faultkit import FAST, fresh_database
from helpers import delete_queue_keys

pytestmark = pytest.mark.integration


@pytest.fixture
def base_env(services_env: dict[str, str], tmp_path) -> Iterator[dict[str, str]]:
    """The shared Redis and S3, a fresh database and queue of this test's own, short leases."""
    server = services_env["DISTILL_DATABASE_URL"]
    queue = f"distill-fault-{secrets.token_hex(6)}"
    for database in fresh_database(server):
        env = {
            **services_env,
            **FAST,
            "DISTILL_HOME": str(tmp_path / "home"),
            "DISTILL_DATABASE_URL": database,
            "DISTILL_QUEUE_NAME": queue,
        }
        yield env
    delete_queue_keys(services_env["DISTILL_BROKER_URL"], queue)
