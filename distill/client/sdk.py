"""A typed Python client for Distill's REST API: light (pydantic, httpx, tenacity), no torch.

```python
from distill import Client

with Client() as distill:  # DISTILL_API_URL, DISTILL_API_KEY
    job = distill.create_job({"data": {"train": {"builtin": "mnist1d"}}})
    job = distill.wait(job.id)
    distill.download_artifact(job.id, "model.safetensors", Path("."))
```

Answers are the API's own response models (:mod:`distill.schemas`: ``JobRead``, ``FileRead``...). Reads
and other idempotent calls are retried with exponential backoff (tenacity) on connection errors and on
429/502/503/504 answers (honouring ``Retry-After``); uploads and job creation are sent once. Every failure
(an error answer, a connection failure, a checksum mismatch) raises :class:`DistillError`.

(Over 500 lines: one method per API route, with the retry policy, the event stream and downloads written
once; it mirrors the API at a glance.)
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import tempfile
import threading
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self, TypeVar

import httpx
from pydantic import BaseModel, TypeAdapter, ValidationError
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)
from tenacity.stop import stop_base

from distill.schemas import (
    ArtifactRead,
    DeliveryRead,
    EventRead,
    FileDeleted,
    FileRead,
    JobRead,
    ListRead,
    WebhookCreated,
    WebhookDeleted,
    WebhookRead,
)
from distill.spec import JobSpec

DEFAULT_API_URL = "http://127.0.0.1:8000"
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
RETRY_STATUSES = frozenset({429, 502, 503, 504})
"""Answers worth asking again: rate limited, or a proxy/server that is restarting or overloaded."""
USER_AGENT = "distill-client/0.1"

JSONDict = dict[str, Any]
Purpose = Literal["dataset", "model"]
UpdateCallback = Callable[[JobRead, list[EventRead]], None]
M = TypeVar("M", bound=BaseModel)
Item = TypeVar("Item", FileRead, JobRead, WebhookRead)


def _every_page(page: Callable[[str | None], ListRead[Item]]) -> Iterator[Item]:
    """Every item of a list, ``page(after)`` at a time, following the ``after`` cursor while ``has_more``."""
    after: str | None = None
    while True:
        got = page(after)
        yield from got.data
        if not got.has_more or not got.data:
            return
        after = got.data[-1].id


_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_MAX_REDIRECTS = 5
_CHUNK = 1 << 20
_MAX_RETRY_AFTER = 60.0


class DistillError(Exception):
    """An error answer from the API (``status`` set), or a client-side failure (``status`` is ``None``).

    ``code`` is the API's machine-readable code (``http_<status>`` when the answer had none);
    client-side codes are ``connection_error``, ``bad_response``, ``timeout``, ``not_found``,
    ``invalid_name`` and ``checksum_mismatch``. ``retry_after`` is the answer's ``Retry-After`` in seconds.
    """

    def __init__(
        self,
        status: int | None,
        code: str,
        message: str,
        field: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.retry_after = retry_after
        super().__init__(str(self))

    @property
    def transient(self) -> bool:
        """Worth retrying: the server was not reached, or answered 429/502/503/504."""
        if self.status is None:
            return self.code in ("connection_error", "timeout")
        return self.status in RETRY_STATUSES

    def __str__(self) -> str:
        text = f"{self.code}: {self.message}"
        if self.field:
            text += f" (field: {self.field})"
        if self.status is not None:
            text += f" [HTTP {self.status}]"
        return text

    def __repr__(self) -> str:
        return (
            f"DistillError(status={self.status!r}, code={self.code!r}, "
            f"message={self.message!r}, field={self.field!r})"
        )

    @classmethod
    def from_response(cls, response: httpx.Response) -> DistillError:
        """Parse ``{"error": {"code", "message", "field"}}``; else FastAPI's ``detail``, else the text."""
        error = cls._parse(response)
        error.retry_after = cls._retry_after(response)
        return error

    @classmethod
    def _parse(cls, response: httpx.Response) -> DistillError:
        status = response.status_code
        try:
            body: Any = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict):
            error = body.get("error")
            if isinstance(error, dict):
                field = error.get("field")
                return cls(
                    status,
                    str(error.get("code") or f"http_{status}"),
                    str(error.get("message") or response.reason_phrase),
                    str(field) if field is not None else None,
                )
            if "detail" in body:
                detail = body["detail"]
                field = None
                if isinstance(detail, list) and detail and isinstance(detail[0], dict):
                    first = detail[0]
                    loc = [str(part) for part in first.get("loc", []) if part != "body"]
                    field = ".".join(loc) or None
                    detail = first.get("msg", detail)
                return cls(status, f"http_{status}", str(detail), field)
        try:
            text = response.text.strip()
        except httpx.ResponseNotRead:
            text = ""
        return cls(status, f"http_{status}", text[:500] or response.reason_phrase)

    @staticmethod
    def _retry_after(response: httpx.Response) -> float | None:
        value = response.headers.get("retry-after", "")
        try:
            return min(max(float(value), 0.0), _MAX_RETRY_AFTER)
        except ValueError:
            return None  # absent, or an HTTP date (then the backoff decides)


class StreamUnavailable(DistillError):
    """The server does not offer the event stream (an older API, or a proxy in between that answers
    something other than ``text/event-stream``): :meth:`Client.wait` falls back to polling."""


@dataclass(frozen=True)
class _SSEBlock:
    """One dispatched server-sent event block (``data`` None: a comment or a ``retry:`` only block)."""

    id: str | None
    event: str | None
    data: str | None


def _sse_blocks(lines: Iterator[str]) -> Iterator[_SSEBlock]:
    """Parse ``text/event-stream`` lines into blocks (the WHATWG rules Distill's stream uses: ``id``,
    ``event``, ``data`` (several lines joined by newlines), comments; a block ends at a blank line)."""
    ident: str | None = None
    event: str | None = None
    data: list[str] = []
    seen = False
    for line in lines:
        if line == "":
            if seen:
                yield _SSEBlock(ident, event, "\n".join(data) if data else None)
            ident, event, data, seen = None, None, [], False
            continue
        seen = True
        name, colon, value = line.partition(":")
        if not colon:
            name, value = line, ""
        value = value.removeprefix(" ")
        if name == "id":
            ident = value
        elif name == "event":
            event = value
        elif name == "data":
            data.append(value)


@dataclass(frozen=True)
class StreamItem:
    """What :meth:`Client.follow_events` yields: ``connected`` (each time a connection is opened), an
    ``event``, a ``keep-alive`` (the stream is quiet), or the ``end`` with the job's terminal ``status``."""

    kind: Literal["connected", "event", "keep-alive", "end"]
    event: EventRead | None = None
    status: str | None = None


class _StopAfterFailures(stop_base):
    """Stop when the stream failed ``limit`` times in a row without delivering an event."""

    def __init__(self, counter: list[int], limit: int) -> None:
        self.counter = counter
        self.limit = limit

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.counter[0] > self.limit


def _drop_none(params: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in params.items() if value is not None}


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    default_port = {"http": 80, "https": 443}.get(url.scheme)
    return url.scheme, url.host, url.port or default_port


def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, DistillError) and exc.transient


class Client:
    """A Distill API client. Use as a context manager, or call :meth:`close`.

    ``base_url`` defaults to ``$DISTILL_API_URL`` (else ``http://127.0.0.1:8000``), ``api_key`` to
    ``$DISTILL_API_KEY``. Idempotent calls are tried up to ``retries + 1`` times, waiting about
    ``backoff``, 2·``backoff``, 4·``backoff``… seconds (with jitter, at most 30 s) or what ``Retry-After``
    says. ``transport`` is for tests (``httpx.MockTransport``).
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 30.0,
        *,
        retries: int = 4,
        backoff: float = 0.5,
        transport: httpx.BaseTransport | None = None,
        stream_read_timeout: float = 60.0,
    ) -> None:
        self.base_url = (base_url or os.environ.get("DISTILL_API_URL") or DEFAULT_API_URL).rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("DISTILL_API_KEY") or None
        self.retries = max(0, retries)
        self.backoff = max(0.0, backoff)
        self.timeout = timeout
        self.stream_read_timeout = stream_read_timeout
        """A stream silent for this long (the server sends a keep-alive every 15 s) is reconnected."""
        headers = {"User-Agent": USER_AGENT}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=timeout,
            transport=transport,
            follow_redirects=False,
        )
        # For hosts other than the API (presigned object-store URLs): never carries the API key.
        self._foreign = httpx.Client(
            headers={"User-Agent": USER_AGENT}, timeout=timeout, transport=transport, follow_redirects=False
        )
        self._origin = _origin(self._http.base_url)

    # -- plumbing ---------------------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()
        self._foreign.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _wait_before_retry(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, DistillError) and exc.retry_after is not None:
            return exc.retry_after
        if self.backoff == 0:
            return 0.0
        backoff = wait_exponential(multiplier=self.backoff, max=30.0) + wait_random(0, self.backoff)
        return float(backoff(state))

    def _retrying(self) -> Retrying:
        """Tenacity's loop for idempotent calls: transient :class:`DistillError` only, then re-raised."""
        return Retrying(
            retry=retry_if_exception(_is_transient),
            stop=stop_after_attempt(self.retries + 1),
            wait=self._wait_before_retry,
            reraise=True,
        )

    def _send(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        files: Any = None,
        data: dict[str, str] | None = None,
    ) -> Any:
        """One request; the answer's JSON, or a :class:`DistillError`."""
        try:
            response = self._http.request(
                method, path, params=_drop_none(params or {}), json=json, files=files, data=data
            )
        except httpx.TimeoutException as exc:
            raise DistillError(None, "timeout", f"{method} {path}: {exc or 'timed out'}") from exc
        except httpx.TransportError as exc:
            raise DistillError(None, "connection_error", f"cannot reach {self.base_url}: {exc}") from exc
        if response.status_code >= 300:
            raise DistillError.from_response(response)
        try:
            return response.json()
        except ValueError as exc:
            raise DistillError(response.status_code, "bad_response", "the answer is not JSON") from exc

    def _call(self, model: type[M], method: str, path: str, *, idempotent: bool, **kwargs: Any) -> M:
        """Send (retrying when ``idempotent``) and parse the answer into ``model``."""
        if idempotent:
            body = self._retrying()(self._send, method, path, **kwargs)
        else:
            body = self._send(method, path, **kwargs)
        try:
            return model.model_validate(body)
        except ValidationError as exc:
            raise DistillError(
                None, "bad_response", f"{method} {path}: the answer does not match the API's schema: {exc}"
            ) from exc

    # -- health ------------------------------------------------------------------------------------------

    def health(self) -> dict[str, str]:
        """``GET /healthz`` (no auth needed): ``{"status": "ok"}``."""
        body = self._retrying()(self._send, "GET", "/healthz")
        try:
            return _HEALTH.validate_python(body)
        except ValidationError as exc:
            raise DistillError(None, "bad_response", f"GET /healthz: unexpected answer {body!r}") from exc

    # -- files -------------------------------------------------------------------------------------------

    def upload_file(self, path: str | os.PathLike[str], purpose: Purpose = "dataset") -> FileRead:
        """Upload a dataset (CSV, Parquet, JSONL or NPZ) or a model (``.safetensors``); sent once."""
        source = Path(path)
        with source.open("rb") as handle:
            return self._call(
                FileRead,
                "POST",
                "/v1/files",
                idempotent=False,
                files={"file": (source.name, handle, "application/octet-stream")},
                data={"purpose": purpose},
            )

    def list_files(
        self, limit: int | None = None, after: str | None = None, purpose: Purpose | None = None
    ) -> ListRead[FileRead]:
        params = {"limit": limit, "after": after, "purpose": purpose}
        return self._call(ListRead[FileRead], "GET", "/v1/files", idempotent=True, params=params)

    def iter_files(self, purpose: Purpose | None = None, page_size: int | None = None) -> Iterator[FileRead]:
        """Every file (newest first), following the ``after`` cursor while ``has_more``."""
        return _every_page(lambda after: self.list_files(limit=page_size, after=after, purpose=purpose))

    def get_file(self, file_id: str) -> FileRead:
        return self._call(FileRead, "GET", f"/v1/files/{file_id}", idempotent=True)

    def delete_file(self, file_id: str) -> FileDeleted:
        return self._call(FileDeleted, "DELETE", f"/v1/files/{file_id}", idempotent=True)

    # -- jobs --------------------------------------------------------------------------------------------

    def create_job(self, spec: JSONDict | JobSpec) -> JobRead:
        """Submit a job (sent once: a retry could queue it twice)."""
        body = spec.model_dump(mode="json", exclude_none=True) if isinstance(spec, JobSpec) else spec
        return self._call(JobRead, "POST", "/v1/jobs", idempotent=False, json=body)

    def get_job(self, job_id: str) -> JobRead:
        return self._call(JobRead, "GET", f"/v1/jobs/{job_id}", idempotent=True)

    def list_jobs(
        self, limit: int | None = None, after: str | None = None, status: str | None = None
    ) -> ListRead[JobRead]:
        """One page, newest first; pass the last id as ``after`` for the next page."""
        params = {"limit": limit, "after": after, "status": status}
        return self._call(ListRead[JobRead], "GET", "/v1/jobs", idempotent=True, params=params)

    def iter_jobs(self, status: str | None = None, page_size: int | None = None) -> Iterator[JobRead]:
        """Every job (newest first), following the ``after`` cursor while ``has_more``."""
        return _every_page(lambda after: self.list_jobs(limit=page_size, after=after, status=status))

    def cancel_job(self, job_id: str) -> JobRead:
        """Ask a queued or running job to stop (a queued one is ``cancelled`` at once, a running one has
        ``cancel_requested`` and stops at its next step); a finished job answers 409 ``DistillError``."""
        return self._call(JobRead, "POST", f"/v1/jobs/{job_id}/cancel", idempotent=True)

    def events(self, job_id: str, after: int | None = None, limit: int | None = None) -> ListRead[EventRead]:
        """One page of the job's events with ``seq`` greater than ``after``, oldest first."""
        params = {"after": after, "limit": limit}
        return self._call(
            ListRead[EventRead], "GET", f"/v1/jobs/{job_id}/events", idempotent=True, params=params
        )

    def iter_events(
        self, job_id: str, after: int | None = None, page_size: int | None = None
    ) -> Iterator[EventRead]:
        """Every event after ``after`` that exists now, following the ``seq`` cursor."""
        while True:
            page = self.events(job_id, after=after, limit=page_size)
            yield from page.data
            if not page.has_more or not page.data:
                return
            after = page.data[-1].seq

    def follow_events(
        self, job_id: str, after: int | None = None, *, opened: Callable[[httpx.Response], None] | None = None
    ) -> Iterator[StreamItem]:
        """Follow ``GET /v1/jobs/{id}/events?stream=true`` (server-sent events) from ``seq > after`` until
        the job has ended, yielding each event once, keep-alives, and finally the ``end`` with its status.

        A dropped or silent connection (``stream_read_timeout``) is opened again with ``Last-Event-ID``
        set to the last event seen, so no event is lost or repeated; ``retries + 1`` failures in a row
        without an event between them raise :class:`DistillError` (``connection_error``). An error answer
        raises at once; a server without the stream raises :class:`StreamUnavailable`. ``opened`` is
        called with each connection's response (to close it from another thread).
        """
        last = [after]
        failures = [0]

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome is not None else None
            if isinstance(exc, DistillError) and exc.retry_after is not None:
                return exc.retry_after
            if failures[0] <= 1 or self.backoff == 0:
                return min(self.backoff, 0.2)  # a drop after progress: reconnect at once
            return float(min(30.0, self.backoff * 2 ** (failures[0] - 2)))

        retrying = Retrying(
            retry=retry_if_exception(_is_transient),
            stop=_StopAfterFailures(failures, self.retries),
            wait=wait,
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                try:
                    with contextlib.closing(self._stream_once(job_id, last[0], opened)) as items:
                        for item in items:
                            if item.kind == "event" and item.event is not None:
                                if last[0] is not None and item.event.seq <= last[0]:
                                    continue  # already delivered (a server that resent it)
                                last[0] = item.event.seq
                                failures[0] = 0
                            yield item
                            if item.kind == "end":
                                return
                except DistillError:
                    failures[0] += 1
                    raise
                failures[0] += 1
                raise DistillError(None, "connection_error", f"the event stream of {job_id} ended early")

    def _stream_once(
        self, job_id: str, after: int | None, opened: Callable[[httpx.Response], None] | None
    ) -> Generator[StreamItem]:
        """One connection to the stream; returns when it ends (with or without the ``end`` event)."""
        path = f"/v1/jobs/{job_id}/events"
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if after is not None:
            headers["Last-Event-ID"] = str(after)
        timeout = httpx.Timeout(self.timeout, read=self.stream_read_timeout)
        try:
            with self._http.stream(
                "GET", path, params={"stream": "true"}, headers=headers, timeout=timeout
            ) as response:
                if response.status_code >= 300:
                    response.read()
                    error = DistillError.from_response(response)
                    if response.status_code in (405, 406, 501):
                        raise StreamUnavailable(error.status, "stream_unavailable", error.message)
                    raise error
                content_type = response.headers.get("content-type", "")
                if not content_type.startswith("text/event-stream"):
                    raise StreamUnavailable(
                        response.status_code,
                        "stream_unavailable",
                        f"GET {path}?stream=true answered {content_type or 'no content type'}",
                    )
                if opened is not None:
                    opened(response)
                yield StreamItem("connected")
                for block in _sse_blocks(response.iter_lines()):
                    if block.event == "end":
                        status = None
                        with contextlib.suppress(ValueError, TypeError, AttributeError):
                            status = str(_END.validate_json(block.data or "{}").get("status"))
                        yield StreamItem("end", status=status)
                        return
                    if block.data is None:
                        yield StreamItem("keep-alive")
                        continue
                    try:
                        event = EventRead.model_validate_json(block.data)
                    except ValidationError as exc:
                        raise DistillError(
                            None, "bad_response", f"GET {path}?stream=true: not an event: {exc}"
                        ) from exc
                    yield StreamItem("event", event=event)
        except httpx.TimeoutException as exc:
            raise DistillError(None, "timeout", f"the event stream of {job_id} went silent") from exc
        except httpx.TransportError as exc:  # refused, reset, or cut mid-body (RemoteProtocolError)
            raise DistillError(None, "connection_error", f"event stream of {job_id}: {exc}") from exc

    def stream_events(self, job_id: str, after: int | None = None) -> Iterator[EventRead]:
        """Each event of the job (``seq > after``) as it is written, once, until the job has ended
        (see :meth:`follow_events`)."""
        for item in self.follow_events(job_id, after):
            if item.event is not None:
                yield item.event

    def wait(
        self,
        job_id: str,
        poll_interval: float = 1.0,
        on_update: UpdateCallback | None = None,
        timeout: float | None = None,
        *,
        events_after: int | None = None,
        stream: bool = True,
    ) -> JobRead:
        """Follow the job and its new events until a terminal status; returns the final job.

        Events come from the server-sent event stream (resumed after a dropped connection), falling back
        to polling the events page every ``poll_interval`` seconds when the server has no stream, when the
        stream keeps failing (``retries + 1`` times in a row without an event), or with ``stream=False``.
        ``on_update(job, new_events)`` is called for each batch of new events and at least every
        ``poll_interval`` seconds (with the job read again: its step progress), each event exactly once;
        the last call carries every event written before the job finished. Events come from
        ``seq > events_after`` (all of them by default); ``timeout`` (seconds) raises ``DistillError``
        code ``timeout``.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        if stream:
            seen = [events_after]
            try:
                return self._wait_streaming(job_id, poll_interval, on_update, deadline, timeout, seen)
            except StreamUnavailable:
                events_after = seen[0]
        return self._wait_polling(job_id, poll_interval, on_update, deadline, timeout, events_after)

    def _wait_streaming(
        self,
        job_id: str,
        poll_interval: float,
        on_update: UpdateCallback | None,
        deadline: float | None,
        timeout: float | None,
        seen: list[int | None],
    ) -> JobRead:
        """:meth:`wait` on the stream: a thread reads it into a queue; this one re-reads the job between
        events (step progress) and hands both to ``on_update``. ``seen[0]``: the last event's seq."""
        items: queue.Queue[StreamItem | BaseException] = queue.Queue()
        stop = threading.Event()
        responses: list[httpx.Response] = []

        def read() -> None:
            try:
                for item in self.follow_events(job_id, seen[0], opened=responses.append):
                    items.put(item)
                    if stop.is_set():
                        return
            except BaseException as exc:  # handed to the waiting thread, which raises it
                items.put(exc)

        reader = threading.Thread(target=read, name=f"distill-stream-{job_id}", daemon=True)
        reader.start()
        try:
            job: JobRead | None = None  # read once the stream is open (else polling takes over)
            last_read = 0.0
            while True:
                wait_for = poll_interval
                if deadline is not None:
                    wait_for = min(wait_for, max(0.0, deadline - time.monotonic()))
                batch: list[StreamItem | BaseException] = []
                try:
                    batch.append(items.get(timeout=wait_for))
                    while True:
                        batch.append(items.get_nowait())
                except queue.Empty:
                    pass
                failure = next((b for b in batch if isinstance(b, BaseException)), None)
                got = [b for b in batch if isinstance(b, StreamItem)]
                if job is None and not got and failure is not None:
                    raise failure  # StreamUnavailable before anything came: wait() polls instead
                events = [b.event for b in got if b.event is not None]
                if events:
                    seen[0] = events[-1].seq
                ended = any(b.kind == "end" for b in got)
                if job is not None or got:
                    first = job is None
                    if job is None or events or ended or time.monotonic() - last_read >= poll_interval:
                        job = self.get_job(job_id)
                        last_read = time.monotonic()
                    if on_update is not None and (first or events or ended or not got):
                        on_update(job, events)
                if isinstance(failure, DistillError) and failure.transient:  # the stream kept failing
                    raise StreamUnavailable(
                        None, "stream_unavailable", f"the event stream kept failing ({failure})"
                    ) from failure
                if failure is not None:
                    raise failure
                if ended and job is not None:
                    return job if job.status in TERMINAL_STATUSES else self.get_job(job_id)
                if deadline is not None and time.monotonic() >= deadline:
                    raise DistillError(None, "timeout", f"job {job_id} did not finish within {timeout} s")
        finally:
            stop.set()
            for response in responses:
                with contextlib.suppress(Exception):
                    response.close()

    def _wait_polling(
        self,
        job_id: str,
        poll_interval: float,
        on_update: UpdateCallback | None,
        deadline: float | None,
        timeout: float | None,
        events_after: int | None,
    ) -> JobRead:
        """:meth:`wait` by polling: the job, then its events page. The job is read before the events, so
        the last call carries every event written before the job finished."""
        last_seq = events_after
        while True:
            job = self.get_job(job_id)
            new_events = list(self.iter_events(job_id, after=last_seq))
            if new_events:
                last_seq = new_events[-1].seq
            if on_update is not None:
                on_update(job, new_events)
            if job.status in TERMINAL_STATUSES:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise DistillError(None, "timeout", f"job {job_id} did not finish within {timeout} s")
            time.sleep(poll_interval)

    # -- webhooks ----------------------------------------------------------------------------------------

    def create_webhook(self, url: str, description: str | None = None) -> WebhookCreated:
        """Register an endpoint that receives every status change of the tenant's jobs (sent once). The
        answer's ``secret`` signs each delivery (``Distill-Signature``) and is never shown again."""
        body = _drop_none({"url": url, "description": description})
        return self._call(WebhookCreated, "POST", "/v1/webhooks", idempotent=False, json=body)

    def list_webhooks(self, limit: int | None = None, after: str | None = None) -> ListRead[WebhookRead]:
        params = {"limit": limit, "after": after}
        return self._call(ListRead[WebhookRead], "GET", "/v1/webhooks", idempotent=True, params=params)

    def iter_webhooks(self, page_size: int | None = None) -> Iterator[WebhookRead]:
        """Every registered endpoint, following the ``after`` cursor while ``has_more``."""
        return _every_page(lambda after: self.list_webhooks(limit=page_size, after=after))

    def get_webhook(self, webhook_id: str) -> WebhookRead:
        return self._call(WebhookRead, "GET", f"/v1/webhooks/{webhook_id}", idempotent=True)

    def delete_webhook(self, webhook_id: str) -> WebhookDeleted:
        """Stop sending to this endpoint (its delivery log goes with it)."""
        return self._call(WebhookDeleted, "DELETE", f"/v1/webhooks/{webhook_id}", idempotent=True)

    def webhook_deliveries(
        self, webhook_id: str, limit: int | None = None, after: str | None = None
    ) -> ListRead[DeliveryRead]:
        """One page of the endpoint's delivery log, newest first: each delivery's state and every try."""
        params = {"limit": limit, "after": after}
        return self._call(
            ListRead[DeliveryRead],
            "GET",
            f"/v1/webhooks/{webhook_id}/deliveries",
            idempotent=True,
            params=params,
        )

    # -- artifacts ---------------------------------------------------------------------------------------

    def list_artifacts(self, job_id: str) -> ListRead[ArtifactRead]:
        """The job's outputs (``model.safetensors``, ``report.json``, ``curves.svg``...), size, sha256."""
        return self._call(ListRead[ArtifactRead], "GET", f"/v1/jobs/{job_id}/artifacts", idempotent=True)

    def download_artifact(self, job_id: str, name: str, dest: str | os.PathLike[str]) -> Path:
        """Download an artifact to ``dest`` (a file path, or an existing folder to hold ``name``).

        Follows the API's redirect to a presigned URL without sending the API key to that host, writes to a
        temporary file beside ``dest`` and renames it only once its sha256 matches the artifact listing.
        A connection failure or a 429/5xx answer starts the download again (with backoff).
        """
        if not name or Path(name).name != name or name in {".", ".."}:
            raise DistillError(None, "invalid_name", f"not an artifact name: {name!r}")
        listing = self.list_artifacts(job_id).data
        entry = next((item for item in listing if item.name == name), None)
        if entry is None:
            raise DistillError(None, "not_found", f"job {job_id} has no artifact {name!r}")
        target = Path(dest)
        if target.is_dir():
            target = target / name
        target.parent.mkdir(parents=True, exist_ok=True)
        result: Path = self._retrying()(self._download_once, job_id, entry, target)
        return result

    def _download_once(self, job_id: str, entry: ArtifactRead, target: Path) -> Path:
        name = entry.name
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
        tmp = Path(tmp_name)
        try:
            digest = hashlib.sha256()
            size = 0
            with (
                os.fdopen(fd, "wb") as out,
                self._open_download(f"/v1/jobs/{job_id}/artifacts/{name}") as response,
            ):
                for chunk in response.iter_bytes(_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
            if digest.hexdigest() != entry.sha256.lower():
                raise DistillError(
                    None,
                    "checksum_mismatch",
                    f"{name}: sha256 {digest.hexdigest()} ({size} bytes), the listing says {entry.sha256}"
                    f" ({entry.bytes} bytes)",
                )
            if size != entry.bytes:
                raise DistillError(
                    None, "checksum_mismatch", f"{name}: got {size} bytes, the listing says {entry.bytes}"
                )
            umask = os.umask(0o022)
            os.umask(umask)
            tmp.chmod(0o666 & ~umask)  # mkstemp made it 0600
            tmp.replace(target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return target

    def read_artifact(self, job_id: str, name: str) -> bytes:
        """A small artifact's bytes (``report.json``, ``curves.svg``), checked as :meth:`download_artifact`
        checks them."""
        with tempfile.TemporaryDirectory(prefix="distill-") as folder:
            return self.download_artifact(job_id, name, Path(folder) / name).read_bytes()

    @contextlib.contextmanager
    def _open_download(self, path: str) -> Iterator[httpx.Response]:
        """Stream ``path``, following redirects by hand: the API key only ever goes to the API's origin."""
        url = self._http.build_request("GET", path).url
        for _ in range(_MAX_REDIRECTS + 1):
            http = self._http if _origin(url) == self._origin else self._foreign
            try:
                response = http.send(http.build_request("GET", url), stream=True)
            except httpx.TransportError as exc:
                raise DistillError(
                    None, "connection_error", f"cannot download {url.copy_with(query=None)}: {exc}"
                ) from exc
            try:
                if response.status_code in _REDIRECTS and "location" in response.headers:
                    url = url.join(response.headers["location"])
                    continue
                if response.status_code >= 300:
                    response.read()
                    raise DistillError.from_response(response)
                yield response
                return
            finally:
                response.close()
        raise DistillError(None, "bad_response", f"more than {_MAX_REDIRECTS} redirects downloading {path}")


_HEALTH: TypeAdapter[dict[str, str]] = TypeAdapter(dict[str, str])
_END: TypeAdapter[dict[str, Any]] = TypeAdapter(dict[str, Any])
