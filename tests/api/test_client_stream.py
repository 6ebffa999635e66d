"""The client and the CLI follow a job on the live stream (``/v1/jobs/{id}/events?stream=true``) and resume
after a dropped connection with ``Last-Event-ID``: each event shown exactly once.

The drops are real: a TCP proxy in front of the real API cuts every connection once it has forwarded a
few events, in the middle of the chunked response, as a flaky network or a restarting proxy would.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from helpers import wait_for
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from distill import Client
from distill.cli import app
from distill.clock import utcnow
from distill.db import transaction
from distill.events import append_event
from distill.schemas import EventRead, JobRead
from distill.tables import Job

DIGITS = {"data": {"train": {"builtin": "digits"}}, "training": {"epochs": 4, "batch_size": 10}}
EVENT = re.compile(rb"id: \d+\ndata: [^\n]*\n\n")
REQUEST = re.compile(rb"(GET|POST|DELETE) (\S+) HTTP/1\.1\r\n")


class CuttingProxy:
    """Forwards TCP connections to ``upstream``; a connection is cut (both sockets closed) right after it
    has carried ``cut_after`` server-sent events. Records each request line it forwarded."""

    def __init__(self, upstream: str, cut_after: int) -> None:
        host, port = upstream.removeprefix("http://").split(":")
        self.upstream = (host, int(port))
        self.cut_after = cut_after
        self.requests: list[str] = []
        self.cuts = 0
        self._server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}"
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._server.close()
        for sock in self._open:
            sock.close()

    def _accept(self) -> None:
        while True:
            try:
                downstream, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            self._open += [downstream, upstream]
            threading.Thread(target=self._requests, args=(downstream, upstream), daemon=True).start()
            threading.Thread(target=self._answers, args=(upstream, downstream), daemon=True).start()

    def _requests(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                self.requests += [m.group(2).decode() for m in REQUEST.finditer(data)]
                target.sendall(data)
        except OSError:
            pass

    def _answers(self, source: socket.socket, target: socket.socket) -> None:
        events, pending = 0, b""
        try:
            while data := source.recv(65536):
                pending += data
                while match := EVENT.search(pending):
                    target.sendall(pending[: match.end()])
                    pending = pending[match.end() :]
                    events += 1
                    if events >= self.cut_after:
                        self.cuts += 1
                        raise ConnectionAbortedError
                held = pending.rfind(b"id: ")  # the start of an event not yet complete
                keep = pending[held:] if held >= 0 else b""
                target.sendall(pending[: len(pending) - len(keep)])
                pending = keep
        except OSError:
            pass
        finally:
            for sock in (source, target):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()


@pytest.fixture
def proxy(live_url: str) -> Iterator[CuttingProxy]:
    cutting = CuttingProxy(live_url, cut_after=2)
    yield cutting
    cutting.close()


@pytest.fixture
def sessions(client: TestClient) -> sessionmaker[Session]:
    factory: sessionmaker[Session] = client.app_state.session_factory  # type: ignore[attr-defined]
    return factory


def key_of(headers: dict[str, str]) -> str:
    return headers["Authorization"].removeprefix("Bearer ")


def submit(client: TestClient, headers: dict[str, str]) -> str:
    response = client.post("/v1/jobs", headers=headers, json=DIGITS)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def write(
    sessions: sessionmaker[Session],
    job_id: str,
    message: str,
    data: dict[str, Any] | None = None,
    **values: Any,
) -> None:
    with transaction(sessions) as session:
        if values:
            session.execute(update(Job).where(Job.id == job_id).values(**values))
        append_event(session, job_id, message, data=data)


def train(sessions: sessionmaker[Session], job_id: str, pause: float = 0.05) -> None:
    """What a worker writes for a 4-epoch job, with a pause between events (so they arrive live)."""
    write(sessions, job_id, "job started on w1", {"status": "running"}, status="running", started_at=utcnow())
    for epoch in range(1, 5):
        time.sleep(pause)
        progress = {"epoch": epoch, "epochs": 4, "step": 18 * epoch, "steps": 72}
        data = {
            "epoch": epoch,
            "step": 18 * epoch,
            "train_loss": 2.0 / epoch,
            "val_accuracy": 0.5 + epoch / 10,
        }
        write(sessions, job_id, f"epoch {epoch}/4", data, progress=progress)
    time.sleep(pause)
    write(
        sessions, job_id, "job succeeded", {"status": "succeeded"}, status="succeeded", finished_at=utcnow()
    )


MESSAGES = ["job queued", "job started on w1", *(f"epoch {e}/4" for e in range(1, 5)), "job succeeded"]


def test_the_client_resumes_a_dropped_stream_and_sees_every_event_once(client, acme, sessions, proxy):
    job_id = submit(client, acme)
    worker = threading.Thread(target=train, args=(sessions, job_id), daemon=True)
    worker.start()
    with Client(proxy.url, key_of(acme), backoff=0.05) as api:
        items = list(api.follow_events(job_id))
    worker.join(timeout=10)
    events = [item.event for item in items if item.event is not None]
    assert [e.seq for e in events] == list(range(1, 8))
    assert [e.message for e in events] == MESSAGES
    assert items[-1].kind == "end" and items[-1].status == "succeeded"
    # 7 events, the proxy cutting after 2 per connection: at least 4 connections, each a resumption.
    connections = sum(1 for item in items if item.kind == "connected")
    assert proxy.cuts >= 3 and connections == proxy.cuts + 1
    streams = [r for r in proxy.requests if "stream=true" in r]
    assert len(streams) == connections


def test_wait_feeds_every_event_once_from_the_stream_and_reads_progress(client, acme, sessions, proxy):
    job_id = submit(client, acme)
    updates: list[tuple[JobRead, list[EventRead]]] = []
    threading.Thread(target=train, args=(sessions, job_id, 0.2), daemon=True).start()
    with Client(proxy.url, key_of(acme), backoff=0.05) as api:
        final = api.wait(job_id, poll_interval=0.1, on_update=lambda j, e: updates.append((j, e)))
    assert final.status == "succeeded"
    seen = [event.message for _, batch in updates for event in batch]
    assert seen == MESSAGES
    # the bar's inputs: each epoch event with its losses and accuracy, the job read with the step progress
    epoch_updates = [(job, e) for job, batch in updates for e in batch if e.message.startswith("epoch")]
    assert [e.data["val_accuracy"] for _, e in epoch_updates] == pytest.approx([0.6, 0.7, 0.8, 0.9])
    assert all(job.progress.get("epoch") == e.data["epoch"] for job, e in epoch_updates)
    # followed on the stream, never by polling the events page
    assert not [r for r in proxy.requests if "/events" in r and "stream=true" not in r]


def test_cli_logs_follow_shows_every_event_once_across_drops(client, acme, sessions, proxy, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    job_id = submit(client, acme)
    threading.Thread(target=train, args=(sessions, job_id), daemon=True).start()
    result = CliRunner().invoke(
        app, ["--api-url", proxy.url, "--api-key", key_of(acme), "jobs", "logs", job_id, "-f"]
    )
    assert result.exit_code == 0, result.output
    for message in MESSAGES:
        assert result.stdout.count(f"info: {message}") == 1, result.stdout
    assert result.stdout.strip().splitlines()[-1] == f"{job_id} succeeded"
    assert proxy.cuts >= 3


def test_cli_create_wait_draws_the_bar_from_the_stream(client, acme, sessions, proxy, monkeypatch, tmp_path):
    monkeypatch.setenv("COLUMNS", "250")
    spec = tmp_path / "job.yaml"
    spec.write_text("name: streamed\ndata:\n  train: {builtin: digits}\ntraining:\n  epochs: 4\n")

    def worker() -> None:
        def created() -> str | None:
            with sessions() as session:
                return session.scalar(select(Job.id).where(Job.name == "streamed"))

        wait_for(lambda: created() is not None, timeout=30)
        job_id = created()
        assert job_id is not None
        train(sessions, job_id)

    threading.Thread(target=worker, daemon=True).start()
    result = CliRunner().invoke(
        app, ["--api-url", proxy.url, "--api-key", key_of(acme), "jobs", "create", str(spec), "--wait"]
    )
    # no artifacts were written by this fake worker's job: the result table shows dashes; exit 0 (succeeded)
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "epoch 4/4" in text and "step 72/72" in text
    assert "val acc 0.900" in text and "loss 0.5" in text
    assert not [r for r in proxy.requests if "/events" in r and "stream=true" not in r]


def test_a_job_that_does_not_exist_is_an_error_not_a_retry_loop(acme, live_url):
    with Client(live_url, key_of(acme), backoff=0.05) as api:
        started = time.monotonic()
        with pytest.raises(Exception) as info:
            list(api.stream_events("job_00000000000000000000000000"))
    assert getattr(info.value, "status", None) in (404, 422)
    assert time.monotonic() - started < 5
