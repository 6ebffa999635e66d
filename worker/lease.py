"""A worker's hold on one claimed job: the lease (renewed by a heartbeat thread, and by every write of the
training loop), the callbacks the engine sees, and database access retried with backoff.

The lease records what the runner must react to (a cancel, the ``training.max_runtime_s`` limit, a warm
shutdown, a lost lease); the training loop sees it at its next step through ``TrainingCallbacks``.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from distill import lifecycle
from distill.db import is_transient, transaction
from distill.events import append_event
from distill.settings import Settings
from distill.spec import JobSpec
from distill.tables import Job
from worker.failures import LeaseLost

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_SECONDS = 1.0
T = TypeVar("T")


class DatabaseUnavailable(Exception):
    """The database kept failing for longer than ``db_retry_seconds``: the job is left to its lease."""


def retrying(sessions: sessionmaker[Session], seconds: float, what: str, work: Callable[[Session], T]) -> T:
    """Run ``work`` in one transaction; on a transient database error retry it with backoff for up to
    ``seconds``, then raise ``DatabaseUnavailable`` naming the last error."""
    deadline = time.monotonic() + seconds
    delay = 0.1
    while True:
        try:
            with transaction(sessions) as session:
                return work(session)
        except Exception as error:
            if not is_transient(error):
                raise
            if time.monotonic() + delay > deadline:
                raise DatabaseUnavailable(
                    f"database unavailable for {seconds:g}s ({what}): "
                    f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
                ) from error
            log.warning("%s: database error (%s); retrying in %.1fs", what, type(error).__name__, delay)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


class Stopped(Exception):
    """The training loop stopped early (the runner asks the lease why)."""


class JobLease:
    """The lease on one claimed job: a thread renews it every ``heartbeat_seconds`` and records what the
    runner must react to (cancel, runtime limit, lost lease); writes from the training loop go through
    ``write`` (fenced, retried), and renew the lease too."""

    def __init__(
        self,
        job: Job,
        owner: str,
        *,
        settings: Settings,
        sessions: sessionmaker[Session],
        shutting_down: threading.Event,
    ) -> None:
        self.job_id = job.id
        self.owner = owner
        self.settings = settings
        self.sessions = sessions
        self.shutting_down = shutting_down
        self.started = time.monotonic()
        limit = JobSpec.model_validate(job.spec).training.max_runtime_s
        self.deadline = None if limit is None else self.started + limit
        self.valid_until = self.started + self.settings.lease_seconds
        self.cancel_requested = False
        self.lost = False
        self.timed_out = False
        self._stop = threading.Event()
        # the heartbeat's log lines carry the job's log context (job_id, tenant) as the runner's do
        beat = contextvars.copy_context()
        self._thread = threading.Thread(
            target=beat.run, args=(self._beat,), name=f"lease-{job.id}", daemon=True
        )

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
        return self.lost or self.timed_out or self.cancel_requested or self.shutting_down.is_set()

    def check(self) -> None:
        """Raise ``LeaseLost`` (or stop) when the job may no longer be written by this worker."""
        if self.should_stop:
            if self.lost:
                raise LeaseLost(self.job_id)
            raise Stopped

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
        level: str = "info",
        checkpoint: str | None = None,
    ) -> None:
        """Renew the lease with new progress, an event (at ``level``) and the key of the job's newest
        checkpoint if given (retried, all in one fenced transaction), or raise ``LeaseLost``."""
        if self.lost:
            raise LeaseLost(self.job_id)
        values: dict[str, Any] = {} if progress is None else {"progress": progress}
        if checkpoint is not None:
            values["last_checkpoint_key"] = checkpoint
        at = time.monotonic()

        def write(session: Session) -> lifecycle.Beat:
            beat = lifecycle.heartbeat(
                session, self.job_id, self.owner, self.settings.lease_seconds, **values
            )
            if beat.held and event is not None:
                append_event(session, self.job_id, event[0], level=level, data=event[1])
            return beat

        self._renewed(
            retrying(self.sessions, self.settings.db_retry_seconds, f"write {self.job_id}", write), at
        )

    def poll_cancel(self) -> None:
        """A cheap read of the cancel flag between steps (a database error only skips this poll)."""
        try:
            with self.sessions() as session:
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
                with transaction(self.sessions) as session:
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


class TrainingCallbacks:
    """The engine's view of the runner: progress and epoch events (when ``report``), and whether to stop
    (a cancel, the runtime limit, a shutdown, or a lost lease)."""

    def __init__(self, lease: JobLease, *, report: bool = True) -> None:
        self.lease = lease
        self.report = report
        self._last_progress = 0.0
        self._last_poll = 0.0

    def on_step(self, *, epoch: int, epochs: int, step: int, steps: int) -> None:
        now = time.monotonic()
        if self.report and (now - self._last_progress >= PROGRESS_INTERVAL_SECONDS or step == 1):
            self._last_progress = now
            self.lease.write(progress=_progress(epoch - 1, epochs, step, steps))

    def on_epoch(
        self,
        *,
        epoch: int,
        epochs: int,
        step: int,
        steps: int,
        metrics: dict[str, float],
        learning_rate: float,
        throughput: float | None,
    ) -> None:
        if not self.report:
            return
        self._last_progress = time.monotonic()
        rounded = {k: round(float(v), 6) for k, v in metrics.items()}
        rounded["learning_rate"] = float(f"{learning_rate:.6g}")
        if throughput is not None:
            rounded["throughput"] = round(throughput, 1)  # examples per second
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
