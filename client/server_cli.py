"""Server-side commands: ``serve``, ``worker``, ``migrate``, ``keys create|list|revoke`` and ``standalone``.

They call into ``api`` and ``worker``; the imports stay inside the commands so that the user commands
(and ``distill --help``) start fast and never load PyTorch.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from datetime import datetime
from typing import Annotated

import typer

keys_app = typer.Typer(
    no_args_is_help=True, help="Manage API keys (run on the server, next to the database)."
)


def migrate() -> None:
    """Apply database migrations and make sure the object store exists."""
    from distill.db import migrate as run_migrations
    from distill.settings import get_settings
    from distill.storage import S3Store, make_store

    settings = get_settings()
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
    import uvicorn

    if workers > 1:
        uvicorn.run("api.app:create_app", factory=True, host=host, port=port, workers=workers)
    else:
        from api.app import create_app

        uvicorn.run(create_app(), host=host, port=port)


def worker(
    concurrency: Annotated[int, typer.Option(help="Jobs run at once (one per GPU is typical).")] = 1,
    loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "info",
) -> None:
    """Run a Celery worker that trains jobs from the queue."""
    from distill.settings import get_settings
    from worker.celery_app import app as celery_app

    pool = "solo" if concurrency == 1 else "prefork"
    celery_app.worker_main(
        [
            "worker",
            f"--concurrency={concurrency}",
            f"--pool={pool}",
            f"--queues={get_settings().queue_name}",
            f"--loglevel={loglevel}",
            "--without-gossip",
            "--without-mingle",
        ]
    )


def keys_create(
    tenant: Annotated[str, typer.Option(help="Tenant name; created when new.")],
) -> None:
    """Create an API key for a tenant and print it (only its hash is stored: keep it)."""
    from distill.db import make_engine, make_session_factory, transaction
    from distill.keys import create_key
    from distill.settings import get_settings

    engine = make_engine(get_settings().database_url)
    with transaction(make_session_factory(engine)) as session:
        key = create_key(session, tenant_name=tenant)
    engine.dispose()
    typer.echo(key)


def keys_list(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's keys.")] = None,
    revoked: Annotated[bool, typer.Option("--revoked", help="Show revoked keys too.")] = False,
) -> None:
    """List API keys: id, prefix, tenant, created, last used (never the key itself)."""
    from distill.db import make_engine, make_session_factory, transaction
    from distill.keys import list_keys
    from distill.settings import get_settings

    engine = make_engine(get_settings().database_url)
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
    from distill.db import make_engine, make_session_factory, transaction
    from distill.keys import KeyNotFound, revoke_key
    from distill.settings import get_settings

    engine = make_engine(get_settings().database_url)
    try:
        with transaction(make_session_factory(engine)) as session:
            info = revoke_key(session, key)
    except KeyNotFound as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    finally:
        engine.dispose()
    typer.echo(f"revoked {info.id} ({info.prefix}…, tenant {info.tenant})")


def standalone(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8000,
) -> None:
    """The API and a worker in one command; with nothing configured: SQLite, a folder queue and store."""
    from distill.settings import get_settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    migrate()
    env = {**os.environ, "DISTILL_HOME": str(settings.home)}
    worker_process = subprocess.Popen(
        [sys.executable, "-m", "client.cli", "worker", "--loglevel=warning"], env=env
    )
    typer.echo(f"distill standalone: API on http://{host}:{port}, data in {settings.home}", err=True)
    try:
        serve(host=host, port=port)
    finally:
        worker_process.send_signal(signal.SIGTERM)
        try:
            worker_process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            worker_process.kill()


def register(app: typer.Typer) -> None:
    app.command()(serve)
    app.command()(worker)
    app.command()(migrate)
    app.command()(standalone)
    keys_app.command("create")(keys_create)
    keys_app.command("list")(keys_list)
    keys_app.command("revoke")(keys_revoke)
    app.add_typer(keys_app, name="keys")
