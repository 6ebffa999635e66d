"""Everything a job reads before training: its datasets (builtin or uploaded, split, augmented) and its
teachers (with the sha256 of their weights, which keys the teacher-output cache).

Files and teacher jobs are looked up within the job's tenant, never by id alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from distill.datasets import ArrayDataset, DatasetError, read_dataset
from distill.modelfile import ModelFileError
from distill.spec import BuiltinData, DataRef, JobSpec, JobTeacher, StoredModelConfig
from distill.storage import ObjectNotFound, ObjectStore
from distill.tables import Artifact, File, Job
from worker.engine.augment import augment_inputs
from worker.engine.data import holdout_split, load_builtin
from worker.engine.export import load_model
from worker.engine.train import TrainInputs
from worker.failures import JobFailure


@dataclass
class LoadedData:
    inputs: TrainInputs
    input_shape: list[int]
    num_classes: int
    augmented: int = 0
    """Jittered inputs added to the transfer set by ``data.augment``."""

    def summary(self, teachers: int) -> dict[str, Any]:
        inputs = self.inputs
        return {
            "train_examples": len(inputs.train.x),
            "validation_examples": len(inputs.validation.x),
            "transfer_examples": 0 if inputs.transfer is None else len(inputs.transfer.x),
            "augmented_examples": self.augmented,
            "input_shape": self.input_shape,
            "num_classes": self.num_classes,
            "teachers": teachers,
        }


@dataclass
class LoadedTeacher:
    module: torch.nn.Module
    config: StoredModelConfig
    sha256: str
    weight: float
    field: str
    """Where the teacher sits in the spec (``teacher.job``, ``teacher.1.file``…), for error messages."""


class InputLoader:
    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        store: ObjectStore,
        cache_dir: Path,
        tenant_id: str,
        workdir: Path,
    ) -> None:
        self.sessions = sessions
        self.store = store
        self.cache_dir = cache_dir
        self.tenant_id = tenant_id
        self.workdir = workdir

    # -- data ---------------------------------------------------------------------------------------

    def data(self, spec: JobSpec) -> LoadedData:
        train, held_out = self._dataset(spec.data.train, "data.train")
        if train.y is None:
            raise JobFailure("invalid_dataset", "data.train: the training set has no labels")
        num_classes = int(train.y.max()) + 1
        if spec.data.validation is not None:
            validation, _ = self._dataset(spec.data.validation, "data.validation")
        elif held_out is not None:
            validation = held_out
        else:
            train, validation = holdout_split(train)
        transfer = None
        if spec.data.transfer is not None:
            transfer, _ = self._dataset(spec.data.transfer, "data.transfer")
        augmented = 0
        if spec.data.augment is not None:
            base = transfer.x if transfer is not None else train.x
            try:
                x = augment_inputs(base, spec.data.augment, spec.training.seed)
            except ValueError as exc:
                raise JobFailure("invalid_spec", f"data.augment: {exc}") from exc
            augmented = len(x) - len(base)
            transfer = ArrayDataset(x, None)
        inputs = TrainInputs(train=train, validation=validation, transfer=transfer)
        return LoadedData(
            inputs=inputs, input_shape=list(train.x.shape[1:]), num_classes=num_classes, augmented=augmented
        )

    def _dataset(self, ref: DataRef, field: str) -> tuple[ArrayDataset, ArrayDataset | None]:
        """The dataset and, for a builtin, its official held-out split."""
        if isinstance(ref, BuiltinData):
            return load_builtin(ref.builtin, self.cache_dir / "builtins")
        row = self._file(ref.file, f"{field}.file", "dataset")
        path = self._fetch(row.storage_key, self.workdir / f"{row.id}-{row.filename}", field)
        try:
            return read_dataset(path, row.filename), None
        except DatasetError as exc:
            raise JobFailure("invalid_dataset", f"{field}: {exc}") from exc

    # -- teachers -------------------------------------------------------------------------------------

    def teachers(self, spec: JobSpec, data: LoadedData) -> list[LoadedTeacher]:
        several = isinstance(spec.teacher, list)
        loaded = []
        for index, ref in enumerate(spec.teachers):
            base = f"teacher.{index}" if several else "teacher"
            if isinstance(ref, JobTeacher):
                field = f"{base}.job"
                key, sha256 = self._teacher_job_model(ref.job, field)
            else:
                field = f"{base}.file"
                row = self._file(ref.file, field, "model")
                key, sha256 = row.storage_key, row.sha256
            path = self._fetch(key, self.workdir / f"teacher-{index}.safetensors", field)
            try:
                module, config = load_model(path)
            except ModelFileError as exc:
                raise JobFailure("invalid_model", f"{field}: {exc}") from exc
            if config.num_classes != data.num_classes or config.input_shape != data.input_shape:
                raise JobFailure(
                    "incompatible_teacher",
                    f"{field}: the teacher maps {config.input_shape} to {config.num_classes} classes but the "
                    f"data has inputs {data.input_shape} and {data.num_classes} classes",
                )
            loaded.append(LoadedTeacher(module, config, sha256, ref.weight, field))
        return loaded

    def _teacher_job_model(self, job_id: str, field: str) -> tuple[str, str]:
        with self.sessions() as session:
            row = session.scalar(
                select(Artifact)
                .join(Job, Job.id == Artifact.job_id)
                .where(
                    Job.id == job_id, Job.tenant_id == self.tenant_id, Artifact.name == "model.safetensors"
                )
            )
        if row is None:
            raise JobFailure("missing_input", f"{field}: job {job_id} has no model.safetensors artifact")
        return row.storage_key, row.sha256

    # -- plumbing ------------------------------------------------------------------------------------

    def _file(self, file_id: str, field: str, purpose: str) -> File:
        with self.sessions() as session:
            row = session.scalar(select(File).where(File.id == file_id, File.tenant_id == self.tenant_id))
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
