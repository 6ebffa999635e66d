"""Session-scoped fixtures for the real services (Postgres, Redis, an S3-compatible server) and small helpers.

The fixtures expect Postgres and Redis on 127.0.0.1 (``scripts/services.sh`` starts them); the S3 server is
``moto_server``, started here. Each fixture removes what it made. Only tests that ask for a fixture touch the
service, so unit tests run without any of them.

Environment:
    DISTILL_TEST_POSTGRES_URL   server to create test databases on (default postgresql://postgres@127.0.0.1:5432)
    DISTILL_TEST_REDIS_URL      Redis server (default redis://127.0.0.1:6379)
    DISTILL_TEST_REDIS_DB       database number tests may flush (default 11)
    DISTILL_TEST_SKIP_UNAVAILABLE=1   skip, rather than fail, tests whose service is unreachable

Helpers for test modules live in ``tests/helpers.py`` (``free_port``, ``wait_for``).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TypeVar

import pytest
from helpers import delete_queue_keys, free_port, stop_process, wait_for

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import ObjectIdentifierTypeDef

T = TypeVar("T")

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379"
S3_KEY = "testing"
S3_REGION = "us-east-1"


# ----------------------------------------------------------------------------------------------- helpers


def _unavailable(what: str, error: BaseException) -> NoReturn:
    message = f"{what} is not reachable ({error}); start it with scripts/services.sh"
    if os.environ.get("DISTILL_TEST_SKIP_UNAVAILABLE"):
        pytest.skip(message)
    pytest.fail(message, pytrace=False)


# ---------------------------------------------------------------------------------------------- Postgres


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh, empty database for this session, as a SQLAlchemy URL (``postgresql+psycopg://…``)."""
    import psycopg
    from psycopg import sql
    from sqlalchemy.engine import make_url

    base = make_url(os.environ.get("DISTILL_TEST_POSTGRES_URL") or DEFAULT_POSTGRES_URL)
    admin = base.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    name = f"distill_test_{secrets.token_hex(6)}"
    failure: psycopg.OperationalError | None = None
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.OperationalError as error:
        failure = error
    if failure is not None:  # reported outside the except block: no chained traceback
        _unavailable(f"Postgres at {base.render_as_string()}", failure)

    yield base.set(drivername="postgresql+psycopg", database=name).render_as_string(hide_password=False)

    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


# ------------------------------------------------------------------------------------------------- Redis


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """``redis://127.0.0.1:6379/<n>``, n = $DISTILL_TEST_REDIS_DB or 11.

    Never flushed: test runs share the database (two runs on one machine, or a developer's run beside CI),
    so each run uses queue names of its own (``queue_name``) and deletes only its own keys.
    """
    import redis

    base = (os.environ.get("DISTILL_TEST_REDIS_URL") or DEFAULT_REDIS_URL).rstrip("/")
    url = f"{base}/{int(os.environ.get('DISTILL_TEST_REDIS_DB', '11'))}"
    client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=10)
    try:
        client.ping()
    except redis.RedisError as error:
        client.close()
        _unavailable(f"Redis at {base}", error)
    client.close()
    yield url


@pytest.fixture(scope="session")
def queue_name(redis_url: str) -> Iterator[str]:
    """A Celery queue name of this run's own; its keys are deleted at the end."""
    name = f"distill-test-{secrets.token_hex(6)}"
    yield name
    delete_queue_keys(redis_url, name)


# ---------------------------------------------------------------------------------------------------- S3


def _moto_server_command() -> list[str]:
    beside = Path(sys.executable).parent / "moto_server"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("moto_server")
    if found:
        return [found]
    return [sys.executable, "-m", "moto.server"]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except urllib.error.HTTPError:
        return True  # any HTTP answer means the server is up
    except OSError:
        return False


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """A ``moto_server`` on a free loopback port, for this session; yields ``http://127.0.0.1:<port>``."""
    env = {**os.environ, "AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_KEY}
    env["AWS_DEFAULT_REGION"] = S3_REGION
    with tempfile.TemporaryFile() as log:
        process: subprocess.Popen[bytes] | None = None
        endpoint = ""
        for _attempt in range(3):  # the port may be taken between free_port() and the server's bind
            port = free_port()
            endpoint = f"http://127.0.0.1:{port}"
            log.seek(0)
            log.truncate()
            process = subprocess.Popen(
                [*_moto_server_command(), "-H", "127.0.0.1", "-p", str(port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
            )

            def up(process: subprocess.Popen[bytes] = process, url: str = f"{endpoint}/moto-api/") -> bool:
                return process.poll() is None and _answers(url)

            def exited(process: subprocess.Popen[bytes] = process) -> bool:
                return process.poll() is not None

            with contextlib.suppress(TimeoutError):
                wait_for(lambda: exited() or up(), timeout=60, interval=0.2)
            if up():
                break
            stop_process(process)
            process = None
        if process is None:
            log.seek(0)
            output = log.read().decode(errors="replace")[-2000:]
            pytest.fail(f"moto_server did not start; its output:\n{output}", pytrace=False)
        try:
            yield endpoint
        finally:
            stop_process(process)


def s3_client(endpoint: str) -> S3Client:
    """A boto3 S3 client for the test server (dummy credentials)."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=S3_KEY,
        aws_secret_access_key=S3_KEY,
        region_name=S3_REGION,
    )


@pytest.fixture(scope="session")
def s3_bucket(s3_server: str) -> Iterator[str]:
    """A new bucket ``distill-test-<hex>`` on the test server; emptied and deleted at the end."""
    client = s3_client(s3_server)
    name = f"distill-test-{secrets.token_hex(6)}"
    client.create_bucket(Bucket=name)
    yield name
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=name):
        keys: list[ObjectIdentifierTypeDef] = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=name, Delete={"Objects": keys, "Quiet": True})
    client.delete_bucket(Bucket=name)


# ------------------------------------------------------------------------------------------ all services


@pytest.fixture(scope="session")
def services_env(
    postgres_url: str,
    redis_url: str,
    queue_name: str,
    s3_server: str,
    s3_bucket: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, str]:
    """``DISTILL_*`` variables pointing at the real services, for subprocesses or ``monkeypatch.setenv``."""
    return {
        "DISTILL_HOME": str(tmp_path_factory.mktemp("distill-home")),
        "DISTILL_DATABASE_URL": postgres_url,
        "DISTILL_BROKER_URL": redis_url,
        "DISTILL_QUEUE_NAME": queue_name,
        "DISTILL_STORAGE_URL": f"s3://{s3_bucket}/distill",
        "DISTILL_S3_ENDPOINT_URL": s3_server,
        "DISTILL_S3_ACCESS_KEY_ID": S3_KEY,
        "DISTILL_S3_SECRET_ACCESS_KEY": S3_KEY,
        "DISTILL_S3_REGION": S3_REGION,
        "DISTILL_DEVICE": "cpu",
    }


@pytest.fixture(scope="session")
def sum_teacher_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny causal LM trained here to answer ``a+b`` with ``<think>a+b=c</think>c`` (serving_support)."""
    from serving_support import train_sum_teacher

    return train_sum_teacher(tmp_path_factory.mktemp("sum-teacher") / "model")
