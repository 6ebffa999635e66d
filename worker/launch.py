"""How many devices a worker offers one job, and how a job that asks for several (``resources.gpus > 1``)
trains on them: a :class:`~worker.engine.distributed.DataParallel` layout, one process per device, NCCL on
CUDA devices, gloo between CPU processes (``DISTILL_WORKER_DEVICES`` on a CPU worker).

The ranks themselves are started by :func:`worker.engine.distributed.run_data_parallel` when the student's
training begins; everything before it (loading inputs, the teachers' signals, computed once or read from
the cache) runs once, in the job's own process, which is rank 0.
"""

from __future__ import annotations

import os

import torch

from distill.settings import Settings
from distill.spec import JobSpec
from distill.spec_rules import unsharded_message
from worker.engine.distributed import DataParallel
from worker.failures import JobFailure


def visible_cuda_devices() -> list[str]:
    """The CUDA devices this process sees, as ``CUDA_VISIBLE_DEVICES`` names them (indices when unset)."""
    if not torch.cuda.is_available():
        return []
    count = torch.cuda.device_count()
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed:
        names = [name.strip() for name in listed.split(",") if name.strip()]
        return names[:count]
    return [str(index) for index in range(count)]


def worker_devices(settings: Settings, device: torch.device) -> int:
    """The most devices one job may train on here: ``DISTILL_WORKER_DEVICES`` (never more CUDA devices than
    it sees), else every visible CUDA device when training on CUDA, else 1."""
    if device.type == "cuda":
        visible = max(1, len(visible_cuda_devices()))
        return min(settings.worker_devices, visible) if settings.worker_devices else visible
    return settings.worker_devices or 1


def data_parallel_for(
    spec: JobSpec, settings: Settings, device: torch.device, worker_id: str
) -> DataParallel | None:
    """The layout of a job asking for ``resources.gpus > 1`` (None: one process). A job asking for more
    devices than this worker has fails here, naming ``resources.gpus``."""
    gpus = spec.resources.gpus
    if gpus <= 1:
        return None
    sharding = spec.resources.sharding
    kind = "causal_lm" if spec.task == "causal_lm" else "text" if spec.model.arch == "encoder" else None
    if kind is not None:  # Hugging Face students: DDP ("auto" too); the spec refuses fsdp, a worker checks
        if sharding == "fsdp":
            raise JobFailure("invalid_spec", unsharded_message(kind))
        sharding = "ddp"
    have = worker_devices(settings, device)
    if gpus > have:
        kind = "CUDA devices" if device.type == "cuda" else "devices (DISTILL_WORKER_DEVICES)"
        raise JobFailure(
            "insufficient_devices",
            f"resources.gpus: the job asks for {gpus} devices but worker {worker_id} has {have} {kind}; "
            f"lower resources.gpus to {have} or less, or send the job (resources.queue) to a pool whose "
            f"workers have {gpus}",
        )
    timeout = settings.distributed_timeout_seconds
    if device.type == "cuda":
        names = visible_cuda_devices()
        first = device.index or 0
        order = [names[first], *(name for i, name in enumerate(names) if i != first)]
        return DataParallel(
            world=gpus, backend="nccl", devices=tuple(order[:gpus]), timeout_s=timeout, sharding=sharding
        )
    return DataParallel(
        world=gpus,
        backend="gloo",
        timeout_s=timeout,
        threads=settings.torch_threads,
        sharding=sharding,
        memory_bytes=settings.worker_device_memory_mb * 2**20,
    )
