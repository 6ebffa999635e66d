"""What distillation costs on top of plain training, measured side by side in one process.

- cached: an epoch of distillation from stored teacher outputs vs an epoch of the same student on labels.
  Target: at most 1.10x.
- live: computing the teacher outputs (one pass) plus a distillation epoch vs the sum of a bare teacher
  forward pass and a label-only student epoch. Target: at most 1.10x.

Timings alternate between the variants and take medians, so load from other processes hits both alike.

    .venv/bin/python -m bench.speed [--repeats 5] [--epochs 3] [--device cpu|cuda] [--bf16]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from distill.spec import CNNConfig, DistillationSpec, MLPConfig, StoredModelConfig, TrainingSpec
from worker.engine.data import load_builtin
from worker.engine.evaluate import predict_logits
from worker.engine.models import build_model
from worker.engine.signals import TeacherSignals, compute_signals
from worker.engine.train import NoCallbacks, TrainInputs, pool_inputs, train_model


def _timed(fn: Callable[[], object]) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    started = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        train, test = load_builtin("mnist1d", Path(tmp))
    inputs = TrainInputs(train, test, None)
    students = {
        "MLP[64]": StoredModelConfig(model=MLPConfig(hidden=[64]), input_shape=[40], num_classes=10),
        "MLP[256,256]": StoredModelConfig(
            model=MLPConfig(hidden=[256, 256]), input_shape=[40], num_classes=10
        ),
        "CNN[16,32]": StoredModelConfig(model=CNNConfig(channels=[16, 32]), input_shape=[40], num_classes=10),
    }
    for name, student in students.items():
        _measure(name, student, inputs, args)


def _measure(name: str, student: StoredModelConfig, inputs: TrainInputs, args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    teacher_cfg = StoredModelConfig(
        model=CNNConfig(channels=[32, 64, 64], kernel_size=5), input_shape=[40], num_classes=10
    )
    torch.manual_seed(0)
    teacher = build_model(teacher_cfg).to(device).eval()
    x = pool_inputs(inputs)
    training = TrainingSpec(epochs=args.epochs, batch_size=64, learning_rate=1e-3)
    distillation = DistillationSpec()
    cached_blob = compute_signals([teacher], [1.0], x, device).to_bytes()

    def labels_only() -> None:
        train_model(student, inputs, training, distillation, None, device, NoCallbacks())

    def cached() -> None:
        signals = TeacherSignals.from_bytes(cached_blob)
        train_model(student, inputs, training, distillation, signals, device, NoCallbacks())

    def live() -> None:
        signals = compute_signals([teacher], [1.0], x, device)
        train_model(student, inputs, training, distillation, signals, device, NoCallbacks())

    def teacher_forward() -> None:
        predict_logits(teacher, np.asarray(x), device)

    times: dict[str, list[float]] = {"labels": [], "cached": [], "live": [], "teacher": []}
    for fn in (labels_only, cached, live, teacher_forward):  # warm-up
        fn()
    for _ in range(args.repeats):
        times["labels"].append(_timed(labels_only) / args.epochs)
        times["cached"].append(_timed(cached) / args.epochs)
        times["teacher"].append(_timed(teacher_forward))
        times["live"].append(_timed(live))
    med = {k: statistics.median(v) for k, v in times.items()}
    live_epoch = med["live"] - (args.epochs - 1) * med["cached"]  # teacher pass + one distillation epoch
    cached_ratio = med["cached"] / med["labels"]
    live_ratio = live_epoch / (med["teacher"] + med["labels"])
    print(f"\nstudent {name}: device {device}, {len(x)} examples per epoch, batch 64, teacher CNN[32,64,64]")
    print(f"label-only epoch            {med['labels'] * 1000:8.1f} ms")
    print(f"distillation epoch, cached  {med['cached'] * 1000:8.1f} ms   ratio {cached_ratio:.3f} (<= 1.10)")
    print(f"teacher forward pass        {med['teacher'] * 1000:8.1f} ms")
    print(f"live: teacher pass + epoch  {live_epoch * 1000:8.1f} ms   ratio {live_ratio:.3f} (<= 1.10)")


if __name__ == "__main__":
    main()
