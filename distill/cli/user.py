"""User commands of ``distill``: ``files``, ``jobs``, ``artifacts`` (and ``demo``), through the light client.

The root options (``distill --api-url URL --api-key KEY --json -q COMMAND…``, see :mod:`distill.cli`) come
in as a :class:`Options` on the typer context. Output: a table or a sentence saying what happened; with
``--json`` the API's JSON answer; with ``-q`` only ids (one per line). Errors go to stderr; exit codes
are 0 on success, 1 when the API or a file says no, or when a followed job did not succeed.

(Over 500 lines: the user commands share one option set, one output style and one error path; each
command is a few lines over the client.)
"""

from __future__ import annotations

import contextlib
import enum
import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Generic, TypeVar

import typer
import yaml
from pydantic import BaseModel
from rich.console import Console, RenderableType
from rich.markup import escape
from rich.table import Table

from distill.cli.config import ConfigError, resolve
from distill.cli.ui import (
    JobBars,
    curve_lines,
    fmt_bytes,
    fmt_num,
    fmt_pct,
    fmt_progress,
    object_table,
    styled_status,
)
from distill.client.sdk import Client, DistillError, Purpose
from distill.schemas import DeliveryRead, EventRead, FileRead, JobRead, ListRead, WebhookRead

Row = TypeVar("Row", FileRead, JobRead)

console = Console()
err_console = Console(stderr=True, soft_wrap=True)

PollInterval = Annotated[
    float,
    typer.Option(
        "--poll-interval",
        min=0.05,
        help="Seconds between progress reads (events arrive on the live stream; polled only when the "
        "server has no stream).",
    ),
]
DATASET_FORMATS = "CSV, Parquet, JSONL or NPZ"
FLAG = ""
"""Metavar of on/off options: typer's help would otherwise show ``--json <bool>``, as if it took a value."""


class PurposeChoice(enum.StrEnum):
    dataset = "dataset"
    model = "model"


class StatusChoice(enum.StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


@dataclass(frozen=True)
class Options:
    """The root options, given once before the command."""

    api_url: str | None = None
    api_key: str | None = None
    as_json: bool = False
    quiet: bool = False


def options(ctx: typer.Context) -> Options:
    """The root options of this invocation (defaults when a sub-app runs on its own, as in tests)."""
    root = ctx.find_root()
    return root.obj if isinstance(root.obj, Options) else Options()


def make_client(api_url: str, api_key: str | None) -> Client:
    """Build the client for a command (one place, so every command talks to the API the same way)."""
    return Client(api_url, api_key)


def fail(message: str) -> typer.Exit:
    """Print ``error: message`` on stderr; the caller raises the returned exit (code 1)."""
    err_console.print(f"[red]error[/] {message}", highlight=False)
    return typer.Exit(1)


@contextlib.contextmanager
def session(ctx: typer.Context) -> Iterator[Client]:
    """A client for one command; a :class:`DistillError` becomes a message on stderr and exit code 1."""
    opts = options(ctx)
    try:
        target = resolve(opts.api_url, opts.api_key)
    except ConfigError as exc:
        raise fail(escape(str(exc))) from exc
    if not target.api_key:
        raise fail(
            "no API key: pass --api-key, set DISTILL_API_KEY, or put api_key in the config file "
            "(`distill standalone` prints one on its first start)"
        )
    try:
        with make_client(target.api_url, target.api_key) as client:
            yield client
    except DistillError as exc:
        raise fail(escape(str(exc))) from exc


def emit(
    ctx: typer.Context, answer: BaseModel | dict[str, Any], render: RenderableType, ids: Sequence[str]
) -> None:
    """Print ``answer`` as JSON (``--json``), its ids (``-q``), or ``render``."""
    opts = options(ctx)
    if opts.as_json:
        body = answer.model_dump(mode="json") if isinstance(answer, BaseModel) else answer
        typer.echo(json.dumps(body, indent=2))
    elif opts.quiet:
        for item in ids:
            typer.echo(item)
    else:
        console.print(render, highlight=False)


# -- files ---------------------------------------------------------------------------------------------------

files_app = typer.Typer(
    no_args_is_help=True,
    help=f"Upload and manage datasets ({DATASET_FORMATS}) and models (.safetensors, or a Hugging Face "
    "model folder zipped or tarred).",
)


@dataclass
class Listing(Generic[Row]):
    """What ``files list`` and ``jobs list`` show: one page (with its cursor), or every page (``--all``)."""

    items: list[Row]
    has_more: bool
    answer: dict[str, Any]
    """The ``--json`` output: the page as the API answered it, or every item as one page."""

    @classmethod
    def of(cls, page: ListRead[Row]) -> Listing[Row]:
        return cls(page.data, page.has_more, page.model_dump(mode="json"))

    @classmethod
    def every(cls, items: Iterable[Row]) -> Listing[Row]:
        rows = list(items)
        answer = {"object": "list", "data": [r.model_dump(mode="json") for r in rows], "has_more": False}
        return cls(rows, False, answer)

    def emit(self, ctx: typer.Context, table: Table, what: str) -> None:
        if self.has_more:
            table.caption = f"more: distill {what} list --after {self.items[-1].id}"
        emit(ctx, self.answer, table, [r.id for r in self.items])


def _files_table(files: list[FileRead]) -> Table:
    table = Table(
        "id", "filename", "purpose", "size", "sha256", "created", title="files", title_justify="left"
    )
    table.columns[0].no_wrap = True
    for item in files:
        table.add_row(
            item.id,
            escape(item.filename),
            item.purpose,
            fmt_bytes(item.bytes),
            item.sha256[:12],
            item.created_at.isoformat(timespec="seconds"),
        )
    return table


@files_app.command("upload")
def files_upload(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="File to upload.")],
    purpose: Annotated[
        PurposeChoice, typer.Option("--purpose", "-p", help="dataset (the default) or model.")
    ] = PurposeChoice.dataset,
) -> None:
    """Upload a dataset (CSV, Parquet, JSONL or NPZ: numeric features and an optional label column, a text
    field for text jobs, or prompt/completion or chat messages for causal-LM jobs) or a model (a
    .safetensors written by Distill, or a Hugging Face model: the folder save_pretrained writes, as .zip,
    .tar or .tar.gz); it is validated on upload."""
    with session(ctx) as client:
        file = client.upload_file(path, purpose.value)
    emit(ctx, file, object_table(file.to_dict(), title=f"uploaded {file.id}"), [file.id])


@files_app.command("list")
def files_list(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option("--limit", min=1, max=100, help="Page size.")] = 20,
    after: Annotated[str | None, typer.Option("--after", help="Cursor: a file id.")] = None,
    purpose: Annotated[PurposeChoice | None, typer.Option("--purpose", "-p")] = None,
    all_pages: Annotated[
        bool, typer.Option("--all", metavar=FLAG, help="Follow the cursor through every page.")
    ] = False,
) -> None:
    """List uploaded files, newest first."""
    kind: Purpose | None = purpose.value if purpose is not None else None
    with session(ctx) as client:
        if all_pages:
            listing = Listing.every(client.iter_files(purpose=kind, page_size=limit))
        else:
            listing = Listing.of(client.list_files(limit=limit, after=after, purpose=kind))
    listing.emit(ctx, _files_table(listing.items), "files")


@files_app.command("get")
def files_get(ctx: typer.Context, file_id: str) -> None:
    """Show one file: size, sha256 and what validation found (shape, classes, examples)."""
    with session(ctx) as client:
        file = client.get_file(file_id)
    emit(ctx, file, object_table(file.to_dict()), [file.id])


@files_app.command("delete")
def files_delete(ctx: typer.Context, file_id: str) -> None:
    """Delete a file (jobs that already used it keep their results)."""
    with session(ctx) as client:
        answer = client.delete_file(file_id)
    emit(ctx, answer, f"deleted {escape(answer.id)}", [answer.id])


# -- jobs ----------------------------------------------------------------------------------------------------

jobs_app = typer.Typer(no_args_is_help=True, help="Submit, follow and cancel training/distillation jobs.")


def _jobs_table(jobs: list[JobRead]) -> Table:
    table = Table(
        "id", "name", "status", "progress", "test acc", "created", title="jobs", title_justify="left"
    )
    table.columns[0].no_wrap = True
    for job in jobs:
        table.add_row(
            job.id,
            escape(job.name or ""),
            styled_status(job.status),
            fmt_progress(job),
            fmt_pct((job.result or {}).get("test_accuracy")),
            job.created_at.isoformat(timespec="seconds"),
        )
    return table


def _lm_result_table(result: dict[str, Any]) -> Table:
    """A causal-LM job's metrics: held-out exact match, token accuracy, perplexity, size and speed."""
    table = Table("", "exact match", "token accuracy", "perplexity", "parameters", "tokens/s")
    for row, prefix in (("model", ""), ("teacher", "teacher_")):
        if row == "teacher" and f"{prefix}parameters" not in result:
            continue
        table.add_row(
            row,
            fmt_pct(result.get(f"{prefix}exact_match")),
            fmt_pct(result.get(f"{prefix}token_accuracy")),
            fmt_num(result.get(f"{prefix}perplexity"), 3),
            fmt_num(result.get(f"{prefix}parameters")),
            fmt_num(result.get(f"{prefix}tokens_per_second"), 0),
        )
    return table


def result_table(job: JobRead) -> Table:
    """The job's metrics: the student's and, for a distillation, the teacher's."""
    result: dict[str, Any] = job.result or {}
    if "exact_match" in result or "token_accuracy" in result:
        table = _lm_result_table(result)
        table.title = f"{job.id} {escape(job.name or '')}".strip()
        table.title_justify = "left"
        return table
    table = Table("", "test accuracy", "parameters", "CPU latency (ms, batch 1)", "CPU throughput (ex/s)")
    table.title = f"{job.id} {escape(job.name or '')}".strip()
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


def curves_view(client: Client, job: JobRead) -> str | None:
    """A succeeded job's validation curve per epoch as sparklines, from its report.json when that is small,
    and where to find curves.svg; None for a job that did not succeed or has neither."""
    if job.status != "succeeded":
        return None
    try:
        listing = {a.name: a for a in client.list_artifacts(job.id).data}
        report_entry = listing.get("report.json")
        report = None
        if report_entry is not None and report_entry.bytes <= REPORT_MAX_BYTES:
            report = json.loads(client.read_artifact(job.id, "report.json"))
    except (DistillError, ValueError):
        return None
    lines = curve_lines(report) if isinstance(report, dict) else []
    lines.append(f"download: distill artifacts download {job.id}")
    return "\n".join(lines)


def _follow(ctx: typer.Context, client: Client, job: JobRead, poll_interval: float, events: bool) -> JobRead:
    """Wait for ``job`` with a live progress bar (on stderr unless plain output, so stdout stays JSON or
    ids); ``events`` also prints each event line."""
    opts = options(ctx)
    bar_console = err_console if opts.as_json or opts.quiet else console
    with JobBars(bar_console) as bars:
        task = bars.add(job.name or job.id, job)
        return client.wait(job.id, poll_interval, bars.callback(task, print_events=events))


def _finish(ctx: typer.Context, final: JobRead, curves: str | None = None) -> None:
    """Print the finished job (and its curves); exit 1 unless it succeeded."""
    opts = options(ctx)
    if opts.as_json or opts.quiet:
        emit(ctx, final, "", [final.id])
    elif final.status == "succeeded":
        console.print(result_table(final))
        if curves:
            console.print(escape(curves), highlight=False)
    if final.status != "succeeded":
        error = final.error
        detail = f": {error.code}: {error.message}" if error is not None else ""
        err_console.print(f"job {final.id} {styled_status(final.status)}{escape(detail)}", highlight=False)
        raise typer.Exit(1)


def read_spec(source: str) -> dict[str, Any]:
    """A job spec from a YAML or JSON file (JSON is YAML), or ``-`` for stdin."""
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text()
        spec = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise fail(f"cannot read a job spec from {escape(source)}: {escape(str(exc))}") from exc
    if not isinstance(spec, dict):
        raise fail(
            f"{escape(source)}: a job spec is a mapping (YAML) or an object (JSON), e.g. examples/*.yaml"
        )
    return spec


@jobs_app.command("create")
def jobs_create(
    ctx: typer.Context,
    spec_file: Annotated[
        str, typer.Argument(help="Job spec file, YAML or JSON (see examples/), or - for stdin.")
    ],
    name: Annotated[str | None, typer.Option("--name", help="Override the spec's name.")] = None,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait",
            metavar=FLAG,
            help="Follow the job with a progress bar until it ends (exit 1 unless it succeeds).",
        ),
    ] = False,
    poll_interval: PollInterval = 1.0,
) -> None:
    """Submit a job. The API checks the spec and every file or job it names (422 naming the field)."""
    spec = read_spec(spec_file)
    if name is not None:
        spec["name"] = name
    with session(ctx) as client:
        job = client.create_job(spec)
        if not wait:
            emit(ctx, job, f"created {job.id} ({styled_status(job.status)})", [job.id])
            return
        if not (options(ctx).as_json or options(ctx).quiet):
            console.print(f"created {job.id}", highlight=False)
        final = _follow(ctx, client, job, poll_interval, events=False)
        curves = curves_view(client, final)
    _finish(ctx, final, curves)


@jobs_app.command("get")
def jobs_get(ctx: typer.Context, job_id: str) -> None:
    """Show one job (and, once it succeeded, its validation curve per epoch)."""
    with session(ctx) as client:
        job = client.get_job(job_id)
        curves = None if options(ctx).as_json or options(ctx).quiet else curves_view(client, job)
    emit(ctx, job, object_table(job.to_dict()), [job.id])
    if curves:
        console.print(escape(curves), highlight=False)


@jobs_app.command("list")
def jobs_list(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option("--limit", min=1, max=100, help="Page size.")] = 20,
    after: Annotated[str | None, typer.Option("--after", help="Cursor: a job id.")] = None,
    status: Annotated[StatusChoice | None, typer.Option("--status")] = None,
    all_pages: Annotated[
        bool, typer.Option("--all", metavar=FLAG, help="Follow the cursor through every page.")
    ] = False,
) -> None:
    """List jobs, newest first."""
    status_value = status.value if status is not None else None
    with session(ctx) as client:
        if all_pages:
            listing = Listing.every(client.iter_jobs(status=status_value, page_size=limit))
        else:
            listing = Listing.of(client.list_jobs(limit=limit, after=after, status=status_value))
    listing.emit(ctx, _jobs_table(listing.items), "jobs")


@jobs_app.command("cancel")
def jobs_cancel(ctx: typer.Context, job_id: str) -> None:
    """Cancel a queued job at once, or ask a running one to stop at its next step."""
    with session(ctx) as client:
        job = client.cancel_job(job_id)
    if job.status == "cancelled":
        message = f"{job.id} cancelled"
    else:
        message = (
            f"{job.id}: cancellation requested; the job stops at its next step (distill jobs get {job.id})"
        )
    emit(ctx, job, message, [job.id])


def _event_line(event: EventRead) -> str:
    data = f" {json.dumps(event.data, separators=(',', ':'))}" if event.data else ""
    return (
        f"[dim]{event.seq:>4} {event.created_at.isoformat(timespec='seconds')}[/] {event.level}: "
        f"{escape(event.message)}[dim]{escape(data)}[/]"
    )


@jobs_app.command("logs")
def jobs_logs(
    ctx: typer.Context,
    job_id: str,
    after: Annotated[int | None, typer.Option("--after", help="Only events with a greater seq.")] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, max=1000)] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", metavar=FLAG, help="Keep printing until the job ends.")
    ] = False,
    poll_interval: PollInterval = 1.0,
) -> None:
    """Show a job's events: queued, started, data loaded, each epoch's losses and accuracy, finished.
    With --json, one JSON object per line."""
    opts = options(ctx)

    def show(events: list[EventRead]) -> None:
        for event in events:
            if opts.as_json:
                typer.echo(event.model_dump_json())
            elif opts.quiet:
                typer.echo(str(event.seq))
            else:
                console.print(_event_line(event), highlight=False)

    with session(ctx) as client:
        if not follow:
            show(client.events(job_id, after=after, limit=limit).data)
            return
        final = client.wait(job_id, poll_interval, lambda job, events: show(events), events_after=after)
    if not (opts.as_json or opts.quiet):
        console.print(f"{final.id} {styled_status(final.status)}", highlight=False)


jobs_app.command("events", hidden=True)(jobs_logs)  # the 0.1 name


@jobs_app.command("wait")
def jobs_wait(
    ctx: typer.Context,
    job_id: str,
    poll_interval: PollInterval = 1.0,
    events: Annotated[bool, typer.Option("--events", metavar=FLAG, help="Also print each event.")] = False,
) -> None:
    """Follow a job with a progress bar until it ends; exit code 1 if it failed or was cancelled."""
    with session(ctx) as client:
        job = client.get_job(job_id)
        final = _follow(ctx, client, job, poll_interval, events=events)
        curves = curves_view(client, final)
    _finish(ctx, final, curves)


# -- artifacts -----------------------------------------------------------------------------------------------

artifacts_app = typer.Typer(no_args_is_help=True, help="List and download a finished job's outputs.")


@artifacts_app.command("list")
def artifacts_list(ctx: typer.Context, job_id: str) -> None:
    """List a job's artifacts (model.safetensors or model.hf.zip, report.json, curves.svg, exports)."""
    with session(ctx) as client:
        page = client.list_artifacts(job_id)
    table = Table("name", "size", "sha256", title=f"artifacts of {job_id}", title_justify="left")
    for item in page.data:
        table.add_row(item.name, fmt_bytes(item.bytes), item.sha256)
    emit(ctx, page, table, [item.name for item in page.data])


@artifacts_app.command("download")
def artifacts_download(
    ctx: typer.Context,
    job_id: str,
    names: Annotated[
        list[str] | None, typer.Argument(help="Artifact names (model.safetensors...); all when omitted.")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Folder to write into (created). Default: ./JOB_ID"),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", metavar=FLAG, help="Overwrite files that are already there.")
    ] = False,
) -> None:
    """Download a job's artifacts into a folder named after the job, checking each one's sha256.
    Refuses to overwrite an existing file unless --force."""
    folder = out if out is not None else Path(job_id)
    with session(ctx) as client:
        listing = [item.name for item in client.list_artifacts(job_id).data]
        wanted = names or listing
        unknown = [name for name in wanted if name not in listing]
        if unknown:
            raise fail(
                f"job {escape(job_id)} has no artifact {escape(', '.join(unknown))}"
                f" (it has: {escape(', '.join(listing) or 'none')})"
            )
        existing = [folder / name for name in wanted if (folder / name).exists()]
        if existing and not force:
            raise fail(
                f"{escape(', '.join(str(p) for p in existing))} already exist(s): pass --force to overwrite, "
                "or --out another folder"
            )
        folder.mkdir(parents=True, exist_ok=True)
        paths = [client.download_artifact(job_id, name, folder / name) for name in wanted]
    opts = options(ctx)
    if opts.as_json:
        typer.echo(json.dumps({"job": job_id, "paths": [str(p) for p in paths]}, indent=2))
    elif opts.quiet:
        for path in paths:
            typer.echo(str(path))
    else:
        for path in paths:
            console.print(f"wrote {escape(str(path))}", highlight=False)


# -- webhooks ------------------------------------------------------------------------------------------------

webhooks_app = typer.Typer(
    no_args_is_help=True,
    help="Endpoints that receive every job status change (POSTed, signed with HMAC-SHA256), and their "
    "delivery logs.",
)


def _webhooks_table(hooks: list[WebhookRead]) -> Table:
    table = Table("id", "url", "description", "created", title="webhooks", title_justify="left")
    table.columns[0].no_wrap = True
    for hook in hooks:
        table.add_row(
            hook.id,
            escape(hook.url),
            escape(hook.description or ""),
            hook.created_at.isoformat(timespec="seconds"),
        )
    return table


def _deliveries_table(webhook_id: str, deliveries: list[DeliveryRead]) -> Table:
    table = Table(
        "id", "job", "type", "state", "tries", "last answer", "created", title=f"deliveries to {webhook_id}"
    )
    table.title_justify = "left"
    table.columns[0].no_wrap = True
    styles = {"succeeded": "green", "failed": "red", "pending": "yellow"}
    for item in deliveries:
        last = item.attempts[-1] if item.attempts else None
        answer = "-" if last is None else str(last.status_code or "") or escape(last.error or "")
        table.add_row(
            item.id,
            item.job_id,
            item.type,
            f"[{styles.get(item.state, 'white')}]{item.state}[/]",
            str(len(item.attempts)),
            answer,
            item.created_at.isoformat(timespec="seconds"),
        )
    return table


@webhooks_app.command("create")
def webhooks_create(
    ctx: typer.Context,
    url: Annotated[str, typer.Argument(help="Where to POST each job status change (http:// or https://).")],
    description: Annotated[str | None, typer.Option("--description", "-d", help="A note for you.")] = None,
) -> None:
    """Register an endpoint. Prints its signing secret once: keep it to check Distill-Signature."""
    with session(ctx) as client:
        hook = client.create_webhook(url, description)
    render = object_table(hook.to_dict(), title=f"created {hook.id}")
    render.caption = "the secret is shown only now: store it to verify each delivery's Distill-Signature"
    emit(ctx, hook, render, [hook.id])


@webhooks_app.command("list")
def webhooks_list(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option("--limit", min=1, max=100, help="Page size.")] = 20,
    after: Annotated[str | None, typer.Option("--after", help="Cursor: a webhook id.")] = None,
) -> None:
    """List registered endpoints, newest first."""
    with session(ctx) as client:
        page = client.list_webhooks(limit=limit, after=after)
    table = _webhooks_table(page.data)
    if page.has_more:
        table.caption = f"more: distill webhooks list --after {page.data[-1].id}"
    emit(ctx, page, table, [hook.id for hook in page.data])


@webhooks_app.command("get")
def webhooks_get(ctx: typer.Context, webhook_id: str) -> None:
    """Show one endpoint."""
    with session(ctx) as client:
        hook = client.get_webhook(webhook_id)
    emit(ctx, hook, object_table(hook.to_dict()), [hook.id])


@webhooks_app.command("delete")
def webhooks_delete(ctx: typer.Context, webhook_id: str) -> None:
    """Stop sending to an endpoint."""
    with session(ctx) as client:
        answer = client.delete_webhook(webhook_id)
    emit(ctx, answer, f"deleted {escape(answer.id)}", [answer.id])


@webhooks_app.command("deliveries")
def webhooks_deliveries(
    ctx: typer.Context,
    webhook_id: str,
    limit: Annotated[int, typer.Option("--limit", min=1, max=100, help="Page size.")] = 20,
    after: Annotated[str | None, typer.Option("--after", help="Cursor: a delivery id.")] = None,
) -> None:
    """An endpoint's delivery log, newest first: each status change sent, its state and every try."""
    with session(ctx) as client:
        page = client.webhook_deliveries(webhook_id, limit=limit, after=after)
    table = _deliveries_table(webhook_id, page.data)
    if page.has_more:
        table.caption = f"more: distill webhooks deliveries {webhook_id} --after {page.data[-1].id}"
    emit(ctx, page, table, [item.id for item in page.data])


def register(app: typer.Typer) -> None:
    """Add the user commands to the ``distill`` root app."""
    from distill.cli import demo

    app.add_typer(files_app, name="files")
    app.add_typer(jobs_app, name="jobs")
    app.add_typer(artifacts_app, name="artifacts")
    app.add_typer(webhooks_app, name="webhooks")
    app.command("demo")(demo.main)
