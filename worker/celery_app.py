"""The worker's Celery app: the shared queue configuration plus the one task, ``run_job(job_id)``.

Also starts the reconciler thread when the worker is ready, and on a warm shutdown (SIGTERM) tells the
runner to hand its running job back instead of losing it.
"""

from __future__ import annotations

import logging
from functools import cache
from typing import Any

import torch
from celery.signals import after_setup_logger, worker_process_init, worker_ready, worker_shutting_down

from distill.db import engine_for, make_session_factory
from distill.logs import configure_json_logging
from distill.queue import RUN_JOB_TASK, enqueue_job, make_celery
from distill.settings import get_settings
from distill.storage import make_store
from worker.metrics import serve_metrics
from worker.reconciler import Reconciler
from worker.runner import Runner

log = logging.getLogger(__name__)

app = make_celery(get_settings())


@cache
def get_runner() -> Runner:
    """One runner per worker process, built on first use (after Celery forks, never at import)."""
    settings = get_settings()
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    engine = engine_for(settings)
    return Runner(
        settings=settings,
        session_factory=make_session_factory(engine),
        store=make_store(settings),
        wake=lambda job_id, queue: enqueue_job(app, job_id, queue),
    )


@cache
def get_reconciler() -> Reconciler:
    settings = get_settings()
    return Reconciler(
        settings=settings,
        session_factory=make_session_factory(engine_for(settings)),
        queue=app,
        store=make_store(settings),  # it deletes the checkpoints of the jobs it ends
    )


@after_setup_logger.connect
def _json_logs(loglevel: int | str | None = None, **_kwargs: Any) -> None:
    """``DISTILL_LOG_FORMAT=json``: the worker's lines (Celery's included) as JSON objects that carry the
    ``job_id`` and ``tenant`` of the job they are about (the runner wraps each job in ``log_context``)."""
    if get_settings().log_format == "json":
        level = logging.getLevelName(loglevel) if isinstance(loglevel, str) else loglevel
        configure_json_logging(level if isinstance(level, int) else logging.INFO)


@worker_process_init.connect
def _warm_up_runner(**_kwargs: Any) -> None:
    """The process that runs jobs (a prefork child, or the worker itself with the solo pool, which sends
    this signal too) makes and warms its runner (engine, a connection, compiled statements, the store's
    client) before its first job: that job used to be picked up in 246 ms against 7 ms for the next."""
    get_runner().warm_up()


_exporter: list[Any] = []


@worker_ready.connect
def _start_reconciler(**_kwargs: Any) -> None:
    get_reconciler().start()
    settings = get_settings()
    if settings.worker_metrics_port:  # GPU memory and utilisation for Prometheus (worker/metrics.py)
        worker = get_runner().worker_id
        _exporter.append(serve_metrics(worker, settings.worker_metrics_port, settings.worker_metrics_host))


@worker_shutting_down.connect
def _hand_back_on_shutdown(sig: str = "", how: str = "", **_kwargs: Any) -> None:
    """Warm shutdown: the running job stops at its next step and goes back to the queue."""
    log.warning("worker shutting down (%s, %s): a running job is handed back", sig, how)
    get_runner().shutting_down.set()
    get_reconciler().stop(wait=False)
    for server in _exporter:
        server.shutdown()


@app.task(name=RUN_JOB_TASK)
def run_job(job_id: str) -> str | None:
    """Wake up for ``job_id``: the runner claims it in Postgres, so a duplicate message does nothing."""
    return get_runner().run(job_id)
