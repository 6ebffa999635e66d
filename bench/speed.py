"""What distillation costs on top of plain training, measured side by side in one process.

- cached: an epoch of distillation from stored teacher outputs vs an epoch of the same student on labels.
  Target: at most 1.10x.
- live: computing the teacher outputs (one pass) plus a distillation epoch vs the sum of a bare teacher
  forward pass and a label-only student epoch. Target: at most 1.10x.

Timings alternate between the variants and take medians, so load from other processes hits both alike.

    .venv/bin/python -m bench.speed [--repeats 5] [--epochs 3] [--batch-size 64] [--device cpu|cuda]

On CUDA the students train under bfloat16 autocast, as jobs do. Exit status 0 when every ratio meets its
target, 1 otherwise.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from distill.datasets.builtins import load_builtin
from distill.nets import build_model
from distill.spec import CNNConfig, DistillationSpec, MLPConfig, StoredModelConfig, TrainingSpec
from worker.engine.evaluate import predict_logits
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
    parser.add_argument("--batch-size", type=int, default=64, help="the job spec's default is 64")
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
    results = {name: _measure(name, student, inputs, args) for name, student in students.items()}
    print(
        f"\n| student (batch {args.batch_size}, {args.device}) | cached / labels "
        "| live / (teacher + labels) |"
    )
    print("|---|---|---|")
    for name, (cached_ratio, live_ratio) in results.items():
        print(f"| {name} | {cached_ratio:.3f} | {live_ratio:.3f} |")
    met = all(max(ratios) <= 1.10 for ratios in results.values())
    print("target (<= 1.10) met" if met else "target (<= 1.10) NOT met for every student")
    sys.exit(0 if met else 1)


def _measure(
    name: str, student: StoredModelConfig, inputs: TrainInputs, args: argparse.Namespace
) -> tuple[float, float]:
    """Print and return the (cached, live) ratios for one student."""
    device = torch.device(args.device)
    teacher_cfg = StoredModelConfig(
        model=CNNConfig(channels=[32, 64, 64], kernel_size=5), input_shape=[40], num_classes=10
    )
    torch.manual_seed(0)
    teacher = build_model(teacher_cfg).to(device).eval()
    x = pool_inputs(inputs)
    training = TrainingSpec(epochs=args.epochs, batch_size=args.batch_size, learning_rate=1e-3)
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
    cached_ratios, live_ratios = [], []
    for _ in range(args.repeats):  # each round times the variants back to back: a ratio per round
        labels_t = _timed(labels_only) / args.epochs
        cached_t = _timed(cached) / args.epochs
        teacher_t = _timed(teacher_forward)
        live_t = _timed(live)
        live_epoch = live_t - (args.epochs - 1) * cached_t  # teacher pass + one distillation epoch
        cached_ratios.append(cached_t / labels_t)
        live_ratios.append(live_epoch / (teacher_t + labels_t))
        for key, value in zip(times, (labels_t, cached_t, live_t, teacher_t), strict=True):
            times[key].append(value)
    med = {k: statistics.median(v) for k, v in times.items()}
    live_epoch = med["live"] - (args.epochs - 1) * med["cached"]
    cached_ratio, live_ratio = statistics.median(cached_ratios), statistics.median(live_ratios)
    steps = -(-len(x) // args.batch_size)
    extra_us = (med["cached"] - med["labels"]) / steps * 1e6
    print(
        f"\nstudent {name}: device {device}, {len(x)} examples per epoch, batch {args.batch_size} "
        f"({steps} steps), teacher CNN[32,64,64]; ratios: median of {args.repeats} rounds [min, max]"
    )
    print(
        f"label-only epoch            {med['labels'] * 1000:8.1f} ms   "
        f"{med['labels'] / steps * 1e6:6.0f} us/step"
    )
    print(
        f"distillation epoch, cached  {med['cached'] * 1000:8.1f} ms   ratio {cached_ratio:.3f} "
        f"[{min(cached_ratios):.3f}, {max(cached_ratios):.3f}] (<= 1.10); {extra_us:+.0f} us/step"
    )
    print(f"teacher forward pass        {med['teacher'] * 1000:8.1f} ms")
    print(
        f"live: teacher pass + epoch  {live_epoch * 1000:8.1f} ms   ratio {live_ratio:.3f} "
        f"[{min(live_ratios):.3f}, {max(live_ratios):.3f}] (<= 1.10)"
    )
    return cached_ratio, live_ratio


if __name__ == "__main__":
    main()
