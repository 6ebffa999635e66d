"""User commands of ``distill``: ``files``, ``jobs``, ``artifacts`` and ``demo``, through :mod:`client.sdk`.

Every command takes ``--api-url`` (``$DISTILL_API_URL``) and ``--api-key`` (``$DISTILL_API_KEY``); the ones
that print something take ``--json`` for scripting. Errors go to stderr with exit code 1.
"""

from __future__ import annotations

import contextlib
import enum
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console, RenderableType
from rich.markup import escape
from rich.table import Table

from client import demo
from client.sdk import DEFAULT_API_URL, Client, DistillError, JSONDict
from client.ui import (
    JobBars,
    curve_lines,
    fmt_bytes,
    fmt_num,
    fmt_pct,
    fmt_progress,
    object_table,
    styled_status,
)

console = Console()
err_console = Console(stderr=True, soft_wrap=True)

ApiUrl = Annotated[
    str,
    typer.Option(
        "--api-url", envvar="DISTILL_API_URL", help="Base URL of the Distill API.", show_envvar=True
    ),
]
ApiKey = Annotated[
    str | None,
    typer.Option(
        "--api-key", envvar="DISTILL_API_KEY", help="API key (Bearer).", show_default=False, show_envvar=True
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print the API's JSON answer instead of a table.")]
PollInterval = Annotated[float, typer.Option("--poll-interval", min=0.05, help="Seconds between polls.")]


class PurposeChoice(enum.StrEnum):
    dataset = "dataset"
    model = "model"


class StatusChoice(enum.StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


def make_client(api_url: str, api_key: str | None) -> Client:
    """Build the SDK client for a command (tests replace this to inject a mock transport)."""
    return Client(api_url, api_key)


@contextlib.contextmanager
def session(api_url: str, api_key: str | None) -> Iterator[Client]:
    """A client for one command; a :class:`DistillError` becomes a message on stderr and exit code 1."""
    if not api_key:
        err_console.print("[red]error[/] no API key: set DISTILL_API_KEY or pass --api-key")
        raise typer.Exit(1)
    try:
        with make_client(api_url, api_key) as client:
            yield client
    except DistillError as exc:
        err_console.print(f"[red]error[/] {escape(str(exc))}")
        raise typer.Exit(1) from exc


def emit(obj: Any, as_json: bool, render: RenderableType | None = None) -> None:
    if as_json or render is None:
        typer.echo(json.dumps(obj, indent=2))
    else:
        console.print(render)


# -- files ---------------------------------------------------------------------------------------------------

files_app = typer.Typer(
    no_args_is_help=True, help="Upload and manage datasets (.npz) and models (.safetensors)."
)


def _files_table(files: list[JSONDict]) -> Table:
    table = Table(
        "id", "filename", "purpose", "size", "sha256", "created", title="files", title_justify="left"
    )
    for item in files:
        table.add_row(
            item.get("id", ""),
            item.get("filename", ""),
            item.get("purpose", ""),
            fmt_bytes(item.get("bytes")),
            str(item.get("sha256") or "")[:12],
            str(item.get("created_at") or ""),
        )
    return table


@files_app.command("upload")
def files_upload(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="File to upload.")],
    purpose: Annotated[PurposeChoice, typer.Option("--purpose", "-p")] = PurposeChoice.dataset,
    api_url: ApiUrl = DEFAULT_API_URL,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """Upload a dataset (.npz with x[, y]) or a model (.safetensors)."""
    with session(api_url, api_key) as client:
        file = client.upload_file(path, purpose.value)
    emit(file, as_json, object_table(file))


@files_app.command("list")
def files_list(
    limit: Annotated[int | None, typer.Option("--limit", min=1)] = None,
    after: Annotated[str | None, typer.Option("--after", help="Cursor: a file id.")] = None,
    api_url: ApiUrl = DEFAULT_API_URL,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """List uploaded files."""
    with session(api_url, api_key) as client:
        page = client.list_files(limit=limit, after=after)
    emit(page, as_json, _files_table(page.get("data", [])))


@files_app.command("get")
def files_get(
    file_id: str, api_url: ApiUrl = DEFAULT_API_URL, api_key: ApiKey = None, as_json: AsJson = False
) -> None:
    """Show one file."""
    with session(api_url, api_key) as client:
        file = client.get_file(file_id)
    emit(file, as_json, object_table(file))


@files_app.command("delete")
def files_delete(
    file_id: str, api_url: ApiUrl = DEFAULT_API_URL, api_key: ApiKey = None, as_json: AsJson = False
) -> None:
    """Delete a file."""
    with session(api_url, api_key) as client:
        answer = client.delete_file(file_id)
    emit(answer, as_json, f"deleted {escape(str(answer.get('id', file_id)))}")


# -- jobs ----------------------------------------------------------------------------------------------------

jobs_app = typer.Typer(no_args_is_help=True, help="Submit, follow and cancel training/distillation jobs.")


def _jobs_table(jobs: list[JSONDict]) -> Table:
    table = Table(
        "id", "name", "status", "progress", "test acc", "created", title="jobs", title_justify="left"
    )
    for job in jobs:
        result = job.get("result") if isinstance(job.get("result"), dict) else {}
        table.add_row(
            job.get("id", ""),
            escape(str(job.get("name") or "")),
            styled_status(job.get("status")),
            fmt_progress(job),
            fmt_pct((result or {}).get("test_accuracy")),
            str(job.get("created_at") or ""),
        )
    return table


def result_table(job: JSONDict) -> Table:
    """The job's metrics: the student's and, for a distillation, the teacher's."""
    result: JSONDict = job.get("result") or {}
    table = Table("", "test accuracy", "parameters", "CPU latency (ms, batch 1)", "CPU throughput (ex/s)")
    table.title = f"{job.get('id', '')} {escape(str(job.get('name') or ''))}".strip()
    table.title_justify = "left"
    table.add_row(
        "model",
        fmt_pct(result.get("test_accuracy")),
        fmt_num(result.get("parameters")),
        fmt_num(result.get("cpu_latency_ms"), 3),
        fmt_num(result.get("cpu_throughput"), 0),
    )
    if "teacher_test_accuracy" in result:
        table.add_row(
            "teacher",
            fmt_pct(result.get("teacher_test_accuracy")),
            fmt_num(result.get("teacher_parameters")),
            fmt_num(result.get("teacher_cpu_latency_ms"), 3),
            fmt_num(result.get("teacher_cpu_throughput"), 0),
        )
        table.caption = f"agreement with teacher: {fmt_pct(result.get('agreement_with_teacher'))}"
    return table


REPORT_MAX_BYTES = 1 << 20
"""report.json is read for the curve view only up to this size (a history is a few KB)."""


def curves_view(client: Client, job: JSONDict) -> str | None:
    """A succeeded job's validation curve per epoch as sparklines, from its report.json when that is small,
    and where to find curves.svg; None for a job that did not succeed or has neither."""
    if job.get("status") != "succeeded":
        return None
    try:
        listing = {str(a.get("name")): a for a in client.list_artifacts(job["id"]).get("data", [])}
        size = (listing.get("report.json") or {}).get("bytes")
        report = None
        if isinstance(size, int) and size <= REPORT_MAX_BYTES:
            report = json.loads(client.read_artifact(job["id"], "report.json"))
    except (DistillError, ValueError):
        return None
    lines = curve_lines(report) if isinstance(report, dict) else []
    if "curves.svg" in listing:
        lines.append(f"curves: distill artifacts download {job['id']} curves.svg")
    return "\n".join(lines) or None


def _follow(client: Client, job: JSONDict, poll_interval: float, quiet: bool, as_json: bool) -> JSONDict:
    """Wait for ``job`` with a progress bar (on stderr when ``--json``, so stdout stays JSON)."""
    bar_console = err_console if as_json else console
    with JobBars(bar_console) as bars:
        task = bars.add(str(job.get("name") or job["id"]), job)
        final = client.wait(job["id"], poll_interval, bars.callback(task, print_events=not quiet))
    return final


def _finish(final: JSONDict, as_json: bool, curves: str | None = None) -> None:
    """Print the finished job (and its curves); exit 1 unless it succeeded."""
    status = final.get("status")
    if as_json:
        emit(final, True)
    elif status == "succeeded":
        console.print(result_table(final))
        if curves:
            console.print(escape(curves), highlight=False)
    else:
        error = final.get("error") or {}
        err_console.print(
            f"job {final.get('id')} {styled_status(status)}: "
            f"{escape(str(error.get('code', '')))} {escape(str(error.get('message', '')))}".rstrip()
        )
    if status != "succeeded":
        raise typer.Exit(1)


@jobs_app.command("create")
def jobs_create(
    spec_file: Annotated[str, typer.Argument(help="JSON job spec file, or - for stdin.")],
    name: Annotated[str | None, typer.Option("--name", help="Override the spec's name.")] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Follow the job until it ends (exit 1 unless it succeeds).")
    ] = False,
    poll_interval: PollInterval = 1.0,
    api_url: ApiUrl = DEFAULT_API_URL,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """Submit a job from a JSON spec (see distill/spec.py)."""
    try:
        text = sys.stdin.read() if spec_file == "-" else Path(spec_file).read_text()
        spec = json.loads(text)
    except (OSError, ValueError) as exc:
        err_console.print(f"[red]error[/] cannot read a JSON spec from {spec_file}: {escape(str(exc))}")
        raise typer.Exit(1) from exc
    if not isinstance(spec, dict):
        err_console.print("[red]error[/] the spec must be a JSON object")
        raise typer.Exit(1)
    if name is not None:
        spec["name"] = name
    with session(api_url, api_key) as client:
        job = client.create_job(spec)
        if not wait:
            emit(job, as_json, f"created {job['id']} ({styled_status(job.get('status'))})")
            return
        if not as_json:
            console.print(f"created {job['id']}")
        final = _follow(client, job, poll_interval, quiet=False, as_json=as_json)
        curves = None if as_json else curves_view(client, final)
    _finish(final, as_json, curves)


@jobs_app.command("get")
def jobs_get(
    job_id: str, api_url: ApiUrl = DEFAULT_API_URL, api_key: ApiKey = None, as_json: AsJson = False
) -> None:
    """Show one job (and, once it succeeded, its validation curve per epoch)."""
    with session(api_url, api_key) as client:
        job = client.get_job(job_id)
        curves = None if as_json else curves_view(client, job)
    emit(job, as_json, object_table(job))
    if curves:
        console.print(escape(curves), highlight=False)


@jobs_app.command("list")
def jobs_list(
    limit: Annotated[int, typer.Option("--limit", min=1, help="Page size.")] = 20,
    after: Annotated[str | None, typer.Option("--after", help="Cursor: a job id.")] = None,
    status: Annotated[StatusChoice | None, typer.Option("--status")] = None,
    all_pages: Annotated[bool, typer.Option("--all", help="Follow the cursor through every page.")] = False,
    api_url: ApiUrl = DEFAULT_API_URL,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """List jobs, newest first."""
    status_value = status.value if status is not None else None
    with session(api_url, api_key) as client:
        if all_pages:
            jobs = list(client.iter_jobs(status=status_value, page_size=limit))
            page: JSONDict = {"object": "list", "data": jobs, "has_more": False}
        else:
            page = client.list_jobs(limit=limit, after=after, status=status_value)
    table = _jobs_table(page.get("data", []))
    if page.get("has_more"):
        data = page.get("data") or [{}]
        table.caption = f"more: --after {data[-1].get('id', '')}"
    emit(page, as_json, table)


@jobs_app.command("cancel")
def jobs_cancel(
    job_id: str, api_url: ApiUrl = DEFAULT_API_URL, api_key: ApiKey = None, as_json: AsJson = False
) -> None:
    """Cancel a queued or running job."""
    with session(api_url, api_key) as client:
        job = client.cancel_job(job_id)
    emit(job, as_json, f"{job.get('id', job_id)} {styled_status(job.get('status'))}")


def _events_table(events: list[JSONDict]) -> Table:
    table = Table("seq", "time", "level", "message", "data", title="events", title_justify="left")
    for event in events:
        data = event.get("data")
        table.add_row(
            str(event.get("seq", "")),
            str(event.get("created_at") or ""),
            str(event.get("level") or ""),
            escape(str(event.get("message") or "")),
            escape(json.dumps(data, separators=(",", ":"))) if data else "",
        )
    return table


@jobs_app.command("events")
def jobs_events(
    job_id: str,
    after: Annotated[int | None, typer.Option("--after", help="Only events with a greater seq.")] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1)] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing until the job ends.")] = False,
    poll_interval: PollInterval = 1.0,
    api_url: ApiUrl = DEFAULT_API_URL,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """Show a job's events (log lines and per-epoch metrics)."""
    with session(api_url, api_key) as client:
        if not follow:
            page = client.events(job_id, after=after, limit=limit)
            emit(page, as_json, _events_table(page.get("data", [])))
            return

        def on_update(job: JSONDict, events: list[JSONDict]) -> None:
            for event in events:
                if as_json:
                    typer.echo(json.dumps(event))
                else:
                    console.print(
                        f"[dim]{event.get('seq')} {event.get('created_at', '')}[/] {event.get('level', '')}: "
                        f"{escape(str(event.get('message', '')))}",
                        highlight=False,
                    )

        final = client.wait(job_id, poll_interval, on_update, events_after=after)
    if not as_json:
        console.print(f"{final.get('id', job_id)} {styled_status(final.get('status'))}")


@jobs_app.command("wait")
def jobs_wait(
    job_id: str,
    poll_interval: PollInterval = 1.0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Do not print events.")] = False,
    api_url: ApiUrl = DEFAULT_API_URL,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """Follow a job with a progress bar until it ends; exit code 1 if it failed or was cancelled."""
    with session(api_url, api_key) as client:
        job = client.get_job(job_id)
        final = _follow(client, job, poll_interval, quiet=quiet, as_json=as_json)
        curves = None if as_json else curves_view(client, final)
    _finish(final, as_json, curves)


# -- artifacts -----------------------------------------------------------------------------------------------

artifacts_app = typer.Typer(no_args_is_help=True, help="List and download a finished job's outputs.")


@artifacts_app.command("list")
def artifacts_list(
    job_id: str, api_url: ApiUrl = DEFAULT_API_URL, api_key: ApiKey = None, as_json: AsJson = False
) -> None:
    """List a job's artifacts (model.safetensors, report.json)."""
    with session(api_url, api_key) as client:
        page = client.list_artifacts(job_id)
    table = Table("name", "size", "sha256", title=f"artifacts of {job_id}", title_justify="left")
    for item in page.get("data", []):
        table.add_row(str(item.get("name", "")), fmt_bytes(item.get("bytes")), str(item.get("sha256") or ""))
    emit(page, as_json, table)


@artifacts_app.command("download")
def artifacts_download(
    job_id: str,
    name: Annotated[str | None, typer.Argument(help="Artifact name; all of them when omitted.")] = None,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Folder (or, with NAME, a file path) to write to.")
    ] = Path("."),
    api_url: ApiUrl = DEFAULT_API_URL,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """Download artifacts, checking each one's sha256."""
    with session(api_url, api_key) as client:
        if name is None:
            names = [str(item["name"]) for item in client.list_artifacts(job_id).get("data", [])]
            output.mkdir(parents=True, exist_ok=True)
        else:
            names = [name]
        paths = [client.download_artifact(job_id, item, output) for item in names]
    if as_json:
        emit({"paths": [str(path) for path in paths]}, True)
    else:
        for path in paths:
            console.print(f"wrote {escape(str(path))}")


def register(app: typer.Typer) -> None:
    """Add the user commands to the ``distill`` root app."""
    app.add_typer(files_app, name="files")
    app.add_typer(jobs_app, name="jobs")
    app.add_typer(artifacts_app, name="artifacts")
    app.command("demo")(demo.main)
