"""Predictions, accuracy, teacher agreement and CPU inference speed."""

from __future__ import annotations

import contextlib
import copy
import statistics
import time
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from distill.datasets import ArrayDataset
from worker.engine.models import count_parameters

THROUGHPUT_BATCH = 64


def autocast(device: torch.device) -> contextlib.AbstractContextManager[object]:
    """bfloat16 autocast on CUDA; a no-op elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for the block, then restore its previous mode."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def predict_logits(
    model: nn.Module, x: np.ndarray, device: torch.device, batch_size: int = 1024
) -> torch.Tensor:
    """Logits for every example of ``x`` (CPU float32 ``[n, classes]``); moves ``model`` to ``device``."""
    model.to(device)
    inputs = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    outputs: list[torch.Tensor] = []
    with eval_mode(model), torch.inference_mode():
        for start in range(0, len(inputs), batch_size):
            batch = inputs[start : start + batch_size].to(device, non_blocking=True)
            with autocast(device):
                logits = model(batch)
            outputs.append(logits.float().cpu())
    if not outputs:
        raise ValueError("predict_logits: no examples")
    return torch.cat(outputs)


def accuracy(logits: torch.Tensor, y: np.ndarray | torch.Tensor) -> float:
    """Share of examples whose top logit is the label."""
    labels = torch.as_tensor(y).to(logits.device)
    return (logits.argmax(dim=1) == labels).float().mean().item()


def agreement(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> float:
    """Share of examples where student and teacher predict the same class."""
    return (student_logits.argmax(dim=1) == teacher_logits.argmax(dim=1)).float().mean().item()


def cpu_inference_speed(
    model: nn.Module, input_shape: Sequence[int], *, repeats: int = 50
) -> dict[str, float]:
    """Median batch-1 latency (ms) and batch-64 throughput (examples/s) of a CPU copy of ``model``."""
    cpu_model = copy.deepcopy(model).cpu().float().eval()
    gen = torch.Generator().manual_seed(0)
    one = torch.randn(1, *input_shape, generator=gen)
    batch = torch.randn(THROUGHPUT_BATCH, *input_shape, generator=gen)
    with torch.inference_mode():
        for _ in range(5):  # warm-up: allocator, kernels' first-call setup
            cpu_model(one)
            cpu_model(batch)
        latencies = []
        for _ in range(repeats):
            start = time.perf_counter()
            cpu_model(one)
            latencies.append(time.perf_counter() - start)
        batch_repeats = max(1, repeats // 5)
        start = time.perf_counter()
        for _ in range(batch_repeats):
            cpu_model(batch)
        elapsed = time.perf_counter() - start
    return {
        "latency_ms_batch1": statistics.median(latencies) * 1000.0,
        "throughput_batch64": THROUGHPUT_BATCH * batch_repeats / max(elapsed, 1e-9),
    }


def summarize(
    student: nn.Module, validation: ArrayDataset, device: torch.device, teacher: nn.Module | None = None
) -> dict[str, float | int]:
    """The job's final metrics on ``validation`` (its held-out / test split), plus CPU inference speed."""
    if validation.y is None:
        raise ValueError("summarize needs a labeled validation set")
    input_shape = validation.input_shape
    student_logits = predict_logits(student, validation.x, device)
    speed = cpu_inference_speed(student, input_shape)
    metrics: dict[str, float | int] = {
        "test_accuracy": accuracy(student_logits, validation.y),
        "parameters": count_parameters(student),
        "cpu_latency_ms": speed["latency_ms_batch1"],
        "cpu_throughput": speed["throughput_batch64"],
    }
    if teacher is not None:
        teacher_logits = predict_logits(teacher, validation.x, device)
        teacher_speed = cpu_inference_speed(teacher, input_shape)
        metrics.update(
            {
                "teacher_test_accuracy": accuracy(teacher_logits, validation.y),
                "teacher_parameters": count_parameters(teacher),
                "agreement_with_teacher": agreement(student_logits, teacher_logits),
                "teacher_cpu_latency_ms": teacher_speed["latency_ms_batch1"],
                "teacher_cpu_throughput": teacher_speed["throughput_batch64"],
            }
        )
    return metrics
