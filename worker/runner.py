"""The runner: takes a job id from the queue and carries the job through its life.

claim (``distill.lifecycle``: queued → running under a new lease) → load data and teachers
(``worker.inputs``, through the spec's modality: ``worker.modalities.modality_for``) → the pipeline
(``worker.pipeline``: teacher signals, training with callbacks for progress, events and cancellation,
evaluation, exports, report) → store artifacts (retried) → finish.

A ``JobLease`` (``worker.lease``) thread renews the lease every ``heartbeat_seconds`` and learns of a
cancel, of the ``training.max_runtime_s`` limit and of a warm shutdown; the training loop sees them at its
next step.
Every write is a lifecycle transition fenced by the lease, so a worker that lost its lease can never
overwrite the job; a database error is retried with backoff (``db_retry_seconds``), never dropped.
The student's training writes a checkpoint every ``checkpoint_every_steps`` optimizer steps and at each
epoch's end (``worker.checkpoints``); a job taken over (after a worker was lost, or handed back) resumes
from the last one its job row records, and its checkpoints are deleted when it ends unless the spec keeps
them.
The engine knows nothing of this: it gets arrays, a teacher module and callbacks.

(Over 500 lines: every ending of a job — succeeded, failed, cancelled, handed back, lease lost — is a fenced
transition here, beside the claim and the pipeline's wiring, so the whole life of a job reads in one file.)
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
from sqlalchemy.orm import Session, sessionmaker

from distill import lifecycle
from distill.db import is_transient
from distill.events import append_event
from distill.logs import bind, log_context
from distill.secrets import ENDPOINT_API_KEY, delete_secrets, load_secrets
from distill.settings import Settings
from distill.spec import EndpointTeacher, JobSpec, StoredModelConfig
from distill.storage import ObjectStore, artifact_key, delete_checkpoints, keeps_checkpoints
from distill.tables import Artifact, Job, Tenant
from worker.checkpoints import Checkpointer, resume_from
from worker.endpoint_teacher import AnswerLog, BlackBoxPipeline, EndpointFailure, taught_data
from worker.engine.device import resolve_device
from worker.engine.distributed import DataParallel
from worker.engine.loop import LoopState
from worker.engine.train import sharding_for
from worker.failures import JobFailure, LeaseLost
from worker.inputs import InputLoader
from worker.launch import data_parallel_for, worker_devices
from worker.lease import DatabaseUnavailable, JobLease, Stopped, TrainingCallbacks, retrying
from worker.lm_inputs import LMInputs, LoadedLM, LoadedLMData
from worker.modalities import modality_for
from worker.modalities.causal_lm import CausalLMModality
from worker.pipeline import JobContext, Pipeline
from worker.teacher_cache import TeacherCache

log = logging.getLogger(__name__)

T = TypeVar("T")

WARM_UP_JOB_ID = "job_warmup0000000000000000"
"""A job id no job has (ids are drawn at random): what the warm-up's claim matches (nothing)."""


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
        wake: Callable[[str, str | None], None] | None = None,
    ) -> None:
        self.settings = settings
        self.wake = wake
        """Sends a queued job's wake-up (job id, its ``resources.queue``): with a per-tenant running limit,
        the runner that ends one of a tenant's jobs wakes the tenant's next queued one."""
        self.sessions = session_factory
        self.store = store
        self.worker_id = worker_id or settings.worker_id or default_worker_id()
        self.shutting_down = threading.Event()
        """Set on a warm shutdown: the running job is handed back (``running → queued``)."""
        try:
            device = resolve_device(settings.device)
            log.info(
                "worker %s trains on %s; a job may use up to %d device(s) (resources.gpus)",
                self.worker_id,
                device,
                worker_devices(settings, device),
            )
        except ValueError as error:  # each job fails with it when it starts
            log.error("worker %s: %s", self.worker_id, error)

    def warm_up(self) -> None:
        """Make now what the first job would otherwise make lazily, so it is picked up as fast as the
        next ones: a pooled database connection, the claim's and the job read's compiled statements, the
        object store's client and connection, the device. Called at worker start; nothing is written (the
        claim of a job id that cannot exist matches no row). Failures are logged: the first job then pays
        for them, as before."""
        started = time.perf_counter()
        try:
            resolve_device(self.settings.device)
            with self.sessions() as session, session.begin():
                lifecycle.claim(
                    session,
                    WARM_UP_JOB_ID,
                    "warm-up",
                    self.settings.lease_seconds,
                    max_running_per_tenant=self.settings.max_running_jobs_per_tenant,
                )
                session.get(Job, WARM_UP_JOB_ID)
                lifecycle.next_queued(session, WARM_UP_JOB_ID)
            self.store.exists(f"warm-up/{WARM_UP_JOB_ID}")
        except Exception as error:
            log.warning("worker warm-up incomplete (%s: %s)", type(error).__name__, error)
            return
        log.info("worker warmed up in %.0f ms", (time.perf_counter() - started) * 1000)

    # -- the job's life ------------------------------------------------------------------------------

    def run(self, job_id: str) -> str | None:
        """Run ``job_id`` if this worker can claim it; return its final status (None: not claimed, or
        handed back / taken over). Every log line written meanwhile carries ``job_id`` and ``tenant``
        (``distill.logs``: the JSON log format shows them)."""
        with log_context(job_id=job_id):
            status = self._run(job_id)
            log.info("job %s: %s", job_id, status or "left to another worker")
            return status

    def _run(self, job_id: str) -> str | None:
        owner = lifecycle.new_lease_owner(self.worker_id)
        try:
            job = self._claim(job_id, owner)
        except DatabaseUnavailable as error:
            log.error("job %s: could not claim it: %s (the reconciler sends it again)", job_id, error)
            return None
        if job is lifecycle.Claim.AT_LIMIT:
            log.info(
                "job %s: left queued: its tenant runs %d job(s) already "
                "(DISTILL_MAX_RUNNING_JOBS_PER_TENANT); it is woken when one of them ends",
                job_id,
                self.settings.max_running_jobs_per_tenant,
            )
            return None
        if not isinstance(job, Job):
            log.info("job %s: not claimed (already taken, finished or cancelled)", job_id)
            return None
        log.info("job %s: claimed (attempt %d)", job_id, job.attempts)
        lease = JobLease(
            job, owner, settings=self.settings, sessions=self.sessions, shutting_down=self.shutting_down
        )
        lease.start()
        try:
            return self._run_claimed(job, lease)
        finally:
            lease.stop()
            self.wake_next(job.tenant_id)

    def wake_next(self, tenant_id: str) -> None:
        """With a per-tenant running limit, send a wake-up to the tenant's oldest queued job: one of its
        jobs just ended (or was handed back), so a job left queued at the limit may run now. Best effort:
        the reconciler re-sends wake-ups that are lost."""
        if self.settings.max_running_jobs_per_tenant <= 0 or self.wake is None:
            return
        try:
            with self.sessions() as session:
                due = lifecycle.next_queued(session, tenant_id)
            for job_id, queue in due.items():
                self.wake(job_id, queue)
        except Exception as error:
            log.warning("tenant %s: could not wake its next queued job: %s", tenant_id, error)

    def _run_claimed(self, job: Job, lease: JobLease) -> str | None:
        try:
            return self._execute(job, lease)
        except LeaseLost:
            log.warning("job %s: lease lost; another worker owns it now (or will)", job.id)
            return None
        except DatabaseUnavailable as error:
            log.error("job %s: %s; its lease runs out and the reconciler takes it back", job.id, error)
            return None
        except Stopped:
            return self._stopped(job, lease)
        except JobFailure as failure:
            return self._fail(job, lease, failure.code, failure.message)
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
            return self._fail(job, lease, "internal_error", f"{type(exc).__name__}: {exc}")

    def _claim(self, job_id: str, owner: str) -> Job | lifecycle.Claim | None:
        """The claimed job; ``Claim.AT_LIMIT`` when its tenant is at its running limit; None: not
        claimable."""
        lease_seconds = self.settings.lease_seconds
        limit = self.settings.max_running_jobs_per_tenant

        def claim(session: Session) -> Job | lifecycle.Claim | None:
            outcome = lifecycle.claim(session, job_id, owner, lease_seconds, max_running_per_tenant=limit)
            if outcome is lifecycle.Claim.AT_LIMIT:
                return outcome
            if not outcome:
                return None
            job = session.get_one(Job, job_id)
            tenant = session.get(Tenant, job.tenant_id)
            bind(tenant=tenant.name if tenant is not None else job.tenant_id)
            device = resolve_device(self.settings.device)
            message = f"job started on {self.worker_id}"
            if job.attempts > 1:
                message += f" (attempt {job.attempts}: taken over)"
            append_event(
                session,
                job_id,
                message,
                data={
                    "status": "running",
                    "worker": self.worker_id,
                    "device": str(device),
                    "devices": worker_devices(self.settings, device),
                    "attempt": job.attempts,
                },
            )
            return job

        return self._retrying(f"claim {job_id}", claim)

    def _execute(self, job: Job, lease: JobLease) -> str | None:
        spec = JobSpec.model_validate(job.spec)
        device = resolve_device(self.settings.device)
        parallel = data_parallel_for(spec, self.settings, device, self.worker_id)
        torch.manual_seed(spec.training.seed)
        resume = None
        if job.last_checkpoint_key:
            resumed = resume_from(self.store, job.last_checkpoint_key, job.attempts)
            lease.write(event=(resumed.message, resumed.data), level=resumed.level)
            resume = resumed.state
        elif job.attempts > 1:
            lease.write(
                event=(f"no checkpoint yet: restarting from the beginning (attempt {job.attempts})", {})
            )
        with tempfile.TemporaryDirectory(prefix=f"distill-{job.id}-") as tmp:
            loader = InputLoader(
                sessions=self.sessions,
                store=self.store,
                cache_dir=self.settings.cache_folder,
                tenant_id=job.tenant_id,
                workdir=Path(tmp),
                max_archive_bytes=self.settings.max_archive_bytes,
                max_archive_files=self.settings.max_archive_files,
            )
            pipeline = self._pipeline(job, spec, device, loader, lease, resume, parallel)
        config = getattr(pipeline.modality, "config", None) if isinstance(pipeline, Pipeline) else None
        if parallel is not None and isinstance(pipeline, Pipeline) and isinstance(config, StoredModelConfig):
            # resources.sharding "auto": decided now that the student's size is known, so the event says it
            parallel = pipeline.context.parallel = sharding_for(parallel, config, device)
        if parallel is not None:
            lease.write(
                event=(
                    f"training {parallel.describe()}: one process per device, the global batch "
                    f"{spec.training.batch_size} split across them",
                    {
                        "processes": parallel.world,
                        "backend": parallel.backend,
                        "devices": list(parallel.devices),
                    },
                )
            )
        outcome = pipeline.run(lease.started)
        if outcome.stopped:
            raise Stopped
        lease.check()
        return self._succeed(job, lease, outcome.result, outcome.summary, outcome.artifacts)

    def _pipeline(
        self,
        job: Job,
        spec: JobSpec,
        device: torch.device,
        loader: InputLoader,
        lease: JobLease,
        resume: LoopState | None,
        parallel: DataParallel | None = None,
    ) -> Pipeline | BlackBoxPipeline:
        """Load the job's inputs and build the one pipeline over the spec's modality (tabular, text,
        causal_lm); a black-box causal-LM job (an endpoint teacher) collects the teacher's answers first
        and trains on them."""
        context = JobContext(
            job_id=job.id,
            spec=spec,
            cache=TeacherCache(self.store, job.tenant_id),
            device=device,
            progress=TrainingCallbacks(lease),
            quiet=TrainingCallbacks(lease, report=False),
            event=lambda message, data: lease.write(event=(message, data)),
            checkpoint=Checkpointer(
                self.store, lease, tenant_id=job.tenant_id, job_id=job.id, previous=job.last_checkpoint_key
            ),
            checkpoint_every=self.settings.checkpoint_every_steps,
            resume=resume,
            parallel=parallel,
        )
        if spec.task == "causal_lm" and isinstance(spec.teacher, EndpointTeacher):
            lm_data, _, lm_start = LMInputs(
                loader, spec
            ).load()  # black-box: the teacher's answers are the data
            lease.write(event=("data loaded", lm_data.summary(0)))
            return self._black_box(job, spec, context, lease, lm_data, lm_start)
        modality = modality_for(spec).load(context, loader)
        lease.write(event=("data loaded", modality.data_summary()))
        return Pipeline(context, modality)

    def _black_box(
        self,
        job: Job,
        spec: JobSpec,
        context: JobContext,
        lease: JobLease,
        data: LoadedLMData,
        start: LoadedLM | None,
    ) -> BlackBoxPipeline:
        """Collect the endpoint teacher's answers (resuming an earlier attempt's), then fine-tune the
        student on them through the teacher-less causal-LM pipeline."""
        assert isinstance(spec.teacher, EndpointTeacher)
        secrets = self._retrying(f"secrets {job.id}", lambda session: load_secrets(session, job.id))
        callbacks = TrainingCallbacks(lease, report=False)
        try:
            taught, gathered = taught_data(
                data,
                spec.teacher.endpoint,
                secrets.get(ENDPOINT_API_KEY),
                AnswerLog(self.store, job.tenant_id, job.id),
                event=context.event,
                should_stop=callbacks.should_stop,
                stopped=Stopped,
            )
        except EndpointFailure as failure:
            raise JobFailure("teacher_endpoint_failed", failure.message) from None
        modality = CausalLMModality(context, data=taught, teacher=None, student_start=start)
        return BlackBoxPipeline(Pipeline(context, modality), gathered)

    # -- database access: retried with backoff --------------------------------------------------------

    def _retrying(self, what: str, work: Callable[[Session], T]) -> T:
        return retrying(self.sessions, self.settings.db_retry_seconds, what, work)

    # -- endings (each a fenced lifecycle transition) ------------------------------------------------

    def _finish(self, job_id: str, lease: JobLease, what: str, change: Callable[[Session], bool]) -> bool:
        try:
            return self._retrying(f"{what} {job_id}", change)
        except DatabaseUnavailable as error:
            log.error("job %s: could not record %s: %s", job_id, what, error)
            return False

    def _ended(self, job: Job) -> None:
        """The job reached a terminal state under this worker: its checkpoints go, unless the spec keeps
        them."""
        if not keeps_checkpoints(job.spec):
            delete_checkpoints(self.store, job.tenant_id, job.id)
        try:  # its secrets go with it (the reconciler's sweep deletes any left if this fails)
            self._retrying(f"delete secrets {job.id}", lambda session: delete_secrets(session, job.id))
        except DatabaseUnavailable as error:
            log.warning("job %s: could not delete its secrets yet: %s", job.id, error)

    def _fail(self, job: Job, lease: JobLease, code: str, message: str) -> str | None:
        job_id = job.id

        def fail(session: Session) -> bool:
            if not lifecycle.fail(session, job_id, lease.owner, code, message):
                return False
            append_event(
                session,
                job_id,
                f"job failed: {message}",
                level="error",
                data={"status": "failed", "code": code, "message": message},
            )
            return True

        lease.stop()
        if not self._finish(job_id, lease, "failure", fail):
            return None
        self._ended(job)
        return "failed"

    def _stopped(self, job: Job, lease: JobLease) -> str | None:
        """The training loop stopped early: a cancel, the runtime limit, a shutdown, or a lost lease."""
        if lease.lost:
            log.warning("job %s: lease lost; stopping without writing", job.id)
            return None
        if lease.timed_out:
            limit = JobSpec.model_validate(job.spec).training.max_runtime_s
            return self._fail(
                job,
                lease,
                "timeout",
                f"the job ran longer than training.max_runtime_s ({limit} s); raise the limit or train less "
                "(fewer epochs, a smaller model or dataset)",
            )
        if lease.cancel_requested:
            return self._cancelled(job, lease)
        if self.shutting_down.is_set():
            return self._hand_back(job.id, lease)
        raise RuntimeError("the training loop stopped without a reason")

    def _cancelled(self, job: Job, lease: JobLease) -> str | None:
        job_id = job.id

        def cancel(session: Session) -> bool:
            if not lifecycle.finish_cancelled(session, job_id, lease.owner):
                return False
            append_event(session, job_id, "job cancelled", data={"status": "cancelled"})
            return True

        lease.stop()
        if not self._finish(job_id, lease, "cancellation", cancel):
            return None
        self._ended(job)
        return "cancelled"

    def _hand_back(self, job_id: str, lease: JobLease) -> str | None:
        """Warm shutdown: ``running → queued``, so another worker starts the job again."""

        def release(session: Session) -> bool:
            if not lifecycle.release(session, job_id, lease.owner):
                return False
            append_event(
                session,
                job_id,
                f"job handed back: worker {self.worker_id} is shutting down; another worker restarts it",
                level="warning",
                data={"status": "queued", "worker": self.worker_id},
            )
            return True

        lease.stop()
        self._finish(job_id, lease, "hand-back", release)
        log.warning("job %s: handed back (worker shutting down)", job_id)
        return None

    def _succeed(
        self,
        job: Job,
        lease: JobLease,
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
                append_event(session, job.id, "job succeeded", data={**summary, "status": "succeeded"})
                return "succeeded"
            if lifecycle.finish_cancelled(session, job.id, lease.owner):  # a cancel won the race
                append_event(
                    session,
                    job.id,
                    "job cancelled (after its last step; its artifacts were discarded)",
                    data={"status": "cancelled"},
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
        if status is not None:
            self._ended(job)
        return status

    def _upload(self, job_id: str, lease: JobLease, key: str, blob: bytes) -> None:
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
