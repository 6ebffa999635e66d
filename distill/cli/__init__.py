"""The ``distill`` command: user commands (files, jobs, artifacts, demo) on the light client, and server
commands (serve, worker, migrate, keys, standalone) that need ``pip install 'distill[server]'``.

Root options come once, before the command: ``distill [--api-url URL] [--api-key KEY] [--json] [-q]
COMMAND …``. Importing this module loads typer and the client only; server code loads inside its commands.
"""

from __future__ import annotations

from typing import Annotated

import typer

from distill import __version__
from distill.cli import serve_model, server, user
from distill.cli.user import FLAG

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="Distill: distillation as a service. Start here: `distill standalone`, then the lines it prints.",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"distill {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    api_url: Annotated[
        str | None,
        typer.Option(
            "--api-url",
            envvar="DISTILL_API_URL",
            show_envvar=True,
            help="Base URL of the Distill API (else the config file's api_url, else http://127.0.0.1:8000).",
        ),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            envvar="DISTILL_API_KEY",
            show_envvar=True,
            show_default=False,
            help="API key (else the config file's api_key).",
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", metavar=FLAG, help="Print the API's JSON answers.")
    ] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", metavar=FLAG, help="Print only ids, one per line.")
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", metavar=FLAG, callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Distill: distillation as a service. Start here: `distill standalone`, then the lines it prints."""
    ctx.obj = user.Options(api_url=api_url, api_key=api_key, as_json=as_json, quiet=quiet)


server.register(app)
user.register(app)
serve_model.register(app)
