"""One job's training, from loaded inputs to artifacts, for every kind of data: the pipeline (the driver)
takes a :class:`~worker.modality.Modality` and runs teacher signals (through the content-addressed cache),
"auto" hyperparameters, the student, the optional from-scratch baseline, evaluation, exports, the report
and the curves. What differs between kinds of data is the modality's (``worker/modalities/``); see
:mod:`worker.modality` for the seam.

It knows nothing of the database: the runner hands it callbacks (progress, events, cancellation) and takes
back the artifacts to store. Teacher outputs go through one seam, :meth:`Pipeline.signals`: a cache hit
and a live teacher pass give the same :class:`TeacherSignals`.
"""

from __future__ import annotations

import json
import logging
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from distill.results import JobResult, Report
from worker.engine.auto import AutoChoice, choose
from worker.engine.report import build_report, describe_export, jsonable
from worker.engine.signals import TeacherSignals
from worker.failures import JobFailure
from worker.modality import JobContext, Modality, Run, SignalRequest, Trained
from worker.teacher_cache import cache_digest

__all__ = [
    "BASELINE_LABEL",
    "CURVES",
    "STUDENT_LABEL",
    "BasePipeline",
    "JobContext",
    "Pipeline",
    "PipelineOutcome",
    "json_bytes",
]

log = logging.getLogger(__name__)

CURVES = "curves.svg"
STUDENT_LABEL, BASELINE_LABEL = "distilled student", "baseline (from scratch)"


@dataclass
class PipelineOutcome:
    stopped: bool
    result: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, bytes] = field(default_factory=dict)


class BasePipeline:
    """What every pipeline shares: the context, the curves and the "auto" trials. :class:`Pipeline` is
    the one pipeline; this base stays for code written against it (see :mod:`worker.modality` for the
    mapping from a pipeline of one's own to a modality)."""

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
    """The one pipeline: a job of any modality from its loaded inputs to its artifacts."""

    def __init__(self, context: JobContext, modality: Modality) -> None:
        super().__init__(context)
        self.modality = modality

    def run(self, started: float) -> PipelineOutcome:
        m = self.modality
        signals, cache_info = self.signals()
        choice = self._hyperparameters(signals)
        if choice is None:
            return PipelineOutcome(stopped=True)
        student = m.train(
            Run(
                "student",
                signals,
                choice.temperature,
                choice.alpha,
                self.spec.training.epochs,
                self.progress,
                self.hooks,
            )
        )
        if student.stopped:
            return PipelineOutcome(stopped=True)
        scratch: Trained | None = None
        if m.wants_baseline():
            self.event("training the baseline: the same student from scratch, on labels only", {})
            # labels only: the transfer set (and augmented copies) carry no labels, only teacher signals
            scratch = m.train(Run("baseline", None, 4.0, 0.0, self.spec.training.epochs, self.quiet))
            if scratch.stopped:
                return PipelineOutcome(stopped=True)
        figures = m.evaluate(student, scratch)
        model_name, kind, model_blob = m.model_artifact(student, figures)
        artifacts = {model_name: model_blob}
        exports = {kind: describe_export(model_name, model_blob)}
        for fmt in self.spec.export:
            name, entry, blob = m.export(fmt, student)
            exports[fmt] = entry
            if blob is not None:
                artifacts[name] = blob
        report = build_report(
            student=figures.student,
            teacher=figures.teacher,
            baseline=figures.baseline,
            exports=exports,
            cache=cache_info,
            chosen=choice.to_dict() if self.spec.distillation.uses_auto and m.chooses(signals) else None,
        )
        report |= figures.sections
        if scratch is not None:
            report["baseline_history"] = scratch.history
        runs = {m.student_label if m.teachers else "model": student.history}
        if scratch is not None:
            runs[BASELINE_LABEL] = scratch.history
        reference = figures.reference
        if reference is None:
            reference = (report.get("teacher") or {}).get("test_accuracy")
        artifacts |= self.curves(runs, teacher=reference)
        report |= {
            "job_id": self.job_id,
            "name": self.spec.name,
            **({"kind": m.report_kind, "task": self.spec.task} if m.report_kind else {}),
            "spec": self.spec.model_dump(mode="json"),
            "data": m.data_summary(),
            "history": student.history,
            "environment": {
                "device": str(self.device),
                "processes": 1 if self.context.parallel is None else self.context.parallel.world,
                "torch": torch.__version__,
                "python": platform.python_version(),
            },
            "duration_seconds": round(time.monotonic() - started, 3),
        }
        summary = m.summary(report, figures)
        result = JobResult.model_validate({**summary, **m.describe_model(student)}).to_json()
        report = Report.model_validate(report).to_json()
        artifacts["report.json"] = json_bytes(report)
        return PipelineOutcome(stopped=False, result=result, summary=summary, artifacts=artifacts)

    # -- teacher signals: the one seam between cached and live teacher outputs -----------------------------

    def signals(self) -> tuple[TeacherSignals | None, dict[str, Any] | None]:
        """The modality's teacher signals and the report's ``teacher_cache`` section (None, None: none)."""
        request = self.modality.signal_request()
        if request is None:
            return None, None
        digest = cache_digest(
            teacher_sha256=request.teacher_keys,
            inputs_sha256=request.inputs_digest,
            capture=request.capture,
            top_k=request.top_k,
        )
        info: dict[str, Any] = {
            "key": digest,
            "examples": request.examples,
            "captured": request.capture,
            "top_k": request.top_k,
            **request.info,
        }
        cached = self._cached(digest, request)
        if cached is not None:
            signals, stored = cached
            info |= self.modality.cache_figures(signals, stored, True)
            self.event(self.modality.reused_message, info)
            return signals, {**info, "hit": True}
        began = time.monotonic()
        try:
            signals = self.modality.compute_signals(request)
        except ValueError as exc:
            raise JobFailure("invalid_spec", f"distillation.losses: {exc}") from exc
        seconds = round(time.monotonic() - began, 3)
        blob = signals.to_bytes()
        self.cache.put(digest, blob)
        info |= self.modality.cache_figures(signals, len(blob), False)
        self.event("teacher outputs computed once and cached", {**info, "seconds": seconds})
        return signals, {**info, "hit": False, "seconds": seconds}

    def _cached(self, digest: str, request: SignalRequest) -> tuple[TeacherSignals, int] | None:
        """The cached signals and the entry's size, or None (absent, unreadable, or not this request's)."""
        blob = self.cache.get(digest)
        if blob is None:
            return None
        try:
            signals = TeacherSignals.from_bytes(blob)
        except ValueError:  # a damaged (or older-format) entry is computed again and replaced
            log.warning("job %s: teacher cache entry %s unreadable; recomputing", self.job_id, digest)
            return None
        if signals.num_examples != request.examples or signals.num_teachers != len(request.weights):
            log.warning("job %s: teacher cache entry %s does not fit; recomputing", self.job_id, digest)
            return None
        total = sum(request.weights)
        signals.weights = [w / total for w in request.weights]  # the cache holds each teacher apart
        return signals, len(blob)

    # -- "auto" temperature and alpha ----------------------------------------------------------------------

    def _hyperparameters(self, signals: TeacherSignals | None) -> AutoChoice | None:
        """The temperature and alpha to use: as given, or chosen by short trials (None: cancelled)."""
        spec = self.spec.distillation
        if not self.modality.chooses(signals):
            t, a = spec.temperature, spec.alpha
            return AutoChoice(
                temperature=t if isinstance(t, float) else 4.0, alpha=a if isinstance(a, float) else 0.9
            )
        return self.choose_auto(
            lambda temperature, alpha, epochs: self.modality.train(
                Run("trial", signals, temperature, alpha, epochs, self.quiet)
            )
        )


def json_bytes(report: dict[str, Any]) -> bytes:
    """``report.json``: plain JSON, non-finite floats as null (a history's NaN perplexity, say)."""
    return json.dumps(jsonable(report), indent=2, sort_keys=True, allow_nan=False).encode()
