"""Predictions, accuracy, calibration, teacher agreement, size on disk and CPU inference speed."""

from __future__ import annotations

import contextlib
import copy
import statistics
import time
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import safetensors.torch
import torch
from torch import nn
from torch.distributed.fsdp import FSDPModule

from distill.datasets import ArrayDataset
from distill.nets import count_parameters
from distill.spec import StoredModelConfig
from worker.engine.export import model_to_safetensors

THROUGHPUT_BATCH = 64
ECE_BINS = 15


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
    """Logits for every example of ``x`` (CPU float32 ``[n, classes]``); moves ``model`` to ``device`` (a
    sharded FSDP model stays where its shards are: every rank must run this, in step)."""
    if not isinstance(model, FSDPModule):
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


def expected_calibration_error(
    logits: torch.Tensor, y: np.ndarray | torch.Tensor, bins: int = ECE_BINS
) -> float:
    """Expected calibration error (Guo et al., 2017) of the softmax's top-class confidence.

    Confidences fall in ``bins`` equal-width bins ``(0, 1/B], (1/B, 2/B], ..., ((B-1)/B, 1]``;
    ``ECE = sum_b (n_b / n) * |accuracy_b - mean confidence_b|`` over the non-empty bins. 0 is perfectly
    calibrated; an always-right model at 60 % confidence scores 0.4.
    """
    if bins < 1:
        raise ValueError("expected_calibration_error: bins must be at least 1")
    logits = logits.detach().to("cpu", torch.float64)
    labels = torch.as_tensor(y).to("cpu").long()
    if logits.ndim != 2 or len(logits) == 0 or labels.shape != (len(logits),):
        raise ValueError(
            f"expected_calibration_error: logits {list(logits.shape)} and labels {list(labels.shape)} "
            "must be [n, classes] and [n] with n > 0"
        )
    confidence, predicted = logits.softmax(dim=1).max(dim=1)
    correct = (predicted == labels).double()
    edges = torch.linspace(0.0, 1.0, bins + 1, dtype=torch.float64)
    index = torch.bucketize(confidence, edges[1:-1])  # bin b holds edges[b] < confidence <= edges[b + 1]
    conf_sum = torch.zeros(bins, dtype=torch.float64).index_add_(0, index, confidence)
    correct_sum = torch.zeros(bins, dtype=torch.float64).index_add_(0, index, correct)
    # per bin n_b/n * |acc_b - conf_b| = |correct_b - conf_b| / n
    return float((correct_sum - conf_sum).abs().sum().item() / len(logits))


def bytes_on_disk(model: nn.Module, cfg: StoredModelConfig | None = None) -> int:
    """Size of the model's ``model.safetensors`` (with ``cfg``: exactly the file Distill writes; without:
    the same tensors with no metadata, a few hundred bytes less)."""
    if cfg is not None:
        return len(model_to_safetensors(model, cfg))
    tensors = {name: t.detach().to("cpu").contiguous() for name, t in model.state_dict().items()}
    return len(safetensors.torch.save(tensors))


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def cpu_inference_speed(
    model: nn.Module, input_shape: Sequence[int], *, repeats: int = 50
) -> dict[str, float]:
    """Batch-1 latency (ms) and batch-64 throughput (examples/s) of a CPU float32 copy of ``model``.

    Robust on a shared, noisy machine: after a warm-up (allocator, kernels' first-call setup, at least
    ~20 ms), each call is timed on its own and the median is kept, so a few preempted calls do not move
    it. ``repeats`` batch-1 calls and ``max(5, repeats // 5)`` batch-64 calls are timed.
    """
    if repeats < 1:
        raise ValueError("cpu_inference_speed: repeats must be at least 1")
    cpu_model = copy.deepcopy(model).to("cpu", torch.float32).eval()
    gen = torch.Generator().manual_seed(0)
    one = torch.randn(1, *input_shape, generator=gen)
    batch = torch.randn(THROUGHPUT_BATCH, *input_shape, generator=gen)
    with torch.inference_mode():
        warm_until = time.perf_counter() + 0.02
        for i in range(1000):
            cpu_model(one)
            cpu_model(batch)
            if i >= 2 and time.perf_counter() >= warm_until:
                break
        latencies = [_timed(lambda: cpu_model(one)) for _ in range(repeats)]
        batch_times = [_timed(lambda: cpu_model(batch)) for _ in range(max(5, repeats // 5))]
    return {
        "latency_ms_batch1": statistics.median(latencies) * 1000.0,
        "throughput_batch64": THROUGHPUT_BATCH / max(statistics.median(batch_times), 1e-9),
    }


def summarize(
    student: nn.Module,
    validation: ArrayDataset,
    device: torch.device,
    teacher: nn.Module | None = None,
    *,
    cfg: StoredModelConfig | None = None,
    teacher_cfg: StoredModelConfig | None = None,
) -> dict[str, float | int]:
    """The job's final metrics on ``validation`` (its held-out / test split), plus size and CPU speed.

    Keys: ``test_accuracy``, ``ece``, ``parameters``, ``bytes_on_disk``, ``cpu_latency_ms`` (batch 1),
    ``cpu_throughput`` (batch 64, examples/s); with a teacher also ``teacher_`` + each of those,
    ``agreement_with_teacher``, ``compression_ratio`` (teacher / student parameters) and ``speedup``
    (teacher / student batch-1 latency). ``cfg`` / ``teacher_cfg`` make ``bytes_on_disk`` exact (see
    :func:`bytes_on_disk`).
    """
    if validation.y is None:
        raise ValueError("summarize needs a labeled validation set")
    input_shape = validation.input_shape
    student_logits = predict_logits(student, validation.x, device)
    speed = cpu_inference_speed(student, input_shape)
    parameters = count_parameters(student)
    metrics: dict[str, float | int] = {
        "test_accuracy": accuracy(student_logits, validation.y),
        "ece": expected_calibration_error(student_logits, validation.y),
        "parameters": parameters,
        "bytes_on_disk": bytes_on_disk(student, cfg),
        "cpu_latency_ms": speed["latency_ms_batch1"],
        "cpu_throughput": speed["throughput_batch64"],
    }
    if teacher is not None:
        teacher_logits = predict_logits(teacher, validation.x, device)
        teacher_speed = cpu_inference_speed(teacher, input_shape)
        teacher_parameters = count_parameters(teacher)
        metrics.update(
            {
                "teacher_test_accuracy": accuracy(teacher_logits, validation.y),
                "teacher_ece": expected_calibration_error(teacher_logits, validation.y),
                "teacher_parameters": teacher_parameters,
                "teacher_bytes_on_disk": bytes_on_disk(teacher, teacher_cfg),
                "agreement_with_teacher": agreement(student_logits, teacher_logits),
                "teacher_cpu_latency_ms": teacher_speed["latency_ms_batch1"],
                "teacher_cpu_throughput": teacher_speed["throughput_batch64"],
                "compression_ratio": teacher_parameters / max(parameters, 1),
                "speedup": teacher_speed["latency_ms_batch1"] / max(speed["latency_ms_batch1"], 1e-9),
            }
        )
    return metrics
