"""worker.launch: how many devices a worker offers a job, and the data-parallel layout of a job asking for
several (``resources.gpus``); a job asking more than the worker has fails naming the field."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from pydantic import ValidationError

from distill.settings import Settings
from distill.spec import JobSpec
from worker.failures import JobFailure
from worker.launch import data_parallel_for, worker_devices

CPU = torch.device("cpu")


def spec(gpus: int, **more: Any) -> JobSpec:
    return JobSpec.model_validate(
        {"data": {"train": {"builtin": "digits"}}, "resources": {"gpus": gpus}, **more}
    )


def test_a_cpu_worker_offers_one_device_unless_told_more() -> None:
    assert worker_devices(Settings(), CPU) == 1
    assert worker_devices(Settings(worker_devices=4), CPU) == 4


def test_one_device_jobs_run_in_one_process() -> None:
    for gpus in (0, 1):
        assert data_parallel_for(spec(gpus), Settings(worker_devices=2), CPU, "w1") is None


def test_a_job_with_two_gpus_on_a_two_device_cpu_worker_runs_two_gloo_ranks() -> None:
    layout = data_parallel_for(
        spec(2), Settings(worker_devices=2, torch_threads=1, distributed_timeout_seconds=30), CPU, "w1"
    )
    assert layout is not None
    assert (layout.world, layout.backend, layout.devices) == (2, "gloo", ())
    assert (layout.threads, layout.timeout_s) == (1, 30)
    assert layout.describe() == "data-parallel on 2 processes (gloo, CPU)"


def test_a_job_asking_more_devices_than_the_worker_has_fails_naming_resources_gpus() -> None:
    with pytest.raises(JobFailure) as failure:
        data_parallel_for(spec(3), Settings(worker_devices=2), CPU, "node-7:42")
    assert failure.value.code == "insufficient_devices"
    message = failure.value.message
    assert message.startswith("resources.gpus:")
    assert "asks for 3 devices" in message and "node-7:42 has 2" in message


LM_JOB = {
    "task": "causal_lm",
    "data": {"train": {"file": "file_data"}},
    "model": {"arch": "gpt2", "n_layer": 1, "n_embd": 32, "n_head": 2},
    "teacher": {"job": "job_teacher"},
}


@pytest.mark.parametrize(
    "job", [{"model": {"arch": "encoder", "layers": 1}}, LM_JOB], ids=["text", "causal_lm"]
)
def test_text_and_causal_lm_jobs_with_two_gpus_run_two_ddp_ranks_and_refuse_fsdp(job: dict[str, Any]) -> None:
    settings = Settings(worker_devices=2)
    for sharding in ("auto", "ddp"):  # auto: their Hugging Face students train with DDP
        body = {**job, "resources": {"gpus": 2, "sharding": sharding}}
        layout = data_parallel_for(
            JobSpec.model_validate({"data": {"train": {"builtin": "digits"}}, **body}), settings, CPU, "w1"
        )
        assert layout is not None and (layout.world, layout.sharding) == (2, "ddp")
    with pytest.raises(ValidationError) as info:
        JobSpec.model_validate(
            {"data": {"train": {"builtin": "digits"}}, **job, "resources": {"gpus": 2, "sharding": "fsdp"}}
        )
    (error,) = info.value.errors()
    assert error["loc"] == ("resources", "sharding") and "DDP" in error["msg"]
