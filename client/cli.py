"""The ``distill`` command: server commands (serve, worker, migrate, keys, standalone) and user commands."""

from __future__ import annotations

import typer

from client import server_cli, user_cli

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Distill: distillation as a service.")
server_cli.register(app)
user_cli.register(app)

if __name__ == "__main__":
    app()
