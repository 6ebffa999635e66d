"""The worker's own Prometheus exporter: what the GPUs of the machine it runs on are doing.

The API's ``/metrics`` sees Postgres and the broker; only a worker sees its GPUs. With
``DISTILL_WORKER_METRICS_PORT`` set, ``distill worker`` serves ``/metrics`` on that port (a thread of the
worker's main process) with, per CUDA device:

- ``distill_worker_gpu_memory_allocated_bytes`` and ``..._reserved_bytes``: what PyTorch in this worker
  process holds in tensors and in its caching allocator (``torch.cuda.memory_allocated/reserved``): the
  jobs' own use with the default solo pool (``--concurrency 1``, one worker per GPU); a prefork pool's
  children are other processes, which these do not see;
- ``distill_worker_gpu_memory_used_bytes`` and ``..._total_bytes``: the whole device, every process on it
  (NVML through ``torch.cuda.device_memory_used`` where ``pynvml`` is installed; else the CUDA runtime, once
  this process has a CUDA context: the exporter never creates one);
- ``distill_worker_gpu_utilization_ratio``: the share of the last sample period a kernel ran (NVML only).

Each family is always present; on a machine without a GPU it has no samples. Samples are read when
Prometheus scrapes, so there is nothing to keep in step.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

LABELS = ["worker", "device"]


def _nvml() -> bool:
    return importlib.util.find_spec("pynvml") is not None


class GpuCollector(Collector):
    """Per-device GPU memory and utilisation of this worker's machine, read at scrape time."""

    def __init__(self, worker: str, *, cuda: Any = None) -> None:
        self.worker = worker
        self._cuda = cuda
        """``torch.cuda`` (or a stand-in with its functions); imported on first scrape when None."""

    def families(self) -> dict[str, GaugeMetricFamily]:
        return {
            "allocated": GaugeMetricFamily(
                "distill_worker_gpu_memory_allocated_bytes",
                "GPU memory in tensors allocated by this worker process's PyTorch",
                labels=LABELS,
            ),
            "reserved": GaugeMetricFamily(
                "distill_worker_gpu_memory_reserved_bytes",
                "GPU memory held by this worker process's PyTorch caching allocator",
                labels=LABELS,
            ),
            "used": GaugeMetricFamily(
                "distill_worker_gpu_memory_used_bytes",
                "GPU memory in use on the device (all processes)",
                labels=LABELS,
            ),
            "total": GaugeMetricFamily(
                "distill_worker_gpu_memory_total_bytes", "GPU memory in all", labels=LABELS
            ),
            "utilization": GaugeMetricFamily(
                "distill_worker_gpu_utilization_ratio",
                "Share of the last sample period a kernel ran on the device (0 to 1; NVML)",
                labels=LABELS,
            ),
        }

    def collect(self) -> Iterator[GaugeMetricFamily]:
        families = self.families()
        try:
            self._sample(families)
        except Exception:  # a scrape always answers: the families, with what could be read
            log.warning("worker metrics: GPU not readable", exc_info=True)
        yield from families.values()

    def _sample(self, families: dict[str, GaugeMetricFamily]) -> None:
        cuda = self._cuda
        if cuda is None:
            import torch

            cuda = torch.cuda
        if not cuda.is_available():
            return
        nvml = _nvml()
        for index in range(cuda.device_count()):
            labels = [self.worker, str(index)]
            # no context yet (no job has run here): the allocator holds nothing, and none is created
            families["allocated"].add_metric(labels, float(cuda.memory_allocated(index)))
            families["reserved"].add_metric(labels, float(cuda.memory_reserved(index)))
            if nvml:
                families["used"].add_metric(labels, float(cuda.device_memory_used(index)))
                families["utilization"].add_metric(labels, float(cuda.utilization(index)) / 100.0)
            if cuda.is_initialized():  # mem_get_info needs a context; the exporter never makes one
                free, size = cuda.mem_get_info(index)
                if not nvml:
                    families["used"].add_metric(labels, float(size - free))
                families["total"].add_metric(labels, float(size))


def worker_registry(worker: str) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(GpuCollector(worker))
    return registry


def serve_metrics(worker: str, port: int, host: str = "0.0.0.0") -> Any:
    """Start the exporter thread on ``host:port``; returns the HTTP server (``shutdown()`` stops it)."""
    server, _thread = start_http_server(port, addr=host, registry=worker_registry(worker))
    log.info("worker metrics on http://%s:%d/metrics", host, port)
    return server
