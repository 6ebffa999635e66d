"""One job's training, from loaded inputs to artifacts: teacher signals (cached), "auto" hyperparameters,
the student, the optional from-scratch baseline, evaluation, exports and the report.

It knows nothing of the database: the runner hands it callbacks (progress, events, cancellation) and takes
back the artifacts to store. Teacher outputs go through one seam, ``_signals``: a content-addressed cache
hit and a live teacher pass give the same :class:`TeacherSignals`.
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from distill.nets import count_parameters, fit_standardization
from distill.results import JobResult, Report
from distill.spec import DistillationSpec, JobSpec, StoredModelConfig, TrainingSpec
from worker.engine.auto import AutoChoice, choose
from worker.engine.distributed import DataParallel
from worker.engine.ensemble import WeightedEnsemble
from worker.engine.evaluate import summarize
from worker.engine.export import (
    ExportError,
    check_onnx,
    check_torchscript,
    model_to_onnx,
    model_to_safetensors,
    model_to_torchscript,
)
from worker.engine.loop import Checkpoint, LoopState
from worker.engine.objective import teacher_capture
from worker.engine.report import build_report, describe_export, render_summary
from worker.engine.signals import TeacherSignals, compute_signals, resolve_top_k
from worker.engine.train import (
    TrainCallbacks,
    TrainingDiverged,
    TrainInputs,
    TrainOutcome,
    pool_inputs,
    train_model,
)
from worker.failures import JobFailure
from worker.inputs import LoadedData, LoadedTeacher
from worker.teacher_cache import TeacherCache, cache_digest, inputs_digest

log = logging.getLogger(__name__)

Event = Callable[[str, dict[str, Any]], None]

CURVES = "curves.svg"
STUDENT_LABEL, BASELINE_LABEL = "distilled student", "baseline (from scratch)"

EXPORTERS = {
    "onnx": ("model.onnx", model_to_onnx, check_onnx),
    "torchscript": ("model.torchscript.pt", model_to_torchscript, check_torchscript),
}


@dataclass
class PipelineOutcome:
    stopped: bool
    result: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, bytes] = field(default_factory=dict)


@dataclass
class JobContext:
    """What every pipeline gets from the runner besides its inputs."""

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
    """``resources.gpus > 1``: the student's training runs data-parallel in this layout (tabular jobs)."""

    def student_hooks(self) -> dict[str, Any]:
        """The keyword arguments of :func:`worker.engine.loop.fit` for the student's run."""
        hooks: dict[str, Any] = {
            "state": self.resume,
            "checkpoint": self.checkpoint,
            "checkpoint_every": self.checkpoint_every,
        }
        if self.parallel is not None:
            hooks["parallel"] = self.parallel
        return hooks


class BasePipeline:
    def __init__(self, context: JobContext) -> None:
        self.job_id = context.job_id
        self.spec = context.spec
        self.cache = context.cache
        self.device = context.device
        self.progress = context.progress
        self.quiet = context.quiet
        self.event = context.event
        self.context = context

    @property
    def hooks(self) -> dict[str, Any]:
        """Checkpoint / resume arguments for the student's run (see :meth:`JobContext.student_hooks`)."""
        return self.context.student_hooks()

    def curves(
        self, runs: Mapping[str, Sequence[Mapping[str, Any]]], *, teacher: Any = None
    ) -> dict[str, bytes]:
        """``{"curves.svg": ...}``: the training curves of ``runs`` (label → history) with the teacher's
        validation metric as a reference, or ``{}`` when they cannot be drawn. A plot is never worth a job:
        a failure (matplotlib missing included) is logged and reported in an event."""
        try:
            from worker.engine.plots import render_curves

            svg = render_curves(
                runs,
                teacher=teacher if isinstance(teacher, int | float) else None,
                title=self.spec.name or self.job_id,
            )
        except Exception as exc:
            log.warning("job %s: %s not drawn", self.job_id, CURVES, exc_info=True)
            self.event(f"{CURVES} not drawn: {type(exc).__name__}: {exc}", {"artifact": CURVES})
            return {}
        return {CURVES: svg}

    def choose_auto(self, run_trial: Callable[[float, float, int], Any]) -> AutoChoice | None:
        """``"auto"`` temperature / alpha: short trials (a quarter of the epochs, at least one), each
        ``run_trial(temperature, alpha, epochs)`` scored by its last validation accuracy, an event per trial
        and one for the choice and why (None: cancelled). A trial that fails as ``training_diverged`` scores
        -inf instead of failing the job."""
        spec = self.spec.distillation
        epochs = max(1, self.spec.training.epochs // 4)
        stopped = False

        def score(temperature: float, alpha: float) -> float:
            nonlocal stopped
            if stopped:
                return float("-inf")
            try:
                outcome = run_trial(temperature, alpha, epochs)
            except JobFailure as failure:
                if failure.code != "training_diverged":
                    raise
                self.event(
                    f"auto trial: temperature {temperature:g}, alpha {alpha:g} diverged",
                    {"temperature": temperature, "alpha": alpha, "error": failure.message},
                )
                return float("-inf")
            stopped = outcome.stopped
            value = outcome.history[-1]["val_accuracy"] if outcome.history else float("-inf")
            self.event(
                f"auto trial: temperature {temperature:g}, alpha {alpha:g}",
                {"temperature": temperature, "alpha": alpha, "val_accuracy": value, "epochs": epochs},
            )
            return float(value)

        choice = choose(spec.temperature, spec.alpha, spec.auto_budget, score)
        if stopped:
            return None
        self.event(
            f"auto chose temperature {choice.temperature:g}, alpha {choice.alpha:g}",
            {"temperature": choice.temperature, "alpha": choice.alpha, "reason": choice.reason},
        )
        return choice


class Pipeline(BasePipeline):
    """A tabular job: MLP/CNN students distilled from one or more teachers."""

    def __init__(self, context: JobContext, *, data: LoadedData, teachers: list[LoadedTeacher]) -> None:
        super().__init__(context)
        self.data = data
        self.teachers = teachers
        # The model standardises its own inputs (fitted on the training split only), so a downloaded
        # model and its exports take raw features.
        standardize = (
            fit_standardization(data.inputs.train.x) if self.spec.data.standardize is not False else None
        )
        self.config = StoredModelConfig(
            model=self.spec.model,
            input_shape=data.input_shape,
            num_classes=data.num_classes,
            standardize=standardize,
        )

    def run(self, started: float) -> PipelineOutcome:
        signals, cache_info = self._signals()
        choice = self._hyperparameters(signals)
        if choice is None:
            return PipelineOutcome(stopped=True)
        distilled = self._train(
            signals, self.progress, temperature=choice.temperature, alpha=choice.alpha, hooks=self.hooks
        )
        if distilled.stopped:
            return PipelineOutcome(stopped=True)
        baseline, scratch = None, None
        if self.spec.baseline:
            self.event("training the baseline: the same student from scratch, on labels only", {})
            # labels only: the transfer set (and augmented copies) carry no labels, only teacher signals
            labeled = replace(self.data.inputs, transfer=None)
            scratch = self._train(None, self.quiet, distillation=DistillationSpec(), inputs=labeled)
            if scratch.stopped:
                return PipelineOutcome(stopped=True)
            baseline = summarize(scratch.model, self.data.inputs.evaluation, self.device, cfg=self.config)
        teacher_module, teacher_config = self._teacher_for_report()
        summary = summarize(
            distilled.model,
            self.data.inputs.evaluation,
            self.device,
            teacher_module,
            cfg=self.config,
            teacher_cfg=teacher_config,
        )
        artifacts = {"model.safetensors": model_to_safetensors(distilled.model, self.config)}
        exports = {"safetensors": describe_export("model.safetensors", artifacts["model.safetensors"])}
        for fmt in self.spec.export:
            name, entry, blob = self._export(fmt, distilled.model)
            exports[fmt] = entry
            if blob is not None:
                artifacts[name] = blob
        chosen = choice.to_dict() if self.spec.distillation.uses_auto else None
        report = build_report(
            student=summary,
            teacher=self._teacher_info(),
            baseline=baseline,
            exports=exports,
            cache=cache_info,
            chosen=chosen,
        )
        runs = {STUDENT_LABEL if self.teachers else "model": distilled.history}
        if scratch is not None:
            runs[BASELINE_LABEL] = scratch.history
        artifacts |= self.curves(runs, teacher=(report.get("teacher") or {}).get("test_accuracy"))
        report |= {
            "job_id": self.job_id,
            "name": self.spec.name,
            "spec": self.spec.model_dump(mode="json"),
            "data": self.data.summary(len(self.teachers)),
            "history": distilled.history,
            "environment": {
                "device": str(self.device),
                "processes": 1 if self.context.parallel is None else self.context.parallel.world,
                "torch": torch.__version__,
                "python": platform.python_version(),
            },
            "duration_seconds": round(time.monotonic() - started, 3),
        }
        if scratch is not None:
            report["baseline_history"] = scratch.history
        result = JobResult.model_validate(
            {**render_summary(report), "model_config": self.config.model_dump(mode="json")}
        ).to_json()
        report = Report.model_validate(report).to_json()
        artifacts["report.json"] = json_bytes(report)
        return PipelineOutcome(
            stopped=False, result=result, summary=render_summary(report), artifacts=artifacts
        )

    # -- teacher signals: the one seam between cached and live teacher outputs -----------------------------

    def _signals(self) -> tuple[TeacherSignals | None, dict[str, Any] | None]:
        if not self.teachers:
            return None, None
        x = pool_inputs(self.data.inputs)
        capture = teacher_capture(self.spec.distillation)
        top_k = resolve_top_k(self.data.num_classes, None)
        digest = cache_digest(
            teacher_sha256=[t.sha256 for t in self.teachers],
            inputs_sha256=inputs_digest(x),
            capture=capture,
            top_k=top_k,
        )
        weights = [t.weight for t in self.teachers]
        info: dict[str, Any] = {"key": digest, "examples": len(x), "captured": capture, "top_k": top_k}
        blob = self.cache.get(digest)
        if blob is not None:
            signals = TeacherSignals.from_bytes(blob)
            total = sum(weights)
            signals.weights = [w / total for w in weights]  # the cache holds each teacher apart
            self.event("teacher outputs reused from the cache: the teachers did not run", info)
            return signals, {**info, "hit": True}
        began = time.monotonic()
        try:
            signals = compute_signals(
                [t.module for t in self.teachers], weights, x, self.device, capture=capture, top_k=top_k
            )
        except ValueError as exc:
            raise JobFailure("invalid_spec", f"distillation.losses: {exc}") from exc
        seconds = round(time.monotonic() - began, 3)
        self.cache.put(digest, signals.to_bytes())
        self.event("teacher outputs computed once and cached", {**info, "seconds": seconds})
        return signals, {**info, "hit": False, "seconds": seconds}

    # -- training ------------------------------------------------------------------------------------------

    def _train(
        self,
        signals: TeacherSignals | None,
        callbacks: TrainCallbacks,
        *,
        temperature: float | None = None,
        alpha: float | None = None,
        distillation: DistillationSpec | None = None,
        training: TrainingSpec | None = None,
        inputs: TrainInputs | None = None,
        hooks: dict[str, Any] | None = None,
    ) -> TrainOutcome:
        try:
            return train_model(
                self.config,
                inputs or self.data.inputs,
                training or self.spec.training,
                distillation or self.spec.distillation,
                signals,
                self.device,
                callbacks,
                temperature=temperature,
                alpha=alpha,
                **(hooks or {}),
            )
        except TrainingDiverged as exc:
            raise JobFailure("training_diverged", str(exc)) from exc
        except ValueError as exc:
            raise JobFailure("invalid_spec", f"distillation: {exc}") from exc

    def _hyperparameters(self, signals: TeacherSignals | None) -> AutoChoice | None:
        """The temperature and alpha to use: as given, or chosen by short trials (None: cancelled)."""
        spec = self.spec.distillation
        if signals is None or not spec.uses_auto:
            t, a = spec.temperature, spec.alpha
            return AutoChoice(
                temperature=t if isinstance(t, float) else 4.0, alpha=a if isinstance(a, float) else 0.9
            )
        return self.choose_auto(
            lambda temperature, alpha, epochs: self._train(
                signals,
                self.quiet,
                temperature=temperature,
                alpha=alpha,
                training=self.spec.training.model_copy(update={"epochs": epochs}),
            )
        )

    # -- evaluation and exports ---------------------------------------------------------------------------

    def _teacher_for_report(self) -> tuple[torch.nn.Module | None, StoredModelConfig | None]:
        if not self.teachers:
            return None, None
        if len(self.teachers) == 1:
            return self.teachers[0].module, self.teachers[0].config
        ensemble = WeightedEnsemble([t.module for t in self.teachers], [t.weight for t in self.teachers])
        return ensemble.to(self.device), None

    def _teacher_info(self) -> dict[str, Any] | None:
        if not self.teachers:
            return None
        return {
            "source": [t.field for t in self.teachers],
            "weights": [t.weight for t in self.teachers],
            "members_parameters": [count_parameters(t.module) for t in self.teachers],
        }

    def _export(self, fmt: str, model: torch.nn.Module) -> tuple[str, dict[str, Any], bytes | None]:
        name, export, check = EXPORTERS[fmt]
        try:
            blob = export(model, self.config)
            checked = check(blob, model, self.data.inputs.evaluation.x)
        except ExportError as exc:
            self.event(f"export to {fmt} failed: {exc}", {"format": fmt})
            return name, {"file": name, "error": str(exc)}, None
        self.event(
            f"exported {name}: top class equal on {checked['top1_agreement']:.2%} of test inputs, "
            f"max logit difference {checked['max_abs_logit_diff']:.2e}",
            {"format": fmt, **checked},
        )
        return name, describe_export(name, blob, checked), blob


def json_bytes(report: dict[str, Any]) -> bytes:
    import json

    return json.dumps(report, indent=2, sort_keys=True, allow_nan=False).encode()


# ------------------------------------------------------------------------------------------------- text
