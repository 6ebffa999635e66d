"""The runner: takes a job id from the queue and carries the job through its life.

claim (conditional update queued → running) → load data and teachers (``worker.inputs``) → the pipeline
(``worker.pipeline``: teacher signals, training with callbacks for progress, events and cancellation,
evaluation, exports, report) → store artifacts → finish. Every write to a running job says
``WHERE id = … AND lease_owner = <this worker>``, so a worker that lost its lease can never overwrite
the job. The engine knows nothing of this: it gets arrays, a teacher module and callbacks.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from distill.clock import utcnow
from distill.db import affected, transaction
from distill.events import append_event
from distill.jobstate import JobStatus
from distill.settings import Settings
from distill.spec import JobSpec
from distill.storage import ObjectStore, artifact_key
from distill.tables import Artifact, Job
from worker.engine.device import resolve_device
from worker.failures import JobFailure, LeaseLost
from worker.inputs import InputLoader
from worker.pipeline import JobContext, Pipeline
from worker.teacher_cache import TeacherCache
from worker.text_pipeline import TextPipeline

log = logging.getLogger(__name__)

LEASE_SECONDS = 300
PROGRESS_INTERVAL_SECONDS = 1.0


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Runner:
    def __init__(
        self,
        *,
        settings: Settings,
        session_factory: sessionmaker[Session],
        store: ObjectStore,
        worker_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = session_factory
        self.store = store
        self.worker_id = worker_id or settings.worker_id or default_worker_id()

    # -- the job's life ------------------------------------------------------------------------------

    def run(self, job_id: str) -> str | None:
        """Run ``job_id`` if this worker can claim it; return its final status (None: not claimed)."""
        job = self._claim(job_id)
        if job is None:
            log.info("job %s: not claimed (already taken, finished or cancelled)", job_id)
            return None
        started = time.monotonic()
        status: str | None
        try:
            status = self._execute(job, started)
        except LeaseLost:
            log.warning("job %s: lease lost; another worker owns it now", job_id)
            return None
        except JobFailure as failure:
            status = self._fail(job_id, failure.code, failure.message)
        except Exception as exc:
            log.exception("job %s failed", job_id)
            status = self._fail(job_id, "internal_error", f"{type(exc).__name__}: {exc}")
        return status

    def _claim(self, job_id: str) -> Job | None:
        now = utcnow()
        with transaction(self.sessions) as session:
            claimed = affected(
                session.execute(
                    update(Job)
                    .where(Job.id == job_id, Job.status == JobStatus.QUEUED, Job.cancel_requested.is_(False))
                    .values(
                        status=JobStatus.RUNNING,
                        started_at=now,
                        attempts=Job.attempts + 1,
                        lease_owner=self.worker_id,
                        lease_expires_at=now + timedelta(seconds=LEASE_SECONDS),
                        heartbeat_at=now,
                    )
                )
            )
            if not claimed:
                return None
            device = resolve_device(self.settings.device)
            append_event(
                session,
                job_id,
                f"job started on {self.worker_id}",
                data={"worker": self.worker_id, "device": str(device)},
            )
            return session.get_one(Job, job_id)

    def _execute(self, job: Job, started: float) -> str:
        spec = JobSpec.model_validate(job.spec)
        device = resolve_device(self.settings.device)
        torch.manual_seed(spec.training.seed)
        with tempfile.TemporaryDirectory(prefix=f"distill-{job.id}-") as tmp:
            loader = InputLoader(
                sessions=self.sessions,
                store=self.store,
                cache_dir=self.settings.cache_folder,
                tenant_id=job.tenant_id,
                workdir=Path(tmp),
            )
            pipeline = self._pipeline(job, spec, device, loader)
        outcome = pipeline.run(started)
        if outcome.stopped:
            return self._finish_cancelled(job.id)
        return self._succeed(job, outcome.result, outcome.summary, outcome.artifacts)

    def _pipeline(
        self, job: Job, spec: JobSpec, device: torch.device, loader: InputLoader
    ) -> Pipeline | TextPipeline:
        """Load the job's inputs and build its pipeline: text jobs (``encoder`` models) or tabular ones."""
        context = JobContext(
            job_id=job.id,
            spec=spec,
            cache=TeacherCache(self.store, job.tenant_id),
            device=device,
            progress=_Callbacks(self, job.id),
            quiet=_Callbacks(self, job.id, report=False),
            event=lambda message, data: self._write(job.id, event=(message, data)),
        )
        if spec.model.arch == "encoder":
            text = loader.text_data(spec)
            teacher = loader.text_teacher(spec)
            self._write(job.id, event=("data loaded", text.summary(0 if teacher is None else 1)))
            return TextPipeline(context, data=text, teacher=teacher)
        data = loader.data(spec)
        teachers = loader.teachers(spec, data)
        self._write(job.id, event=("data loaded", data.summary(len(teachers))))
        return Pipeline(context, data=data, teachers=teachers)

    # -- writes (lease-guarded) ---------------------------------------------------------------------

    def _guarded_update(self, session: Session, job_id: str, **values: Any) -> None:
        """Update the running job this worker holds the lease on, or raise ``LeaseLost``."""
        updated = affected(
            session.execute(
                update(Job)
                .where(Job.id == job_id, Job.lease_owner == self.worker_id, Job.status == JobStatus.RUNNING)
                .values(**values)
            )
        )
        if not updated:
            raise LeaseLost(job_id)

    def _write(
        self,
        job_id: str,
        *,
        values: dict[str, Any] | None = None,
        event: tuple[str, dict[str, Any]] | None = None,
    ) -> None:
        """Heartbeat (and renew the lease), with new values and an event if given."""
        now = utcnow()
        with transaction(self.sessions) as session:
            lease = now + timedelta(seconds=LEASE_SECONDS)
            self._guarded_update(session, job_id, heartbeat_at=now, lease_expires_at=lease, **(values or {}))
            if event is not None:
                append_event(session, job_id, event[0], data=event[1])

    def cancel_requested(self, job_id: str) -> bool:
        with self.sessions() as session:
            return bool(session.scalar(select(Job.cancel_requested).where(Job.id == job_id)))

    def _finish(
        self, job_id: str, status: JobStatus, message: str, level: str = "info", **values: Any
    ) -> str:
        with transaction(self.sessions) as session:
            self._guarded_update(
                session, job_id, status=status, finished_at=utcnow(), lease_expires_at=None, **values
            )
            append_event(session, job_id, message, level=level, data=values.get("error") or {})
        return status.value

    def _fail(self, job_id: str, code: str, message: str) -> str | None:
        try:
            return self._finish(
                job_id,
                JobStatus.FAILED,
                f"job failed: {message}",
                level="error",
                error={"code": code, "message": message},
            )
        except LeaseLost:
            return None

    def _finish_cancelled(self, job_id: str) -> str:
        return self._finish(job_id, JobStatus.CANCELLED, "job cancelled")

    def _succeed(
        self, job: Job, result: dict[str, Any], summary: dict[str, Any], artifacts: dict[str, bytes]
    ) -> str:
        rows = []
        for name, blob in artifacts.items():  # objects first, then the rows that point at them
            key = artifact_key(job.tenant_id, job.id, name)
            self.store.put_bytes(key, blob)
            digest = hashlib.sha256(blob).hexdigest()
            rows.append(Artifact(job_id=job.id, name=name, bytes=len(blob), sha256=digest, storage_key=key))
        with transaction(self.sessions) as session:
            self._guarded_update(
                session,
                job.id,
                status=JobStatus.SUCCEEDED,
                finished_at=utcnow(),
                lease_expires_at=None,
                result=result,
            )
            session.add_all(rows)
            append_event(session, job.id, "job succeeded", data=summary)
        return JobStatus.SUCCEEDED.value


class _Callbacks:
    """The engine's view of the runner: progress and epoch events (when ``report``), and cancellation."""

    def __init__(self, runner: Runner, job_id: str, *, report: bool = True) -> None:
        self.runner = runner
        self.job_id = job_id
        self.report = report
        self._last_progress = 0.0
        self._last_poll = 0.0
        self._cancel = False

    def on_step(self, *, epoch: int, epochs: int, step: int, steps: int) -> None:
        now = time.monotonic()
        if self.report and (now - self._last_progress >= PROGRESS_INTERVAL_SECONDS or step == 1):
            self._last_progress = now
            self.runner._write(self.job_id, values={"progress": _progress(epoch - 1, epochs, step, steps)})

    def on_epoch(self, *, epoch: int, epochs: int, step: int, steps: int, metrics: dict[str, float]) -> None:
        if not self.report:
            return
        self._last_progress = time.monotonic()
        rounded = {k: round(float(v), 6) for k, v in metrics.items()}
        self.runner._write(
            self.job_id,
            values={"progress": _progress(epoch, epochs, step, steps)},
            event=(f"epoch {epoch}/{epochs}", {"epoch": epoch, "step": step, **rounded}),
        )

    def should_stop(self) -> bool:
        now = time.monotonic()
        if not self._cancel and now - self._last_poll >= self.runner.settings.cancel_poll_seconds:
            self._last_poll = now
            self._cancel = self.runner.cancel_requested(self.job_id)
        return self._cancel


def _progress(epoch: int, epochs: int, step: int, steps: int) -> dict[str, int]:
    return {"epoch": epoch, "epochs": epochs, "step": step, "steps": steps}
