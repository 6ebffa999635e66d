"""A job's live view: ``GET /v1/jobs/{id}/events?stream=true`` (server-sent events, resumable with
Last-Event-ID) over a real HTTP server, and ``GET /v1/jobs/{id}/metrics`` (time series).

Events are written the way the runner writes them (``append_event`` next to the row's update).
"""

from __future__ import annotations

import json
import threading
from contextlib import ExitStack
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from distill.clock import utcnow
from distill.db import transaction
from distill.events import append_event
from distill.storage import artifact_key
from distill.tables import Artifact, Job, JobEvent

DIGITS = {"data": {"train": {"builtin": "digits"}}, "training": {"epochs": 3, "batch_size": 10}}


@pytest.fixture
def sessions(client: TestClient) -> sessionmaker[Session]:
    factory: sessionmaker[Session] = client.app_state.session_factory  # type: ignore[attr-defined]
    return factory


def submit(client: TestClient, headers: dict[str, str], **extra: Any) -> str:
    response = client.post("/v1/jobs", headers=headers, json={**DIGITS, **extra})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def write(
    sessions: sessionmaker[Session], job_id: str, message: str, data: dict | None = None, **values: Any
) -> None:
    with transaction(sessions) as session:
        if values:
            session.execute(update(Job).where(Job.id == job_id).values(**values))
        append_event(session, job_id, message, data=data)


def read_stream(response: httpx.Response, stop_after: int | None = None) -> list[dict[str, Any]]:
    """The SSE blocks of ``response`` as dicts (``id``, ``event``, ``data``, ``comment``) until it ends."""
    blocks: list[dict[str, Any]] = []
    block: dict[str, Any] = {}
    for line in response.iter_lines():
        if line == "":
            if block:
                blocks.append(block)
                block = {}
                if stop_after is not None and len(blocks) >= stop_after:
                    break
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "":
            block["comment"] = value
        elif name == "data":
            block["data"] = json.loads(value)
        else:
            block[name] = value
    return blocks


def events_of(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [b for b in blocks if "id" in b]


# ----------------------------------------------------------------------------------------------- SSE


def test_a_finished_jobs_stream_sends_every_event_then_ends(client, acme, live_url):
    job_id = submit(client, acme)
    assert client.post(f"/v1/jobs/{job_id}/cancel", headers=acme).status_code == 200
    with httpx.stream(
        "GET", f"{live_url}/v1/jobs/{job_id}/events?stream=true", headers=acme, timeout=30
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        blocks = read_stream(r)
    events = events_of(blocks)
    assert [e["id"] for e in events] == ["1", "2"]
    assert [e["data"]["message"] for e in events] == ["job queued", "job cancelled before it started"]
    assert events[0]["data"]["seq"] == 1
    assert blocks[-1]["event"] == "end" and blocks[-1]["data"] == {"status": "cancelled"}


def test_a_running_jobs_events_arrive_as_they_are_written_and_resume_after_last_event_id(
    client, acme, live_url, sessions
):
    job_id = submit(client, acme)
    write(sessions, job_id, "job started on w1", {"worker": "w1"}, status="running", started_at=utcnow())
    url = f"{live_url}/v1/jobs/{job_id}/events?stream=true"
    with httpx.stream("GET", url, headers=acme, timeout=30) as r:
        first = events_of(read_stream(r, stop_after=3))  # retry, then the two events written so far
    assert [e["data"]["message"] for e in first] == ["job queued", "job started on w1"]

    done = threading.Event()

    def worker() -> None:
        write(sessions, job_id, "epoch 1/3", {"epoch": 1, "step": 18, "train_loss": 1.5})
        write(sessions, job_id, "job succeeded", {}, status="succeeded", finished_at=utcnow())
        done.set()

    # Reconnect after the last event seen, as an EventSource does: only what came after it.
    with httpx.stream("GET", url, headers={**acme, "Last-Event-ID": first[-1]["id"]}, timeout=30) as r:
        threading.Thread(target=worker, daemon=True).start()
        rest = read_stream(r)
    assert done.is_set()
    assert [(e["id"], e["data"]["message"]) for e in events_of(rest)] == [
        ("3", "epoch 1/3"),
        ("4", "job succeeded"),
    ]
    assert rest[-1]["event"] == "end" and rest[-1]["data"]["status"] == "succeeded"


def test_a_quiet_stream_sends_keep_alive_comments(client, acme, live_url):
    job_id = submit(client, acme)
    with httpx.stream(
        "GET", f"{live_url}/v1/jobs/{job_id}/events?stream=true", headers=acme, timeout=30
    ) as r:
        blocks = read_stream(r, stop_after=4)
    assert blocks[1]["data"]["message"] == "job queued"
    assert any(b.get("comment") == "keep-alive" for b in blocks[2:])


def test_many_open_streams_hold_no_thread_or_connection_and_other_requests_still_answer(
    client, acme, live_url
):
    # More open streams than the database pool (10 + 10 overflow) and the thread pool (40) have room for:
    # a stream that kept a connection or a thread while it waits would starve the request after them.
    job_id = submit(client, acme)
    url = f"{live_url}/v1/jobs/{job_id}/events?stream=true"
    with (
        httpx.Client(headers=acme, timeout=30, limits=httpx.Limits(max_connections=100)) as http,
        ExitStack() as open_,
    ):
        for _ in range(45):
            response = open_.enter_context(http.stream("GET", url))
            assert events_of(read_stream(response, stop_after=2))[0]["data"]["message"] == "job queued"
        answer = http.get(f"{live_url}/v1/jobs/{job_id}", timeout=10)
        assert answer.status_code == 200 and answer.json()["status"] == "queued"


def test_the_stream_is_the_tenants_own_and_needs_a_key(client, acme, globex, live_url):
    job_id = submit(client, acme)
    url = f"{live_url}/v1/jobs/{job_id}/events?stream=true"
    assert httpx.get(url, timeout=10).status_code == 401
    other = httpx.get(url, headers=globex, timeout=10)
    assert other.status_code == 404 and other.json()["error"]["field"] == "id"
    bad = httpx.get(url, headers={**acme, "Last-Event-ID": "abc"}, timeout=10)
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "Last-Event-ID"


def test_without_stream_the_events_route_still_pages_json(client, acme):
    job_id = submit(client, acme)
    page = client.get(f"/v1/jobs/{job_id}/events", headers=acme).json()
    assert page["object"] == "list" and [e["message"] for e in page["data"]] == ["job queued"]


# ------------------------------------------------------------------------------------------- metrics


def test_metrics_give_each_epoch_with_learning_rate_and_throughput(client, acme, sessions):
    job_id = submit(client, acme, training={"epochs": 2, "batch_size": 10, "learning_rate": 0.01})
    write(sessions, job_id, "job started on w1", {"worker": "w1"}, status="running", started_at=utcnow())
    assert client.get(f"/v1/jobs/{job_id}/metrics", headers=acme).json()["series"][0]["points"] == []
    write(
        sessions,
        job_id,
        "epoch 1/2",
        {"epoch": 1, "step": 20, "train_loss": 1.2, "val_accuracy": 0.6, "val_loss": 1.1},
    )
    write(
        sessions,
        job_id,
        "epoch 2/2",
        {"epoch": 2, "step": 40, "train_loss": 0.7, "val_accuracy": 0.8, "val_loss": 0.9},
    )
    # The figures the throughput is computed from: 20 steps of 10 examples in 2 s of event time.
    with transaction(sessions) as session:
        for seq, seconds in ((2, 0), (3, 2), (4, 4)):
            session.execute(
                update(JobEvent)
                .where(JobEvent.job_id == job_id, JobEvent.seq == seq)
                .values(created_at=utcnow().replace(microsecond=0) + timedelta(seconds=seconds))
            )
    metrics = client.get(f"/v1/jobs/{job_id}/metrics", headers=acme).json()
    assert metrics["object"] == "metrics" and metrics["job_id"] == job_id and metrics["status"] == "running"
    (series,) = metrics["series"]
    assert series["role"] == "student" and series["name"] == "model"  # no teacher: a model on labels
    points = series["points"]
    assert [p["epoch"] for p in points] == [1, 2]
    assert [p["train_loss"] for p in points] == [1.2, 0.7]
    assert [p["val_accuracy"] for p in points] == [0.6, 0.8]
    assert [p["learning_rate"] for p in points] == [0.01, 0.01]
    assert [p["throughput"] for p in points] == [100.0, 100.0]  # examples per second


def test_metrics_of_a_finished_job_add_the_baseline_and_the_teacher(client, acme, sessions, api_settings):
    job_id = submit(client, acme, baseline=True)
    write(sessions, job_id, "job started on w1", {}, status="running", started_at=utcnow())
    write(sessions, job_id, "epoch 1/3", {"epoch": 1, "step": 5, "train_loss": 1.0, "val_accuracy": 0.7})
    store = client.app_state.store  # type: ignore[attr-defined]
    with transaction(sessions) as session:
        tenant_id = session.get_one(Job, job_id).tenant_id
    key = artifact_key(tenant_id, job_id, "report.json")
    history = [
        {"epoch": 1.0, "train_loss": 1.4, "val_accuracy": 0.5},
        {"epoch": 2.0, "train_loss": 1.1, "val_accuracy": 0.6},
    ]
    store.put_bytes(key, json.dumps({"baseline_history": history}).encode())
    with transaction(sessions) as session:
        session.add(Artifact(job_id=job_id, name="report.json", bytes=10, sha256="0" * 64, storage_key=key))
    write(
        sessions,
        job_id,
        "job succeeded",
        {},
        status="succeeded",
        finished_at=utcnow(),
        result={"test_accuracy": 0.8, "teacher_test_accuracy": 0.9},
    )
    metrics = client.get(f"/v1/jobs/{job_id}/metrics", headers=acme).json()
    by_role = {s["role"]: s for s in metrics["series"]}
    assert [p["val_accuracy"] for p in by_role["student"]["points"]] == [0.7]
    assert [(p["epoch"], p["val_accuracy"]) for p in by_role["baseline"]["points"]] == [(1, 0.5), (2, 0.6)]
    assert by_role["teacher"]["summary"] == {"test_accuracy": 0.9}


def test_metrics_are_the_tenants_own(client, acme, globex):
    job_id = submit(client, acme)
    assert client.get(f"/v1/jobs/{job_id}/metrics", headers=globex).status_code == 404
    assert client.get(f"/v1/jobs/{job_id}/metrics").status_code == 401
