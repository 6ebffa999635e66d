"""Server commands: ``serve``, ``worker``, ``migrate``, ``keys`` and ``standalone`` (add new ones here).

They need the server extra (``pip install 'distill[server]'``); without it each says so in one line. Their
imports stay inside the commands so that the user commands (and ``distill --help``) start fast on the
light client. Every command reads the same settings (``DISTILL_*``; home: ``DISTILL_HOME``, else the
per-user data folder), whatever folder it is started in.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from distill.settings import Settings

SERVER_MODULES = ("sqlalchemy", "fastapi", "uvicorn", "celery", "pydantic_settings", "torch")
DEFAULT_TENANT = "default"
WORKER_STOP_SECONDS = 15.0

keys_app = typer.Typer(
    no_args_is_help=True, help="Manage API keys (run on the server, next to the database)."
)


def require_server() -> None:
    """Exit with one line when the server extra is not installed."""
    missing = [name for name in SERVER_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        typer.echo(
            f"error: this is a server command and needs the server extra ({', '.join(missing)} missing): "
            "pip install 'distill[server]'",
            err=True,
        )
        raise typer.Exit(1)


def server_settings() -> Settings:
    require_server()
    from distill.settings import get_settings

    return get_settings()


def require_home(settings: Settings) -> None:
    """With the embedded default (SQLite under ``DISTILL_HOME``), exit with one line when that database does
    not exist yet, instead of creating an empty one and failing deep inside a query."""
    prefix = "sqlite:///"
    if not settings.database_url.startswith(prefix):
        return
    database = settings.database_url.removeprefix(prefix)
    if not os.path.exists(database):
        typer.echo(
            f"error: no Distill database at {database} (DISTILL_HOME={settings.home}): start "
            "`distill standalone` first, or point DISTILL_HOME (or DISTILL_DATABASE_URL) at an existing one",
            err=True,
        )
        raise typer.Exit(1)


def migrate() -> None:
    """Apply database migrations and make sure the object store exists."""
    settings = server_settings()
    from distill.db import migrate as run_migrations
    from distill.storage import S3Store, make_store

    settings.home.mkdir(parents=True, exist_ok=True)
    run_migrations(settings.database_url)
    store = make_store(settings)
    if isinstance(store, S3Store):
        store.ensure_bucket()
    typer.echo("migrations applied; object store ready", err=True)


def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8000,
    workers: Annotated[int, typer.Option(help="Uvicorn worker processes.")] = 1,
) -> None:
    """Serve the REST API."""
    require_home(server_settings())
    import uvicorn

    if workers > 1:
        uvicorn.run("api.app:create_app", factory=True, host=host, port=port, workers=workers)
    else:
        from api.app import create_app

        uvicorn.run(create_app(), host=host, port=port)


def worker_queues(option: str | None, settings: Settings) -> list[str]:
    """The queues a worker serves: ``--queues a,b`` (names as given, duplicates dropped), else the default
    queue. A name that no job may ask for (not the default queue and not in ``DISTILL_QUEUES`` when that
    is set) is refused: such a worker would wait forever."""
    if option is None:
        return [settings.queue_name]
    names = list(dict.fromkeys(name.strip() for name in option.split(",") if name.strip()))
    if not names:
        raise typer.BadParameter(
            "name at least one queue, e.g. --queues gpu-a100,distill", param_hint="--queues"
        )
    allowed = {q.strip() for q in settings.queues.split(",") if q.strip()}
    if allowed:
        unknown = [n for n in names if n != settings.queue_name and n not in allowed]
        if unknown:
            raise typer.BadParameter(
                f"{', '.join(unknown)}: no job can ask for it (DISTILL_QUEUES allows "
                f"{', '.join(sorted(allowed | {settings.queue_name}))})",
                param_hint="--queues",
            )
    return names


def worker(
    concurrency: Annotated[int, typer.Option(help="Jobs run at once (one per GPU is typical).")] = 1,
    loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "info",
    queues: Annotated[
        str | None,
        typer.Option(
            "--queues",
            "-Q",
            help="Comma-separated queues to take jobs from (a job picks one with resources.queue); "
            "default: the default queue (DISTILL_QUEUE_NAME, 'distill'), which is served alongside "
            "others only when named too, e.g. --queues gpu-a100,distill.",
        ),
    ] = None,
) -> None:
    """Run a Celery worker that trains jobs from one queue or several."""
    settings = server_settings()
    require_home(settings)
    names = worker_queues(queues, settings)
    from worker.celery_app import app as celery_app

    pool = "solo" if concurrency == 1 else "prefork"
    celery_app.worker_main(
        [
            "worker",
            f"--concurrency={concurrency}",
            f"--pool={pool}",
            f"--queues={','.join(names)}",
            f"--loglevel={loglevel}",
            "--without-gossip",
            "--without-mingle",
        ]
    )


def _create_key(settings: Settings, tenant: str, *, only_if_none: bool = False) -> str | None:
    """A new key for ``tenant`` (created when new); with ``only_if_none``, None when any key exists."""
    from sqlalchemy import func, select

    from distill.db import make_engine, make_session_factory, transaction
    from distill.keys import create_key
    from distill.tables import ApiKey

    engine = make_engine(settings.database_url)
    try:
        with transaction(make_session_factory(engine)) as session:
            if only_if_none and session.scalar(select(func.count()).select_from(ApiKey)):
                return None
            return create_key(session, tenant_name=tenant)
    finally:
        engine.dispose()


def keys_create(
    tenant: Annotated[str, typer.Option(help="Tenant name; created when new.")],
) -> None:
    """Create an API key for a tenant and print it (only its hash is stored: keep it)."""
    settings = server_settings()
    require_home(settings)
    typer.echo(_create_key(settings, tenant))


def keys_list(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's keys.")] = None,
    revoked: Annotated[bool, typer.Option("--revoked", help="Show revoked keys too.")] = False,
) -> None:
    """List API keys: id, prefix, tenant, created, last used (never the key itself)."""
    settings = server_settings()
    require_home(settings)
    from distill.db import make_engine, make_session_factory, transaction
    from distill.keys import list_keys

    engine = make_engine(settings.database_url)
    with transaction(make_session_factory(engine)) as session:
        keys = list_keys(session, tenant_name=tenant, revoked=revoked)
    engine.dispose()

    def when(value: datetime | None) -> str:
        return value.strftime("%Y-%m-%d %H:%M:%SZ") if value else "-"

    header = f"{'id':<32} {'prefix':<12} {'tenant':<20} {'created':<21} {'last used':<21}"
    typer.echo(header + (" revoked" if revoked else ""))
    for key in keys:
        line = (
            f"{key.id:<32} {key.prefix:<12} {key.tenant:<20} {when(key.created_at):<21} "
            f"{when(key.last_used_at):<21}"
        )
        typer.echo(line + (f" {when(key.revoked_at)}" if revoked else ""))


def keys_revoke(
    key: Annotated[
        str, typer.Argument(help="The key's id (key_...) or prefix (dsk_..., as `keys list` shows).")
    ],
) -> None:
    """Revoke an API key: its next request answers 401."""
    settings = server_settings()
    require_home(settings)
    from distill.db import make_engine, make_session_factory, transaction
    from distill.keys import KeyNotFound, revoke_key

    engine = make_engine(settings.database_url)
    try:
        with transaction(make_session_factory(engine)) as session:
            info = revoke_key(session, key)
    except KeyNotFound as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    finally:
        engine.dispose()
    typer.echo(f"revoked {info.id} ({info.prefix}…, tenant {info.tenant})")


def _die_with_parent() -> None:
    """In the worker child (Linux): receive SIGTERM if ``standalone`` dies without cleaning up (SIGKILL)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _start_worker(settings: Settings) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DISTILL_HOME": str(settings.home)}
    preexec: Callable[[], None] | None = _die_with_parent if sys.platform == "linux" else None
    return subprocess.Popen(
        [sys.executable, "-m", "distill.cli", "worker", "--loglevel=warning"], env=env, preexec_fn=preexec
    )


def _stop_worker(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=WORKER_STOP_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # uvicorn shuts down on SIGTERM, then raises the signal again under the handler it found: with this one
    # that unwinds through standalone's `finally` (which stops the worker) instead of killing the process.
    raise SystemExit(128 + signum)


def first_start_message(url: str, key: str) -> str:
    return (
        f"\nFirst start: created an API key for tenant {DEFAULT_TENANT!r} "
        "(only its hash is stored; keep it).\n"
        "In another terminal, paste:\n\n"
        f"    export DISTILL_API_URL={url} DISTILL_API_KEY={key}\n\n"
        "then train a first model (specs in examples/):\n\n"
        "    distill jobs create examples/mnist1d-teacher.yaml --wait\n"
    )


def standalone(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8000,
) -> None:
    """The API and a worker in one command; with nothing configured: SQLite, a folder queue and store
    under DISTILL_HOME (default: the per-user data folder). The first start creates and prints an API key.
    Ctrl-C or SIGTERM stops both."""
    settings = server_settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # alembic's plugin and context lines would bury the first start's key and next steps
    logging.getLogger("alembic").setLevel(logging.WARNING)
    migrate()
    url = f"http://{host}:{port}"
    key = _create_key(settings, DEFAULT_TENANT, only_if_none=True)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    worker_process = _start_worker(settings)
    try:
        typer.echo(f"distill standalone: API on {url}, data in {settings.home}", err=True)
        if key is not None:
            typer.echo(first_start_message(url, key))
        else:
            typer.echo(
                "API keys: use the one printed on the first start, or `distill keys create --tenant NAME`",
                err=True,
            )
        serve(host=host, port=port)
    finally:
        _stop_worker(worker_process)


def register(app: typer.Typer) -> None:
    app.command()(serve)
    app.command()(worker)
    app.command()(migrate)
    app.command()(standalone)
    keys_app.command("create")(keys_create)
    keys_app.command("list")(keys_list)
    keys_app.command("revoke")(keys_revoke)
    app.add_typer(keys_app, name="keys")
