"""The runner: takes a job id from the queue and carries the job through its life.

claim (conditional update queued → running) → load data and teacher → train with callbacks (progress,
events, cancellation) → evaluate → store artifacts → finish. Every write to a running job says
``WHERE id = … AND lease_owner = <this worker>``, so a worker that lost its lease can never overwrite
the job. The engine knows nothing of this: it gets arrays, a teacher module and callbacks.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import socket
import tempfile
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from distill.clock import utcnow
from distill.datasets import ArrayDataset, DatasetError, read_dataset
from distill.db import affected, transaction
from distill.events import append_event
from distill.jobstate import JobStatus
from distill.modelfile import ModelFileError
from distill.settings import Settings
from distill.spec import BuiltinData, DataRef, FileTeacher, JobSpec, JobTeacher, StoredModelConfig
from distill.storage import ObjectNotFound, ObjectStore, artifact_key
from distill.tables import Artifact, File, Job
from worker.engine.data import holdout_split, load_builtin
from worker.engine.device import resolve_device
from worker.engine.evaluate import summarize
from worker.engine.export import load_model, model_to_safetensors
from worker.engine.train import TrainInputs, train_model

log = logging.getLogger(__name__)

LEASE_SECONDS = 300
PROGRESS_INTERVAL_SECONDS = 1.0


class JobFailure(Exception):
    """A failure the user can act on: ``message`` says what to fix."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class LeaseLost(Exception):
    """Another worker owns the job now (or it was removed): stop without writing."""


@dataclass
class LoadedData:
    inputs: TrainInputs
    input_shape: list[int]
    num_classes: int


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
            workdir = Path(tmp)
            data = self._load_data(job.tenant_id, spec, workdir)
            teacher = self._load_teacher(job.tenant_id, spec, data, workdir)
            self._write(job.id, event=("data loaded", self._data_summary(data, teacher is not None)))
            cfg = StoredModelConfig(
                model=spec.model, input_shape=data.input_shape, num_classes=data.num_classes
            )
            callbacks = _Callbacks(self, job.id, spec.training.epochs)
            outcome = train_model(
                cfg, data.inputs, spec.training, spec.distillation, teacher, device, callbacks
            )
            if outcome.stopped:
                return self._finish_cancelled(job.id)
            summary = summarize(outcome.model, data.inputs.validation, device, teacher)
            return self._succeed(
                job, spec, cfg, outcome.model, summary, outcome.history, data, started, device
            )

    # -- inputs -----------------------------------------------------------------------------------------

    def _file_row(self, tenant_id: str, file_id: str, field: str, purpose: str) -> File:
        with self.sessions() as session:
            row = session.scalar(select(File).where(File.id == file_id, File.tenant_id == tenant_id))
        if row is None or row.purpose != purpose:
            raise JobFailure(
                "missing_input", f"{field}: file {file_id} no longer exists (it was deleted after submission)"
            )
        return row

    def _fetch(self, key: str, dest: Path, field: str) -> Path:
        try:
            self.store.download(key, dest)
        except ObjectNotFound as exc:
            raise JobFailure(
                "missing_input", f"{field}: the stored object is missing; upload it again"
            ) from exc
        return dest

    def _load_ref(
        self, tenant_id: str, ref: DataRef, field: str, workdir: Path
    ) -> tuple[ArrayDataset, ArrayDataset | None]:
        """The dataset and, for a builtin, its official held-out split."""
        if isinstance(ref, BuiltinData):
            return load_builtin(ref.builtin, self.settings.cache_folder / "builtins")
        row = self._file_row(tenant_id, ref.file, f"{field}.file", "dataset")
        path = self._fetch(row.storage_key, workdir / f"{row.id}-{row.filename}", field)
        try:
            return read_dataset(path, row.filename), None
        except DatasetError as exc:
            raise JobFailure("invalid_dataset", f"{field}: {exc}") from exc

    def _load_data(self, tenant_id: str, spec: JobSpec, workdir: Path) -> LoadedData:
        train, held_out = self._load_ref(tenant_id, spec.data.train, "data.train", workdir)
        if train.y is None:
            raise JobFailure("invalid_dataset", "data.train: the training set has no labels")
        num_classes = int(train.y.max()) + 1
        if spec.data.validation is not None:
            validation, _ = self._load_ref(tenant_id, spec.data.validation, "data.validation", workdir)
        elif held_out is not None:
            validation = held_out
        else:
            train, validation = holdout_split(train)
        transfer = None
        if spec.data.transfer is not None:
            transfer, _ = self._load_ref(tenant_id, spec.data.transfer, "data.transfer", workdir)
        inputs = TrainInputs(train=train, validation=validation, transfer=transfer)
        return LoadedData(inputs=inputs, input_shape=list(train.x.shape[1:]), num_classes=num_classes)

    def _load_teacher(
        self, tenant_id: str, spec: JobSpec, data: LoadedData, workdir: Path
    ) -> torch.nn.Module | None:
        teacher = spec.teacher
        if teacher is None:
            return None
        if isinstance(teacher, JobTeacher):
            field = "teacher.job"
            with self.sessions() as session:
                row = session.scalar(
                    select(Artifact)
                    .join(Job, Job.id == Artifact.job_id)
                    .where(
                        Job.id == teacher.job,
                        Job.tenant_id == tenant_id,
                        Artifact.name == "model.safetensors",
                    )
                )
            if row is None:
                raise JobFailure(
                    "missing_input", f"{field}: job {teacher.job} has no model.safetensors artifact"
                )
            key = row.storage_key
        else:
            assert isinstance(teacher, FileTeacher)
            field = "teacher.file"
            key = self._file_row(tenant_id, teacher.file, field, "model").storage_key
        path = self._fetch(key, workdir / "teacher.safetensors", field)
        try:
            model, cfg = load_model(path)
        except ModelFileError as exc:
            raise JobFailure("invalid_model", f"{field}: {exc}") from exc
        if cfg.num_classes != data.num_classes or cfg.input_shape != data.input_shape:
            raise JobFailure(
                "incompatible_teacher",
                f"{field}: the teacher maps {cfg.input_shape} to {cfg.num_classes} classes but the data has "
                f"inputs {data.input_shape} and {data.num_classes} classes",
            )
        return model

    @staticmethod
    def _data_summary(data: LoadedData, has_teacher: bool) -> dict[str, Any]:
        inputs = data.inputs
        return {
            "train_examples": len(inputs.train.x),
            "validation_examples": len(inputs.validation.x),
            "transfer_examples": 0 if inputs.transfer is None else len(inputs.transfer.x),
            "input_shape": data.input_shape,
            "num_classes": data.num_classes,
            "teacher": has_teacher,
        }

    # -- writes (lease-guarded) ---------------------------------------------------------------------

    def _write(
        self,
        job_id: str,
        *,
        values: dict[str, Any] | None = None,
        event: tuple[str, dict[str, Any]] | None = None,
    ) -> None:
        now = utcnow()
        with transaction(self.sessions) as session:
            updated = affected(
                session.execute(
                    update(Job)
                    .where(
                        Job.id == job_id, Job.lease_owner == self.worker_id, Job.status == JobStatus.RUNNING
                    )
                    .values(
                        heartbeat_at=now,
                        lease_expires_at=now + timedelta(seconds=LEASE_SECONDS),
                        **(values or {}),
                    )
                )
            )
            if not updated:
                raise LeaseLost(job_id)
            if event is not None:
                append_event(session, job_id, event[0], data=event[1])

    def cancel_requested(self, job_id: str) -> bool:
        with self.sessions() as session:
            return bool(session.scalar(select(Job.cancel_requested).where(Job.id == job_id)))

    def _finish(
        self, job_id: str, status: JobStatus, message: str, level: str = "info", **values: Any
    ) -> str:
        with transaction(self.sessions) as session:
            updated = affected(
                session.execute(
                    update(Job)
                    .where(
                        Job.id == job_id, Job.lease_owner == self.worker_id, Job.status == JobStatus.RUNNING
                    )
                    .values(status=status, finished_at=utcnow(), lease_expires_at=None, **values)
                )
            )
            if not updated:
                raise LeaseLost(job_id)
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
        self,
        job: Job,
        spec: JobSpec,
        cfg: StoredModelConfig,
        model: torch.nn.Module,
        summary: dict[str, Any],
        history: list[dict[str, float]],
        data: LoadedData,
        started: float,
        device: torch.device,
    ) -> str:
        result = {**summary, "model_config": cfg.model_dump(mode="json")}
        report = {
            "job_id": job.id,
            "name": spec.name,
            "spec": spec.model_dump(mode="json"),
            "result": result,
            "data": self._data_summary(data, spec.teacher is not None),
            "history": history,
            "environment": {
                "device": str(device),
                "torch": torch.__version__,
                "python": platform.python_version(),
                "worker": self.worker_id,
            },
            "duration_seconds": round(time.monotonic() - started, 3),
        }
        blobs = {
            "model.safetensors": model_to_safetensors(model, cfg),
            "report.json": json.dumps(report, indent=2, sort_keys=True).encode(),
        }
        rows = []
        for name, blob in blobs.items():  # objects first, then the rows that point at them
            key = artifact_key(job.tenant_id, job.id, name)
            self.store.put_bytes(key, blob)
            rows.append(
                Artifact(
                    job_id=job.id,
                    name=name,
                    bytes=len(blob),
                    sha256=hashlib.sha256(blob).hexdigest(),
                    storage_key=key,
                )
            )
        with transaction(self.sessions) as session:
            updated = affected(
                session.execute(
                    update(Job)
                    .where(
                        Job.id == job.id, Job.lease_owner == self.worker_id, Job.status == JobStatus.RUNNING
                    )
                    .values(
                        status=JobStatus.SUCCEEDED, finished_at=utcnow(), lease_expires_at=None, result=result
                    )
                )
            )
            if not updated:
                raise LeaseLost(job.id)
            session.add_all(rows)
            append_event(session, job.id, "job succeeded", data=summary)
        return JobStatus.SUCCEEDED.value


class _Callbacks:
    """The engine's view of the runner: progress, epoch events and the cancellation flag."""

    def __init__(self, runner: Runner, job_id: str, epochs: int) -> None:
        self.runner = runner
        self.job_id = job_id
        self.epochs = epochs
        self._last_progress = 0.0
        self._last_poll = 0.0
        self._cancel = False

    def on_step(self, *, epoch: int, epochs: int, step: int, steps: int) -> None:
        now = time.monotonic()
        if now - self._last_progress >= PROGRESS_INTERVAL_SECONDS or step == 1:
            self._last_progress = now
            self.runner._write(self.job_id, values={"progress": _progress(epoch - 1, epochs, step, steps)})

    def on_epoch(self, *, epoch: int, epochs: int, step: int, steps: int, metrics: dict[str, float]) -> None:
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
