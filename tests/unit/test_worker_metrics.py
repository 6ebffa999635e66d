"""The worker's GPU exporter (worker/metrics.py) and the queues ``distill worker --queues`` serves.

On this CPU machine the real ``torch.cuda`` has no device: every family is there with no samples. What a
GPU would show is checked with a stand-in for ``torch.cuda`` that answers as a two-GPU machine does (only
the arithmetic and the labels are ours; a GPU machine runs the real thing: scripts/device_check.sh).
"""

from __future__ import annotations

import httpx
import pytest
import typer
from helpers import free_port
from prometheus_client import generate_latest

from distill.cli.server import worker_queues
from distill.settings import Settings
from worker.metrics import GpuCollector, serve_metrics, worker_registry

FAMILIES = (
    "distill_worker_gpu_memory_allocated_bytes",
    "distill_worker_gpu_memory_reserved_bytes",
    "distill_worker_gpu_memory_used_bytes",
    "distill_worker_gpu_memory_total_bytes",
    "distill_worker_gpu_utilization_ratio",
)


def samples(collector: GpuCollector) -> dict[tuple[str, str], float]:
    return {
        (family.name, sample.labels["device"]): sample.value
        for family in collector.collect()
        for sample in family.samples
    }


def test_on_cpu_every_family_is_exported_without_samples() -> None:
    text = generate_latest(worker_registry("w1")).decode()
    for family in FAMILIES:
        assert f"# TYPE {family} gauge" in text
        assert not [line for line in text.splitlines() if line.startswith(family + "{")]


class TwoGpus:
    """Answers as ``torch.cuda`` does on a two-GPU machine where this process has a CUDA context."""

    def __init__(self, initialized: bool = True) -> None:
        self.initialized = initialized

    def is_available(self) -> bool:
        return True

    def is_initialized(self) -> bool:
        return self.initialized

    def device_count(self) -> int:
        return 2

    def memory_allocated(self, index: int) -> int:
        return (index + 1) * 1000 if self.initialized else 0

    def memory_reserved(self, index: int) -> int:
        return (index + 1) * 2000 if self.initialized else 0

    def mem_get_info(self, index: int) -> tuple[int, int]:
        if not self.initialized:
            raise AssertionError("the exporter must not create a CUDA context")
        return 70_000 - index, 80_000


def test_with_gpus_each_device_has_its_memory_and_no_context_is_created(monkeypatch) -> None:
    monkeypatch.setattr("worker.metrics._nvml", lambda: False)
    found = samples(GpuCollector("w1", cuda=TwoGpus()))
    assert found[("distill_worker_gpu_memory_allocated_bytes", "1")] == 2000
    assert found[("distill_worker_gpu_memory_reserved_bytes", "0")] == 2000
    assert found[("distill_worker_gpu_memory_used_bytes", "1")] == 10_001
    assert found[("distill_worker_gpu_memory_total_bytes", "0")] == 80_000
    assert not [key for key in found if key[0] == "distill_worker_gpu_utilization_ratio"]  # needs NVML
    fresh = samples(GpuCollector("w1", cuda=TwoGpus(initialized=False)))  # would raise if it made one
    assert fresh[("distill_worker_gpu_memory_allocated_bytes", "0")] == 0


def test_the_exporter_answers_over_http() -> None:
    port = free_port()
    server = serve_metrics("w1", port, "127.0.0.1")
    try:
        answer = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    finally:
        server.shutdown()
    assert answer.status_code == 200
    assert "# TYPE distill_worker_gpu_memory_allocated_bytes gauge" in answer.text


def test_worker_queues_default_one_or_several_and_refuses_unknown_names() -> None:
    settings = Settings(queue_name="distill")
    assert worker_queues(None, settings) == ["distill"]
    assert worker_queues("gpu-a, distill,gpu-a", settings) == ["gpu-a", "distill"]
    with pytest.raises(typer.BadParameter):
        worker_queues(" , ", settings)
    allowlisted = Settings(queue_name="distill", queues="gpu-a,gpu-b")
    assert worker_queues("gpu-b,distill", allowlisted) == ["gpu-b", "distill"]
    with pytest.raises(typer.BadParameter, match="gpu-c"):
        worker_queues("gpu-a,gpu-c", allowlisted)
