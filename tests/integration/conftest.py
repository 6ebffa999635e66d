"""Integration tests: the API served over HTTP, a real ``distill worker`` process, Postgres, Redis and an
S3-compatible server (moto_server on loopback). Tests talk to the stack only through the Python client."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from helpers import free_port, start_worker, stop_process, wait_for
from services_app import new_key, prepare, settings_from_env

from api.app import create_app
from distill.client.sdk import Client
from distill.settings import Settings


@dataclass
class Stack:
    url: str
    settings: Settings
    env: dict[str, str]
    worker_log: Path

    def client(self, tenant: str) -> Client:
        return Client(self.url, new_key(self.settings, tenant))


@pytest.fixture(scope="session")
def stack(services_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    settings = settings_from_env(services_env)
    prepare(settings)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: Client(url, "").health(), timeout=30)
    log_path = tmp_path_factory.mktemp("worker") / "worker.log"
    worker = start_worker(services_env, log_path)
    try:
        yield Stack(url=url, settings=settings, env=services_env, worker_log=log_path)
    finally:
        stop_process(worker)
        server.should_exit = True
        thread.join(timeout=10)
        if os.environ.get("DISTILL_TEST_SHOW_WORKER_LOG"):
            print(log_path.read_text())
