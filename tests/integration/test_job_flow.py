"""The whole path through the REST API with a real worker: upload, train a teacher, distil, download."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from factories import digits_arrays, npz_bytes
from sqlalchemy import select

from distill.client.sdk import Client, DistillError
from distill.datasets.builtins import load_builtin
from distill.db import make_engine, make_session_factory
from distill.tables import Job
from worker.engine.evaluate import accuracy, predict_logits
from worker.engine.export import load_model

pytestmark = pytest.mark.integration

TEACHER = {
    "name": "digits-teacher",
    "data": {"train": {"builtin": "digits"}},
    "model": {"arch": "cnn", "channels": [16, 32], "kernel_size": 3},
    "training": {"epochs": 8, "batch_size": 32, "learning_rate": 0.005, "seed": 0},
}


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def acme(stack) -> Client:
    return stack.client("acme")


@pytest.fixture(scope="module")
def teacher_job(acme: Client) -> dict:
    job = acme.create_job(TEACHER)
    return acme.wait(job["id"], poll_interval=0.3, timeout=300)


def test_teacher_trains_reports_and_its_model_gives_the_reported_accuracy(acme, teacher_job, tmp_path):
    job = teacher_job
    assert job["status"] == "succeeded", job["error"]
    assert job["started_at"] and job["finished_at"]
    assert job["progress"]["epoch"] == job["progress"]["epochs"] == 8
    assert job["progress"]["step"] == job["progress"]["steps"] > 0
    result = job["result"]
    assert result["test_accuracy"] > 0.8
    assert result["parameters"] > 0

    messages = [e["message"] for e in acme.iter_events(job["id"])]
    assert messages[0] == "job queued"
    assert messages[1].startswith("job started")
    assert [m for m in messages if m.startswith("epoch")] == [f"epoch {i}/8" for i in range(1, 9)]
    assert messages[-1] == "job succeeded"
    epoch_event = next(e for e in acme.iter_events(job["id"]) if e["message"] == "epoch 8/8")
    assert {"train_loss", "val_accuracy"} <= set(epoch_event["data"])

    artifacts = {a["name"]: a for a in acme.list_artifacts(job["id"])["data"]}
    assert {"model.safetensors", "report.json", "curves.svg"} <= set(artifacts)
    model_path = acme.download_artifact(job["id"], "model.safetensors", tmp_path)
    assert sha256(model_path) == artifacts["model.safetensors"]["sha256"]
    report = json.loads(acme.download_artifact(job["id"], "report.json", tmp_path).read_text())
    assert report["student"]["test_accuracy"] == result["test_accuracy"]
    assert report["job_id"] == job["id"]

    model, cfg = load_model(model_path)
    assert cfg.input_shape == [8, 8] and cfg.num_classes == 10
    _, test = load_builtin("digits", tmp_path / "cache")
    assert accuracy(predict_logits(model, test.x, torch.device("cpu")), test.y) == pytest.approx(
        result["test_accuracy"]
    )


def test_download_redirects_to_a_presigned_url_that_expires_within_15_minutes(stack, acme, teacher_job):
    import httpx

    response = httpx.get(
        f"{stack.url}/v1/jobs/{teacher_job['id']}/artifacts/model.safetensors",
        headers={"Authorization": f"Bearer {acme.api_key}"},
    )
    assert response.status_code == 307
    location = response.headers["location"]
    assert location.startswith(stack.settings.s3_endpoint_url)
    assert "X-Amz-Expires=" in location
    expires = int(location.split("X-Amz-Expires=")[1].split("&")[0])
    assert 0 < expires <= 900


def test_distil_a_student_with_transfer_set_and_reuse_it_as_a_teacher(acme, teacher_job, tmp_path):
    x, y = digits_arrays()
    transfer = acme.upload_file(write(tmp_path, "transfer.npz", npz_bytes(x[:600] + 0.05)), "dataset")
    validation = acme.upload_file(write(tmp_path, "val.npz", npz_bytes(x[-300:], y[-300:])), "dataset")
    spec = {
        "name": "digits-student",
        "data": {
            "train": {"builtin": "digits"},
            "validation": {"file": validation["id"]},
            "transfer": {"file": transfer["id"]},
        },
        "model": {"arch": "mlp", "hidden": [16]},
        "teacher": {"job": teacher_job["id"]},
        "distillation": {"temperature": 4.0, "alpha": 0.9},
        "training": {"epochs": 3, "batch_size": 64, "learning_rate": 0.003, "seed": 0},
    }
    student = acme.wait(acme.create_job(spec)["id"], poll_interval=0.3, timeout=300)
    assert student["status"] == "succeeded", student["error"]
    result = student["result"]
    for key in ("test_accuracy", "parameters", "teacher_test_accuracy", "teacher_parameters"):
        assert key in result
    assert 0.0 <= result["agreement_with_teacher"] <= 1.0
    assert result["parameters"] < result["teacher_parameters"]
    data_event = next(e for e in acme.iter_events(student["id"]) if e["message"] == "data loaded")
    assert data_event["data"]["transfer_examples"] == 600
    assert data_event["data"]["validation_examples"] == 300

    # The student's file is a model in its own right: upload it and distil from it.
    model_path = acme.download_artifact(student["id"], "model.safetensors", tmp_path)
    uploaded = acme.upload_file(model_path, "model")
    assert uploaded["metadata"]["config"]["model"]["hidden"] == [16]
    spec2 = {**spec, "name": "grand-student", "teacher": {"file": uploaded["id"]}, "model": {"hidden": [8]}}
    spec2["training"] = {**spec["training"], "epochs": 1}
    grand = acme.wait(acme.create_job(spec2)["id"], poll_interval=0.3, timeout=300)
    assert grand["status"] == "succeeded", grand["error"]
    assert grand["result"]["teacher_test_accuracy"] == pytest.approx(result["test_accuracy"])


def test_cancel_a_running_job(acme):
    spec = {**TEACHER, "name": "long", "training": {**TEACHER["training"], "epochs": 500}}
    job = acme.create_job(spec)
    from helpers import wait_for

    wait_for(lambda: acme.get_job(job["id"])["progress"]["step"] > 0, timeout=120, interval=0.2)
    assert acme.cancel_job(job["id"])["status"] in {"running", "cancelled"}
    final = acme.wait(job["id"], poll_interval=0.2, timeout=60)
    assert final["status"] == "cancelled"
    assert final["progress"]["epoch"] < 500
    assert [e["message"] for e in acme.iter_events(job["id"])][-1] == "job cancelled"
    assert acme.list_artifacts(job["id"])["data"] == []
    with pytest.raises(DistillError) as excinfo:
        acme.cancel_job(job["id"])
    assert excinfo.value.status == 409


def test_a_duplicate_message_does_not_train_twice(stack, acme):
    from helpers import wait_for

    from distill.queue import enqueue_job, make_celery

    spec = {**TEACHER, "name": "dup", "model": {"arch": "mlp", "hidden": [8]}, "training": {"epochs": 1}}
    job = acme.create_job(spec)
    celery = make_celery(stack.settings)
    enqueue_job(celery, job["id"])  # the same message again, as a broker redelivery would
    final = acme.wait(job["id"], poll_interval=0.3, timeout=120)
    assert final["status"] == "succeeded"
    import redis

    queue = redis.Redis.from_url(stack.settings.broker_url)
    wait_for(lambda: queue.llen(stack.settings.queue_name) == 0, timeout=30)
    wait_for(lambda: f"job {job['id']}: not claimed" in stack.worker_log.read_text(), timeout=30)
    started = [e for e in acme.iter_events(job["id"]) if e["message"].startswith("job started")]
    assert len(started) == 1
    engine = make_engine(stack.settings.database_url)
    with make_session_factory(engine)() as session:
        assert session.scalar(select(Job.attempts).where(Job.id == job["id"])) == 1
    engine.dispose()


def test_a_job_whose_input_was_deleted_fails_with_a_message_that_says_what_to_fix(acme, tmp_path):
    from helpers import wait_for

    x, y = digits_arrays()
    data = acme.upload_file(write(tmp_path, "d.npz", npz_bytes(x[:200], y[:200])), "dataset")
    # Keep the (single) worker busy so the job is still queued when its file goes away.
    blocker = acme.create_job({**TEACHER, "name": "blocker", "training": {"epochs": 500}})
    wait_for(lambda: acme.get_job(blocker["id"])["status"] == "running", timeout=120, interval=0.2)
    job = acme.create_job({"data": {"train": {"file": data["id"]}}, "training": {"epochs": 1}})
    acme.delete_file(data["id"])
    acme.cancel_job(blocker["id"])
    final = acme.wait(job["id"], poll_interval=0.3, timeout=120)
    assert final["status"] == "failed"
    assert final["error"]["code"] == "missing_input"
    assert "data.train.file" in final["error"]["message"]
    assert "deleted" in final["error"]["message"]
    assert [e["level"] for e in acme.iter_events(job["id"])][-1] == "error"


def test_a_teacher_whose_weights_do_not_match_its_config_fails_the_job(acme, tmp_path):
    from distill.nets import build_model
    from distill.spec import MLPConfig, StoredModelConfig
    from worker.engine.export import model_to_safetensors

    real = StoredModelConfig(model=MLPConfig(hidden=[16]), input_shape=[8, 8], num_classes=10)
    blob = model_to_safetensors(build_model(real), real)
    blob = blob.replace(b'\\"hidden\\":[16]', b'\\"hidden\\":[32]')  # same length: the header stays valid
    assert b'\\"hidden\\":[32]' in blob
    teacher = acme.upload_file(write(tmp_path, "liar.safetensors", blob), "model")
    job = acme.create_job(
        {
            "data": {"train": {"builtin": "digits"}},
            "teacher": {"file": teacher["id"]},
            "training": {"epochs": 1},
        }
    )
    final = acme.wait(job["id"], poll_interval=0.3, timeout=120)
    assert final["status"] == "failed"
    assert final["error"]["code"] == "invalid_model"
    assert final["error"]["message"].startswith("teacher.file:")
