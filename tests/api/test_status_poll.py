"""The status poll (``GET /v1/jobs/{id}``) on its async read path: one statement checks the key and reads
the job, so a revoked key fails at once; without a pre-ping, a connection the server dropped is recovered
from by reading again; the embedded SQLite default serves it too (aiosqlite)."""

from __future__ import annotations

import asyncio

import httpx
from fastapi.testclient import TestClient
from redis import Redis
from services_app import new_key
from sqlalchemy import select, text

from api.app import create_app
from distill.db import make_engine, make_session_factory, migrate, transaction
from distill.ids import new_job_id
from distill.keys import revoke_key
from distill.settings import Settings
from distill.tables import ApiKey, Job, Tenant


def add_job(settings: Settings, tenant: str) -> str:
    engine = make_engine(settings.database_url)
    with transaction(make_session_factory(engine)) as session:
        tenant_id = session.scalar(select(Tenant.id).where(Tenant.name == tenant))
        job_id = new_job_id()
        session.add(
            Job(id=job_id, tenant_id=tenant_id, name="polled", spec={"name": "polled"}, status="queued")
        )
    engine.dispose()
    return job_id


def test_the_poll_answers_the_job_as_the_api_shows_it_and_404_for_another_tenants(
    client, api_settings, acme, globex
):
    job_id = add_job(api_settings, "acme")
    answer = client.get(f"/v1/jobs/{job_id}", headers=acme)
    assert answer.status_code == 200
    body = answer.json()
    assert body["id"] == job_id and body["object"] == "job" and body["status"] == "queued"
    assert body["name"] == "polled" and body["error"] is None and body["cancel_requested"] is False
    assert answer.headers["content-type"] == "application/json"
    listed = client.get("/v1/jobs", headers=acme).json()["data"]
    assert [job for job in listed if job["id"] == job_id] == [body]  # the same shape as the list's

    other = client.get(f"/v1/jobs/{job_id}", headers=globex)
    assert other.status_code == 404 and other.json()["error"]["field"] == "id"
    missing = client.get(f"/v1/jobs/{new_job_id()}", headers=acme)
    assert missing.status_code == 404
    assert client.get(f"/v1/jobs/{job_id}").status_code == 401
    assert client.get(f"/v1/jobs/{job_id}", headers={"Authorization": "Bearer dsk_nope"}).status_code == 401


def test_a_revoked_key_fails_the_poll_at_once(client, api_settings, acme):
    job_id = add_job(api_settings, "acme")
    assert client.get(f"/v1/jobs/{job_id}", headers=acme).status_code == 200
    prefix = acme["Authorization"].removeprefix("Bearer ")[:10]
    engine = make_engine(api_settings.database_url)
    with transaction(make_session_factory(engine)) as session:
        revoke_key(session, prefix)
    engine.dispose()
    answer = client.get(f"/v1/jobs/{job_id}", headers=acme)
    assert answer.status_code == 401
    assert answer.json()["error"]["message"] == "invalid or revoked API key"


def test_the_poll_records_the_keys_last_use(client, api_settings, acme):
    job_id = add_job(api_settings, "acme")
    prefix = acme["Authorization"].removeprefix("Bearer ")[:10]
    assert client.get(f"/v1/jobs/{job_id}", headers=acme).status_code == 200
    engine = make_engine(api_settings.database_url)
    with make_session_factory(engine)() as session:
        assert session.scalar(select(ApiKey.last_used_at).where(ApiKey.prefix == prefix)) is not None
    engine.dispose()


def test_a_connection_the_server_dropped_is_replaced_without_an_error(client, api_settings, acme):
    job_id = add_job(api_settings, "acme")
    assert client.get(f"/v1/jobs/{job_id}", headers=acme).status_code == 200  # a pooled connection now
    engine = make_engine(api_settings.database_url)
    with engine.connect() as conn:  # what a server restart or a proxy timeout does to the pool
        dropped = conn.execute(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ).scalar_one()
    engine.dispose()
    assert dropped >= 1
    for _ in range(3):
        answer = client.get(f"/v1/jobs/{job_id}", headers=acme)
        assert answer.status_code == 200, answer.text
        assert answer.json()["id"] == job_id


def test_the_embedded_sqlite_default_serves_the_poll(tmp_path):
    settings = Settings(
        home=tmp_path,
        database_url=f"sqlite:///{tmp_path / 'distill.db'}",
        broker_url="filesystem://",
        storage_url=str(tmp_path / "objects"),
        webhooks_dispatch=False,
    )
    migrate(settings.database_url)
    key = new_key(settings, "solo")
    job_id = add_job(settings, "solo")
    with TestClient(create_app(settings)) as local:
        answer = local.get(f"/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {key}"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == "queued"
        wrong = local.get(f"/v1/jobs/{job_id}", headers={"Authorization": "Bearer dsk_wrong"})
        assert wrong.status_code == 401


def test_the_polls_rate_limit_is_shared_with_the_other_routes_and_exact_under_a_burst(api_settings, acme):
    """The poll counts in the same Redis counters as every other route; polls that arrive together are
    counted in one pipeline, and exactly the limit of them pass."""
    job_id = add_job(api_settings, "acme")
    app = create_app(api_settings.model_copy(update={"rate_limit": "8/minute"}))

    async def burst() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
            first = [await http.get("/v1/jobs", headers=acme) for _ in range(2)]  # the sync limiter
            polls = await asyncio.gather(*(http.get(f"/v1/jobs/{job_id}", headers=acme) for _ in range(10)))
            return [*first, *polls]

    answers = asyncio.run(burst())
    app.state.engine.dispose()
    assert [a.status_code for a in answers[:2]] == [200, 200]
    polls = [a.status_code for a in answers[2:]]
    assert sorted(polls) == [200] * 6 + [429] * 4, polls
    limited = next(a for a in answers[2:] if a.status_code == 429)
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert limited.json()["error"]["code"] == "rate_limited"


def test_frequent_polls_take_their_counts_in_batches_and_two_processes_never_pass_the_shared_limit(
    api_settings, acme
):
    """A key that polls often takes requests from the shared Redis counter in batches (at most 1/16 of the
    limit per take) and spends them without a round trip; two API processes together never let more than
    the limit through, and refuse at most one batch each that the counter still had."""
    job_id = add_job(api_settings, "acme")
    settings = api_settings.model_copy(update={"rate_limit": "64/minute"})
    apps = [create_app(settings), create_app(settings)]

    async def polls() -> list[int]:
        clients = [
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") for app in apps
        ]
        try:
            codes = []
            for i in range(120):
                codes.append((await clients[i % 2].get(f"/v1/jobs/{job_id}", headers=acme)).status_code)
            return codes
        finally:
            for http in clients:
                await http.aclose()

    codes = asyncio.run(polls())
    for app in apps:
        app.state.engine.dispose()
    passed = codes.count(200)
    assert 64 - 2 * 4 <= passed <= 64, codes
    assert set(codes) == {200, 429}
    assert codes.index(429) >= 64 - 2 * 4  # nothing refused while the counter had room for a batch
    redis = Redis.from_url(api_settings.broker_url)
    counted = [int(redis.get(k)) for k in redis.scan_iter("distill-ratelimit*")]
    assert counted and max(counted) >= 64  # every request went through the shared counter
