"""The tabular modality: arrays of features (CSV, Parquet, NPZ, builtins) and MLP / CNN students distilled
from one or more Distill model files (a weighted ensemble), standardised inside the model."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import torch

from distill.nets import count_parameters, fit_standardization
from distill.spec import DistillationSpec, StoredModelConfig
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
from worker.engine.objective import teacher_capture
from worker.engine.report import describe_export
from worker.engine.signals import TeacherSignals, compute_signals, resolve_top_k
from worker.engine.train import TrainingDiverged, pool_inputs, train_model
from worker.failures import JobFailure
from worker.inputs import InputLoader, LoadedData, LoadedTeacher
from worker.modality import Evaluation, JobContext, Modality, Run, SignalRequest, Trained
from worker.teacher_cache import inputs_digest

EXPORTERS = {
    "onnx": ("model.onnx", model_to_onnx, check_onnx),
    "torchscript": ("model.torchscript.pt", model_to_torchscript, check_torchscript),
}


class TabularModality(Modality):
    """Features in, class logits out. The model standardises its own inputs (fitted on the training split
    only), so a downloaded model and its exports take raw features."""

    name = "tabular"

    def __init__(self, context: JobContext, *, data: LoadedData, teachers: list[LoadedTeacher]) -> None:
        super().__init__(context)
        self.data = data
        self.loaded_teachers = teachers
        standardize = (
            fit_standardization(data.inputs.train.x) if self.spec.data.standardize is not False else None
        )
        self.config = StoredModelConfig(
            model=self.spec.model,
            input_shape=data.input_shape,
            num_classes=data.num_classes,
            standardize=standardize,
        )
        self._pool: np.ndarray | None = None
        """The teachers' inputs (train, transfer, augmented copies), once :meth:`signal_request` ran."""

    @classmethod
    def load(cls, context: JobContext, loader: InputLoader) -> TabularModality:
        data = loader.data(context.spec)
        return cls(context, data=data, teachers=loader.teachers(context.spec, data))

    @property
    def teachers(self) -> int:
        return len(self.loaded_teachers)

    def data_summary(self) -> dict[str, Any]:
        return self.data.summary(self.teachers)

    # -- teacher signals ---------------------------------------------------------------------------------

    def signal_request(self) -> SignalRequest | None:
        if not self.loaded_teachers:
            return None
        x = pool_inputs(self.data.inputs)
        self._pool = x
        return SignalRequest(
            teacher_keys=[t.sha256 for t in self.loaded_teachers],
            inputs_digest=inputs_digest(x),
            capture=teacher_capture(self.spec.distillation),
            top_k=resolve_top_k(self.data.num_classes, None),
            weights=[t.weight for t in self.loaded_teachers],
            examples=len(x),
        )

    def compute_signals(self, request: SignalRequest) -> TeacherSignals:
        x = self._pool if self._pool is not None else pool_inputs(self.data.inputs)
        return compute_signals(
            [t.module for t in self.loaded_teachers],
            request.weights,
            x,
            self.device,
            capture=request.capture,
            top_k=request.top_k,
        )

    # -- training ----------------------------------------------------------------------------------------

    def train(self, run: Run) -> Trained:
        inputs, distillation = self.data.inputs, self.spec.distillation
        temperature: float | None = run.temperature
        alpha: float | None = run.alpha
        if run.kind == "baseline":
            # labels only: the transfer set (and augmented copies) carry no labels, only teacher signals
            inputs, distillation = replace(inputs, transfer=None), DistillationSpec()
            temperature = alpha = None
        training = self.spec.training
        if run.epochs != training.epochs:
            training = training.model_copy(update={"epochs": run.epochs})
        try:
            out = train_model(
                self.config,
                inputs,
                training,
                distillation,
                run.signals,
                self.device,
                run.callbacks,
                temperature=temperature,
                alpha=alpha,
                **run.hooks,
            )
        except TrainingDiverged as exc:
            raise JobFailure("training_diverged", str(exc)) from exc
        except ValueError as exc:
            raise JobFailure("invalid_spec", f"distillation: {exc}") from exc
        return Trained(out.model, out.stopped, out.history)

    # -- evaluation and artifacts ------------------------------------------------------------------------

    def evaluate(self, student: Trained, baseline: Trained | None) -> Evaluation:
        test = self.data.inputs.evaluation
        scratch = None
        if baseline is not None:
            scratch = summarize(baseline.model, test, self.device, cfg=self.config)
        teacher_module, teacher_config = self._teacher_for_report()
        figures = summarize(
            student.model, test, self.device, teacher_module, cfg=self.config, teacher_cfg=teacher_config
        )
        return Evaluation(student=figures, teacher=self._teacher_info(), baseline=scratch)

    def _teacher_for_report(self) -> tuple[torch.nn.Module | None, StoredModelConfig | None]:
        if not self.loaded_teachers:
            return None, None
        if len(self.loaded_teachers) == 1:
            return self.loaded_teachers[0].module, self.loaded_teachers[0].config
        teachers = self.loaded_teachers
        ensemble = WeightedEnsemble([t.module for t in teachers], [t.weight for t in teachers])
        return ensemble.to(self.device), None

    def _teacher_info(self) -> dict[str, Any] | None:
        if not self.loaded_teachers:
            return None
        return {
            "source": [t.field for t in self.loaded_teachers],
            "weights": [t.weight for t in self.loaded_teachers],
            "members_parameters": [count_parameters(t.module) for t in self.loaded_teachers],
        }

    def save(self, student: Trained) -> bytes:
        return model_to_safetensors(student.model, self.config)

    def export(self, fmt: str, student: Trained) -> tuple[str, dict[str, Any], bytes | None]:
        name, export, check = EXPORTERS[fmt]
        try:
            blob = export(student.model, self.config)
            checked = check(blob, student.model, self.data.inputs.evaluation.x)
        except ExportError as exc:
            self.event(f"export to {fmt} failed: {exc}", {"format": fmt})
            return name, {"file": name, "error": str(exc)}, None
        self.event(
            f"exported {name}: top class equal on {checked['top1_agreement']:.2%} of test inputs, "
            f"max logit difference {checked['max_abs_logit_diff']:.2e}",
            {"format": fmt, **checked},
        )
        return name, describe_export(name, blob, checked), blob

    def describe_model(self, student: Trained) -> dict[str, Any]:
        return {"model_config": self.config.model_dump(mode="json")}
