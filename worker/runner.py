"""The runner: takes a job id from the queue and carries the job through its life.

claim (``distill.lifecycle``: queued → running under a new lease) → load data and teachers
(``worker.inputs``) → the pipeline (``worker.pipeline``: teacher signals, training with callbacks for
progress, events and cancellation, evaluation, exports, report) → store artifacts (retried) → finish.

A ``_Lease`` thread renews the lease every ``heartbeat_seconds`` and learns of a cancel, of the
``training.max_runtime_s`` limit and of a warm shutdown; the training loop sees them at its next step.
Every write is a lifecycle transition fenced by the lease, so a worker that lost its lease can never
overwrite the job; a database error is retried with backoff (``db_retry_seconds``), never dropped. A job
taken over after a worker was lost restarts from scratch (see README: checkpoints plug in here).
The engine knows nothing of this: it gets arrays, a teacher module and callbacks.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from distill import lifecycle
from distill.db import is_transient, transaction
from distill.events import append_event
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

PROGRESS_INTERVAL_SECONDS = 1.0
T = TypeVar("T")


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class DatabaseUnavailable(Exception):
    """The database kept failing for longer than ``db_retry_seconds``: the job is left to its lease."""


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
        self.shutting_down = threading.Event()
        """Set on a warm shutdown: the running job is handed back (``running → queued``)."""

    # -- the job's life ------------------------------------------------------------------------------

    def run(self, job_id: str) -> str | None:
        """Run ``job_id`` if this worker can claim it; return its final status (None: not claimed, or
        handed back / taken over)."""
        owner = lifecycle.new_lease_owner(self.worker_id)
        try:
            job = self._claim(job_id, owner)
        except DatabaseUnavailable as error:
            log.error("job %s: could not claim it: %s (the reconciler sends it again)", job_id, error)
            return None
        if job is None:
            log.info("job %s: not claimed (already taken, finished or cancelled)", job_id)
            return None
        lease = _Lease(self, job, owner)
        lease.start()
        try:
            return self._run_claimed(job, lease)
        finally:
            lease.stop()

    def _run_claimed(self, job: Job, lease: _Lease) -> str | None:
        try:
            return self._execute(job, lease)
        except LeaseLost:
            log.warning("job %s: lease lost; another worker owns it now (or will)", job.id)
            return None
        except DatabaseUnavailable as error:
            log.error("job %s: %s; its lease runs out and the reconciler takes it back", job.id, error)
            return None
        except _Stopped:
            return self._stopped(job, lease)
        except JobFailure as failure:
            return self._fail(job.id, lease, failure.code, failure.message)
        except Exception as exc:
            if lease.lost:
                log.warning("job %s: lease lost (%s: %s)", job.id, type(exc).__name__, exc)
                return None
            if is_transient(exc):  # the database failed under the pipeline (e.g. loading inputs)
                log.error(
                    "job %s: database error (%s: %s); its lease runs out and the reconciler takes it back",
                    job.id,
                    type(exc).__name__,
                    exc,
                )
                return None
            log.exception("job %s failed", job.id)
            return self._fail(job.id, lease, "internal_error", f"{type(exc).__name__}: {exc}")

    def _claim(self, job_id: str, owner: str) -> Job | None:
        lease_seconds = self.settings.lease_seconds

        def claim(session: Session) -> Job | None:
            if not lifecycle.claim(session, job_id, owner, lease_seconds):
                return None
            job = session.get_one(Job, job_id)
            device = resolve_device(self.settings.device)
            message = f"job started on {self.worker_id}"
            if job.attempts > 1:
                message += f" (attempt {job.attempts}: taken over, restarting from the beginning)"
            append_event(
                session,
                job_id,
                message,
                data={"worker": self.worker_id, "device": str(device), "attempt": job.attempts},
            )
            return job

        return self._retrying(f"claim {job_id}", claim)

    def _execute(self, job: Job, lease: _Lease) -> str | None:
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
            pipeline = self._pipeline(job, spec, device, loader, lease)
        outcome = pipeline.run(lease.started)
        if outcome.stopped:
            raise _Stopped
        lease.check()
        return self._succeed(job, lease, outcome.result, outcome.summary, outcome.artifacts)

    def _pipeline(
        self, job: Job, spec: JobSpec, device: torch.device, loader: InputLoader, lease: _Lease
    ) -> Pipeline | TextPipeline:
        """Load the job's inputs and build its pipeline: text jobs (``encoder`` models) or tabular ones."""
        context = JobContext(
            job_id=job.id,
            spec=spec,
            cache=TeacherCache(self.store, job.tenant_id),
            device=device,
            progress=_Callbacks(lease),
            quiet=_Callbacks(lease, report=False),
            event=lambda message, data: lease.write(event=(message, data)),
        )
        if spec.model.arch == "encoder":
            text = loader.text_data(spec)
            teacher = loader.text_teacher(spec)
            lease.write(event=("data loaded", text.summary(0 if teacher is None else 1)))
            return TextPipeline(context, data=text, teacher=teacher)
        data = loader.data(spec)
        teachers = loader.teachers(spec, data)
        lease.write(event=("data loaded", data.summary(len(teachers))))
        return Pipeline(context, data=data, teachers=teachers)

    # -- database access: retried with backoff --------------------------------------------------------

    def _retrying(self, what: str, work: Callable[[Session], T]) -> T:
        """Run ``work`` in one transaction; on a transient database error retry it with backoff for up to
        ``db_retry_seconds``, then raise ``DatabaseUnavailable`` naming the last error."""
        deadline = time.monotonic() + self.settings.db_retry_seconds
        delay = 0.1
        while True:
            try:
                with transaction(self.sessions) as session:
                    return work(session)
            except Exception as error:
                if not is_transient(error):
                    raise
                if time.monotonic() + delay > deadline:
                    raise DatabaseUnavailable(
                        f"database unavailable for {self.settings.db_retry_seconds:g}s ({what}): "
                        f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
                    ) from error
                log.warning("%s: database error (%s); retrying in %.1fs", what, type(error).__name__, delay)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    # -- endings (each a fenced lifecycle transition) ------------------------------------------------

    def _finish(self, job_id: str, lease: _Lease, what: str, change: Callable[[Session], bool]) -> bool:
        try:
            return self._retrying(f"{what} {job_id}", change)
        except DatabaseUnavailable as error:
            log.error("job %s: could not record %s: %s", job_id, what, error)
            return False

    def _fail(self, job_id: str, lease: _Lease, code: str, message: str) -> str | None:
        def fail(session: Session) -> bool:
            if not lifecycle.fail(session, job_id, lease.owner, code, message):
                return False
            append_event(
                session,
                job_id,
                f"job failed: {message}",
                level="error",
                data={"code": code, "message": message},
            )
            return True

        lease.stop()
        return "failed" if self._finish(job_id, lease, "failure", fail) else None

    def _stopped(self, job: Job, lease: _Lease) -> str | None:
        """The training loop stopped early: a cancel, the runtime limit, a shutdown, or a lost lease."""
        if lease.lost:
            log.warning("job %s: lease lost; stopping without writing", job.id)
            return None
        if lease.timed_out:
            limit = JobSpec.model_validate(job.spec).training.max_runtime_s
            return self._fail(
                job.id,
                lease,
                "timeout",
                f"the job ran longer than training.max_runtime_s ({limit} s); raise the limit or train less "
                "(fewer epochs, a smaller model or dataset)",
            )
        if lease.cancel_requested:
            return self._cancelled(job.id, lease)
        if self.shutting_down.is_set():
            return self._hand_back(job.id, lease)
        raise RuntimeError("the training loop stopped without a reason")

    def _cancelled(self, job_id: str, lease: _Lease) -> str | None:
        def cancel(session: Session) -> bool:
            if not lifecycle.finish_cancelled(session, job_id, lease.owner):
                return False
            append_event(session, job_id, "job cancelled")
            return True

        lease.stop()
        return "cancelled" if self._finish(job_id, lease, "cancellation", cancel) else None

    def _hand_back(self, job_id: str, lease: _Lease) -> str | None:
        """Warm shutdown: ``running → queued``, so another worker starts the job again."""

        def release(session: Session) -> bool:
            if not lifecycle.release(session, job_id, lease.owner):
                return False
            append_event(
                session,
                job_id,
                f"job handed back: worker {self.worker_id} is shutting down; another worker restarts it",
                level="warning",
                data={"worker": self.worker_id},
            )
            return True

        lease.stop()
        self._finish(job_id, lease, "hand-back", release)
        log.warning("job %s: handed back (worker shutting down)", job_id)
        return None

    def _succeed(
        self,
        job: Job,
        lease: _Lease,
        result: dict[str, Any],
        summary: dict[str, Any],
        artifacts: dict[str, bytes],
    ) -> str | None:
        rows, keys = [], []
        try:
            for name, blob in artifacts.items():  # objects first, then the rows that point at them
                key = artifact_key(job.tenant_id, job.id, name)
                keys.append(key)
                self._upload(job.id, lease, key, blob)
                digest = hashlib.sha256(blob).hexdigest()
                rows.append(
                    Artifact(job_id=job.id, name=name, bytes=len(blob), sha256=digest, storage_key=key)
                )
        except BaseException:
            self._discard(keys)  # a job that does not succeed keeps no artifacts
            raise

        def succeed(session: Session) -> str | None:
            if lifecycle.succeed(session, job.id, lease.owner, result):
                session.add_all([_copy(row) for row in rows])
                append_event(session, job.id, "job succeeded", data=summary)
                return "succeeded"
            if lifecycle.finish_cancelled(session, job.id, lease.owner):  # a cancel won the race
                append_event(
                    session, job.id, "job cancelled (after its last step; its artifacts were discarded)"
                )
                return "cancelled"
            return None

        lease.stop()
        try:
            status = self._retrying(f"success {job.id}", succeed)
        except DatabaseUnavailable as error:
            log.error("job %s: could not record its success: %s", job.id, error)
            status = None
        if status != "succeeded":
            self._discard(keys)
        return status

    def _upload(self, job_id: str, lease: _Lease, key: str, blob: bytes) -> None:
        """Store one artifact, retrying with backoff for ``storage_retry_seconds``; then fail the job."""
        deadline = time.monotonic() + self.settings.storage_retry_seconds
        delay, told = 0.5, False
        while True:
            try:
                self.store.put_bytes(key, blob)
                return
            except Exception as error:
                name = key.rsplit("/", 1)[-1]
                detail = f"{type(error).__name__}: {error}"
                if time.monotonic() + delay > deadline:
                    raise JobFailure(
                        "storage_unavailable",
                        f"the object store did not accept artifact {name} for "
                        f"{self.settings.storage_retry_seconds:g}s ({detail}); nothing was kept: submit "
                        "the job again once the store is reachable",
                    ) from error
                if not told:
                    told = True
                    lease.write(
                        event=(
                            f"artifact upload failed; retrying for up to "
                            f"{self.settings.storage_retry_seconds:g}s",
                            {"error": detail},
                        )
                    )
                log.warning(
                    "job %s: upload of %s failed (%s); retrying in %.1fs", job_id, name, detail, delay
                )
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
                lease.check()

    def _discard(self, keys: list[str]) -> None:
        for key in keys:
            try:
                self.store.delete(key)
            except Exception as error:  # an orphan object without a row: harmless, never listed
                log.warning("could not delete %s: %s", key, error)


def _copy(row: Artifact) -> Artifact:
    """A fresh row for each try of the success transaction (a failed try leaves the old one attached)."""
    return Artifact(
        job_id=row.job_id, name=row.name, bytes=row.bytes, sha256=row.sha256, storage_key=row.storage_key
    )


class _Stopped(Exception):
    """The training loop stopped early (see ``Runner._stopped`` for why)."""


class _Lease:
    """The lease on one claimed job: a thread renews it every ``heartbeat_seconds`` and records what the
    runner must react to (cancel, runtime limit, lost lease); writes from the training loop go through
    ``write`` (fenced, retried), and renew the lease too."""

    def __init__(self, runner: Runner, job: Job, owner: str) -> None:
        self.runner = runner
        self.job_id = job.id
        self.owner = owner
        self.settings = runner.settings
        self.started = time.monotonic()
        limit = JobSpec.model_validate(job.spec).training.max_runtime_s
        self.deadline = None if limit is None else self.started + limit
        self.valid_until = self.started + self.settings.lease_seconds
        self.cancel_requested = False
        self.lost = False
        self.timed_out = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"lease-{job.id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=self.settings.db_statement_timeout_seconds + 5)

    @property
    def should_stop(self) -> bool:
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self.timed_out = True
        if time.monotonic() >= self.valid_until:
            self.lost = True  # unrenewed: another worker may already own the job
        return self.lost or self.timed_out or self.cancel_requested or self.runner.shutting_down.is_set()

    def check(self) -> None:
        """Raise ``LeaseLost`` (or stop) when the job may no longer be written by this worker."""
        if self.should_stop:
            if self.lost:
                raise LeaseLost(self.job_id)
            raise _Stopped

    def _renewed(self, beat: lifecycle.Beat, at: float) -> None:
        if not beat.held:
            self.lost = True
            raise LeaseLost(self.job_id)
        self.valid_until = at + self.settings.lease_seconds
        if beat.cancel_requested:
            self.cancel_requested = True

    def write(
        self,
        *,
        progress: dict[str, Any] | None = None,
        event: tuple[str, dict[str, Any]] | None = None,
    ) -> None:
        """Renew the lease with new progress and an event if given (retried), or raise ``LeaseLost``."""
        if self.lost:
            raise LeaseLost(self.job_id)
        values = {} if progress is None else {"progress": progress}
        at = time.monotonic()

        def write(session: Session) -> lifecycle.Beat:
            beat = lifecycle.heartbeat(
                session, self.job_id, self.owner, self.settings.lease_seconds, **values
            )
            if beat.held and event is not None:
                append_event(session, self.job_id, event[0], data=event[1])
            return beat

        self._renewed(self.runner._retrying(f"write {self.job_id}", write), at)

    def poll_cancel(self) -> None:
        """A cheap read of the cancel flag between steps (a database error only skips this poll)."""
        try:
            with self.runner.sessions() as session:
                flag = session.scalar(select(Job.cancel_requested).where(Job.id == self.job_id))
        except Exception as error:
            if not is_transient(error):
                raise
            return
        if flag:
            self.cancel_requested = True

    def _beat(self) -> None:
        interval = self.settings.heartbeat_seconds
        while not self._stop.wait(interval):
            at = time.monotonic()
            try:
                with transaction(self.runner.sessions) as session:
                    beat = lifecycle.heartbeat(session, self.job_id, self.owner, self.settings.lease_seconds)
                self._renewed(beat, at)
            except LeaseLost:
                log.warning("job %s: heartbeat found the lease gone", self.job_id)
                return
            except Exception as error:  # the database is down: keep trying until the lease runs out
                log.warning("job %s: heartbeat failed (%s: %s)", self.job_id, type(error).__name__, error)
                if time.monotonic() >= self.valid_until:
                    self.lost = True
                    return


class _Callbacks:
    """The engine's view of the runner: progress and epoch events (when ``report``), and whether to stop
    (a cancel, the runtime limit, a shutdown, or a lost lease)."""

    def __init__(self, lease: _Lease, *, report: bool = True) -> None:
        self.lease = lease
        self.report = report
        self._last_progress = 0.0
        self._last_poll = 0.0

    def on_step(self, *, epoch: int, epochs: int, step: int, steps: int) -> None:
        now = time.monotonic()
        if self.report and (now - self._last_progress >= PROGRESS_INTERVAL_SECONDS or step == 1):
            self._last_progress = now
            self.lease.write(progress=_progress(epoch - 1, epochs, step, steps))

    def on_epoch(self, *, epoch: int, epochs: int, step: int, steps: int, metrics: dict[str, float]) -> None:
        if not self.report:
            return
        self._last_progress = time.monotonic()
        rounded = {k: round(float(v), 6) for k, v in metrics.items()}
        self.lease.write(
            progress=_progress(epoch, epochs, step, steps),
            event=(f"epoch {epoch}/{epochs}", {"epoch": epoch, "step": step, **rounded}),
        )

    def should_stop(self) -> bool:
        now = time.monotonic()
        if (
            not self.lease.cancel_requested
            and now - self._last_poll >= self.lease.settings.cancel_poll_seconds
        ):
            self._last_poll = now
            self.lease.poll_cancel()
        return self.lease.should_stop


def _progress(epoch: int, epochs: int, step: int, steps: int) -> dict[str, int]:
    return {"epoch": epoch, "epochs": epochs, "step": step, "steps": steps}
