"""``distill serve-model JOB_ID``: try a causal-LM student at once, behind an OpenAI-compatible API.

Downloads the job's ``model.hf.zip`` through the client (sha256 checked), unpacks it safely into the user
cache (``~/.cache/distill/models/JOB_ID``) and serves it with :mod:`distill.serving`; ``--model-dir`` serves
an unpacked ``save_pretrained`` folder without a job. Needs torch and transformers (the server extra).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from distill.cli import user

HF_ARCHIVE = "model.hf.zip"


def _model_cache() -> Path:
    import platformdirs

    return Path(os.environ.get("DISTILL_MODEL_CACHE") or platformdirs.user_cache_dir("distill")) / "models"


def fetch_job_model(ctx: typer.Context, job_id: str) -> Path:
    """The unpacked ``model.hf.zip`` of ``job_id`` (downloaded once into the user cache)."""
    from distill.serving import ServingError, extract_model_zip

    folder = _model_cache() / job_id
    if (folder / "config.json").is_file():
        return folder
    with user.session(ctx) as client, tempfile.TemporaryDirectory(prefix="distill-serve-") as tmp:
        names = [a.name for a in client.list_artifacts(job_id).data]
        if HF_ARCHIVE not in names:
            raise user.fail(
                f"job {job_id} has no {HF_ARCHIVE} (its artifacts: {', '.join(names) or 'none'}); only "
                "causal-LM jobs produce a model to serve"
            )
        archive = client.download_artifact(job_id, HF_ARCHIVE, Path(tmp) / HF_ARCHIVE)
        staging = Path(tmp) / "model"
        try:
            root = extract_model_zip(archive, staging)
        except ServingError as exc:
            raise user.fail(str(exc)) from exc
        folder.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(folder, ignore_errors=True)
        shutil.move(str(root), folder)
    return folder


def serve_model(
    ctx: typer.Context,
    job_id: Annotated[
        str | None, typer.Argument(help="A succeeded causal-LM job whose model.hf.zip to serve.")
    ] = None,
    model_dir: Annotated[
        Path | None,
        typer.Option(
            "--model-dir", file_okay=False, exists=True, help="Serve this save_pretrained folder instead."
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8001,
    name: Annotated[
        str | None,
        typer.Option("--name", help="The model name clients send (default: the job id or folder)."),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--serve-api-key",
            envvar="DISTILL_SERVE_API_KEY",
            show_default=False,
            help="Require `Authorization: Bearer KEY` from clients.",
        ),
    ] = None,
    device: Annotated[str, typer.Option(help="torch device: cpu, cuda, cuda:1...")] = "cpu",
) -> None:
    """Serve a causal LM behind an OpenAI-compatible /v1/chat/completions (streaming too)."""
    if (job_id is None) == (model_dir is None):
        raise user.fail("give a JOB_ID or --model-dir, not both")
    missing = [
        m for m in ("torch", "transformers", "fastapi", "uvicorn") if importlib.util.find_spec(m) is None
    ]
    if missing:
        raise user.fail(f"serve-model needs {', '.join(missing)}: pip install 'distill[server]'")
    from distill.serving import ServingError, serve

    folder = model_dir if model_dir is not None else fetch_job_model(ctx, str(job_id))
    served = name or (job_id if job_id is not None else folder.resolve().name)
    typer.echo(f"loading {folder} on {device}", err=True)

    def loaded() -> None:
        typer.echo(f"serving {served} on http://{host}:{port}/v1 (Ctrl-C stops)", err=True)

    try:
        serve(
            folder, name=served, host=host, port=port, api_key=api_key or None, device=device, loaded=loaded
        )
    except ServingError as exc:
        raise user.fail(str(exc)) from exc


def register(app: typer.Typer) -> None:
    app.command("serve-model")(serve_model)
