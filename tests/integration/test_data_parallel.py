"""``resources.gpus: 2`` through the REST API: a real ``distill worker`` offering two CPU devices
(``DISTILL_WORKER_DEVICES=2``) trains the student data-parallel in two gloo processes, tabular, causal-LM
and text students alike; a job asking for more devices than the worker has fails naming
``resources.gpus``."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import delete_queue_keys, start_worker, stop_process
from lm_support import archive, char_tokenizer, tiny_causal_lm, tiny_classifier, unpack

from distill.client.sdk import Client

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def two_device_queue(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A worker pool of its own (one worker offering two CPU devices), served on its own queue."""
    queue = f"{stack.settings.queue_name}-ddp"
    env = {
        **stack.env,
        "DISTILL_QUEUE_NAME": queue,
        "DISTILL_WORKER_DEVICES": "2",
        "DISTILL_TORCH_THREADS": "1",
        "DISTILL_WORKER_ID": "ddp-worker",
        # 1 MiB per rank for a student's training state: the small students here fit (DDP under "auto"),
        # a [512, 512] MLP (4.6 MiB) does not (FSDP)
        "DISTILL_WORKER_DEVICE_MEMORY_MB": "1",
    }
    log_path = tmp_path_factory.mktemp("ddp-worker") / "worker.log"
    worker = start_worker(env, log_path)
    try:
        yield queue
    finally:
        stop_process(worker)
        delete_queue_keys(stack.settings.broker_url, queue)


def test_a_tabular_job_with_two_gpus_trains_in_two_processes_and_says_so(
    stack: Any, two_device_queue: str, tmp_path: Path
) -> None:
    acme: Client = stack.client("acme")
    teacher = acme.create_job(
        {
            "data": {"train": {"builtin": "digits"}},
            "model": {"arch": "mlp", "hidden": [64]},
            "training": {"epochs": 3, "seed": 0},
        }
    )
    teacher = acme.wait(teacher["id"], poll_interval=0.3, timeout=300)
    assert teacher["status"] == "succeeded", teacher["error"]

    job = acme.create_job(
        {
            "data": {"train": {"builtin": "digits"}},
            "teacher": {"job": teacher["id"]},
            "model": {"arch": "mlp", "hidden": [32]},
            "training": {"epochs": 3, "batch_size": 64, "learning_rate": 0.01, "seed": 1},
            "resources": {"queue": two_device_queue, "gpus": 2},
        }
    )
    final = acme.wait(job["id"], poll_interval=0.3, timeout=300)
    assert final["status"] == "succeeded", final["error"]
    assert final["result"]["test_accuracy"] > 0.8  # it learned (10 classes: chance is 0.1)
    assert final["progress"]["epoch"] == 3 and final["progress"]["step"] == final["progress"]["steps"]

    events = list(acme.iter_events(job["id"]))
    started = next(e for e in events if e["message"].startswith("job started"))
    assert started["data"]["worker"] == "ddp-worker" and started["data"]["devices"] == 2
    parallel = next(e for e in events if "data-parallel" in e["message"])
    assert "2 processes" in parallel["message"]
    assert parallel["data"] == {"processes": 2, "backend": "gloo", "devices": []}
    messages = [e["message"] for e in events]
    # the teacher ran once (in rank 0, before the ranks started), and rank 0 alone reported each epoch
    assert sum("teacher outputs" in m for m in messages) == 1
    assert [m for m in messages if m.startswith("epoch")] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]

    report = json.loads(acme.download_artifact(job["id"], "report.json", tmp_path).read_text())
    assert report["environment"]["processes"] == 2
    assert len(report["history"]) == 3


def test_a_job_asking_more_devices_than_its_worker_has_fails_naming_resources_gpus(
    stack: Any, two_device_queue: str
) -> None:
    acme: Client = stack.client("acme")
    job = acme.create_job(
        {
            "data": {"train": {"builtin": "digits"}},
            "training": {"epochs": 1},
            "resources": {"queue": two_device_queue, "gpus": 3},
        }
    )
    final = acme.wait(job["id"], poll_interval=0.3, timeout=120)
    assert final["status"] == "failed"
    assert final["error"]["code"] == "insufficient_devices"
    message = final["error"]["message"]
    assert message.startswith("resources.gpus:") and "has 2" in message


def test_a_job_asking_for_fsdp_trains_its_student_sharded_across_two_processes(
    stack: Any, two_device_queue: str, tmp_path: Path
) -> None:
    acme: Client = stack.client("acme")
    job = acme.create_job(
        {
            "data": {"train": {"builtin": "digits"}},
            "model": {"arch": "mlp", "hidden": [32]},
            "training": {"epochs": 3, "batch_size": 64, "learning_rate": 0.01, "seed": 1},
            "resources": {"queue": two_device_queue, "gpus": 2, "sharding": "fsdp"},
        }
    )
    assert job["spec"]["resources"]["sharding"] == "fsdp"
    final = acme.wait(job["id"], poll_interval=0.3, timeout=300)
    assert final["status"] == "succeeded", final["error"]
    assert final["result"]["test_accuracy"] > 0.8  # it learned (10 classes: chance is 0.1)
    assert final["progress"]["epoch"] == 3 and final["progress"]["step"] == final["progress"]["steps"]

    events = list(acme.iter_events(job["id"]))
    parallel = next(e for e in events if "data-parallel" in e["message"])
    assert "on 2 processes (gloo, CPU, sharded with FSDP)" in parallel["message"]
    messages = [e["message"] for e in events]
    # every rank evaluated the sharded student; rank 0 alone reported each epoch
    assert [m for m in messages if m.startswith("epoch")] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]

    # the model is whole (rank 0 gathered it): it loads outside Distill like any other student
    from safetensors.torch import load_file

    weights = load_file(acme.download_artifact(job["id"], "model.safetensors", tmp_path))
    assert {tuple(t.shape) for t in weights.values()} >= {(32, 64), (10, 32)}


def test_an_auto_job_whose_student_does_not_fit_one_device_is_sharded_and_says_so(
    stack: Any, two_device_queue: str
) -> None:
    acme: Client = stack.client("acme")
    job = acme.create_job(
        {
            "data": {"train": {"builtin": "digits"}},
            "model": {"arch": "mlp", "hidden": [512, 512]},
            "training": {"epochs": 1, "batch_size": 64, "learning_rate": 0.001, "seed": 1},
            "resources": {"queue": two_device_queue, "gpus": 2},
        }
    )
    assert job["spec"]["resources"]["sharding"] == "auto"
    final = acme.wait(job["id"], poll_interval=0.3, timeout=300)
    assert final["status"] == "succeeded", final["error"]
    parallel = next(e for e in acme.iter_events(job["id"]) if "data-parallel" in e["message"])
    assert "on 2 processes (gloo, CPU, sharded with FSDP)" in parallel["message"]


def parallel_event(client: Client, job_id: str) -> str:
    """The job's event that says how it trains, and that every epoch was reported once (rank 0)."""
    events = [e["message"] for e in client.iter_events(job_id)]
    epochs = [m for m in events if m.startswith("epoch")]
    assert epochs == [f"epoch {i}/{len(epochs)}" for i in range(1, len(epochs) + 1)] and epochs
    return next(m for m in events if "data-parallel" in m)


def succeeded_on_two_ddp_ranks(client: Client, job_id: str) -> dict[str, Any]:
    """The job's report once it has succeeded after every step, trained (its event says) by 2 DDP ranks."""
    final = client.wait(job_id, poll_interval=0.3, timeout=600)
    assert final["status"] == "succeeded", final["error"]
    assert final["progress"]["step"] == final["progress"]["steps"] > 0
    assert "on 2 processes (gloo, CPU)" in parallel_event(client, job_id)
    report: dict[str, Any] = json.loads(client.read_artifact(job_id, "report.json"))
    assert report["environment"]["processes"] == 2
    return report


def test_a_causal_lm_job_with_two_gpus_trains_in_two_ddp_processes_and_its_model_loads(
    stack: Any, two_device_queue: str, tmp_path: Path
) -> None:
    acme: Client = stack.client("acme-lm-ddp")
    rng = random.Random(0)
    path = tmp_path / "sums.jsonl"
    path.write_text(
        "".join(
            json.dumps({"prompt": f"{a}+{b}=", "completion": str(a + b)}) + "\n"
            for a, b in ((rng.randrange(50), rng.randrange(50)) for _ in range(60))
        )
    )
    data = acme.upload_file(path)
    tok = char_tokenizer()
    teacher_path = tmp_path / "teacher.zip"
    teacher_path.write_bytes(archive(tiny_causal_lm(tok, layers=2, hidden=32), tok))
    teacher = acme.upload_file(teacher_path, purpose="model")
    job = acme.create_job(
        {
            "task": "causal_lm",
            "data": {"train": {"file": data["id"]}},
            "teacher": {"file": teacher["id"]},
            "model": {"arch": "gpt2", "n_layer": 1, "n_embd": 32, "n_head": 2, "max_length": 12},
            "distillation": {
                "losses": [{"type": "forward_kl", "weight": 0.9}, {"type": "ce", "weight": 0.1}]
            },
            "training": {"epochs": 2, "batch_size": 8, "learning_rate": 0.003},
            "resources": {"queue": two_device_queue, "gpus": 2},
        }
    )
    report = succeeded_on_two_ddp_ranks(acme, job["id"])
    assert report["teacher_cache"]["hit"] is False

    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    blob = acme.download_artifact(job["id"], "model.hf.zip", tmp_path / "student.zip").read_bytes()
    unpack(blob, tmp_path / "student")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "student")
    assert model.config.n_layer == 1
    loaded_tok = PreTrainedTokenizerFast.from_pretrained(str(tmp_path / "student"))
    out = model.generate(**loaded_tok("3+4=", return_tensors="pt"), max_new_tokens=3, do_sample=False)
    assert out.shape[1] > 4


def test_a_text_job_with_two_gpus_trains_in_two_ddp_processes_and_its_model_loads(
    stack: Any, two_device_queue: str, tmp_path: Path
) -> None:
    from worker.engine.text_data import sentiment_examples

    acme: Client = stack.client("acme-text-ddp")
    texts, labels = sentiment_examples(120, seed=2)
    path = tmp_path / "reviews.jsonl"
    path.write_text(
        "".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in zip(texts, labels, strict=True))
    )
    data = acme.upload_file(path)
    tok = char_tokenizer()
    teacher_path = tmp_path / "bert.zip"
    teacher_path.write_bytes(archive(tiny_classifier(tok, num_labels=2, hidden=32).eval(), tok))
    teacher = acme.upload_file(teacher_path, purpose="model")
    job = acme.create_job(
        {
            "data": {"train": {"file": data["id"]}},
            "teacher": {"file": teacher["id"]},
            "model": {"arch": "encoder", "layers": 1, "max_length": 32},
            "training": {"epochs": 2, "batch_size": 16, "learning_rate": 0.001},
            "resources": {"queue": two_device_queue, "gpus": 2},
        }
    )
    succeeded_on_two_ddp_ranks(acme, job["id"])

    import torch
    from transformers import AutoModelForSequenceClassification, PreTrainedTokenizerFast

    blob = acme.download_artifact(job["id"], "model.hf.zip", tmp_path / "student.zip").read_bytes()
    unpack(blob, tmp_path / "student")
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "student").eval()
    assert model.config.num_hidden_layers == 1
    loaded_tok = PreTrainedTokenizerFast.from_pretrained(str(tmp_path / "student"))
    with torch.no_grad():
        logits = model(**loaded_tok(texts[:3], padding=True, return_tensors="pt")).logits
    assert logits.shape == (3, 2) and bool(torch.isfinite(logits).all())
