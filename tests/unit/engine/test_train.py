"""worker.engine.train: the training loop (tiny synthetic data, CPU)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest
import torch
from engine_support import Recorder, three_blobs

from distill.datasets import ArrayDataset
from distill.nets import build_model
from distill.spec import CNNConfig, DistillationSpec, MLPConfig, StoredModelConfig, TrainingSpec
from worker.engine.evaluate import accuracy, predict_logits
from worker.engine.loop import NoCallbacks
from worker.engine.objective import teacher_capture
from worker.engine.signals import TOPK, TeacherSignals, compute_signals
from worker.engine.train import TrainingDiverged, TrainInputs, pool_inputs, train_model

CPU = torch.device("cpu")


CFG = StoredModelConfig(model=MLPConfig(hidden=[16]), input_shape=[4], num_classes=3)


def run(
    training: TrainingSpec,
    teacher: torch.nn.Module | list[torch.nn.Module] | None = None,
    transfer: ArrayDataset | None = None,
    callbacks: Recorder | None = None,
    cfg: StoredModelConfig = CFG,
    distillation: DistillationSpec | None = None,
    weights: list[float] | None = None,
    cached: bool = False,
) -> tuple[torch.nn.Module, bool, list[dict[str, float]], Recorder]:
    """Train on the blobs; a teacher (or several) is run once over the pool, as the runner does."""
    rec = callbacks or Recorder()
    distillation = distillation or DistillationSpec()
    inputs = TrainInputs(train=three_blobs(100, 0), validation=three_blobs(50, 1), transfer=transfer)
    signals = None
    if teacher is not None:
        teachers = teacher if isinstance(teacher, list) else [teacher]
        signals = compute_signals(
            teachers,
            weights or [1.0] * len(teachers),
            pool_inputs(inputs),
            CPU,
            capture=teacher_capture(distillation),
        )
        if cached:
            signals = TeacherSignals.from_bytes(signals.to_bytes())
    out = train_model(cfg, inputs, training, distillation, signals, CPU, rec)
    return out.model, out.stopped, out.history, rec


def test_learns_and_reports_progress() -> None:
    model, stopped, history, rec = run(TrainingSpec(epochs=3, batch_size=32, learning_rate=0.05))
    assert not stopped and len(history) == 3
    assert [s[2] for s in rec.steps] == list(range(1, 13))  # 4 steps/epoch, counted over all epochs
    assert {s[3] for s in rec.steps} == {12} and {s[1] for s in rec.steps} == {3}
    assert rec.steps[4][0] == 2
    assert set(rec.epochs[0]) == {"train_loss", "val_accuracy", "val_loss"}
    assert history[-1]["epoch"] == 3.0 and history[-1]["val_accuracy"] > 0.9
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert not model.training


def test_same_seed_same_student() -> None:
    training = TrainingSpec(epochs=2, batch_size=16, seed=7)
    a, *_ = run(training)
    b, *_ = run(training)
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    c, *_ = run(TrainingSpec(epochs=2, batch_size=16, seed=8))
    assert not torch.equal(sa["1.weight"], c.state_dict()["1.weight"])


def test_should_stop_returns_at_once() -> None:
    _, stopped, history, rec = run(TrainingSpec(epochs=5, batch_size=10), callbacks=Recorder(stop_after=3))
    assert stopped and len(rec.steps) == 3 and history == []


def test_distillation_with_transfer_set() -> None:
    teacher, *_ = run(TrainingSpec(epochs=3, batch_size=32, learning_rate=0.05))
    transfer = ArrayDataset(three_blobs(60, 2).x, None)
    small = StoredModelConfig(model=MLPConfig(hidden=[8]), input_shape=[4], num_classes=3)
    student, stopped, history, rec = run(
        TrainingSpec(epochs=15, batch_size=32, learning_rate=0.05),
        teacher=teacher,
        transfer=transfer,
        cfg=small,
    )
    assert not stopped
    assert rec.steps[-1][3] == 15 * 5  # pool = 100 train + 60 transfer = 160 -> 5 steps per epoch
    assert {"train_loss", "kd_loss", "ce_loss", "val_accuracy", "val_loss"} <= set(history[-1])
    val = three_blobs(50, 1)
    assert accuracy(predict_logits(student, val.x, CPU), val.y) > 0.9  # type: ignore[arg-type]
    assert teacher.training is False


def test_a_diverging_run_stops_with_a_message_naming_the_learning_rate() -> None:
    train = three_blobs(60, 0)
    train.x[5, 1] = np.inf  # one bad value is enough to turn the loss into NaN
    inputs = TrainInputs(train, three_blobs(30, 1))
    with pytest.raises(TrainingDiverged, match=r"epoch 1: .*lower training.learning_rate \(now 0.01\)"):
        train_model(
            CFG,
            inputs,
            TrainingSpec(epochs=3, learning_rate=0.01),
            DistillationSpec(),
            None,
            CPU,
            NoCallbacks(),
        )


def test_input_errors() -> None:
    training = TrainingSpec(epochs=1)
    with pytest.raises(ValueError, match="only used with a teacher"):
        run(training, transfer=three_blobs(5, 3))
    wrong = StoredModelConfig(model=MLPConfig(), input_shape=[5], num_classes=3)
    with pytest.raises(ValueError, match=r"shape \[4\] but the model expects \[5\]"):
        run(training, cfg=wrong)
    two = StoredModelConfig(model=MLPConfig(), input_shape=[4], num_classes=2)
    with pytest.raises(ValueError, match="2 classes"):
        run(training, cfg=two)
    unlabeled = TrainInputs(train=ArrayDataset(three_blobs(5, 0).x), validation=three_blobs(5, 1))
    with pytest.raises(ValueError, match="no labels"):
        train_model(CFG, unlabeled, training, DistillationSpec(), None, CPU, NoCallbacks())
    teacher = build_model(StoredModelConfig(model=MLPConfig(), input_shape=[4], num_classes=5))
    with pytest.raises(ValueError, match="teacher predicts 5 classes"):
        run(training, teacher=teacher)


# -- distillation objectives ---------------------------------------------------------------------------------

CNN_CFG = StoredModelConfig(model=CNNConfig(channels=[6]), input_shape=[4], num_classes=3)
"""Layers: 0 AddChannel, 1 Conv1d [6, 4], 2 ReLU, 3 MaxPool [6, 2], 4 AvgPool [6, 1], 5 Flatten, ..."""
SMALL_CNN = StoredModelConfig(model=CNNConfig(channels=[4]), input_shape=[4], num_classes=3)


@pytest.fixture(scope="module")
def teachers() -> dict[str, torch.nn.Module]:
    quick = TrainingSpec(epochs=3, batch_size=32, learning_rate=0.05)
    return {"mlp": run(quick)[0], "cnn": run(quick, cfg=CNN_CFG)[0]}


def losses(*items: Mapping[str, object]) -> DistillationSpec:
    return DistillationSpec.model_validate({"losses": list(items), "temperature": 2.0})


HINT_MLP_TO_CNN = {"type": "hint", "student_layer": "2", "teacher_layer": "3"}  # [16] -> [6, 2]


@pytest.mark.parametrize(
    ("teacher", "student", "distillation"),
    [
        ("mlp", CFG, losses({"type": "kd"})),
        ("mlp", CFG, losses({"type": "logit_mse"})),
        ("mlp", CFG, losses({"type": "dkd", "beta": 2.0})),
        ("mlp", CFG, losses({"type": "ce"})),
        ("cnn", CFG, losses(HINT_MLP_TO_CNN, {"type": "kd", "weight": 0.5})),
        (
            "cnn",
            SMALL_CNN,
            losses({"type": "hint", "student_layer": "1", "teacher_layer": "1"}, {"type": "ce"}),
        ),
    ],
    ids=["kd", "logit_mse", "dkd", "ce", "hint_mlp_to_cnn", "hint_cnn_1x1"],
)
def test_each_loss_trains(
    teachers: dict[str, torch.nn.Module],
    teacher: str,
    student: StoredModelConfig,
    distillation: DistillationSpec,
) -> None:
    training = TrainingSpec(epochs=6, batch_size=32, learning_rate=0.03)
    transfer = ArrayDataset(three_blobs(40, 2).x, None)
    _, _, history, _ = run(training, teachers[teacher], transfer, cfg=student, distillation=distillation)
    terms = [key for key in history[0] if key.endswith("_loss") and key not in ("train_loss", "val_loss")]
    assert len(terms) == len(distillation.losses or [])
    assert history[-1]["train_loss"] < 0.8 * history[0]["train_loss"]
    for key in terms:
        assert history[-1][key] < history[0][key], key


def test_hint_from_a_cnn_teacher_layer_of_another_width(teachers: dict[str, torch.nn.Module]) -> None:
    training = TrainingSpec(epochs=8, batch_size=32, learning_rate=0.03)
    _, _, history, _ = run(training, teachers["cnn"], distillation=losses(HINT_MLP_TO_CNN))
    assert history[-1]["hint_loss"] < 0.3 * history[0]["hint_loss"]


def test_cached_and_live_signals_train_the_same_student(teachers: dict[str, torch.nn.Module]) -> None:
    training = TrainingSpec(epochs=2, batch_size=16, seed=3)
    distillation = losses(HINT_MLP_TO_CNN, {"type": "dkd"}, {"type": "ce", "weight": 0.5})
    transfer = ArrayDataset(three_blobs(30, 2).x, None)
    live, *_ = run(training, teachers["cnn"], transfer, distillation=distillation)
    cached, *_ = run(training, teachers["cnn"], transfer, distillation=distillation, cached=True)
    a, b = live.state_dict(), cached.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_two_teachers_mixed_3_to_1(teachers: dict[str, torch.nn.Module]) -> None:
    training = TrainingSpec(epochs=10, batch_size=32, learning_rate=0.05)
    small = StoredModelConfig(model=MLPConfig(hidden=[8]), input_shape=[4], num_classes=3)
    student, _, history, _ = run(
        training,
        [teachers["mlp"], teachers["cnn"]],
        ArrayDataset(three_blobs(60, 2).x, None),
        cfg=small,
        weights=[3, 1],
    )
    assert {"kd_loss", "ce_loss"} <= set(history[-1]) and history[-1]["kd_loss"] < history[0]["kd_loss"]
    val = three_blobs(50, 1)
    assert accuracy(predict_logits(student, val.x, CPU), val.y) > 0.9  # type: ignore[arg-type]


def test_top_k_signals_for_200_classes() -> None:
    torch.manual_seed(0)
    cfg = StoredModelConfig(model=MLPConfig(hidden=[32]), input_shape=[8], num_classes=200)
    teacher = build_model(cfg).eval()
    head = list(teacher.children())[-1]
    assert isinstance(head, torch.nn.Linear)
    with torch.no_grad():
        head.weight.mul_(10.0)  # a confident teacher: its soft targets are far from uniform
    rng = np.random.default_rng(0)
    x = rng.standard_normal((160, 8)).astype(np.float32)
    y = predict_logits(teacher, x, CPU).argmax(1).numpy()
    inputs = TrainInputs(train=ArrayDataset(x[:120], y[:120]), validation=ArrayDataset(x[120:], y[120:]))
    signals = compute_signals([teacher], [1.0], pool_inputs(inputs), CPU)
    assert signals.top_k == TOPK
    training = TrainingSpec(epochs=5, batch_size=32, learning_rate=0.01)
    distillation = DistillationSpec(temperature=2.0, alpha=1.0)
    out = train_model(cfg, inputs, training, distillation, signals, CPU, NoCallbacks())
    assert out.history[-1]["kd_loss"] < 0.8 * out.history[0]["kd_loss"]


def test_layer_and_loss_errors(teachers: dict[str, torch.nn.Module]) -> None:
    training = TrainingSpec(epochs=1)
    bad_student = losses({"type": "hint", "student_layer": "nope", "teacher_layer": "3"})
    with pytest.raises(
        ValueError, match=r"the student has no layer 'nope'; its layers are: '0', '1', '2', '3', '4'"
    ):
        run(training, teachers["cnn"], distillation=bad_student)
    bad_teacher = losses({"type": "hint", "student_layer": "2", "teacher_layer": "conv9"})
    with pytest.raises(
        ValueError, match=r"the teacher has no layer 'conv9'; its layers are: '0', '1', '2', '3'"
    ):
        run(training, teachers["cnn"], distillation=bad_teacher)
    with pytest.raises(ValueError, match="the kd loss needs a teacher"):
        run(training, distillation=losses({"type": "kd"}))
    inputs = TrainInputs(train=three_blobs(20, 0), validation=three_blobs(10, 1))
    signals = compute_signals([teachers["mlp"]], [1.0], pool_inputs(inputs), CPU)
    with pytest.raises(ValueError, match="attention loss needs a transformer student"):
        train_model(CFG, inputs, training, losses({"type": "attention"}), signals, CPU, NoCallbacks())
    auto = DistillationSpec(temperature="auto")
    with pytest.raises(ValueError, match="must be resolved"):
        train_model(CFG, inputs, training, auto, signals, CPU, NoCallbacks())
    out = train_model(CFG, inputs, training, auto, signals, CPU, NoCallbacks(), temperature=2.0, alpha=0.5)
    assert len(out.history) == 1
    assert train_model(
        CFG, inputs, training, auto, None, CPU, NoCallbacks()
    ).history  # unused without teacher
    with pytest.raises(ValueError, match="signals cover 20 examples but the pool has 30"):
        more = TrainInputs(
            train=three_blobs(20, 0), validation=three_blobs(10, 1), transfer=three_blobs(10, 2)
        )
        train_model(CFG, more, training, DistillationSpec(), signals, CPU, NoCallbacks())
