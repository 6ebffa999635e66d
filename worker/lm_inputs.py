"""What a ``causal_lm`` job reads before training: its prompt/completion records, its teacher and, for a
``{"arch": "pretrained"}`` student, the model it continues from, each checked by :func:`distill.plan.plan`
as the API checked them on submission.

Models are Hugging Face archives: an uploaded ``purpose=model`` archive (``{"file": …}``) or a causal_lm
job's ``model.hf.zip`` (``{"job": …}``), unpacked into the job's work folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import select

from distill.datasets import DatasetError, DatasetInfo, LMDataset
from distill.datasets.readers import read_any
from distill.lminfo import CausalLMInfo
from distill.plan import Resolved, TeacherInfo, plan
from distill.spec import (
    DataRef,
    EndpointTeacher,
    FileData,
    FileTeacher,
    JobSpec,
    JobTeacher,
    PretrainedStudentConfig,
    SpecError,
)
from distill.tables import Artifact, Job
from worker.engine.lm import HF_ARCHIVE, LMError, describe, load_lm, tokenizer_sha256, unpack
from worker.failures import JobFailure
from worker.inputs import InputLoader

LM_HOLDOUT_FRACTION = 0.2
LM_HOLDOUT_SEED = 0


@dataclass
class LoadedLMData:
    train: LMDataset
    validation: LMDataset
    """Per-epoch metrics."""
    test: LMDataset | None = None
    """Where the final figures are measured, when not ``validation``."""
    splits: dict[str, str] = field(default_factory=dict)

    @property
    def evaluation(self) -> LMDataset:
        return self.validation if self.test is None else self.test

    def summary(self, teachers: int) -> dict[str, Any]:
        return {
            "kind": "lm",
            "train_examples": len(self.train),
            "validation_examples": len(self.validation),
            "test_examples": len(self.evaluation),
            "splits": dict(self.splits),
            "teachers": teachers,
        }


@dataclass
class LoadedLM:
    model: Any
    """An ``AutoModelForCausalLM`` (eval mode, CPU)."""
    tokenizer: Any
    sha256: str
    """The archive's sha256: keys the teacher-output cache."""
    name: str
    """Where it came from (``job_…``, ``file_…``)."""
    field: str
    info: CausalLMInfo


def lm_holdout_split(ds: LMDataset) -> tuple[LMDataset, LMDataset]:
    """A deterministic split: 20% (at least one record) held out, the rest to train."""
    n = len(ds)
    if n < 2:
        raise JobFailure("invalid_dataset", "data.train: a causal_lm job needs at least 2 records")
    order = np.random.default_rng(LM_HOLDOUT_SEED).permutation(n)
    k = max(1, round(n * LM_HOLDOUT_FRACTION))
    return ds.subset(np.sort(order[k:])), ds.subset(np.sort(order[:k]))


class LMInputs:
    """Loads a causal_lm job's inputs through the job's :class:`InputLoader` (tenant-scoped lookups)."""

    def __init__(self, loader: InputLoader, spec: JobSpec) -> None:
        self.loader = loader
        self.spec = spec

    def load(self) -> tuple[LoadedLMData, LoadedLM | None, LoadedLM | None]:
        """``(data, teacher or None, pretrained student or None)``, checked by :func:`plan`."""
        spec = self.spec
        train = self._dataset(spec.data.train, "data.train")
        validation = (
            None if spec.data.validation is None else self._dataset(spec.data.validation, "data.validation")
        )
        test = None if spec.data.test is None else self._dataset(spec.data.test, "data.test")
        teacher = self._teacher()
        student = self._student_start()
        resolved = Resolved(
            train=DatasetInfo.of(train, "jsonl"),
            validation=None if validation is None else DatasetInfo.of(validation, "jsonl"),
            test=None if test is None else DatasetInfo.of(test, "jsonl"),
            teachers=self._endpoint() or ([] if teacher is None else [teacher.info]),
            student=None if student is None else student.info,
        )
        try:
            plan(spec, resolved)
        except SpecError as exc:
            raise JobFailure("invalid_spec", exc.message) from exc
        sources = {"validation": "data.validation", "test": "data.test"}
        if validation is None:
            if test is not None:
                validation, sources["validation"] = test, "data.test"
            else:
                train, validation = lm_holdout_split(train)
                sources["validation"] = sources["test"] = "seeded 20% of data.train"
        elif test is None:
            sources["test"] = "data.validation"
        data = LoadedLMData(
            train=train,
            validation=validation,
            test=None if test is None or test is validation else test,
            splits=sources,
        )
        return data, teacher, student

    def _dataset(self, ref: DataRef, where: str) -> LMDataset:
        if not isinstance(ref, FileData):
            raise JobFailure(
                "invalid_spec",
                f"{where}: builtin datasets are not language-model records; upload a JSONL of prompts and "
                "completions",
            )
        row = self.loader._file(ref.file, f"{where}.file", "dataset")
        path = self.loader._fetch(row.storage_key, self.loader.workdir / f"{row.id}-{row.filename}", where)
        try:
            ds, _ = read_any(path, row.filename)
        except DatasetError as exc:
            raise JobFailure("invalid_dataset", f"{where}: {exc}") from exc
        if not isinstance(ds, LMDataset):
            raise JobFailure(
                "invalid_spec",
                f'{where}: a causal_lm job reads JSONL records with "prompt" (and "completion") or chat '
                '"messages"; this file holds other examples',
            )
        return ds

    def _endpoint(self) -> list[TeacherInfo]:
        """An endpoint teacher's settings (it has no model to load: ``worker.endpoint_teacher``)."""
        ref = self.spec.teacher
        return [ref.endpoint] if isinstance(ref, EndpointTeacher) else []

    def _teacher(self) -> LoadedLM | None:
        if not self.spec.teachers or self._endpoint():
            return None
        ref = self.spec.teachers[0]
        where = self.spec.teacher_field(0)
        if isinstance(ref, JobTeacher):
            return self._model_of_job(ref.job, where, "teacher")
        assert isinstance(ref, FileTeacher)
        return self._model_of_file(ref.file, where, "teacher")

    def _student_start(self) -> LoadedLM | None:
        model = self.spec.model
        if not isinstance(model, PretrainedStudentConfig):
            return None
        if model.job is not None:
            return self._model_of_job(model.job, "model.job", "student")
        assert model.file is not None
        return self._model_of_file(model.file, "model.file", "student")

    def _model_of_job(self, job_id: str, where: str, role: str) -> LoadedLM:
        with self.loader.sessions() as session:
            row = session.scalar(
                select(Artifact)
                .join(Job, Job.id == Artifact.job_id)
                .where(Job.id == job_id, Job.tenant_id == self.loader.tenant_id, Artifact.name == HF_ARCHIVE)
            )
        if row is None:
            raise JobFailure(
                "missing_input", f"{where}: job {job_id} has no {HF_ARCHIVE} artifact (not a causal_lm job?)"
            )
        return self._load(row.storage_key, row.sha256, job_id, where, role)

    def _model_of_file(self, file_id: str, where: str, role: str) -> LoadedLM:
        row = self.loader._file(file_id, where, "model")
        return self._load(row.storage_key, row.sha256, file_id, where, role)

    def _load(self, key: str, sha256: str, name: str, where: str, role: str) -> LoadedLM:
        archive = self.loader._fetch(key, self.loader.workdir / f"{role}-{name}.archive", where)
        folder = self.loader.workdir / f"{role}-{name}"
        folder.mkdir(parents=True, exist_ok=True)
        try:
            root = unpack(archive, folder)
            model, tokenizer = load_lm(root)
        except LMError as exc:
            raise JobFailure("invalid_model", f"{where}: {exc}") from exc
        return LoadedLM(model, tokenizer, sha256, name, where, describe(model, tokenizer_sha256(root)))


def lm_data_from_records(
    train: list[dict[str, Any]], validation: list[dict[str, Any]] | None = None
) -> LoadedLMData:
    """Data for :class:`worker.lm_pipeline.LMPipeline` from in-memory ``{"prompt", "completion"}`` records
    (sequence-level distillation: a teacher's answers collected elsewhere); without ``validation`` a
    seeded 20% of ``train`` is held out."""
    train_ds = LMDataset([{"prompt": r["prompt"], "completion": r.get("completion")} for r in train])
    if validation is None:
        train_ds, held = lm_holdout_split(train_ds)
        sources = {"validation": "seeded 20% of data.train", "test": "seeded 20% of data.train"}
    else:
        held = LMDataset([{"prompt": r["prompt"], "completion": r.get("completion")} for r in validation])
        sources = {"validation": "given", "test": "given"}
    return LoadedLMData(train=train_ds, validation=held, splits=sources)
