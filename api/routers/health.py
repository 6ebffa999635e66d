"""Liveness and readiness (no API key needed).

``/readyz`` checks the three things a request or a job needs (the database, the broker, the object store)
at once, each under a deadline, and answers 503 with ``Retry-After`` naming the ones that failed.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

from celery import Celery
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import Engine, text

from api.errors import error_body
from api.responses import errors
from distill.storage import ObjectStore

router = APIRouter(tags=["health"])

CHECK_SECONDS = 2.0
_checks = ThreadPoolExecutor(max_workers=6, thread_name_prefix="readyz")


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


def _database(engine: Engine) -> None:
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))


def _broker(queue: Celery) -> None:
    with queue.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1, timeout=CHECK_SECONDS)


def _store(store: ObjectStore) -> None:
    store.exists("readyz-probe")  # False for a missing key; raises when the store cannot be reached


@router.get("/readyz", responses=errors(503))
def readyz(request: Request) -> Any:
    state = request.app.state
    checks: dict[str, Callable[[], None]] = {
        "database": lambda: _database(state.engine),
        "broker": lambda: _broker(state.celery),
        "store": lambda: _store(state.store),
    }
    futures = {name: _checks.submit(check) for name, check in checks.items()}
    wait(futures.values(), timeout=CHECK_SECONDS + 0.5)
    report: dict[str, str] = {}
    for name, future in futures.items():
        if not future.done():
            report[name] = f"no answer within {CHECK_SECONDS:g}s"
        elif future.exception() is not None:
            error = future.exception()
            report[name] = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        else:
            report[name] = "ok"
    failed = [name for name, status in report.items() if status != "ok"]
    if not failed:
        return {"status": "ok"}
    body = error_body("unavailable", f"not ready: {', '.join(failed)} unavailable", checks=report)
    retry_after = str(state.settings.retry_after_seconds)
    return JSONResponse(body, status_code=503, headers={"Retry-After": retry_after})
