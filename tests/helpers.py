"""Small helpers for tests: a free loopback port, and waiting for a condition."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.1) -> T:
    """Call ``predicate`` until it returns something truthy and return that; exceptions count as "not yet".

    Raises ``TimeoutError`` (carrying the last exception, if any) after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = predicate()
            if result:
                return result
        except Exception as error:
            last_error = error
        if time.monotonic() >= deadline:
            detail = f": last error {last_error!r}" if last_error else ""
            raise TimeoutError(f"condition not met within {timeout:g}s{detail}") from last_error
        time.sleep(interval)


def start_worker(env: Mapping[str, str], log_path: Path, *args: str) -> subprocess.Popen[bytes]:
    """``distill worker`` (with ``args``, e.g. ``--queues``) in a subprocess, this environment plus ``env``,
    its output appended to ``log_path``; stop it with :func:`stop_process`."""
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "distill.cli", "worker", "--loglevel=info", *args],
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def stop_process(process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """Terminate ``process`` (SIGTERM), and kill it if it has not exited within ``timeout`` seconds."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def delete_queue_keys(redis_url: str, prefix: str) -> None:
    """Delete the Redis keys of queues whose names start with ``prefix`` (lists and kombu bindings)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"*{prefix}*"))  # the queue lists and kombu's bindings for them
        if keys:
            client.delete(*keys)
    finally:
        client.close()
