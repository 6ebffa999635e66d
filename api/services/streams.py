"""A job's live event stream (server-sent events) and its metrics as time series.

Both read only what is already written: the job's event log in Postgres (epoch events carry the losses and
accuracies) and, once a job with a baseline has succeeded, the baseline's history in ``report.json``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from distill.jobstate import TERMINAL
from distill.storage import ObjectStore
from distill.tables import Artifact, Job, JobEvent

log = logging.getLogger(__name__)

EPOCH_PREFIX = "epoch "
PAGE = 500
STUDENT, BASELINE, TEACHER = "distilled student", "baseline (from scratch)", "teacher"


def _event_json(row: JobEvent) -> str:
    return json.dumps(
        {
            "seq": row.seq,
            "created_at": row.created_at.isoformat(),
            "level": row.level,
            "message": row.message,
            "data": row.data,
        },
        separators=(",", ":"),
    )


def _read_after(
    sessions: sessionmaker[Session], job_id: str, after: int
) -> tuple[list[tuple[int, str]], str | None, int]:
    """Up to ``PAGE`` events after ``after`` (seq, JSON), the job's status and its newest seq (None: gone)."""
    with sessions() as session:
        rows = [
            (row.seq, _event_json(row))
            for row in session.scalars(
                select(JobEvent)
                .where(JobEvent.job_id == job_id, JobEvent.seq > after)
                .order_by(JobEvent.seq)
                .limit(PAGE)
            )
        ]
        job = session.get(Job, job_id)
        return rows, (job.status if job is not None else None), (job.event_seq if job is not None else 0)


async def sse_events(
    sessions: sessionmaker[Session],
    job_id: str,
    after: int,
    *,
    poll_seconds: float,
    keepalive_seconds: float,
) -> AsyncIterator[str]:
    """``id: <seq>`` + ``data: <event JSON>`` per event after ``after``; a ``: keep-alive`` comment when
    quiet; a final ``event: end`` carrying the job's status once it is terminal and every event is sent.

    Async, with each read in the thread pool: an open stream holds neither a thread nor a database
    connection while it waits, so many browsers can watch at once.
    """
    last = after
    quiet_since = time.monotonic()
    yield "retry: 2000\n\n"
    while True:
        rows, status, newest = await run_in_threadpool(_read_after, sessions, job_id, last)
        for seq, body in rows:
            last = seq
            yield f"id: {seq}\ndata: {body}\n\n"
        if rows:
            quiet_since = time.monotonic()
        if status is None:
            return
        if status in TERMINAL and last >= newest:
            yield f"event: end\ndata: {json.dumps({'status': status})}\n\n"
            return
        if len(rows) == PAGE:
            continue
        if time.monotonic() - quiet_since >= keepalive_seconds:
            quiet_since = time.monotonic()
            yield ": keep-alive\n\n"
        await asyncio.sleep(poll_seconds)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def epoch_points(job: Job, events: list[JobEvent]) -> list[dict[str, Any]]:
    """One point per epoch event: its figures, the learning rate, and throughput since the previous point.

    Throughput is examples per second between two epoch events (the first from the ``job started`` event):
    steps times the batch size over the elapsed wall time. The learning rate is the event's when the runner
    writes one (``learning_rate``), else the spec's (the engine keeps it constant today).
    """
    training = (job.spec or {}).get("training") or {}
    batch = int(training.get("batch_size") or 0)
    spec_lr = _number(training.get("learning_rate"))
    points: list[dict[str, Any]] = []
    previous: tuple[datetime, int] | None = None
    epochs_per_run: set[int] = set()
    for event in events:
        data = event.data or {}
        if event.message.startswith("job started"):
            previous = (event.created_at, 0)
            continue
        if not event.message.startswith(EPOCH_PREFIX) or "epoch" not in data:
            continue
        epoch = int(data["epoch"])
        if epoch in epochs_per_run:  # a restarted attempt starts its curve again
            points.clear()
            epochs_per_run.clear()
        epochs_per_run.add(epoch)
        step = int(data.get("step") or 0)
        point: dict[str, Any] = {"epoch": epoch, "step": step, "time": event.created_at.isoformat()}
        for key, value in data.items():
            number = _number(value)
            if key not in ("epoch", "step") and number is not None:
                point[key] = number
        point.setdefault("learning_rate", spec_lr)
        if "throughput" not in point and previous is not None and batch:
            seconds = (event.created_at - previous[0]).total_seconds()
            steps = step - previous[1]
            point["throughput"] = round(steps * batch / seconds, 3) if seconds > 0 and steps > 0 else None
        previous = (event.created_at, step)
        points.append(point)
    return points


def _history_points(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    points = []
    for entry in history:
        point = {k: float(v) for k, v in entry.items() if _number(v) is not None}
        if "epoch" in point:
            point["epoch"] = int(point["epoch"])
            points.append(point)
    return points


def job_metrics(session: Session, store: ObjectStore, job: Job) -> dict[str, Any]:
    """The job's curves: the distilled student live from its epoch events, the from-scratch baseline and
    the teacher's accuracy once the job has succeeded (from ``report.json`` and the result)."""
    events = list(session.scalars(select(JobEvent).where(JobEvent.job_id == job.id).order_by(JobEvent.seq)))
    has_teacher = bool((job.spec or {}).get("teacher"))
    series: list[dict[str, Any]] = [
        {"name": STUDENT if has_teacher else "model", "role": "student", "points": epoch_points(job, events)}
    ]
    result = job.result or {}
    if job.status == "succeeded" and (job.spec or {}).get("baseline"):
        report = session.scalar(
            select(Artifact).where(Artifact.job_id == job.id, Artifact.name == "report.json")
        )
        if report is not None:
            try:
                history = json.loads(store.get_bytes(report.storage_key)).get("baseline_history") or []
                series.append({"name": BASELINE, "role": "baseline", "points": _history_points(history)})
            except Exception:  # a missing or unreadable report leaves the baseline out, never the answer
                log.warning("job %s: report.json unreadable for metrics", job.id, exc_info=True)
    teacher = {k.removeprefix("teacher_"): v for k, v in result.items() if k.startswith("teacher_")}
    if teacher:
        series.append({"name": TEACHER, "role": "teacher", "points": [], "summary": teacher})
    return {
        "object": "metrics",
        "job_id": job.id,
        "status": job.status,
        "progress": job.progress,
        "series": series,
        "result": result,
    }
