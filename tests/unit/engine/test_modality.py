"""The one pipeline over a modality (worker.pipeline, worker.modality, worker/modalities/): the spec picks
the modality; a modality the pipeline has never seen runs through it unchanged (cache, "auto" trials,
baseline, report); text teacher outputs are TeacherSignals in the same cache (top-k for many classes,
attention maps when an attention loss reads them), and training from them equals training on the live
teacher."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch
import torch.nn.functional as F
from engine_support import three_blobs
from torch import nn
from transformers import BertConfig

from distill.datasets import TextDataset
from distill.results import JobResult, Report
from distill.spec import AttentionLoss, JobSpec, KDLoss
from distill.storage import LocalStore
from worker.engine.loop import NoCallbacks
from worker.engine.signals import TeacherSignals, signals_from_logits
from worker.engine.text import TextClassifier, TextEncoder, build_text_student, new_bert, tokenize
from worker.engine.text_data import sentiment_examples
from worker.engine.text_train import classifier_signals, distill_text_classifier
from worker.inputs import InputLoader, LoadedTextData, LoadedTextTeacher
from worker.modalities import modality_for
from worker.modalities.tabular import TabularModality
from worker.modalities.text import TextModality
from worker.modality import Evaluation, JobContext, Modality, Run, SignalRequest, Trained
from worker.pipeline import Pipeline
from worker.teacher_cache import TeacherCache, inputs_digest

CPU = torch.device("cpu")


def context(spec: dict[str, Any], store: Path, events: list[str]) -> JobContext:
    return JobContext(
        job_id="job_test",
        spec=JobSpec.model_validate(spec),
        cache=TeacherCache(LocalStore(store), "tenant_test"),
        device=CPU,
        progress=NoCallbacks(),
        quiet=NoCallbacks(),
        event=lambda message, _data: events.append(message),
    )


def test_the_spec_picks_the_modality() -> None:
    tabular = JobSpec.model_validate({"data": {"train": {"builtin": "digits"}}})
    text = JobSpec.model_validate(
        {"data": {"train": {"file": "file_x"}}, "model": {"arch": "encoder", "layers": 1}}
    )
    assert modality_for(tabular) is TabularModality
    assert modality_for(text) is TextModality


# -- a modality the pipeline has never seen -----------------------------------------------------------------


class Blobs(Modality):
    """Three Gaussian blobs and a linear softmax student: the smallest modality with real training, to
    show what the pipeline asks of a modality and what it does on its own."""

    name = "blobs"

    def __init__(self, context: JobContext, teacher: nn.Module) -> None:
        super().__init__(context)
        self.train_set, self.val_set = three_blobs(90, 0), three_blobs(60, 1)
        self.teacher = teacher
        self.runs: list[tuple[str, bool, int, bool]] = []
        self.computed = 0

    @classmethod
    def load(cls, context: JobContext, loader: InputLoader) -> Blobs:
        raise AssertionError("the test builds it directly")

    @property
    def teachers(self) -> int:
        return 1

    def data_summary(self) -> dict[str, Any]:
        return {"train_examples": len(self.train_set), "teachers": 1}

    def signal_request(self) -> SignalRequest:
        x = self.train_set.x
        return SignalRequest(["sha-linear"], inputs_digest(x), examples=len(x))

    def compute_signals(self, request: SignalRequest) -> TeacherSignals:
        self.computed += 1
        with torch.no_grad():
            logits = self.teacher(torch.from_numpy(self.train_set.x))
        return signals_from_logits([logits], request.weights)

    def train(self, run: Run) -> Trained:
        self.runs.append((run.kind, run.signals is not None, run.epochs, bool(run.hooks)))
        torch.manual_seed(0)
        model = nn.Linear(4, 3)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        x, y = torch.from_numpy(self.train_set.x), torch.from_numpy(self.train_set.y)
        history = []
        for epoch in range(run.epochs):
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            if run.signals is not None:
                t = run.temperature
                soft = run.signals.batch(torch.arange(len(x))).probs(t)
                kd = F.kl_div(F.log_softmax(logits / t, -1), soft, reduction="batchmean") * t * t
                loss = run.alpha * kd + (1 - run.alpha) * loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            history.append(
                {"epoch": float(epoch + 1), "train_loss": loss.item(), "val_accuracy": self._acc(model)}
            )
        return Trained(model, False, history)

    def _acc(self, model: nn.Module) -> float:
        with torch.no_grad():
            predicted = model(torch.from_numpy(self.val_set.x)).argmax(1).numpy()
        return float((predicted == self.val_set.y).mean())

    def evaluate(self, student: Trained, baseline: Trained | None) -> Evaluation:
        scratch = None if baseline is None else {"test_accuracy": self._acc(baseline.model), "parameters": 15}
        return Evaluation(
            student={"test_accuracy": self._acc(student.model), "parameters": 15},
            teacher={"test_accuracy": self._acc(self.teacher), "parameters": 15},
            baseline=scratch,
        )

    def save(self, student: Trained) -> bytes:
        return safetensors.torch.save(student.model.state_dict())

    def export(self, fmt: str, student: Trained) -> tuple[str, dict[str, Any], bytes | None]:
        return "model.onnx", {"file": "model.onnx", "error": "blobs export no ONNX"}, None

    def describe_model(self, student: Trained) -> dict[str, Any]:
        return {}


def test_a_new_modality_runs_through_the_pipeline_unchanged(tmp_path: Path) -> None:
    torch.manual_seed(1)
    teacher = nn.Linear(4, 3)
    with torch.no_grad():  # a teacher that knows the blobs: each class is one axis
        teacher.weight.copy_(4 * torch.eye(3, 4))
        teacher.bias.zero_()
    spec = {
        "data": {"train": {"file": "file_blobs"}},
        "model": {"arch": "mlp", "hidden": [8]},
        "teacher": {"file": "file_teacher"},
        "baseline": True,
        "export": ["onnx"],
        "distillation": {"temperature": "auto", "alpha": 0.5, "auto_budget": 2},
        "training": {"epochs": 8},
    }
    events: list[str] = []
    first = Blobs(context(spec, tmp_path, events), teacher)
    outcome = Pipeline(first.context, first).run(time.monotonic())
    assert not outcome.stopped and first.computed == 1
    # two trials (a quarter of the epochs, no hooks), the student (hooks), the baseline (no signals)
    assert first.runs == [
        ("trial", True, 2, False),
        ("trial", True, 2, False),
        ("student", True, 8, True),
        ("baseline", False, 8, False),
    ]
    report = Report.model_validate(json.loads(outcome.artifacts["report.json"]))
    result = JobResult.model_validate(outcome.result)
    assert report.teacher_cache is not None and report.teacher_cache["hit"] is False
    assert result.teacher_cache_hit is False and result.chosen_temperature in {2.0, 4.0}
    assert result.baseline_test_accuracy is not None and report.baseline_history is not None
    assert report.exports["onnx"]["error"] == "blobs export no ONNX"
    assert set(outcome.artifacts) == {"model.safetensors", "report.json", "curves.svg"}
    assert "auto chose temperature" in " ".join(events)

    # The same teacher on the same inputs: the cache answers, the modality's teacher never runs again.
    events.clear()
    second = Blobs(context(spec, tmp_path, events), teacher)
    again = Pipeline(second.context, second).run(time.monotonic())
    assert second.computed == 0
    assert again.result["teacher_cache_hit"] is True
    assert again.result["test_accuracy"] == outcome.result["test_accuracy"]
    assert "teacher outputs reused from the cache: the teachers did not run" in events


def test_a_damaged_cache_entry_is_computed_again_not_a_failed_job(tmp_path: Path) -> None:
    teacher = nn.Linear(4, 3)
    spec = {
        "data": {"train": {"file": "file_blobs"}},
        "model": {"arch": "mlp", "hidden": [8]},
        "teacher": {"file": "file_teacher"},
        "training": {"epochs": 2},
    }
    events: list[str] = []
    first = Blobs(context(spec, tmp_path, events), teacher)
    Pipeline(first.context, first).run(time.monotonic())
    [entry] = [p for p in (tmp_path).rglob("*") if p.is_file()]
    entry.write_bytes(entry.read_bytes()[:100])  # truncated
    second = Blobs(context(spec, tmp_path, events), teacher)
    outcome = Pipeline(second.context, second).run(time.monotonic())
    assert second.computed == 1 and outcome.result["teacher_cache_hit"] is False
    TeacherSignals.from_bytes(entry.read_bytes())  # replaced by a whole entry


# -- text teacher outputs as TeacherSignals -----------------------------------------------------------------


def tiny_classifier(tokenizer: Any, classes: int, seed: int = 0) -> TextClassifier:
    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return TextClassifier(TextEncoder(new_bert(cfg)), classes).eval()


def test_cached_text_signals_with_attention_maps_train_the_same_student_as_the_live_teacher(
    minilm: tuple[Any, Any],
) -> None:
    _, tokenizer = minilm
    teacher = tiny_classifier(tokenizer, 2)
    texts, labels = sentiment_examples(40, seed=5)
    train, val = texts[:24], texts[24:]
    tokens = tokenize(tokenizer, train, 32)
    signals = classifier_signals(teacher, tokens, [1])
    maps = signals.features["@attention.1"]
    width = max(len(ids) for ids in tokens.ids)
    assert maps.shape == (24, 1, width, width) and signals.capture == ["@attention.1"]
    assert signals.logits is not None and signals.logits.shape == (1, 24, 2)
    cached = TeacherSignals.from_bytes(signals.to_bytes())  # what a cache hit reads
    assert torch.equal(cached.features["@attention.1"], maps)

    def distil(**teacher_outputs: Any) -> list[dict[str, float]]:
        student = build_text_student(teacher, layers=1, init="teacher")
        return distill_text_classifier(
            teacher,
            student,
            tokenizer,
            train,
            val,
            labels[24:],
            train_labels=labels[:24],
            epochs=2,
            batch_size=8,
            max_length=32,
            losses=[KDLoss(type="kd", weight=0.7), AttentionLoss(type="attention", weight=0.3)],
            **teacher_outputs,
        ).history

    live, from_cache = distil(), distil(signals=cached)
    assert live == from_cache and live[-1]["attention_loss"] > 0


def test_a_text_classifier_with_many_classes_is_cached_as_top_k_and_trains(minilm: tuple[Any, Any]) -> None:
    _, tokenizer = minilm
    teacher = tiny_classifier(tokenizer, 150)
    texts = [f"review number {i} says it was {'good' if i % 2 else 'bad'}" for i in range(40)]
    labels = [i % 150 for i in range(40)]
    signals = classifier_signals(teacher, tokenize(tokenizer, texts[:32], 32))
    assert signals.top_k == 32 and signals.logits is None and signals.num_classes == 150
    cached = TeacherSignals.from_bytes(signals.to_bytes())
    probs = cached.batch(torch.arange(4)).probs(4.0)
    torch.testing.assert_close(probs.sum(-1), torch.ones(4))
    student = build_text_student(teacher, layers=1, init="teacher")
    out = distill_text_classifier(
        teacher,
        student,
        tokenizer,
        texts[:32],
        texts[32:],
        labels[32:],
        train_labels=labels[:32],
        epochs=1,
        batch_size=8,
        max_length=32,
        signals=cached,
    )
    assert not out.stopped and out.teacher_train is None  # no dense logits were kept
    assert np.isfinite(out.history[-1]["kd_loss"]) and out.history[-1]["kd_loss"] > 0


def test_a_text_job_caches_its_teacher_signals_with_attention_maps(
    minilm: tuple[Any, Any], tmp_path: Path
) -> None:
    _, tokenizer = minilm
    teacher = tiny_classifier(tokenizer, 2)
    texts, labels = sentiment_examples(60, seed=7)
    data = LoadedTextData(
        train=TextDataset(texts[:40], np.array(labels[:40])),
        validation=TextDataset(texts[40:], np.array(labels[40:])),
        num_classes=2,
        held_out=False,
        splits={"validation": "data.validation", "test": "data.validation"},
    )
    loaded = LoadedTextTeacher(teacher, tokenizer, "sha-tiny", "file_tiny", "teacher.file")
    spec = {
        "data": {"train": {"file": "file_train"}, "validation": {"file": "file_val"}},
        "model": {"arch": "encoder", "layers": 1, "max_length": 32},
        "teacher": {"file": "file_tiny"},
        "distillation": {"losses": [{"type": "kd", "weight": 0.7}, {"type": "attention", "weight": 0.3}]},
        "training": {"epochs": 1, "batch_size": 8, "learning_rate": 0.001},
    }
    runs = []
    for _ in range(2):
        events: list[str] = []
        ctx = context(spec, tmp_path, events)
        outcome = Pipeline(ctx, TextModality(ctx, data=data, teacher=loaded)).run(time.monotonic())
        runs.append((outcome, events))
    (first, _), (second, events) = runs
    report = json.loads(first.artifacts["report.json"])
    cache = report["teacher_cache"]
    assert cache["hit"] is False and cache["captured"] == ["@attention.1"] and cache["examples"] == 40
    assert report["kind"] == "text" and report["task"] == "classification"
    assert second.result["teacher_cache_hit"] is True
    assert "teacher outputs reused from the cache: the teacher did not run" in events
    assert second.result["test_accuracy"] == first.result["test_accuracy"]
    [entry] = [p for p in tmp_path.rglob("*") if p.is_file()]
    stored = TeacherSignals.from_bytes(entry.read_bytes())
    assert stored.num_examples == 40 and "@attention.1" in stored.features
