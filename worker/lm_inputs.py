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
import torch

from distill.datasets import DatasetError, DatasetInfo, LMDataset
from distill.datasets.readers import read_any
from distill.lminfo import CausalLMInfo
from distill.plan import Resolved, TeacherInfo, plan
from distill.spec import DataRef, EndpointTeacher, FileData, JobSpec, PretrainedStudentConfig, SpecError
from worker.engine.lm import describe
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
        return self._model(self.spec.teachers[0], self.spec.teacher_field(0))

    def _student_start(self) -> LoadedLM | None:
        model = self.spec.model
        if not isinstance(model, PretrainedStudentConfig):
            return None
        return self._model(model, "model.job" if model.job is not None else "model.file")

    def _model(self, ref: object, where: str) -> LoadedLM:
        """A causal LM archive (an uploaded file, or a job's ``model.hf.zip``), fetched, extracted and
        loaded by the loader's Hugging Face path (:meth:`InputLoader.hf_model_source`)."""
        from distill.hfarchive import ArchiveError
        from worker.engine.hf import HFModelError, load_causal_lm

        found = self.loader.hf_model_source(ref, where.removesuffix(".job").removesuffix(".file"))
        if found.info.kind != "causal_lm":
            raise JobFailure(
                "invalid_model",
                f"{where}: {found.name} is a {found.info.kind.replace('_', ' ')} "
                f"({found.info.architecture}), not a causal language model",
            )
        try:
            model, tokenizer = load_causal_lm(found.folder, torch.device("cpu"))
        except (HFModelError, ArchiveError) as exc:
            raise JobFailure("invalid_model", f"{where}: {exc}") from exc
        return LoadedLM(
            model, tokenizer, found.sha256, found.name, where, describe(model, found.info.tokenizer_sha256)
        )


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
