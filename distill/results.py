"""A job's ``result`` and ``report.json``, typed: the worker writes them through these models, the API and
the client read them back with the same ones (``JobResult.model_validate(job.result)``).

One definition of each figure, for every kind of job:

- ``test_accuracy``: top-1 accuracy on the *test* split (``data.test``, else the builtin's official test
  split, else a seeded held-out part of the training file); no choice (``"auto"`` trials) ever saw it.
- ``cpu_latency_ms``: median CPU milliseconds of one forward pass over **one** example (batch 1), tabular
  and text alike; ``cpu_throughput``: examples per second at batch 64 (tabular jobs).
- ``speedup``: the teacher's batch-1 CPU latency over the student's.
- ``gain_over_baseline``: accuracy points over the same student trained from scratch on the labels.

Both models keep keys they do not name (``extra="allow"``): a report section carries more than the flat
figures (per-export checks, a text job's ``base_encoder``...), and an older or newer worker's keys must
survive a round trip through the API.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True, protected_namespaces=())


class JobResult(_Open):
    """The flat ``result`` of a succeeded job (``GET /v1/jobs/{id}``). Keys that do not apply are absent."""

    test_accuracy: float | None = None
    parameters: int | None = None
    cpu_latency_ms: float | None = None
    """Batch 1, every kind of job."""
    cpu_throughput: float | None = None
    ece: float | None = None
    bytes_on_disk: int | None = None
    agreement_with_teacher: float | None = None
    teacher_test_accuracy: float | None = None
    teacher_parameters: int | None = None
    teacher_cpu_latency_ms: float | None = None
    compression_ratio: float | None = None
    speedup: float | None = None
    teacher_cache_hit: bool | None = None
    baseline_test_accuracy: float | None = None
    baseline_ece: float | None = None
    gain_over_baseline: float | None = None
    """Accuracy points (2.5: +2.5 points over the from-scratch baseline)."""
    gap_recovered: float | None = None
    chosen_temperature: float | None = None
    chosen_alpha: float | None = None
    cosine_to_teacher: float | None = None
    """Text embedding jobs: mean cosine to the teacher's embeddings on held-out texts."""
    stored_model_config: dict[str, Any] | None = Field(default=None, alias="model_config")
    """Tabular jobs: the student's ``StoredModelConfig`` (JSON key ``model_config``)."""
    text_model: dict[str, Any] | None = None
    """Text jobs: what the student's text model file holds (kind, task, layers...)."""
    hf_model: dict[str, Any] | None = None
    """A student stored as a Hugging Face archive (``model.hf.zip``): its ``HFModelInfo`` metadata, as an
    uploaded archive's (``format: "hf"``, kind, architecture, parameters, tokenizer...)."""

    def to_json(self) -> dict[str, Any]:
        """Plain JSON for the job row: exactly the keys given (those that do not apply are absent)."""
        data: dict[str, Any] = self.model_dump(mode="json", exclude_unset=True, by_alias=True)
        return data


class ModelSection(_Open):
    """``report.json``'s ``student``, ``teacher`` and ``baseline`` sections (figures as in
    :class:`JobResult`, un-prefixed)."""

    test_accuracy: float | None = None
    parameters: int | None = None
    cpu_latency_ms: float | None = None
    cpu_throughput: float | None = None
    ece: float | None = None


class Splits(_Open):
    """Where each figure comes from (``data.splits`` of the report)."""

    validation: str | None = None
    """Per-epoch metrics and every choice (``"auto"`` trials)."""
    test: str | None = None
    """``test_accuracy`` and every other final figure."""


class Report(_Open):
    """``report.json``: the sections every job has, then what a kind of job adds (``extra``)."""

    version: int
    job_id: str | None = None
    name: str | None = None
    student: ModelSection | None = None
    teacher: ModelSection | None = None
    baseline: ModelSection | None = None
    comparison: dict[str, Any] | None = None
    exports: dict[str, dict[str, Any]] = {}
    teacher_cache: dict[str, Any] | None = None
    hyperparameters: dict[str, Any] | None = None
    data: dict[str, Any] | None = None
    history: list[dict[str, float]] = []
    baseline_history: list[dict[str, float]] | None = None
    spec: dict[str, Any] | None = None
    environment: dict[str, Any] | None = None
    duration_seconds: float | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = self.model_dump(mode="json", exclude_unset=True)
        return data
