"""Everything a job reads before training: its datasets (builtin or uploaded, split, augmented) and its
teachers (with the sha256 of their weights, which keys the teacher-output cache).

Files and teacher jobs are looked up within the job's tenant, never by id alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from distill.datasets import ArrayDataset, DatasetError, TextDataset, read_dataset, read_text_dataset
from distill.modelfile import ModelFileError
from distill.spec import BuiltinData, BuiltinTeacher, DataRef, JobSpec, JobTeacher, StoredModelConfig
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
    splits: dict[str, str] = field(default_factory=dict)
    """Where the ``validation`` and ``test`` splits come from (see :meth:`InputLoader.data`)."""

    def summary(self, teachers: int) -> dict[str, Any]:
        inputs = self.inputs
        return {
            "train_examples": len(inputs.train.x),
            "validation_examples": len(inputs.validation.x),
            "test_examples": len(inputs.evaluation.x),
            "splits": dict(self.splits),
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


TEXT_HOLDOUT_FRACTION = 0.2
TEXT_HOLDOUT_SEED = 0


@dataclass
class LoadedTextData:
    train: TextDataset
    validation: TextDataset
    num_classes: int | None
    """``max(label) + 1`` of the training set; None without labels."""
    held_out: bool
    """Whether ``validation`` was split off the training set (no ``data.validation``)."""
    transfer: TextDataset | None = None
    """``data.transfer``: more texts for the teacher to label (their own labels, if any, are not used)."""
    test: TextDataset | None = None
    """Where the final figures are measured, when not ``validation`` (see :meth:`InputLoader.text_data`)."""
    splits: dict[str, str] = field(default_factory=dict)

    @property
    def evaluation(self) -> TextDataset:
        """The split the final figures (``test_accuracy``...) are measured on."""
        return self.validation if self.test is None else self.test

    def summary(self, teachers: int) -> dict[str, Any]:
        return {
            "kind": "text",
            "train_examples": len(self.train),
            "validation_examples": len(self.validation),
            "test_examples": len(self.evaluation),
            "splits": dict(self.splits),
            "transfer_examples": 0 if self.transfer is None else len(self.transfer),
            "held_out_validation": self.held_out,
            "num_classes": self.num_classes,
            "teachers": teachers,
        }


@dataclass
class LoadedTextTeacher:
    model: Any
    """A ``worker.engine.text.TextEncoder`` or ``TextClassifier`` (eval mode, CPU)."""
    tokenizer: Any
    key: str
    """Identifies the teacher for the teacher-output cache: the file's sha256, or ``builtin:<name>``."""
    name: str
    """Where it came from (``all-minilm-l6-v2``, ``job_…``, ``file_…``): recorded in the student's file."""
    field: str


def text_holdout_split(ds: TextDataset) -> tuple[TextDataset, TextDataset]:
    """A deterministic split: 20% (at least one text) held out for validation, the rest to train."""
    n = len(ds)
    if n < 2:
        raise JobFailure("invalid_dataset", "data.train: a text job needs at least 2 texts")
    order = np.random.default_rng(TEXT_HOLDOUT_SEED).permutation(n)
    k = max(1, round(n * TEXT_HOLDOUT_FRACTION))
    return ds.subset(np.sort(order[k:])), ds.subset(np.sort(order[:k]))


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
        """The job's splits. ``test`` (where ``test_accuracy`` is measured) is ``data.test``, else the
        builtin's official test split, else a seeded 20% of the training file (the same for every job, so a
        teacher and its students meet the same examples). ``validation`` (per-epoch metrics, and where
        ``"auto"`` trials choose) is ``data.validation``, else the test split when nothing is chosen, else
        a seeded 20% of what is left of the training data: no choice ever sees the test split."""
        train, official = self._dataset(spec.data.train, "data.train")
        if train.y is None:
            raise JobFailure("invalid_dataset", "data.train: the training set has no labels")
        num_classes = int(train.y.max()) + 1
        chooses = spec.distillation.uses_auto and bool(spec.teachers)
        validation: ArrayDataset | None = None
        if spec.data.validation is not None:
            validation, _ = self._dataset(spec.data.validation, "data.validation")
        if spec.data.test is not None:
            test, _ = self._dataset(spec.data.test, "data.test")
            test_source = "data.test"
        elif official is not None:
            test, test_source = official, "builtin test split"
        elif validation is not None and not chooses:
            test, test_source = validation, "data.validation"
        else:
            train, test = holdout_split(train)
            test_source = "seeded 20% of data.train"
        if validation is not None:
            validation_source = "data.validation"
        elif not chooses:
            validation, validation_source = test, test_source
        else:
            train, validation = holdout_split(train)
            validation_source = "seeded 20% of the rest of data.train"
        for name, ds in (("data.validation", validation), ("data.test", test)):
            if ds.y is None:
                raise JobFailure("invalid_dataset", f"{name}: the set needs a label for every example")
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
        inputs = TrainInputs(train=train, validation=validation, transfer=transfer, test=test)
        return LoadedData(
            inputs=inputs,
            input_shape=list(train.x.shape[1:]),
            num_classes=num_classes,
            augmented=augmented,
            splits={"validation": validation_source, "test": test_source},
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

    # -- text ------------------------------------------------------------------------------------------

    def text_data(self, spec: JobSpec) -> LoadedTextData:
        """The splits as in :meth:`data`: ``"auto"`` trials choose on a validation split that the test
        split (``data.test``, else ``data.validation`` when nothing is chosen, else a seeded 20% of the
        texts) never joins."""
        train = self._text_dataset(spec.data.train, "data.train")
        labeled = spec.task == "classification"
        if labeled and train.y is None:
            raise JobFailure("invalid_dataset", "data.train: a classification job needs labels")
        num_classes = train.num_classes if train.y is not None else None
        chooses = labeled and spec.distillation.uses_auto and bool(spec.teachers)
        validation: TextDataset | None = None
        held_out = False
        if spec.data.validation is not None:
            validation = self._text_dataset(spec.data.validation, "data.validation")
        test: TextDataset | None = None
        if spec.data.test is not None:
            test, test_source = self._text_dataset(spec.data.test, "data.test"), "data.test"
        elif validation is not None and not chooses:
            test_source = "data.validation"
        else:
            train, test = text_holdout_split(train)
            test_source = "seeded 20% of data.train"
        if validation is not None:
            validation_source = "data.validation"
        elif not chooses:
            validation, test, held_out = test, None, True
            validation_source = test_source
        else:
            train, validation = text_holdout_split(train)
            validation_source, held_out = "seeded 20% of the rest of data.train", True
        assert validation is not None
        for name, ds in (("validation", validation), ("test", test)):
            if labeled and ds is not None and ds.y is None:
                raise JobFailure("invalid_dataset", f"data.{name}: the {name} set needs labels")
        transfer = None
        if spec.data.transfer is not None:
            transfer = self._text_dataset(spec.data.transfer, "data.transfer")
        return LoadedTextData(
            train=train,
            validation=validation,
            num_classes=num_classes,
            held_out=held_out,
            transfer=transfer,
            test=test,
            splits={"validation": validation_source, "test": test_source},
        )

    def _text_dataset(self, ref: DataRef, field: str) -> TextDataset:
        if isinstance(ref, BuiltinData):
            raise JobFailure("invalid_dataset", f"{field}: builtin datasets are numeric, not texts")
        row = self._file(ref.file, f"{field}.file", "dataset")
        path = self._fetch(row.storage_key, self.workdir / f"{row.id}-{row.filename}", field)
        try:
            return read_text_dataset(path, row.filename)
        except DatasetError as exc:
            raise JobFailure("invalid_dataset", f"{field}: {exc}") from exc

    def text_teacher(self, spec: JobSpec) -> LoadedTextTeacher | None:
        """The text teacher of a text job (None: a teacher job); torch/transformers loaded only here."""
        from worker.engine.text import TextModelError, load_builtin_text_teacher, load_text_model

        if not spec.teachers:
            return None
        ref = spec.teachers[0]
        several = isinstance(spec.teacher, list)
        base = "teacher.0" if several else "teacher"
        if isinstance(ref, BuiltinTeacher):
            encoder, tokenizer = load_builtin_text_teacher(ref.builtin)
            return LoadedTextTeacher(
                encoder, tokenizer, f"builtin:{ref.builtin}", ref.builtin, f"{base}.builtin"
            )
        if isinstance(ref, JobTeacher):
            field, name = f"{base}.job", ref.job
            key, sha256 = self._teacher_job_model(ref.job, field)
        else:
            field, name = f"{base}.file", ref.file
            row = self._file(ref.file, field, "model")
            key, sha256 = row.storage_key, row.sha256
        path = self._fetch(key, self.workdir / "teacher-text.safetensors", field)
        try:
            model, tokenizer, _ = load_text_model(path)
        except TextModelError as exc:
            raise JobFailure("invalid_model", f"{field}: {exc}") from exc
        return LoadedTextTeacher(model, tokenizer, sha256, name, field)

    # -- teachers -------------------------------------------------------------------------------------

    def teachers(self, spec: JobSpec, data: LoadedData) -> list[LoadedTeacher]:
        several = isinstance(spec.teacher, list)
        loaded = []
        for index, ref in enumerate(spec.teachers):
            base = f"teacher.{index}" if several else "teacher"
            if isinstance(ref, BuiltinTeacher):
                raise JobFailure(
                    "incompatible_teacher",
                    f"{base}.builtin: {ref.builtin} teaches text (encoder) students only",
                )
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
