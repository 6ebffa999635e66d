"""Structured logs: one JSON object per line, carrying the ``job_id`` and ``tenant`` a line is about.

The context lives in a contextvar holding a small dict: the API's middleware puts a fresh one in place per
request (with the job id of the path), the tenant dependency fills in the tenant, and a worker wraps a job
in :func:`log_context`. A mutable dict, because FastAPI runs dependencies and the endpoint in copies of the
request's context: a value *set* in a dependency would not reach the endpoint, a dict entry does.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

_CONTEXT: ContextVar[dict[str, str] | None] = ContextVar("distill_log_context", default=None)
CONTEXT_KEYS = ("job_id", "tenant")
EXTRA_KEYS = ("route", "status", "duration_ms")
"""Fields a log call may pass in ``extra=`` that the JSON line keeps (the access log's)."""


def new_context(**values: str | None) -> dict[str, str]:
    """Start a fresh context for this task/request and return it (its entries may be added later)."""
    context = {k: v for k, v in values.items() if v}
    _CONTEXT.set(context)
    return context


def bind(**values: str | None) -> None:
    """Add entries to the current context (no-op outside one)."""
    context = _CONTEXT.get()
    if context is not None:
        context.update({k: v for k, v in values.items() if v})


@contextmanager
def log_context(**values: str | None) -> Iterator[dict[str, str]]:
    """``with log_context(job_id=..., tenant=...):`` every log line inside carries them."""
    token = _CONTEXT.set({k: v for k, v in values.items() if v})
    try:
        yield _CONTEXT.get() or {}
    finally:
        _CONTEXT.reset(token)


class ContextFilter(logging.Filter):
    """Copies the context's entries onto each record (``record.job_id``, ``record.tenant``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in (_CONTEXT.get() or {}).items():
            setattr(record, key, value)
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in (*CONTEXT_KEYS, *EXTRA_KEYS):
            value = getattr(record, key, None)
            if value is not None and value != "":
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_json_logging(level: int = logging.INFO, stream: Any = None) -> logging.Handler:
    """Route the root logger (and uvicorn's) through one JSON handler; return the handler."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "celery"):
        logger = logging.getLogger(name)
        logger.handlers = []
        logger.propagate = True
    return handler
