"""Prometheus metrics at ``/metrics`` and the per-request log context.

Request counts and latencies are measured by a middleware, labelled by the route's template
(``/v1/jobs/{job_id}``, never the raw path, so label values stay few). Jobs by status, queue depth, job
durations, worker heartbeats and GPU memory are read when Prometheus scrapes (a collector), from Postgres,
the broker and torch: nothing to keep in step, and every API replica answers the same.

Each app has its own registry (tests build several apps in one process).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from distill.clock import utcnow
from distill.jobstate import JobStatus
from distill.logs import new_context
from distill.settings import Settings
from distill.tables import Job

log = logging.getLogger(__name__)
access_log = logging.getLogger("distill.access")

_JOB_IN_PATH = re.compile(r"^/v1/jobs/(job_[0-9a-z]+)")
DURATION_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 4 * 3600.0, 12 * 3600.0)
DURATION_WINDOW = timedelta(hours=24)


class JobsCollector(Collector):
    """What Postgres, the broker and the GPU say at scrape time."""

    def __init__(self, sessions: sessionmaker[Session], settings: Settings) -> None:
        self.sessions = sessions
        self.settings = settings

    def collect(self) -> Iterator[Any]:
        try:
            yield from self._from_database()
        except Exception:
            log.warning("metrics: database not readable", exc_info=True)
        depth = GaugeMetricFamily(
            "distill_queue_depth",
            "Messages waiting in a broker queue (not yet taken by a worker)",
            labels=["queue"],
        )
        for queue in self._queues():
            try:
                depth.add_metric([queue], self._queue_depth(queue))
            except Exception:
                log.warning("metrics: queue %s not readable", queue, exc_info=True)
        yield depth
        yield from _gpu_memory()

    def _queues(self) -> list[str]:
        names = [self.settings.queue_name, *(q.strip() for q in self.settings.queues.split(","))]
        return list(dict.fromkeys(n for n in names if n))

    def _queue_depth(self, queue: str) -> float:
        url = self.settings.broker_url
        if url.startswith("redis"):
            import redis

            client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
            try:
                depth = client.llen(queue)
                assert isinstance(depth, int)  # a sync client answers ints (the stubs allow awaitables)
                return float(depth)
            finally:
                client.close()
        folder = Path(self.settings.queue_folder) / "messages"
        return float(sum(1 for _ in folder.glob(f"*.{queue}.msg"))) if folder.is_dir() else 0.0

    def _from_database(self) -> Iterable[Any]:
        now = utcnow()
        with self.sessions() as session:
            counts = {
                status: count
                for status, count in session.execute(select(Job.status, func.count()).group_by(Job.status))
            }
            durations = session.execute(
                select(Job.started_at, Job.finished_at, Job.status).where(
                    Job.finished_at >= now - DURATION_WINDOW, Job.started_at.is_not(None)
                )
            ).all()
            beats = session.execute(
                select(Job.lease_owner, func.max(Job.heartbeat_at))
                .where(Job.status == JobStatus.RUNNING, Job.lease_owner.is_not(None))
                .group_by(Job.lease_owner)
            ).all()
        jobs = GaugeMetricFamily("distill_jobs", "Jobs by status", labels=["status"])
        for known in JobStatus:
            jobs.add_metric([known.value], float(counts.get(known.value, 0)))
        yield jobs

        by_status: dict[str, list[float]] = {}
        for started, finished, state in durations:
            if started is not None and finished is not None:
                by_status.setdefault(state, []).append((finished - started).total_seconds())
        hist = HistogramMetricFamily(
            "distill_job_duration_seconds",
            "Run time (start to finish) of jobs that finished in the last 24 hours",
            labels=["status"],
        )
        for state, values in sorted(by_status.items()):
            buckets = [(f"{b:g}", float(sum(1 for v in values if v <= b))) for b in DURATION_BUCKETS]
            buckets.append(("+Inf", float(len(values))))
            hist.add_metric([state], buckets, sum(values))
        yield hist

        beat = GaugeMetricFamily(
            "distill_worker_heartbeat_age_seconds",
            "Seconds since each worker with a running job last wrote its heartbeat",
            labels=["worker"],
        )
        for worker, at in beats:
            if worker is not None and at is not None:
                beat.add_metric([worker], max(0.0, (now - at).total_seconds()))
        yield beat


def _gpu_memory() -> Iterable[Any]:
    """Used and total memory of each GPU this host has (none: no samples).

    Read through NVML (``torch.cuda.device_memory_used``) where it is installed, which counts every process
    on the GPU (the workers' jobs included) and creates no CUDA context in the API process; else through
    ``mem_get_info``, which does.
    """
    try:
        import torch

        if not torch.cuda.is_available():
            return
        used = GaugeMetricFamily("distill_gpu_memory_used_bytes", "GPU memory in use", labels=["device"])
        total = GaugeMetricFamily("distill_gpu_memory_total_bytes", "GPU memory in all", labels=["device"])
        for index in range(torch.cuda.device_count()):
            try:
                in_use = float(torch.cuda.device_memory_used(index))
                whole = float(torch.cuda.get_device_properties(index).total_memory)
            except Exception:  # no pynvml: ask the CUDA runtime
                free, size = torch.cuda.mem_get_info(index)
                in_use, whole = float(size - free), float(size)
            used.add_metric([str(index)], in_use)
            total.add_metric([str(index)], whole)
        yield used
        yield total
    except Exception:
        log.warning("metrics: GPU memory not readable", exc_info=True)


class _Observe:
    """Request metrics, the access log line and a fresh log context per request, as a plain ASGI
    middleware: Starlette's ``@app.middleware("http")`` runs every request through a second task and a
    memory stream, which cost the status poll about a fifth of its throughput."""

    def __init__(self, app: ASGIApp, *, requests: Counter, latency: Histogram) -> None:
        self.app = app
        self.requests = requests
        self.latency = latency
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        """The labelled series per (method, route, status), looked up once (``labels`` takes a lock)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        match = _JOB_IN_PATH.match(path) if path.startswith("/v1/jobs/") else None
        new_context(job_id=match.group(1) if match else None)
        started = time.perf_counter()
        answered = False

        async def send_observed(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.start" and not answered:
                answered = True  # measured to the response headers (streams go on long after)
                self._record(scope, message["status"], started)
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        except BaseException:
            if not answered:
                answered = True
                self._record(scope, 500, started)
            raise

    def _record(self, scope: Scope, status: int, started: float) -> None:
        took = time.perf_counter() - started
        route = scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
        method = scope["method"]
        series = self._children.get((method, template, status))
        if series is None:
            series = (
                self.latency.labels(method, template),
                self.requests.labels(method, template, str(status)),
            )
            self._children[(method, template, status)] = series
        series[0].observe(took)
        series[1].inc()
        if access_log.isEnabledFor(logging.INFO):
            access_log.info(
                "%s %s %d %.1fms",
                method,
                scope["path"],
                status,
                took * 1000,
                extra={"route": template, "status": status, "duration_ms": round(took * 1000, 1)},
            )


def install_observability(
    app: FastAPI, sessions: sessionmaker[Session], settings: Settings
) -> CollectorRegistry:
    """Request metrics and log context for every request, and ``GET /metrics``."""
    registry = CollectorRegistry()
    requests = Counter(
        "distill_http_requests_total", "HTTP requests", ["method", "route", "status"], registry=registry
    )
    latency = Histogram(
        "distill_http_request_duration_seconds",
        "Time to answer an HTTP request (to the response headers for streams)",
        ["method", "route"],
        registry=registry,
    )
    registry.register(JobsCollector(sessions, settings))

    app.add_middleware(_Observe, requests=requests, latency=latency)

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return registry
