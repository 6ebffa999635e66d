"""The modality seam: what one kind of data supplies to the one pipeline (:class:`worker.pipeline.Pipeline`).

The pipeline runs every job the same way, whatever its data::

    signals   teacher signals over the modality's pool (:meth:`Modality.signal_request` says which): from
              the content-addressed teacher cache, else :meth:`Modality.compute_signals` once, then cached
    choice    "auto" temperature / alpha: short :meth:`Modality.train` runs (``Run.kind == "trial"``)
              scored on validation, else the spec's values
    student   :meth:`Modality.train` (``"student"``: progress callbacks, checkpoint / resume hooks)
    baseline  :meth:`Modality.train` (``"baseline"``: no signals, labels only) when
              :meth:`Modality.wants_baseline`
    figures   :meth:`Modality.evaluate` (student, teacher, baseline sections; more report sections)
    artifacts :meth:`Modality.model_artifact` (``model.safetensors`` from :meth:`Modality.save`, or a
              Hugging Face archive) and :meth:`Modality.export` per ``spec.export``
    report    ``build_report`` + the curves + :meth:`Modality.summary` / :meth:`Modality.describe_model`
              into the typed ``JobResult`` and ``Report`` of :mod:`distill.results`

A modality never sees the cache, the report's layout or the runner; the pipeline never sees a tensor of
the modality's data. One module per modality under ``worker/modalities/`` (``tabular``, ``text``,
``causal_lm``), picked from the spec in one place, :func:`worker.modalities.modality_for`.

**Adding a modality**: subclass :class:`Modality` in ``worker/modalities/<name>.py``,
set ``name``, implement the abstract methods, and add one line to :func:`worker.modalities.modality_for`.
``load`` reads the inputs with the runner's :class:`worker.inputs.InputLoader` (it runs while the job's
temporary folder exists; keep what training needs in memory). Teacher outputs belong in
:class:`~worker.engine.signals.TeacherSignals`: logits (dense, or top-k for many classes: token
vocabularies) via :func:`~worker.engine.signals.signals_from_logits`, and anything else captured (hidden
states, attention maps, sentence embeddings) as ``features`` rows in pool order; the cache key is
:class:`SignalRequest`'s. ``train`` builds a :class:`worker.engine.loop.Loop` and calls ``fit`` with
``run.hooks`` (checkpoint / resume: set for the student only). ``evaluate`` returns sections whose keys are
the report's (``test_accuracy``, ``parameters``, ``cpu_latency_ms`` at batch 1...).

**From** :class:`worker.pipeline.BasePipeline` (a pipeline of one's own, as causal-LM jobs first had;
``worker/modalities/causal_lm.py`` is the result of this mapping): ``self.spec/device/event/progress/
quiet/hooks`` are the same names here; its teacher-cache code becomes :meth:`signal_request` +
:meth:`compute_signals` (+ :meth:`cache_figures` for more of the cache's report section); its training
call becomes :meth:`train` (``choose_auto`` and ``curves`` are the pipeline's, fed by :meth:`train` and
``Trained.history``); its report sections become :class:`Evaluation`; its ``JobResult`` extras become
:meth:`describe_model`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch

from distill.spec import JobSpec
from worker.engine.distributed import DataParallel
from worker.engine.loop import Checkpoint, LoopState, TrainCallbacks
from worker.engine.report import render_summary
from worker.engine.signals import TeacherSignals
from worker.teacher_cache import TeacherCache

if TYPE_CHECKING:
    from worker.inputs import InputLoader

Event = Callable[[str, dict[str, Any]], None]


@dataclass
class JobContext:
    """What the pipeline and its modality get from the runner besides the inputs."""

    job_id: str
    spec: JobSpec
    cache: TeacherCache
    """Teacher outputs, content-addressed under the job's tenant."""
    device: torch.device
    progress: TrainCallbacks
    """Callbacks of the student's training: progress, epoch events, cancellation."""
    quiet: TrainCallbacks
    """Callbacks of side runs (auto trials, baseline): cancellation only."""
    event: Event
    checkpoint: Checkpoint | None = None
    """Called with the student's :class:`LoopState` every ``checkpoint_every`` steps and at each epoch's
    end (None: nothing is saved). Side runs (auto trials, the baseline) are not checkpointed."""
    checkpoint_every: int = 0
    resume: LoopState | None = None
    """A state given earlier to ``checkpoint``: the student's training goes on from it."""
    parallel: DataParallel | None = None
    """``resources.gpus > 1``: the student's training runs data-parallel in this layout (every modality;
    text and causal-LM students with DDP only)."""

    def student_hooks(self) -> dict[str, Any]:
        """The keyword arguments of :func:`worker.engine.train.train_model` for the student's run."""
        hooks: dict[str, Any] = {
            "state": self.resume,
            "checkpoint": self.checkpoint,
            "checkpoint_every": self.checkpoint_every,
        }
        if self.parallel is not None:
            hooks["parallel"] = self.parallel
        return hooks


@dataclass
class SignalRequest:
    """Which teacher signals a job needs: the cache key's parts and what the report says of them."""

    teacher_keys: list[str]
    """One per teacher: its file's sha256, or ``builtin:<name>``."""
    inputs_digest: str
    """sha256 of the pool in order, and of anything else that changes the outputs (truncation length...)."""
    capture: list[str] = field(default_factory=list)
    """What is captured besides logits (layer names, attention keys, ``embedding``)."""
    top_k: int | None = None
    weights: list[float] = field(default_factory=lambda: [1.0])
    """The teachers' mixture weights: not part of the cached outputs, applied on every use."""
    examples: int = 0
    """Rows of the pool."""
    info: dict[str, Any] = field(default_factory=dict)
    """More for the report's ``teacher_cache`` section (``transfer_examples``...)."""


@dataclass
class Run:
    """One training run the pipeline asks for."""

    kind: Literal["student", "trial", "baseline"]
    signals: TeacherSignals | None
    """None for the baseline (labels only) and for jobs without a teacher."""
    temperature: float
    alpha: float
    epochs: int
    callbacks: TrainCallbacks
    hooks: dict[str, Any] = field(default_factory=dict)
    """``state`` / ``checkpoint`` / ``checkpoint_every`` for :func:`~worker.engine.loop.fit` (the student)."""


@dataclass
class Trained:
    """A run's outcome: the model, whether it was stopped (cancel, shutdown...) and its epoch history."""

    model: Any
    stopped: bool
    history: list[dict[str, float]] = field(default_factory=list)


@dataclass
class Evaluation:
    """The figures of a finished job, as :func:`worker.engine.report.build_report` takes them."""

    student: dict[str, Any]
    teacher: dict[str, Any] | None = None
    baseline: dict[str, Any] | None = None
    sections: dict[str, Any] = field(default_factory=dict)
    """More report sections, after the common ones (text: ``speedup``, ``base_encoder``...)."""
    summary: dict[str, Any] | None = None
    """The flat result, when the modality words it itself (None: :func:`render_summary` of the report)."""
    reference: float | None = None
    """The teacher's value of the validation metric the curves draw (None: the teacher's
    ``test_accuracy``); a causal LM's curves are of token accuracy."""


class Modality(ABC):
    """One kind of data. Subclasses set :attr:`name` and implement the abstract methods (module doc)."""

    name: ClassVar[str]
    report_kind: ClassVar[str | None] = None
    """The report's ``kind`` (``"text"``), or None to leave it out (tabular reports have none)."""
    student_label: ClassVar[str] = "distilled student"
    reused_message: ClassVar[str] = "teacher outputs reused from the cache: the teachers did not run"
    """The event of a teacher-cache hit (text jobs have one teacher and say so)."""

    def __init__(self, context: JobContext) -> None:
        self.context = context
        self.job_id = context.job_id
        self.spec = context.spec
        self.device = context.device
        self.event = context.event
        self.progress = context.progress
        self.quiet = context.quiet

    @property
    def hooks(self) -> dict[str, Any]:
        """Checkpoint / resume arguments for the student's run (see :meth:`JobContext.student_hooks`)."""
        return self.context.student_hooks()

    # -- inputs -----------------------------------------------------------------------------------------

    @classmethod
    @abstractmethod
    def load(cls, context: JobContext, loader: InputLoader) -> Modality:
        """Read the job's data and teachers (checked against each other) and return the modality."""

    @property
    @abstractmethod
    def teachers(self) -> int:
        """How many teachers the job has (0: a teacher job, trained on labels)."""

    @abstractmethod
    def data_summary(self) -> dict[str, Any]:
        """The report's ``data`` section (and the "data loaded" event's data)."""

    # -- teacher signals --------------------------------------------------------------------------------

    @abstractmethod
    def signal_request(self) -> SignalRequest | None:
        """The teacher signals the job trains on, or None (no teacher)."""

    @abstractmethod
    def compute_signals(self, request: SignalRequest) -> TeacherSignals:
        """Run the teachers over the pool (once per cache key): ``ValueError`` names a bad spec field."""

    def cache_figures(self, signals: TeacherSignals, stored_bytes: int, hit: bool) -> dict[str, Any]:
        """More of the report's ``teacher_cache`` section, from the signals as the cache holds them
        (``stored_bytes``: the entry's size) and whether they came from it. Causal LMs report bytes per
        token and the teacher compute the cache saves; by default nothing."""
        return {}

    # -- training ---------------------------------------------------------------------------------------

    def wants_baseline(self) -> bool:
        """Whether the job trains a from-scratch baseline (``spec.baseline`` where it applies)."""
        return self.spec.baseline

    def chooses(self, signals: TeacherSignals | None) -> bool:
        """Whether "auto" temperature / alpha are chosen by trials (they need class signals)."""
        return signals is not None and signals.has_logits and self.spec.distillation.uses_auto

    @abstractmethod
    def train(self, run: Run) -> Trained:
        """One training run; ``JobFailure`` for what the user must fix (``training_diverged``...)."""

    # -- evaluation, artifacts, result ------------------------------------------------------------------

    @abstractmethod
    def evaluate(self, student: Trained, baseline: Trained | None) -> Evaluation:
        """The figures on the test split (never seen by a choice)."""

    @abstractmethod
    def save(self, student: Trained) -> bytes:
        """``model.safetensors``: the student as a self-describing file."""

    def model_artifact(self, student: Trained, evaluation: Evaluation) -> tuple[str, str, bytes]:
        """``(artifact name, report.exports key, bytes)``: the student as the job stores it. By default
        :meth:`save`'s ``model.safetensors``; a modality whose students load elsewhere (a Hugging Face
        archive, ``model.hf.zip``) overrides it (the figures are there for a model card)."""
        return "model.safetensors", "safetensors", self.save(student)

    @abstractmethod
    def export(self, fmt: str, student: Trained) -> tuple[str, dict[str, Any], bytes | None]:
        """``(file name, report entry, bytes or None when it failed)`` for ``fmt`` in ``spec.export``."""

    @abstractmethod
    def describe_model(self, student: Trained) -> dict[str, Any]:
        """The ``JobResult`` fields that describe the model (``model_config``, ``text_model``)."""

    def summary(self, report: Mapping[str, Any], evaluation: Evaluation) -> dict[str, Any]:
        """The flat ``result``: by default every figure of the report (:func:`render_summary`)."""
        return render_summary(report)
