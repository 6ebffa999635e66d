"""Everything a job reads before training: its datasets (builtin or uploaded, split, augmented) and its
teachers (with the sha256 of their weights, which keys the teacher-output cache). What was read is checked
against the spec by :func:`distill.plan.plan`, the same function the API ran on submission.

Files and teacher jobs are looked up within the job's tenant, never by id alone.

(Over 500 lines: one loader for every kind of input — tabular, text and Hugging Face models — so that
tenancy, the fetch from the store and the plan check are written once.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
import torch
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from distill.datasets import BUILTIN_INFO, ArrayDataset, DatasetError, DatasetInfo, LMDataset, TextDataset
from distill.datasets.builtins import load_builtin
from distill.datasets.readers import read_any
from distill.datasets.split import holdout_split
from distill.hfarchive import (
    HF_ARCHIVE_ARTIFACT,
    ArchiveError,
    HFModelInfo,
    extract_archive,
    inspect_model_dir,
    is_hf_meta,
)
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


@dataclass
class LoadedHFModel:
    """A Hugging Face model archive, extracted (see :meth:`InputLoader.hf_model_source`)."""

    folder: Path
    info: HFModelInfo
    sha256: str
    """The archive's sha256 (an uploaded file's, or the job artifact's)."""
    name: str
    """Where it came from (``file_…`` or ``job_…``)."""
    field: str


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
    hf: HFModelInfo | None = None
    """A Hugging Face sequence classifier (``model`` is then a ``worker.engine.hf.HFTextClassifier``)."""


def text_holdout_split(ds: TextDataset) -> tuple[TextDataset, TextDataset]:
    """A deterministic split: 20% (at least one text) held out for validation, the rest to train."""
    n = len(ds)
    if n < 2:
        raise JobFailure("invalid_dataset", "data.train: a text job needs at least 2 texts")
    order = np.random.default_rng(TEXT_HOLDOUT_SEED).permutation(n)
    k = max(1, round(n * TEXT_HOLDOUT_FRACTION))
    return ds.subset(np.sort(order[k:])), ds.subset(np.sort(order[:k]))


D = TypeVar("D", ArrayDataset, TextDataset)


@dataclass
class Splits(Generic[D]):
    train: D
    validation: D
    """Per-epoch metrics, and where ``"auto"`` trials choose."""
    test: D
    """Where the final figures (``test_accuracy``...) are measured; may be ``validation`` itself."""
    sources: dict[str, str]
    """Where ``validation`` and ``test`` come from, for the report."""


def choose_splits(
    train: D,
    validation: D | None,
    test: D | None,
    *,
    official: D | None,
    chooses: bool,
    holdout: Callable[[D], tuple[D, D]],
) -> Splits[D]:
    """The job's splits. ``test`` is ``data.test``, else the builtin's official test split, else
    ``data.validation`` when nothing is chosen, else a seeded 20% of the training data (the same for every
    job, so a teacher and its students meet the same examples). ``validation`` is ``data.validation``, else
    the test split when nothing is chosen, else a seeded 20% of what is left of the training data: no
    choice (``chooses``: "auto" trials) ever sees the test split."""
    if test is not None:
        test_source = "data.test"
    elif official is not None:
        test, test_source = official, "builtin test split"
    elif validation is not None and not chooses:
        test, test_source = validation, "data.validation"
    else:
        train, test = holdout(train)
        test_source = "seeded 20% of data.train"
    if validation is not None:
        validation_source = "data.validation"
    elif not chooses:
        validation, validation_source = test, test_source
    else:
        train, validation = holdout(train)
        validation_source = "seeded 20% of the rest of data.train"
    return Splits(train, validation, test, {"validation": validation_source, "test": test_source})


@dataclass
class _Found:
    """One data reference: what it is (the plan's view) and, where loaded, its examples."""

    info: DatasetInfo
    dataset: ArrayDataset | TextDataset | LMDataset | None
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
        max_archive_bytes: int = 4 * 1024**3,
        max_archive_files: int = 64,
    ) -> None:
        self.sessions = sessions
        self.store = store
        self.cache_dir = cache_dir
        self.tenant_id = tenant_id
        self.workdir = workdir
        self.max_archive_bytes = max_archive_bytes
        self.max_archive_files = max_archive_files
        self._hf_models: dict[tuple[str, str], LoadedHFModel] = {}
        self._teacher_files: dict[int, tuple[Path, str, str]] = {}
        """Fetched teacher files by index in ``spec.teachers``: ``(path, sha256, name)``."""

    # -- data ---------------------------------------------------------------------------------------

    def data(self, spec: JobSpec) -> LoadedData:
        """The job's datasets, checked by :func:`plan`, split by :func:`choose_splits`, augmented."""
        train = self._find(spec.data.train, "data.train", load_builtin_data=True)
        validation = self._find_optional(spec.data.validation, "data.validation", load_builtin_data=True)
        test = self._find_optional(spec.data.test, "data.test", load_builtin_data=True)
        transfer = self._find_optional(spec.data.transfer, "data.transfer", load_builtin_data=True)
        checked = self._plan(spec, train, validation, test, transfer)
        assert checked.num_classes is not None and isinstance(train.dataset, ArrayDataset)
        train_ds = train.dataset
        chooses = spec.distillation.uses_auto and bool(spec.teachers)
        validation_ds = None if validation is None else validation.dataset
        test_ds = None if test is None else test.dataset
        assert validation_ds is None or isinstance(validation_ds, ArrayDataset)
        assert test_ds is None or isinstance(test_ds, ArrayDataset)
        split = choose_splits(
            train_ds, validation_ds, test_ds, official=train.held_out, chooses=chooses, holdout=holdout_split
        )
        train_ds, validation_ds, test_ds = split.train, split.validation, split.test
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
        inputs = TrainInputs(train=train_ds, validation=validation_ds, transfer=transfer_ds, test=test_ds)
        return LoadedData(
            inputs=inputs,
            input_shape=checked.input_shape,
            num_classes=checked.num_classes,
            augmented=augmented,
            splits=split.sources,
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

    def _plan(
        self,
        spec: JobSpec,
        train: _Found,
        validation: _Found | None,
        test: _Found | None,
        transfer: _Found | None,
    ) -> Plan:
        """The spec checked against what was loaded (teachers' files fetched and described here)."""
        resolved = Resolved(
            train=train.info,
            validation=None if validation is None else validation.info,
            test=None if test is None else test.info,
            transfer=None if transfer is None else transfer.info,
            teachers=[self._teacher_info(spec, index) for index in range(len(spec.teachers))],
        )
        try:
            return plan(spec, resolved)
        except SpecError as exc:
            raise JobFailure("invalid_spec", exc.message) from exc

    # -- text ------------------------------------------------------------------------------------------

    def text_data(self, spec: JobSpec) -> LoadedTextData:
        """The texts, checked by :func:`plan` and split by :func:`choose_splits` (no official split)."""
        train = self._find(spec.data.train, "data.train", load_builtin_data=False)
        validation = self._find_optional(spec.data.validation, "data.validation", load_builtin_data=False)
        test = self._find_optional(spec.data.test, "data.test", load_builtin_data=False)
        transfer = self._find_optional(spec.data.transfer, "data.transfer", load_builtin_data=False)
        checked = self._plan(spec, train, validation, test, transfer)
        assert isinstance(train.dataset, TextDataset)
        train_ds = train.dataset
        labeled = spec.task == "classification"
        chooses = labeled and spec.distillation.uses_auto and bool(spec.teachers)
        validation_ds = None if validation is None else validation.dataset
        test_ds = None if test is None else test.dataset
        assert validation_ds is None or isinstance(validation_ds, TextDataset)
        assert test_ds is None or isinstance(test_ds, TextDataset)
        split = choose_splits(
            train_ds, validation_ds, test_ds, official=None, chooses=chooses, holdout=text_holdout_split
        )
        transfer_ds = None
        if transfer is not None:
            assert isinstance(transfer.dataset, TextDataset)
            transfer_ds = transfer.dataset
        return LoadedTextData(
            train=split.train,
            validation=split.validation,
            num_classes=checked.num_classes,
            held_out=split.sources["validation"].startswith("seeded"),
            transfer=transfer_ds,
            test=None if split.test is split.validation else split.test,
            splits=split.sources,
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
        if self._is_hf(ref, field):
            return self._hf_text_teacher(ref, field)
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
        if self._is_hf(ref, spec.teacher_field(index)):
            return self.hf_model(ref, spec.teacher_field(index))[1]
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

    # -- Hugging Face models ------------------------------------------------------------------------

    def hf_model(self, ref: object, field: str) -> tuple[Path, HFModelInfo]:
        """An HF model archive named by ``ref`` (anything with ``file``: an uploaded archive, or ``job``: that
        job's :data:`~distill.hfarchive.HF_ARCHIVE_ARTIFACT`), fetched and extracted once into the job's
        working folder: ``(folder, info)``. ``field`` names ``ref`` in the spec, for error messages."""
        found = self.hf_model_source(ref, field)
        return found.folder, found.info

    def hf_model_source(self, ref: object, field: str) -> LoadedHFModel:
        """:meth:`hf_model`, with the archive's sha256 (keys a teacher-output cache) and its origin."""
        file_id, job_id = getattr(ref, "file", None), getattr(ref, "job", None)
        if isinstance(file_id, str):
            memo: tuple[str, str] = ("file", file_id)
        elif isinstance(job_id, str):
            memo = ("job", job_id)
        else:
            raise JobFailure("invalid_spec", f"{field}: name an uploaded model archive (file) or a job (job)")
        if memo in self._hf_models:
            return self._hf_models[memo]
        if memo[0] == "file":
            row = self._file(memo[1], f"{field}.file", "model")
            if not is_hf_meta(row.meta):
                raise JobFailure(
                    "invalid_model",
                    f"{field}.file: file {row.id} is not a Hugging Face model archive (upload a zip or "
                    "tar of the folder save_pretrained writes)",
                )
            key, sha256, name = row.storage_key, row.sha256, row.id
        else:
            key, sha256 = self._job_artifact(memo[1], HF_ARCHIVE_ARTIFACT, f"{field}.job")
            name = memo[1]
        base = self.workdir / f"hf-{memo[0]}-{memo[1]}"
        archive = self._fetch(key, self.workdir / f"hf-{memo[0]}-{memo[1]}.archive", field)
        try:
            folder = extract_archive(
                archive, base, max_bytes=self.max_archive_bytes, max_files=self.max_archive_files
            )
            info = inspect_model_dir(folder)
        except ArchiveError as exc:
            raise JobFailure("invalid_model", f"{field}: {exc}") from exc
        finally:
            archive.unlink(missing_ok=True)
        found = LoadedHFModel(folder=folder, info=info, sha256=sha256, name=name, field=field)
        self._hf_models[memo] = found
        return found

    def _is_hf(self, ref: object, field: str) -> bool:
        """Whether a file or job reference names a Hugging Face model archive (an uploaded archive, or a job
        whose student is one)."""
        if isinstance(ref, FileTeacher):
            return is_hf_meta(self._file(ref.file, field, "model").meta)
        if isinstance(ref, JobTeacher):
            with self.sessions() as session:
                job = session.scalar(select(Job).where(Job.id == ref.job, Job.tenant_id == self.tenant_id))
            return job is not None and is_hf_meta((job.result or {}).get("hf_model"))
        return False

    def _hf_text_teacher(self, ref: object, field: str) -> LoadedTextTeacher:
        """An HF sequence classifier teacher of a text job, behind the text engine's classifier interface."""
        from worker.engine.hf import HFModelError, HFTextClassifier, load_sequence_classifier

        found = self.hf_model_source(ref, field)
        try:
            model, tokenizer = load_sequence_classifier(found.folder, torch.device("cpu"))
        except (HFModelError, ArchiveError) as exc:
            raise JobFailure("invalid_model", f"{field}: {exc}") from exc
        return LoadedTextTeacher(
            HFTextClassifier(model), tokenizer, found.sha256, found.name, field, hf=found.info
        )

    def _job_artifact(self, job_id: str, name: str, field: str) -> tuple[str, str]:
        """The storage key and sha256 of artifact ``name`` of the tenant's job ``job_id``."""
        with self.sessions() as session:
            row = session.scalar(
                select(Artifact)
                .join(Job, Job.id == Artifact.job_id)
                .where(Job.id == job_id, Job.tenant_id == self.tenant_id, Artifact.name == name)
            )
        if row is None:
            raise JobFailure("missing_input", f"{field}: job {job_id} has no {name} artifact")
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
