"""Everything a job reads before training: its datasets (builtin or uploaded, split, augmented) and its
teachers (with the sha256 of their weights, which keys the teacher-output cache). What was read is checked
against the spec by :func:`distill.plan.plan`, the same function the API ran on submission.

Files and teacher jobs are looked up within the job's tenant, never by id alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from distill.datasets import BUILTIN_INFO, ArrayDataset, DatasetError, DatasetInfo, TextDataset
from distill.datasets.builtins import load_builtin
from distill.datasets.readers import read_any
from distill.datasets.split import holdout_split
from distill.modelfile import BUILTIN_TEXT_TEACHERS, ModelFileError, inspect_any_model_file
from distill.plan import Plan, Resolved, TeacherInfo, plan
from distill.spec import (
    BuiltinData,
    BuiltinTeacher,
    DataRef,
    FileTeacher,
    JobSpec,
    JobTeacher,
    SpecError,
    StoredModelConfig,
)
from distill.storage import ObjectNotFound, ObjectStore
from distill.tables import Artifact, File, Job
from worker.engine.augment import augment_inputs
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

    def summary(self, teachers: int) -> dict[str, Any]:
        return {
            "kind": "text",
            "train_examples": len(self.train),
            "validation_examples": len(self.validation),
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


@dataclass
class _Found:
    """One data reference: what it is (the plan's view) and, where loaded, its examples."""

    info: DatasetInfo
    dataset: ArrayDataset | TextDataset | None
    held_out: ArrayDataset | None = None
    """A builtin's official test split."""


class InputLoader:
    """Loads a job's inputs, and checks the spec against what they turned out to be (:func:`plan`) before
    anything trains: the same rules the API checked on submission, on what this worker actually read."""

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
        self._teacher_files: dict[int, tuple[Path, str, str]] = {}
        """Fetched teacher files by index in ``spec.teachers``: ``(path, sha256, name)``."""

    # -- data ---------------------------------------------------------------------------------------

    def data(self, spec: JobSpec) -> LoadedData:
        train = self._find(spec.data.train, "data.train", load_builtin_data=True)
        validation = self._find_optional(spec.data.validation, "data.validation", load_builtin_data=True)
        transfer = self._find_optional(spec.data.transfer, "data.transfer", load_builtin_data=True)
        checked = self._plan(spec, train, validation, transfer)
        assert checked.num_classes is not None and isinstance(train.dataset, ArrayDataset)
        train_ds = train.dataset
        if validation is not None:
            assert isinstance(validation.dataset, ArrayDataset)
            validation_ds = validation.dataset
        elif train.held_out is not None:
            validation_ds = train.held_out
        else:
            train_ds, validation_ds = holdout_split(train_ds)
        transfer_ds = None
        if transfer is not None:
            assert isinstance(transfer.dataset, ArrayDataset)
            transfer_ds = transfer.dataset
        augmented = 0
        if spec.data.augment is not None:
            base = transfer_ds.x if transfer_ds is not None else train_ds.x
            try:
                x = augment_inputs(base, spec.data.augment, spec.training.seed)
            except ValueError as exc:
                raise JobFailure("invalid_spec", f"data.augment: {exc}") from exc
            augmented = len(x) - len(base)
            transfer_ds = ArrayDataset(x, None)
        inputs = TrainInputs(train=train_ds, validation=validation_ds, transfer=transfer_ds)
        return LoadedData(
            inputs=inputs,
            input_shape=checked.input_shape,
            num_classes=checked.num_classes,
            augmented=augmented,
        )

    def _find(self, ref: DataRef, field: str, *, load_builtin_data: bool) -> _Found:
        """A data reference's description and examples (a builtin is loaded only for tabular jobs)."""
        if isinstance(ref, BuiltinData):
            if not load_builtin_data:
                return _Found(BUILTIN_INFO[ref.builtin], None)
            train, test = load_builtin(ref.builtin, self.cache_dir / "builtins")
            return _Found(BUILTIN_INFO[ref.builtin], train, test)
        row = self._file(ref.file, f"{field}.file", "dataset")
        path = self._fetch(row.storage_key, self.workdir / f"{row.id}-{row.filename}", field)
        try:
            ds, fmt = read_any(path, row.filename)
        except DatasetError as exc:
            raise JobFailure("invalid_dataset", f"{field}: {exc}") from exc
        return _Found(DatasetInfo.of(ds, fmt), ds)

    def _find_optional(self, ref: DataRef | None, field: str, *, load_builtin_data: bool) -> _Found | None:
        return None if ref is None else self._find(ref, field, load_builtin_data=load_builtin_data)

    def _plan(self, spec: JobSpec, train: _Found, validation: _Found | None, transfer: _Found | None) -> Plan:
        """The spec checked against what was loaded (teachers' files fetched and described here)."""
        resolved = Resolved(
            train=train.info,
            validation=None if validation is None else validation.info,
            transfer=None if transfer is None else transfer.info,
            teachers=[self._teacher_info(spec, index) for index in range(len(spec.teachers))],
        )
        try:
            return plan(spec, resolved)
        except SpecError as exc:
            raise JobFailure("invalid_spec", exc.message) from exc

    # -- text ------------------------------------------------------------------------------------------

    def text_data(self, spec: JobSpec) -> LoadedTextData:
        train = self._find(spec.data.train, "data.train", load_builtin_data=False)
        validation = self._find_optional(spec.data.validation, "data.validation", load_builtin_data=False)
        transfer = self._find_optional(spec.data.transfer, "data.transfer", load_builtin_data=False)
        checked = self._plan(spec, train, validation, transfer)
        assert isinstance(train.dataset, TextDataset)
        train_ds = train.dataset
        if validation is not None:
            assert isinstance(validation.dataset, TextDataset)
            validation_ds, held_out = validation.dataset, False
        else:
            train_ds, validation_ds = text_holdout_split(train_ds)
            held_out = True
        transfer_ds = None
        if transfer is not None:
            assert isinstance(transfer.dataset, TextDataset)
            transfer_ds = transfer.dataset
        return LoadedTextData(
            train=train_ds,
            validation=validation_ds,
            num_classes=checked.num_classes,
            held_out=held_out,
            transfer=transfer_ds,
        )

    def text_teacher(self, spec: JobSpec) -> LoadedTextTeacher | None:
        """The text teacher of a text job (None: a teacher job); torch/transformers loaded only here."""
        from worker.engine.text import TextModelError, load_builtin_text_teacher, load_text_model

        if not spec.teachers:
            return None
        ref = spec.teachers[0]
        field = spec.teacher_field(0)
        if isinstance(ref, BuiltinTeacher):
            encoder, tokenizer = load_builtin_text_teacher(ref.builtin)
            return LoadedTextTeacher(encoder, tokenizer, f"builtin:{ref.builtin}", ref.builtin, field)
        path, sha256, name = self._teacher_file(spec, 0)
        try:
            model, tokenizer, _ = load_text_model(path)
        except TextModelError as exc:
            raise JobFailure("invalid_model", f"{field}: {exc}") from exc
        return LoadedTextTeacher(model, tokenizer, sha256, name, field)

    # -- teachers -------------------------------------------------------------------------------------

    def teachers(self, spec: JobSpec, data: LoadedData) -> list[LoadedTeacher]:
        """The tabular teachers, loaded from the files :meth:`data` fetched and checked against the data."""
        loaded = []
        for index, ref in enumerate(spec.teachers):
            field = spec.teacher_field(index)
            path, sha256, _ = self._teacher_file(spec, index)
            try:
                module, config = load_model(path)
            except ModelFileError as exc:
                raise JobFailure("invalid_model", f"{field}: {exc}") from exc
            loaded.append(LoadedTeacher(module, config, sha256, ref.weight, field))
        return loaded

    def _teacher_file(self, spec: JobSpec, index: int) -> tuple[Path, str, str]:
        """Fetch teacher ``index``'s model file once: ``(path, sha256, name)``."""
        if index not in self._teacher_files:
            ref = spec.teachers[index]
            field = spec.teacher_field(index)
            if isinstance(ref, JobTeacher):
                key, sha256 = self._teacher_job_model(ref.job, field)
                name = ref.job
            else:
                assert isinstance(ref, FileTeacher)
                row = self._file(ref.file, field, "model")
                key, sha256, name = row.storage_key, row.sha256, ref.file
            path = self._fetch(key, self.workdir / f"teacher-{index}.safetensors", field)
            self._teacher_files[index] = (path, sha256, name)
        return self._teacher_files[index]

    def _teacher_info(self, spec: JobSpec, index: int) -> TeacherInfo:
        """What teacher ``index`` is, read from its file's header (no weights loaded)."""
        ref = spec.teachers[index]
        if isinstance(ref, BuiltinTeacher):
            return BUILTIN_TEXT_TEACHERS[ref.builtin]
        path, _, _ = self._teacher_file(spec, index)
        try:
            return inspect_any_model_file(path)[0]
        except ModelFileError as exc:
            raise JobFailure("invalid_model", f"{spec.teacher_field(index)}: {exc}") from exc

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
