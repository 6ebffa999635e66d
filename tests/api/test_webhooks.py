"""Webhooks: register, list, delete; every job status change POSTed to a real receiver on loopback, signed,
retried with backoff and logged per attempt.

The dispatcher runs here as the API process runs it (``Dispatcher.run_once``), driven by the test rather
than by its thread, so that each round is one observable step.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime

import pytest
from e2e.receiver import Receiver, receiver
from fastapi.testclient import TestClient
from helpers import wait_for
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from distill.clock import utcnow
from distill.db import transaction
from distill.events import append_event
from distill.settings import Settings
from distill.tables import Job
from distill.webhooks import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Dispatcher,
    backoff_seconds,
    sign,
    verify_signature,
)

DIGITS = {"data": {"train": {"builtin": "digits"}}, "training": {"epochs": 2}}
RETRY_BASE = 0.2


@pytest.fixture
def hooks() -> Iterator[Receiver]:
    with receiver() as state:
        yield state


@pytest.fixture
def sessions(client: TestClient) -> sessionmaker[Session]:
    factory: sessionmaker[Session] = client.app_state.session_factory  # type: ignore[attr-defined]
    return factory


@pytest.fixture
def dispatcher(api_settings: Settings, sessions: sessionmaker[Session]) -> Iterator[Dispatcher]:
    settings = api_settings.model_copy(
        update={
            "webhook_retry_base_seconds": RETRY_BASE,
            "webhook_max_attempts": 3,
            "webhook_timeout_seconds": 5,
        }
    )
    found = Dispatcher(sessions, settings)
    yield found
    found.stop()


@pytest.fixture(autouse=True)
def _no_background_dispatcher(client: TestClient) -> None:
    # The app's own dispatcher thread would race this test's rounds (and use 10 s retries): stop it.
    running = client.app_state.dispatcher  # type: ignore[attr-defined]
    if running is not None:
        running.stop()
        client.app_state.dispatcher = None  # type: ignore[attr-defined]


def register(client: TestClient, headers: dict[str, str], url: str) -> dict:
    response = client.post("/v1/webhooks", headers=headers, json={"url": url, "description": "ci"})
    assert response.status_code == 201, response.text
    return response.json()


def submit(client: TestClient, headers: dict[str, str]) -> str:
    response = client.post("/v1/jobs", headers=headers, json=DIGITS)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def deliveries(client: TestClient, headers: dict[str, str], hook_id: str) -> list[dict]:
    response = client.get(f"/v1/webhooks/{hook_id}/deliveries", headers=headers)
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


# ------------------------------------------------------------------------------------------ signatures


def test_signature_verifies_and_rejects_a_changed_body_wrong_secret_or_old_timestamp():
    now = int(time.time())
    body = b'{"type":"job.succeeded"}'
    signature = sign("whsec_a", now, body)
    assert signature.startswith("sha256=") and len(signature) == 7 + 64
    assert verify_signature("whsec_a", str(now), body, signature)
    assert not verify_signature("whsec_a", str(now), body + b" ", signature)
    assert not verify_signature("whsec_b", str(now), body, signature)
    assert not verify_signature("whsec_a", str(now - 3600), body, sign("whsec_a", now - 3600, body))
    assert not verify_signature("whsec_a", "soon", body, signature)


def test_backoff_doubles_and_is_capped():
    assert [backoff_seconds(n, 10) for n in (1, 2, 3, 4)] == [10, 20, 40, 80]
    assert backoff_seconds(30, 10) == 3600


# ------------------------------------------------------------------------------------------- the routes


def test_secret_is_shown_once_and_endpoints_are_the_tenants_own(client, acme, globex):
    created = register(client, acme, "https://example.test/hook")
    assert created["id"].startswith("wh_") and created["object"] == "webhook"
    assert created["secret"].startswith("whsec_")
    assert created["url"] == "https://example.test/hook" and created["description"] == "ci"

    listed = client.get("/v1/webhooks", headers=acme).json()
    assert [w["id"] for w in listed["data"]] == [created["id"]]
    assert "secret" not in listed["data"][0]
    one = client.get(f"/v1/webhooks/{created['id']}", headers=acme).json()
    assert "secret" not in one and one["url"] == created["url"]

    assert client.get("/v1/webhooks", headers=globex).json()["data"] == []
    for method in ("get", "delete"):
        response = client.request(method.upper(), f"/v1/webhooks/{created['id']}", headers=globex)
        assert response.status_code == 404
        assert response.json()["error"]["field"] == "id"
    assert client.get(f"/v1/webhooks/{created['id']}/deliveries", headers=globex).status_code == 404

    gone = client.delete(f"/v1/webhooks/{created['id']}", headers=acme)
    assert gone.status_code == 200 and gone.json() == {
        "id": created["id"],
        "object": "webhook",
        "deleted": True,
    }
    assert client.get("/v1/webhooks", headers=acme).json()["data"] == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "ftp://example.test/x"}, "url"),
        ({"url": "not a url"}, "url"),
        ({"url": "https://user:pw@example.test/x"}, "url"),
        ({}, "url"),
        ({"url": "https://example.test", "colour": "red"}, "colour"),
    ],
)
def test_a_bad_endpoint_answers_422_naming_the_field(client, acme, body, field):
    response = client.post("/v1/webhooks", headers=acme, json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == field


def test_webhooks_need_a_key(client):
    assert client.get("/v1/webhooks").status_code == 401


# ------------------------------------------------------------------------------------------- deliveries


def test_each_status_change_is_posted_once_signed_and_logged(client, acme, hooks, dispatcher):
    hook = register(client, acme, hooks.url)
    job_id = submit(client, acme)
    assert client.post(f"/v1/jobs/{job_id}/cancel", headers=acme).status_code == 200

    assert dispatcher.run_once() == 2
    assert dispatcher.run_once() == 0  # nothing new: each change goes out once
    assert hooks.types() == ["job.queued", "job.cancelled"]

    for request in hooks.requests:
        headers = {k.lower(): v for k, v in request.headers.items()}
        assert headers["content-type"] == "application/json"
        assert verify_signature(
            hook["secret"], headers[TIMESTAMP_HEADER.lower()], request.body, headers[SIGNATURE_HEADER.lower()]
        )
        assert headers[EVENT_HEADER.lower()] == request.json["type"]
        assert headers[DELIVERY_HEADER.lower()] == request.json["id"]
        assert request.json["data"]["job"]["id"] == job_id
    final = hooks.requests[1].json["data"]["job"]
    assert final["status"] == "cancelled" and final["finished_at"]

    log = deliveries(client, acme, hook["id"])
    assert [d["type"] for d in log] == ["job.cancelled", "job.queued"]  # newest first
    for entry in log:
        assert entry["state"] == "succeeded" and entry["delivered_at"] and entry["job_id"] == job_id
        assert [(a["number"], a["status_code"], a["error"]) for a in entry["attempts"]] == [(1, 200, None)]


def test_status_changes_the_worker_writes_are_announced_with_the_result(
    client, acme, hooks, dispatcher, sessions
):
    hook = register(client, acme, hooks.url)
    job_id = submit(client, acme)
    # What the runner writes: the row's status and an event, in one transaction each.
    with transaction(sessions) as session:
        session.execute(update(Job).where(Job.id == job_id).values(status="running", started_at=utcnow()))
        append_event(session, job_id, "job started on w1", data={"worker": "w1"})
    with transaction(sessions) as session:
        append_event(session, job_id, "epoch 1/2", data={"epoch": 1, "train_loss": 1.0})
    with transaction(sessions) as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(status="succeeded", finished_at=utcnow(), result={"test_accuracy": 0.93})
        )
        append_event(session, job_id, "job succeeded", data={"test_accuracy": 0.93})
    wait_for(lambda: dispatcher.run_once() == 0 and len(hooks.requests) == 3, timeout=30)
    assert hooks.types() == ["job.queued", "job.running", "job.succeeded"]
    done = hooks.requests[-1].json["data"]["job"]
    assert done["result"] == {"test_accuracy": 0.93}
    assert hooks.requests[0].json["data"]["job"]["result"] is None  # the queued snapshot shows no result
    assert [d["state"] for d in deliveries(client, acme, hook["id"])] == ["succeeded"] * 3


def test_a_failing_receiver_is_retried_with_backoff_until_it_answers(client, acme, hooks, dispatcher):
    hook = register(client, acme, hooks.url)
    hooks.answers = [500, 503]
    submit(client, acme)
    wait_for(lambda: dispatcher.run_once() >= 0 and len(hooks.requests) == 3, timeout=30, interval=0.05)
    (entry,) = deliveries(client, acme, hook["id"])
    assert entry["state"] == "succeeded"
    attempts = entry["attempts"]
    assert [a["status_code"] for a in attempts] == [500, 503, 200]
    assert attempts[0]["error"].startswith("HTTP 500") and attempts[2]["error"] is None
    times = [datetime.fromisoformat(a["at"]) for a in attempts]
    # The second retry waits twice as long as the first (the backoff is a lower bound on the gap).
    assert (times[1] - times[0]).total_seconds() >= RETRY_BASE
    assert (times[2] - times[1]).total_seconds() >= 2 * RETRY_BASE
    assert len({r.body for r in hooks.requests}) == 1  # every attempt sends the same body


def test_a_receiver_that_never_answers_well_is_given_up_after_the_last_attempt(
    client, acme, hooks, dispatcher
):
    hook = register(client, acme, hooks.url)
    hooks.answers = [500] * 10
    submit(client, acme)

    def given_up() -> bool:
        dispatcher.run_once()
        log = deliveries(client, acme, hook["id"])
        return bool(log) and log[0]["state"] == "failed"

    wait_for(given_up, timeout=30, interval=0.05)
    (entry,) = deliveries(client, acme, hook["id"])
    assert len(entry["attempts"]) == 3 and entry["next_attempt_at"] is None
    assert len(hooks.requests) == 3


def test_an_unreachable_receiver_is_logged_without_a_status_code(client, acme, dispatcher):
    with receiver() as closed:
        url = closed.url
    hook = register(client, acme, url)  # the port is closed now
    submit(client, acme)
    dispatcher.run_once()
    (entry,) = deliveries(client, acme, hook["id"])
    assert entry["state"] == "pending"
    (attempt,) = entry["attempts"]
    assert attempt["status_code"] is None and "Connect" in attempt["error"]


def test_only_changes_after_registration_and_only_the_tenants_own_jobs(
    client, acme, globex, hooks, dispatcher
):
    before = submit(client, acme)
    dispatcher.run_once()
    register(client, acme, hooks.url)
    submit(client, globex)  # another tenant's job: never sent to acme's endpoint
    after = submit(client, acme)
    assert client.post(f"/v1/jobs/{before}/cancel", headers=acme).status_code == 200
    dispatcher.run_once()
    sent = [(r.json["data"]["job"]["id"], r.json["type"]) for r in hooks.requests]
    assert sorted(sent) == sorted([(after, "job.queued"), (before, "job.cancelled")])


def test_deleting_an_endpoint_stops_its_deliveries(client, acme, hooks, dispatcher):
    hook = register(client, acme, hooks.url)
    assert client.delete(f"/v1/webhooks/{hook['id']}", headers=acme).status_code == 200
    submit(client, acme)
    dispatcher.run_once()
    assert hooks.requests == []


# ------------------------------------------------------------------------------------ client and CLI


def test_the_client_and_the_cli_manage_webhooks_with_typed_answers(
    client, acme, hooks, dispatcher, live_url, monkeypatch
):
    from typer.testing import CliRunner

    from distill import Client
    from distill.cli import app
    from distill.schemas import DeliveryRead, WebhookCreated, WebhookRead

    monkeypatch.setenv("COLUMNS", "220")
    key = acme["Authorization"].removeprefix("Bearer ")
    cli = ["--api-url", live_url, "--api-key", key]
    runner = CliRunner()
    created = runner.invoke(app, [*cli, "--json", "webhooks", "create", hooks.url, "-d", "ci"])
    assert created.exit_code == 0, created.output
    hook = WebhookCreated.model_validate_json(created.stdout)
    assert hook.secret and hook.description == "ci"

    with Client(live_url, key) as api:
        listed = api.list_webhooks()
        assert [type(h) for h in listed.data] == [WebhookRead] and listed.data[0].id == hook.id
        assert "secret" not in listed.data[0]  # shown once, at creation
        assert api.get_webhook(hook.id).url == hooks.url
        job_id = submit(client, acme)
        assert client.post(f"/v1/jobs/{job_id}/cancel", headers=acme).status_code == 200
        assert dispatcher.run_once() == 2
        log = api.webhook_deliveries(hook.id).data
    assert all(isinstance(entry, DeliveryRead) for entry in log)
    assert [(d.type, d.state, d.attempts[0].status_code) for d in log] == [
        ("job.cancelled", "succeeded", 200),
        ("job.queued", "succeeded", 200),
    ]

    shown = runner.invoke(app, [*cli, "webhooks", "deliveries", hook.id])
    assert shown.exit_code == 0, shown.output
    assert "job.cancelled" in shown.stdout and "job.queued" in shown.stdout and job_id in shown.stdout
    ids = runner.invoke(app, [*cli, "-q", "webhooks", "list"])
    assert ids.stdout.split() == [hook.id]
    deleted = runner.invoke(app, [*cli, "webhooks", "delete", hook.id])
    assert deleted.exit_code == 0 and f"deleted {hook.id}" in deleted.stdout
    gone = runner.invoke(app, [*cli, "webhooks", "get", hook.id])
    assert gone.exit_code == 1 and "404" in gone.stderr
