"""The worker's Celery app: the shared queue configuration plus the one task, ``run_job(job_id)``."""

from __future__ import annotations

import logging
from functools import cache

import torch

from distill.db import make_engine, make_session_factory
from distill.queue import RUN_JOB_TASK, make_celery
from distill.settings import get_settings
from distill.storage import make_store
from worker.runner import Runner

log = logging.getLogger(__name__)

app = make_celery(get_settings())


@cache
def get_runner() -> Runner:
    """One runner per worker process, built on first use (after Celery forks, never at import)."""
    settings = get_settings()
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    engine = make_engine(settings.database_url)
    return Runner(settings=settings, session_factory=make_session_factory(engine), store=make_store(settings))


@app.task(name=RUN_JOB_TASK)
def run_job(job_id: str) -> str | None:
    """Wake up for ``job_id``: the runner claims it in Postgres, so a duplicate message does nothing."""
    return get_runner().run(job_id)
