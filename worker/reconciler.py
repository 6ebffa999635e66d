"""The reconciler: a thread of every ``distill worker`` that repairs what a lost worker or broker left.

Every ``reconcile_seconds`` it
- takes back running jobs whose lease ran out (``lifecycle.reclaim_expired``): requeued for another attempt,
  failed with ``worker_lost`` past ``max_attempts``, or cancelled if a cancel was asked for (a job it ends
  loses its checkpoints, unless its spec keeps them);
- sends the wake-up message of queued jobs that have none (submitted while the broker was down, requeued,
  handed back) or whose message went out more than ``wakeup_resend_seconds`` ago (a broker restarted
  without persistence loses it). The claim is idempotent, so a duplicate message never trains twice;
- with a per-tenant running limit, wakes the next queued job of a tenant whose job it ended.

Several workers may run it at once: every change is a guarded transition, so each expired lease is taken
back once. It never stops on an error (a database or broker outage): it logs and tries again next round.
"""

from __future__ import annotations

import logging
import threading

from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from distill import lifecycle
from distill.db import transaction
from distill.jobstate import JobStatus
from distill.queue import enqueue_job
from distill.secrets import delete_ended_secrets
from distill.settings import Settings
from distill.storage import ObjectStore, delete_checkpoints, keeps_checkpoints
from distill.tables import Job

log = logging.getLogger(__name__)


class Reconciler:
    def __init__(
        self,
        *,
        settings: Settings,
        session_factory: sessionmaker[Session],
        queue: Celery,
        store: ObjectStore | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        """Where the checkpoints of the jobs it ends are deleted (None: left in place)."""
        self.sessions = session_factory
        self.queue = queue
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="reconciler", daemon=True)
        self._thread.start()

    def stop(self, *, wait: bool = True) -> None:
        self._stop.set()
        if wait and self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.wait(self.settings.reconcile_seconds):
            try:
                self.once()
            except Exception as error:
                log.warning(
                    "reconciler: %s: %s (next round in %gs)",
                    type(error).__name__,
                    error,
                    self.settings.reconcile_seconds,
                )

    def once(self) -> tuple[list[lifecycle.Reclaimed], list[str]]:
        """One sweep: take back expired leases, then send the wake-ups that are due. Returns both."""
        with transaction(self.sessions) as session:
            reclaimed = lifecycle.reclaim_expired(session, self.settings.max_attempts)
        for item in reclaimed:
            log.warning("reconciler: job %s lease expired -> %s", item.job_id, item.status)
            if item.status != JobStatus.QUEUED:
                self._ended(item.job_id)
        with transaction(self.sessions) as session:  # ended however (a cancel while queued, worker lost...)
            delete_ended_secrets(session)
        with self.sessions() as session:
            due = lifecycle.wakeups_due(session, self.settings.wakeup_resend_seconds)
        sent = []
        for job_id, queue in due.items():
            enqueue_job(self.queue, job_id, queue)  # a broker outage raises: the rest wait for the next round
            with transaction(self.sessions) as session:
                lifecycle.wakeup_sent(session, job_id)
            sent.append(job_id)
        if sent:
            log.info("reconciler: sent wake-ups for %d queued job(s): %s", len(sent), ", ".join(sent))
        return reclaimed, sent

    def _ended(self, job_id: str) -> None:
        with self.sessions() as session:
            job = session.get(Job, job_id)
            if job is None:
                return
            tenant_id, keep = job.tenant_id, keeps_checkpoints(job.spec)
            # a slot of the tenant's running limit is free: its next queued job has no wake-up coming
            due = (
                lifecycle.next_queued(session, tenant_id) if self.settings.max_running_jobs_per_tenant else {}
            )
        for next_id, queue in due.items():
            enqueue_job(self.queue, next_id, queue)
        if self.store is not None and not keep:
            delete_checkpoints(self.store, tenant_id, job_id)
