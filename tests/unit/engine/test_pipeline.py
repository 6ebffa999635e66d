"""worker.pipeline over the tabular modality: a job from loaded inputs to artifacts (local store, CPU).

The defects of issue 7 each have their test here: the baseline of a job with a transfer set, raw
(unstandardised) features, and "auto" choices made on the split test_accuracy is reported on.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from engine_support import Recorder, three_blobs
from sklearn.datasets import load_wine

from distill.datasets import ArrayDataset
from distill.datasets.builtins import load_builtin
from distill.datasets.split import holdout_split
from distill.results import JobResult, Report
from distill.spec import JobSpec, MLPConfig, StoredModelConfig, TrainingSpec
from distill.storage import LocalStore
from worker.engine.export import load_model
from worker.engine.loop import NoCallbacks
from worker.engine.train import TrainInputs, train_model
from worker.inputs import LoadedData, LoadedTeacher, choose_splits
from worker.modalities.tabular import TabularModality
from worker.pipeline import JobContext, Pipeline
from worker.teacher_cache import TeacherCache

CPU = torch.device("cpu")


def context(spec: JobSpec, tmp_path: Path, events: list[str]) -> JobContext:
    return JobContext(
        job_id="job_test",
        spec=spec,
        cache=TeacherCache(LocalStore(tmp_path / "objects"), "tenant_test"),
        device=CPU,
        progress=Recorder(),
        quiet=NoCallbacks(),
        event=lambda message, _data: events.append(message),
    )


def teacher_for(inputs: TrainInputs, classes: int) -> LoadedTeacher:
    cfg = StoredModelConfig(
        model=MLPConfig(hidden=[32]), input_shape=inputs.train.input_shape, num_classes=classes
    )
    training = TrainingSpec(epochs=15, batch_size=32, learning_rate=0.01)
    from distill.spec import DistillationSpec

    out = train_model(cfg, inputs, training, DistillationSpec(), None, CPU, NoCallbacks())
    return LoadedTeacher(out.model, cfg, "sha-teacher", 1.0, "teacher.file")


def run(spec: dict[str, Any], inputs: TrainInputs, teachers: list[LoadedTeacher], tmp_path: Path) -> Any:
    job = JobSpec.model_validate(spec)
    assert inputs.train.y is not None
    data = LoadedData(
        inputs=inputs, input_shape=inputs.train.input_shape, num_classes=int(inputs.train.y.max()) + 1
    )
    events: list[str] = []
    ctx = context(job, tmp_path, events)
    outcome = Pipeline(ctx, TabularModality(ctx, data=data, teachers=teachers)).run(time.monotonic())
    assert not outcome.stopped
    return outcome, events


def test_a_baseline_trains_on_the_labels_only_when_the_job_has_a_transfer_set(tmp_path: Path) -> None:
    labeled = TrainInputs(train=three_blobs(120, 0), validation=three_blobs(60, 1))
    teacher = teacher_for(labeled, 3)
    inputs = TrainInputs(
        train=labeled.train, validation=labeled.validation, transfer=ArrayDataset(three_blobs(200, 2).x, None)
    )
    spec = {
        "data": {"train": {"file": "file_train"}, "transfer": {"file": "file_transfer"}},
        "model": {"arch": "mlp", "hidden": [8]},
        "teacher": {"file": "file_teacher"},
        "baseline": True,
        "training": {"epochs": 3, "batch_size": 32, "learning_rate": 0.01},
    }
    outcome, _ = run(spec, inputs, [teacher], tmp_path)
    result = JobResult.model_validate(outcome.result)
    assert result.baseline_test_accuracy is not None and result.gain_over_baseline is not None
    report = Report.model_validate(json.loads(outcome.artifacts["report.json"]))
    assert report.baseline_history is not None and len(report.baseline_history) == 3


def wine() -> TrainInputs:
    x, y = load_wine(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))
    x, y = x[order].astype(np.float32), y[order].astype(np.int64)
    cut = int(0.8 * len(y))
    return TrainInputs(train=ArrayDataset(x[:cut], y[:cut]), validation=ArrayDataset(x[cut:], y[cut:]))


def test_raw_wine_features_are_standardised_inside_the_model_and_its_exports(tmp_path: Path) -> None:
    import onnxruntime as ort

    spec = {
        "data": {"train": {"file": "file_wine"}},
        "model": {"arch": "mlp", "hidden": [32]},
        "training": {"epochs": 30, "batch_size": 16, "learning_rate": 0.01},
        "export": ["onnx", "torchscript"],
    }
    inputs = wine()
    outcome, _ = run(spec, inputs, [], tmp_path)
    assert outcome.result["test_accuracy"] >= 0.9  # 0.94 here; 0.81 with data.standardize false
    off, _ = run({**spec, "data": {**spec["data"], "standardize": False}}, inputs, [], tmp_path / "off")
    assert off.result["test_accuracy"] < outcome.result["test_accuracy"]

    # the downloaded model carries its preprocessing: it takes raw features
    path = tmp_path / "model.safetensors"
    path.write_bytes(outcome.artifacts["model.safetensors"])
    model, cfg = load_model(path)
    assert cfg.standardize is not None and len(cfg.standardize.mean) == 13
    raw = inputs.validation.x
    with torch.no_grad():
        logits = model(torch.from_numpy(raw))
    assert (logits.argmax(1).numpy() == inputs.validation.y).mean() == pytest.approx(
        outcome.result["test_accuracy"]
    )
    session = ort.InferenceSession(outcome.artifacts["model.onnx"], providers=["CPUExecutionProvider"])
    onnx_logits = session.run(None, {session.get_inputs()[0].name: raw})[0]
    assert np.allclose(onnx_logits, logits.numpy(), atol=1e-4)
    scripted = torch.jit.load(io.BytesIO(outcome.artifacts["model.torchscript.pt"]))
    assert torch.allclose(scripted(torch.from_numpy(raw)), logits, atol=1e-5)


def test_auto_chooses_on_a_validation_split_that_the_test_split_never_joins(tmp_path: Path) -> None:
    train, official = load_builtin("digits", tmp_path)
    plain = choose_splits(train, None, None, official=official, chooses=False, holdout=holdout_split)
    assert plain.sources == {"validation": "builtin test split", "test": "builtin test split"}
    assert plain.validation is plain.test  # nothing is chosen: as before

    auto = choose_splits(train, None, None, official=official, chooses=True, holdout=holdout_split)
    assert auto.sources["test"] == "builtin test split"
    assert auto.sources["validation"] != auto.sources["test"]
    assert len(auto.train) + len(auto.validation) == len(plain.train)
    test_rows = {row.tobytes() for row in auto.test.x}
    assert not any(row.tobytes() in test_rows for row in auto.validation.x)


def test_a_file_without_a_test_set_holds_out_test_and_validation_separately_when_choosing() -> None:
    rng = np.random.default_rng(0)
    data = ArrayDataset(rng.normal(size=(100, 3)).astype(np.float32), rng.integers(0, 2, 100))
    split = choose_splits(data, None, None, official=None, chooses=True, holdout=holdout_split)
    assert split.sources == {
        "validation": "seeded 20% of the rest of data.train",
        "test": "seeded 20% of data.train",
    }
    assert len(split.train) + len(split.validation) + len(split.test) == 100
    given = choose_splits(data, None, data, official=None, chooses=False, holdout=holdout_split)
    assert given.sources == {"validation": "data.test", "test": "data.test"}
