"""A typed Python client for Distill's REST API.

```python
from client.sdk import Client

with Client() as distill:  # DISTILL_API_URL, DISTILL_API_KEY
    job = distill.create_job({"data": {"train": {"builtin": "mnist1d"}}})
    job = distill.wait(job["id"])
    distill.download_artifact(job["id"], "model.safetensors", Path("."))
```

Every method returns the API's JSON object as a ``dict``; every failure (an error answer, a connection
failure, a checksum mismatch) raises :class:`DistillError`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import httpx

from distill.spec import JobSpec

DEFAULT_API_URL = "http://127.0.0.1:8000"
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")

JSONDict = dict[str, Any]
Purpose = Literal["dataset", "model"]
UpdateCallback = Callable[[JSONDict, list[JSONDict]], None]

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_MAX_REDIRECTS = 5
_CHUNK = 1 << 20


class DistillError(Exception):
    """An error answer from the API (``status`` set), or a client-side failure (``status`` is ``None``).

    ``code`` is the API's machine-readable code (``http_<status>`` when the answer had none);
    client-side codes are ``connection_error``, ``bad_response``, ``timeout``, ``not_found`` and
    ``checksum_mismatch``.
    """

    def __init__(self, status: int | None, code: str, message: str, field: str | None = None) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        super().__init__(str(self))

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


def _drop_none(params: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in params.items() if value is not None}


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    default_port = {"http": 80, "https": 443}.get(url.scheme)
    return url.scheme, url.host, url.port or default_port


class Client:
    """A Distill API client. Use as a context manager, or call :meth:`close`.

    ``base_url`` defaults to ``$DISTILL_API_URL`` (else ``http://127.0.0.1:8000``), ``api_key`` to
    ``$DISTILL_API_KEY``. ``transport`` is for tests (``httpx.MockTransport``).
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 30.0,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = (base_url or os.environ.get("DISTILL_API_URL") or DEFAULT_API_URL).rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("DISTILL_API_KEY") or None
        headers = {"User-Agent": "distill-client/0.1"}
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
            headers={"User-Agent": "distill-client/0.1"},
            timeout=timeout,
            transport=transport,
            follow_redirects=False,
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

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        files: Any = None,
        data: dict[str, str] | None = None,
    ) -> JSONDict:
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
            body = response.json()
        except ValueError as exc:
            raise DistillError(response.status_code, "bad_response", "the answer is not JSON") from exc
        if not isinstance(body, dict):
            raise DistillError(response.status_code, "bad_response", "the answer is not a JSON object")
        return body

    # -- health ------------------------------------------------------------------------------------------

    def health(self) -> JSONDict:
        """``GET /healthz`` (no auth needed): ``{"status": "ok"}``."""
        return self._request("GET", "/healthz")

    # -- files -------------------------------------------------------------------------------------------

    def upload_file(self, path: str | os.PathLike[str], purpose: Purpose = "dataset") -> JSONDict:
        """Upload a dataset (``.npz``) or a model (``.safetensors``); returns the file object."""
        source = Path(path)
        with source.open("rb") as handle:
            return self._request(
                "POST",
                "/v1/files",
                files={"file": (source.name, handle, "application/octet-stream")},
                data={"purpose": purpose},
            )

    def list_files(self, limit: int | None = None, after: str | None = None) -> JSONDict:
        return self._request("GET", "/v1/files", params={"limit": limit, "after": after})

    def get_file(self, file_id: str) -> JSONDict:
        return self._request("GET", f"/v1/files/{file_id}")

    def delete_file(self, file_id: str) -> JSONDict:
        return self._request("DELETE", f"/v1/files/{file_id}")

    # -- jobs --------------------------------------------------------------------------------------------

    def create_job(self, spec: JSONDict | JobSpec) -> JSONDict:
        body = spec.model_dump(mode="json", exclude_none=True) if isinstance(spec, JobSpec) else spec
        return self._request("POST", "/v1/jobs", json=body)

    def get_job(self, job_id: str) -> JSONDict:
        return self._request("GET", f"/v1/jobs/{job_id}")

    def list_jobs(
        self, limit: int | None = None, after: str | None = None, status: str | None = None
    ) -> JSONDict:
        """One page, newest first; pass the last id as ``after`` for the next page."""
        return self._request("GET", "/v1/jobs", params={"limit": limit, "after": after, "status": status})

    def iter_jobs(self, status: str | None = None, page_size: int | None = None) -> Iterator[JSONDict]:
        """Every job (newest first), following the ``after`` cursor while ``has_more``."""
        after: str | None = None
        while True:
            page = self.list_jobs(limit=page_size, after=after, status=status)
            data: list[JSONDict] = page.get("data", [])
            yield from data
            if not page.get("has_more") or not data:
                return
            after = data[-1]["id"]

    def cancel_job(self, job_id: str) -> JSONDict:
        """Cancel a queued or running job (the API answers 409 ``DistillError`` if it already finished)."""
        return self._request("POST", f"/v1/jobs/{job_id}/cancel")

    def events(self, job_id: str, after: int | None = None, limit: int | None = None) -> JSONDict:
        """One page of the job's events with ``seq`` greater than ``after``, oldest first."""
        return self._request("GET", f"/v1/jobs/{job_id}/events", params={"after": after, "limit": limit})

    def iter_events(
        self, job_id: str, after: int | None = None, page_size: int | None = None
    ) -> Iterator[JSONDict]:
        """Every event after ``after`` that exists now, following the ``seq`` cursor."""
        while True:
            page = self.events(job_id, after=after, limit=page_size)
            data: list[JSONDict] = page.get("data", [])
            yield from data
            if not page.get("has_more") or not data:
                return
            after = int(data[-1]["seq"])

    def wait(
        self,
        job_id: str,
        poll_interval: float = 1.0,
        on_update: UpdateCallback | None = None,
        timeout: float | None = None,
        *,
        events_after: int | None = None,
        max_transient_errors: int = 5,
    ) -> JSONDict:
        """Poll the job and its new events until a terminal status; returns the final job.

        ``on_update(job, new_events)`` is called after every poll (``new_events`` may be empty). The job is
        read before the events, so the last call carries every event written before the job finished.
        Events come from ``seq > events_after`` (all of them by default). Up to ``max_transient_errors``
        consecutive connection errors or 5xx answers are retried.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        last_seq = events_after
        failures = 0
        while True:
            try:
                job = self.get_job(job_id)
                new_events = list(self.iter_events(job_id, after=last_seq))
            except DistillError as exc:
                transient = exc.status is None or exc.status >= 500
                failures += 1
                if not transient or failures > max_transient_errors:
                    raise
            else:
                failures = 0
                if new_events:
                    last_seq = int(new_events[-1]["seq"])
                if on_update is not None:
                    on_update(job, new_events)
                if job.get("status") in TERMINAL_STATUSES:
                    return job
            if deadline is not None and time.monotonic() >= deadline:
                raise DistillError(None, "timeout", f"job {job_id} did not finish within {timeout} s")
            time.sleep(poll_interval)

    # -- artifacts ---------------------------------------------------------------------------------------

    def list_artifacts(self, job_id: str) -> JSONDict:
        """``{"object": "list", "data": [{"name", "bytes", "sha256"}, ...]}``."""
        return self._request("GET", f"/v1/jobs/{job_id}/artifacts")

    def download_artifact(self, job_id: str, name: str, dest: str | os.PathLike[str]) -> Path:
        """Download an artifact to ``dest`` (a file path, or an existing folder to hold ``name``).

        Follows the API's redirect to a presigned URL without sending the API key to that host, writes to a
        temporary file beside ``dest`` and renames it only once its sha256 matches the artifact listing.
        """
        if not name or Path(name).name != name or name in {".", ".."}:
            raise DistillError(None, "invalid_name", f"not an artifact name: {name!r}")
        listing = self.list_artifacts(job_id).get("data", [])
        entry = next((item for item in listing if item.get("name") == name), None)
        if entry is None:
            raise DistillError(None, "not_found", f"job {job_id} has no artifact {name!r}")
        target = Path(dest)
        if target.is_dir():
            target = target / name
        target.parent.mkdir(parents=True, exist_ok=True)

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
            expected_sha = entry.get("sha256")
            expected_size = entry.get("bytes")
            if isinstance(expected_sha, str) and digest.hexdigest() != expected_sha.lower():
                raise DistillError(
                    None,
                    "checksum_mismatch",
                    f"{name}: sha256 {digest.hexdigest()} ({size} bytes), the listing says {expected_sha}"
                    f" ({expected_size} bytes)",
                )
            if isinstance(expected_size, int) and size != expected_size:
                raise DistillError(
                    None, "checksum_mismatch", f"{name}: got {size} bytes, the listing says {expected_size}"
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
