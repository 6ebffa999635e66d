"""Client-side behaviour of ``distill.Client`` that a real server cannot be made to show on demand (a
redirect to another host, a corrupted download, a 503 storm), against ``httpx.MockTransport`` fakes.
The client against the real API is covered in tests/integration/ (test_cli.py and the job flows)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from distill import Client, DistillError
from distill.schemas import EventRead, FileRead, JobRead
from distill.spec import JobSpec

API = "http://api.test"
S3 = "https://s3.test"
KEY = "dk_test_secret"


def make_client(handler: Any, base_url: str = API, api_key: str | None = KEY) -> Client:
    return Client(base_url, api_key, backoff=0, transport=httpx.MockTransport(handler))


NOW = "2026-01-01T00:00:00Z"


def job_body(job_id: str = "job_1", status: str = "queued", **extra: Any) -> dict[str, Any]:
    """A ``JobRead`` as the API sends it."""
    body = {
        "id": job_id,
        "object": "job",
        "status": status,
        "name": None,
        "spec": {},
        "created_at": NOW,
        "started_at": None,
        "finished_at": None,
        "progress": {},
        "result": None,
        "error": None,
        "cancel_requested": False,
    }
    return {**body, **extra}


def file_body(file_id: str = "file_1", **extra: Any) -> dict[str, Any]:
    body = {
        "id": file_id,
        "object": "file",
        "filename": "transfer.npz",
        "bytes": 9,
        "sha256": "0" * 64,
        "purpose": "dataset",
        "created_at": NOW,
        "metadata": {},
    }
    return {**body, **extra}


def event_body(seq: int, message: str = "m", **data: Any) -> dict[str, Any]:
    return {"seq": seq, "created_at": NOW, "level": "info", "message": message, "data": data}


def error_body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "field": field}}


# -- errors --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "status", "code", "message", "field"),
    [
        (
            httpx.Response(404, json=error_body("not_found", "no job job_x")),
            404,
            "not_found",
            "no job job_x",
            None,
        ),
        (
            httpx.Response(422, json=error_body("invalid_spec", "bad epochs", "training.epochs")),
            422,
            "invalid_spec",
            "bad epochs",
            "training.epochs",
        ),
        (
            httpx.Response(401, json=error_body("unauthorized", "missing key")),
            401,
            "unauthorized",
            "missing key",
            None,
        ),
        (
            httpx.Response(
                422,
                json={
                    "detail": [{"loc": ["body", "data", "train"], "msg": "Field required", "type": "missing"}]
                },
            ),
            422,
            "http_422",
            "Field required",
            "data.train",
        ),
        (httpx.Response(502, text="Bad Gateway from proxy"), 502, "http_502", "Bad Gateway from proxy", None),
        (httpx.Response(500), 500, "http_500", "Internal Server Error", None),
    ],
)
def test_errors_parse_into_distill_error(
    response: httpx.Response, status: int, code: str, message: str, field: str | None
) -> None:
    with make_client(lambda request: response) as client, pytest.raises(DistillError) as info:
        client.get_job("job_x")
    error = info.value
    assert (error.status, error.code, error.message, error.field) == (status, code, message, field)
    assert code in str(error)


def test_connection_failure_is_a_distill_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with make_client(handler) as client, pytest.raises(DistillError) as info:
        client.health()
    assert info.value.status is None
    assert info.value.code == "connection_error"


def test_sends_bearer_key_and_keeps_a_base_path() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"object": "list", "data": [], "has_more": False})

    with make_client(handler, base_url=f"{API}/distill/") as client:
        client.list_jobs(limit=5, status="running")
    assert seen[0].headers["authorization"] == f"Bearer {KEY}"
    assert seen[0].url.path == "/distill/v1/jobs"
    assert dict(seen[0].url.params) == {"limit": "5", "status": "running"}


def test_defaults_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISTILL_API_URL", "http://env.test:9000/")
    monkeypatch.setenv("DISTILL_API_KEY", "dk_env")
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"status": "ok"})

    with Client(transport=httpx.MockTransport(handler)) as client:
        assert client.health() == {"status": "ok"}
    assert str(seen[0].url) == "http://env.test:9000/healthz"
    assert seen[0].headers["authorization"] == "Bearer dk_env"


def test_create_job_accepts_a_job_spec_model() -> None:
    bodies: list[Any] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(201, json=job_body())

    spec = JobSpec.model_validate({"data": {"train": {"builtin": "mnist1d"}}, "training": {"epochs": 3}})
    with make_client(handler) as client:
        job = client.create_job(spec)
    assert isinstance(job, JobRead)
    assert job.id == "job_1" and job["id"] == "job_1"  # typed, and still readable as the JSON object
    assert bodies[0]["data"] == {"train": {"builtin": "mnist1d"}}
    assert bodies[0]["training"]["epochs"] == 3
    JobSpec.model_validate(bodies[0])


def test_upload_file_is_multipart_with_purpose(tmp_path: Path) -> None:
    path = tmp_path / "transfer.npz"
    path.write_bytes(b"npz-bytes")
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        request.read()
        seen.append(request)
        return httpx.Response(201, json=file_body())

    with make_client(handler) as client:
        file = client.upload_file(path, "dataset")
    assert isinstance(file, FileRead) and file.id == "file_1"
    body = seen[0].content
    assert seen[0].headers["content-type"].startswith("multipart/form-data")
    assert b'name="purpose"' in body and b"dataset" in body
    assert b'filename="transfer.npz"' in body and b"npz-bytes" in body


# -- cursors -------------------------------------------------------------------------------------------------


def test_iter_jobs_follows_the_cursor() -> None:
    jobs = [job_body(f"job_{n}", "succeeded") for n in range(5, 0, -1)]  # newest first
    seen: list[dict[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        params = dict(request.url.params)
        seen.append(params)
        start = 0
        if "after" in params:
            start = next(i for i, job in enumerate(jobs) if job["id"] == params["after"]) + 1
        page = jobs[start : start + int(params["limit"])]
        return httpx.Response(
            200, json={"object": "list", "data": page, "has_more": start + len(page) < len(jobs)}
        )

    with make_client(handler) as client:
        ids = [job.id for job in client.iter_jobs(status="succeeded", page_size=2)]
    assert ids == ["job_5", "job_4", "job_3", "job_2", "job_1"]
    assert [params.get("after") for params in seen] == [None, "job_4", "job_2"]
    assert all(params["status"] == "succeeded" for params in seen)


def test_iter_events_follows_seq() -> None:
    events: list[dict[str, Any]] = [event_body(n, f"m{n}") for n in range(1, 6)]

    def handler(request: httpx.Request) -> httpx.Response:
        after = int(request.url.params.get("after", 0))
        page = [e for e in events if e["seq"] > after][:2]
        return httpx.Response(200, json={"object": "list", "data": page, "has_more": page[-1]["seq"] < 5})

    with make_client(handler) as client:
        assert [e.seq for e in client.iter_events("job_1")] == [1, 2, 3, 4, 5]
        assert [e.seq for e in client.iter_events("job_1", after=3)] == [4, 5]


# -- wait ----------------------------------------------------------------------------------------------------


class FakeJob:
    """A job that moves one step per ``GET /v1/jobs/{id}`` and writes an event per step."""

    def __init__(self, statuses: list[str]) -> None:
        self.statuses = statuses
        self.polls = 0
        self.events: list[dict[str, Any]] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/v1/jobs/job_1":
            status = self.statuses[min(self.polls, len(self.statuses) - 1)]
            self.polls += 1
            seq = len(self.events) + 1
            self.events.append(event_body(seq, status, val_accuracy=seq / 10))
            progress = {"epoch": self.polls, "epochs": 3, "step": 0, "steps": 0}
            return httpx.Response(200, json=job_body("job_1", status, progress=progress))
        if path == "/v1/jobs/job_1/events":
            after = int(request.url.params.get("after", 0))
            data = [event for event in self.events if event["seq"] > after]
            return httpx.Response(200, json={"object": "list", "data": data, "has_more": False})
        return httpx.Response(404, json=error_body("not_found", path))


@pytest.mark.parametrize("terminal", ["succeeded", "failed", "cancelled"])
def test_wait_stops_at_a_terminal_status(terminal: str) -> None:
    fake = FakeJob(["queued", "running", "running", terminal, "running"])
    updates: list[tuple[str, list[int]]] = []

    def on_update(job: JobRead, events: list[EventRead]) -> None:
        updates.append((job.status, [event.seq for event in events]))

    with make_client(fake.handler) as client:
        final = client.wait("job_1", poll_interval=0, on_update=on_update)
    assert final.status == terminal
    assert fake.polls == 4
    # Every event exactly once, in order, each after the job read that wrote it.
    assert updates == [("queued", [1]), ("running", [2]), ("running", [3]), (terminal, [4])]


def test_wait_retries_transient_errors_but_not_client_errors() -> None:
    fake = FakeJob(["running", "succeeded"])
    calls = {"n": 0}

    def flaky(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] in (1, 2):
            return httpx.Response(503, json=error_body("unavailable", "db busy"))
        return fake.handler(request)

    with make_client(flaky) as client:
        assert client.wait("job_1", poll_interval=0).status == "succeeded"

    with make_client(fake.handler) as client, pytest.raises(DistillError) as info:
        client.wait("job_missing", poll_interval=0)
    assert info.value.status == 404


# -- the event stream ----------------------------------------------------------------------------------------


def sse(*events: dict[str, Any], end: str | None = None, comment: bool = False) -> bytes:
    """A ``text/event-stream`` body as the API writes it (``retry`` first, an optional keep-alive)."""
    parts = ["retry: 2000\n\n"]
    if comment:
        parts.append(": keep-alive\n\n")
    parts += [f"id: {e['seq']}\ndata: {json.dumps(e)}\n\n" for e in events]
    if end is not None:
        parts.append(f"event: end\ndata: {json.dumps({'status': end})}\n\n")
    return "".join(parts).encode()


def test_a_stream_cut_short_is_resumed_after_the_last_event_id_without_repeats() -> None:
    seen_ids: list[str | None] = []
    bodies = [
        sse(event_body(1, "job queued"), event_body(2, "job started")),  # ends without `end`: dropped
        sse(event_body(2, "job started"), event_body(3, "epoch 1/1"), comment=True),  # a resent event
        sse(event_body(4, "job succeeded"), end="succeeded"),
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.params["stream"] == "true"
        seen_ids.append(request.headers.get("last-event-id"))
        body = bodies[len(seen_ids) - 1]
        return httpx.Response(200, content=body, headers={"content-type": "text/event-stream; charset=utf-8"})

    with make_client(handler) as client:
        items = list(client.follow_events("job_1"))
    assert seen_ids == [None, "2", "3"]
    assert [i.event.seq for i in items if i.event is not None] == [1, 2, 3, 4]
    assert [i.kind for i in items].count("connected") == 3
    assert "keep-alive" in [i.kind for i in items]
    assert items[-1].kind == "end" and items[-1].status == "succeeded"


def test_a_stream_that_keeps_dropping_without_events_gives_up() -> None:
    calls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        return httpx.Response(200, content=sse(), headers={"content-type": "text/event-stream"})

    client = Client(API, KEY, backoff=0, retries=2, transport=httpx.MockTransport(handler))
    with client, pytest.raises(DistillError) as info:
        list(client.stream_events("job_1"))
    assert info.value.code == "connection_error" and calls["n"] == 3


def test_wait_falls_back_to_polling_when_the_server_has_no_stream() -> None:
    fake = FakeJob(["running", "succeeded"])
    streams = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.params.get("stream") == "true":
            streams["n"] += 1  # an older API ignores `stream` and answers the JSON page
        return fake.handler(request)

    seen: list[int] = []
    with make_client(handler) as client:
        final = client.wait(
            "job_1", poll_interval=0, on_update=lambda job, events: seen.extend(e.seq for e in events)
        )
    assert final.status == "succeeded" and streams["n"] == 1
    assert seen == [1, 2]


def test_wait_follows_the_stream_and_reads_the_job_for_each_batch() -> None:
    reads = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            assert request.url.params["stream"] == "true"  # never the polled page
            body = sse(
                event_body(1, "job queued"), event_body(2, "epoch 1/1", val_accuracy=0.5), end="succeeded"
            )
            return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})
        reads["n"] += 1  # the stream has ended (its whole body is sent at once): the job has too
        return httpx.Response(200, json=job_body("job_1", "succeeded"))

    updates: list[tuple[str, list[int]]] = []
    with make_client(handler) as client:
        final = client.wait(
            "job_1", poll_interval=5, on_update=lambda j, e: updates.append((j.status, [x.seq for x in e]))
        )
    assert final.status == "succeeded"
    assert [seq for _, seqs in updates for seq in seqs] == [1, 2]  # each once, with no 5 s poll waited
    assert updates[-1][0] == "succeeded" and 1 <= reads["n"] <= 3


# -- retries -------------------------------------------------------------------------------------------------


class Flaky:
    """Answers ``failures`` (an HTTP status, or a connection error for 0) before the real answer."""

    def __init__(self, failures: list[int], answer: httpx.Response, retry_after: str | None = None) -> None:
        self.failures = list(failures)
        self.answer = answer
        self.retry_after = retry_after
        self.requests: list[httpx.Request] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.failures:
            status = self.failures.pop(0)
            if status == 0:
                raise httpx.ConnectError("connection refused", request=request)
            headers = {"Retry-After": self.retry_after} if self.retry_after else {}
            return httpx.Response(status, json=error_body("unavailable", "busy"), headers=headers)
        return self.answer


def test_reads_retry_connection_errors_503_and_429() -> None:
    flaky = Flaky([0, 503, 429], httpx.Response(200, json=job_body("job_1", "running")), retry_after="0")
    with make_client(flaky.handler) as client:
        assert client.get_job("job_1").status == "running"
    assert len(flaky.requests) == 4


def test_retries_stop_after_the_configured_attempts() -> None:
    flaky = Flaky([503] * 10, httpx.Response(200, json=job_body()))
    transport = httpx.MockTransport(flaky.handler)
    with (
        Client(API, KEY, retries=2, backoff=0, transport=transport) as client,
        pytest.raises(DistillError) as info,
    ):
        client.get_job("job_1")
    assert info.value.status == 503
    assert len(flaky.requests) == 3


def test_client_errors_are_not_retried() -> None:
    flaky = Flaky([404], httpx.Response(200, json=job_body()))
    with make_client(flaky.handler) as client, pytest.raises(DistillError) as info:
        client.get_job("job_1")
    assert info.value.status == 404
    assert len(flaky.requests) == 1


def test_job_creation_and_uploads_are_sent_once(tmp_path: Path) -> None:
    flaky = Flaky([503, 503], httpx.Response(201, json=job_body()))
    with make_client(flaky.handler) as client, pytest.raises(DistillError) as info:
        client.create_job({"data": {"train": {"builtin": "digits"}}})
    assert info.value.status == 503
    assert len(flaky.requests) == 1  # a retry could queue the job twice
    path = tmp_path / "data.csv"
    path.write_text("label,a\n0,1\n")
    flaky = Flaky([0], httpx.Response(201, json=file_body()))
    with make_client(flaky.handler) as client, pytest.raises(DistillError) as info:
        client.upload_file(path)
    assert info.value.code == "connection_error"
    assert len(flaky.requests) == 1


def test_an_answer_that_is_not_the_api_schema_is_a_bad_response() -> None:
    answer = httpx.Response(200, json={"id": "job_1"})
    with make_client(lambda request: answer) as client, pytest.raises(DistillError) as info:
        client.get_job("job_1")
    assert info.value.code == "bad_response"
    assert "status" in info.value.message


def test_wait_times_out() -> None:
    fake = FakeJob(["running"])
    with make_client(fake.handler) as client, pytest.raises(DistillError) as info:
        client.wait("job_1", poll_interval=0.01, timeout=0.05)
    assert info.value.code == "timeout"


# -- downloads -----------------------------------------------------------------------------------------------

MODEL = b"\x00safetensors-bytes\x01" * 1000
MODEL_SHA = hashlib.sha256(MODEL).hexdigest()


class FakeStore:
    """The API answers 307 to a presigned URL on another host; records what each host saw."""

    def __init__(
        self, listed_sha: str = MODEL_SHA, store_status: int = 200, location: str | None = None
    ) -> None:
        self.listed_sha = listed_sha
        self.store_status = store_status
        self.location = location or f"{S3}/bucket/jobs/job_1/model.safetensors?X-Amz-Signature=abc"
        self.requests: list[httpx.Request] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        url = request.url
        if url.host == "api.test":
            if url.path == "/v1/jobs/job_1/artifacts":
                item = {
                    "name": "model.safetensors",
                    "bytes": len(MODEL),
                    "sha256": self.listed_sha,
                    "created_at": NOW,
                }
                return httpx.Response(200, json={"object": "list", "data": [item], "has_more": False})
            if url.path == "/v1/jobs/job_1/artifacts/model.safetensors":
                return httpx.Response(307, headers={"Location": self.location})
            if url.path == "/objects/model.safetensors":
                return httpx.Response(200, content=MODEL)
        if url.host == "s3.test" and url.params.get("X-Amz-Signature") == "abc":
            if self.store_status != 200:
                return httpx.Response(self.store_status, text="<Error><Code>AccessDenied</Code></Error>")
            return httpx.Response(200, content=MODEL)
        return httpx.Response(404, json=error_body("not_found", str(url)))


def test_download_follows_the_redirect_without_leaking_the_key(tmp_path: Path) -> None:
    store = FakeStore()
    with make_client(store.handler) as client:
        path = client.download_artifact("job_1", "model.safetensors", tmp_path)
    assert path == tmp_path / "model.safetensors"
    assert path.read_bytes() == MODEL
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]  # no temp file left
    api_requests = [r for r in store.requests if r.url.host == "api.test"]
    s3_requests = [r for r in store.requests if r.url.host == "s3.test"]
    assert len(s3_requests) == 1
    assert "authorization" not in s3_requests[0].headers
    assert KEY not in str(s3_requests[0].headers)
    assert all(r.headers["authorization"] == f"Bearer {KEY}" for r in api_requests)


def test_download_keeps_the_key_on_a_same_origin_redirect(tmp_path: Path) -> None:
    store = FakeStore(location="/objects/model.safetensors")
    target = tmp_path / "sub" / "student.safetensors"
    with make_client(store.handler) as client:
        assert client.download_artifact("job_1", "model.safetensors", target) == target
    assert target.read_bytes() == MODEL
    assert store.requests[-1].url.path == "/objects/model.safetensors"
    assert store.requests[-1].headers["authorization"] == f"Bearer {KEY}"


def test_download_rejects_a_checksum_mismatch(tmp_path: Path) -> None:
    store = FakeStore(listed_sha="0" * 64)
    with make_client(store.handler) as client, pytest.raises(DistillError) as info:
        client.download_artifact("job_1", "model.safetensors", tmp_path)
    assert info.value.code == "checksum_mismatch"
    assert list(tmp_path.iterdir()) == []


def test_download_reports_a_store_error_and_leaves_nothing(tmp_path: Path) -> None:
    store = FakeStore(store_status=403)
    with make_client(store.handler) as client, pytest.raises(DistillError) as info:
        client.download_artifact("job_1", "model.safetensors", tmp_path)
    assert info.value.status == 403
    assert "AccessDenied" in info.value.message
    assert list(tmp_path.iterdir()) == []


def test_download_retries_a_dropped_connection(tmp_path: Path) -> None:
    store = FakeStore()
    drops = {"left": 1}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "s3.test" and drops["left"]:
            drops["left"] -= 1
            raise httpx.ReadError("connection reset", request=request)
        return store.handler(request)

    with make_client(handler) as client:
        path = client.download_artifact("job_1", "model.safetensors", tmp_path)
    assert path.read_bytes() == MODEL
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]


def test_download_of_an_unlisted_artifact(tmp_path: Path) -> None:
    with make_client(FakeStore().handler) as client, pytest.raises(DistillError) as info:
        client.download_artifact("job_1", "report.json", tmp_path)
    assert info.value.code == "not_found"
    with make_client(FakeStore().handler) as client, pytest.raises(DistillError):
        client.download_artifact("job_1", "../model.safetensors", tmp_path)


def test_wait_polls_when_the_stream_keeps_failing_but_the_api_answers() -> None:
    fake = FakeJob(["running", "running", "succeeded"])
    streams = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.params.get("stream") == "true":
            streams["n"] += 1  # e.g. a proxy that cuts long responses at once
            return httpx.Response(200, content=sse(), headers={"content-type": "text/event-stream"})
        return fake.handler(request)

    client = Client(API, KEY, backoff=0, retries=1, transport=httpx.MockTransport(handler))
    seen: list[int] = []
    with client:
        final = client.wait(
            "job_1", poll_interval=0, on_update=lambda job, events: seen.extend(e.seq for e in events)
        )
    assert final.status == "succeeded" and streams["n"] == 2
    assert seen == sorted(set(seen)) and seen[-1] == len(fake.events)  # every event once, in order
