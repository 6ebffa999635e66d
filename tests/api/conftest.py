"""API tests: the real app on real Postgres, Redis (queue) and an S3-compatible server, no worker.

Each test starts from empty tables (truncated after the test) and an empty queue.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from helpers import delete_queue_keys, free_port, wait_for
from services_app import new_key, prepare, settings_from_env
from sqlalchemy import text

from api.app import create_app
from distill.settings import Settings


@pytest.fixture(scope="session")
def api_settings(services_env: dict[str, str]) -> Settings:
    # A queue of their own: no worker (such as the integration tests') ever takes these jobs.
    queue = f"{services_env['DISTILL_QUEUE_NAME']}-api"
    settings = settings_from_env({**services_env, "DISTILL_QUEUE_NAME": queue})
    prepare(settings)
    return settings


@pytest.fixture(scope="session")
def app_client(api_settings: Settings) -> Iterator[TestClient]:
    app = create_app(api_settings)
    with TestClient(app, follow_redirects=False) as client:
        client.app_state = app.state  # type: ignore[attr-defined]
        yield client


@pytest.fixture(autouse=True)
def _clean(api_settings: Settings, app_client: TestClient) -> Iterator[None]:
    yield
    engine = app_client.app_state.engine  # type: ignore[attr-defined]
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE tenants, api_keys, files, jobs, job_events, artifacts CASCADE"))
    delete_queue_keys(api_settings.broker_url, api_settings.queue_name)


@pytest.fixture
def acme(api_settings: Settings) -> dict[str, str]:
    return {"Authorization": f"Bearer {new_key(api_settings, 'acme')}"}


@pytest.fixture
def globex(api_settings: Settings) -> dict[str, str]:
    return {"Authorization": f"Bearer {new_key(api_settings, 'globex')}"}


@pytest.fixture
def client(app_client: TestClient) -> TestClient:
    return app_client


@pytest.fixture(scope="module")
def live_url(api_settings: Settings) -> Iterator[str]:
    """The API over real HTTP (streams read as they are written), polling fast, quiet for 0.3 s at most."""
    settings = api_settings.model_copy(
        update={"stream_poll_seconds": 0.05, "stream_keepalive_seconds": 0.3, "webhooks_dispatch": False}
    )
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: httpx.get(f"{url}/healthz").status_code == 200, timeout=30)
    yield url
    server.should_exit = True
    thread.join(timeout=10)
