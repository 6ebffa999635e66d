"""The engine's methods through the REST API and a real worker: combined losses, several teachers, the
teacher-output cache, the from-scratch baseline, "auto" hyperparameters and ONNX/TorchScript exports."""

from __future__ import annotations

import json

import httpx
import pytest

from distill.client.sdk import Client

pytestmark = pytest.mark.integration

DIGITS = {"builtin": "digits"}


@pytest.fixture(scope="module")
def acme(stack) -> Client:
    return stack.client("acme-methods")


def run(client: Client, spec: dict) -> dict:
    job = client.wait(client.create_job(spec)["id"], poll_interval=0.3, timeout=300)
    assert job["status"] == "succeeded", job["error"]
    return job


def report_of(client: Client, job: dict, tmp_path) -> dict:
    return json.loads(client.download_artifact(job["id"], "report.json", tmp_path / job["id"]).read_text())


@pytest.fixture(scope="module")
def teachers(acme) -> list[dict]:
    specs = [
        {"model": {"arch": "cnn", "channels": [16, 32]}, "training": {"epochs": 4, "learning_rate": 0.005}},
        {
            "model": {"arch": "mlp", "hidden": [64]},
            "training": {"epochs": 4, "learning_rate": 0.005, "seed": 1},
        },
    ]
    return [run(acme, {"data": {"train": DIGITS}, **spec}) for spec in specs]


def test_combined_losses_run_and_report_each_part(acme, teachers):
    losses = [
        {"type": "kd", "weight": 0.5},
        {"type": "dkd", "weight": 0.5, "beta": 2.0},
        {"type": "logit_mse", "weight": 0.1},
        {"type": "hint", "weight": 0.1, "student_layer": "1", "teacher_layer": "4"},
        {"type": "ce", "weight": 0.2},
    ]
    job = run(
        acme,
        {
            "data": {"train": DIGITS},
            "model": {"hidden": [32]},
            "teacher": {"job": teachers[0]["id"]},
            "distillation": {"temperature": 3.0, "losses": losses},
            "training": {"epochs": 6, "learning_rate": 0.005},
        },
    )
    epoch = next(e for e in acme.iter_events(job["id"]) if e["message"] == "epoch 6/6")
    for part in ("kd_loss", "dkd_loss", "logit_mse_loss", "hint_loss", "ce_loss"):
        assert part in epoch["data"], epoch["data"]
    assert job["result"]["test_accuracy"] > 0.5


def test_teacher_outputs_are_computed_once_and_reused_by_later_jobs(acme, teachers, tmp_path):
    spec = {
        "data": {"train": DIGITS},
        "model": {"hidden": [16]},
        "teacher": {"job": teachers[1]["id"]},
        "training": {"epochs": 1},
    }
    first = run(acme, spec)
    second = run(acme, {**spec, "model": {"hidden": [24]}, "training": {"epochs": 2, "seed": 3}})
    first_report, second_report = report_of(acme, first, tmp_path), report_of(acme, second, tmp_path)
    assert first_report["teacher_cache"]["hit"] is False
    assert second_report["teacher_cache"]["hit"] is True
    assert first_report["teacher_cache"]["key"] == second_report["teacher_cache"]["key"]
    assert second["result"]["teacher_cache_hit"] is True
    messages = [e["message"] for e in acme.iter_events(second["id"])]
    assert "teacher outputs reused from the cache: the teachers did not run" in messages
    # Another teacher, or other inputs, is another entry.
    third = run(acme, {**spec, "teacher": {"job": teachers[0]["id"]}})
    assert report_of(acme, third, tmp_path)["teacher_cache"]["hit"] is False


def test_several_teachers_are_mixed_with_their_weights(acme, teachers, tmp_path):
    job = run(
        acme,
        {
            "data": {"train": DIGITS},
            "model": {"hidden": [32]},
            "teacher": [{"job": teachers[0]["id"], "weight": 3}, {"job": teachers[1]["id"], "weight": 1}],
            "training": {"epochs": 2},
        },
    )
    result = job["result"]
    assert result["teacher_parameters"] == sum(t["result"]["parameters"] for t in teachers)
    report = report_of(acme, job, tmp_path)
    assert report["teacher"]["weights"] == [3, 1]
    assert 0.0 <= result["agreement_with_teacher"] <= 1.0


def test_baseline_auto_and_exports_in_one_job(stack, acme, teachers, tmp_path):
    job = run(
        acme,
        {
            "data": {"train": DIGITS},
            "model": {"hidden": [16]},
            "teacher": {"job": teachers[0]["id"]},
            "distillation": {"temperature": "auto", "alpha": 0.9, "auto_budget": 2},
            "training": {"epochs": 4},
            "baseline": True,
            "export": ["onnx", "torchscript"],
        },
    )
    result = job["result"]
    for key in ("baseline_test_accuracy", "gain_over_baseline", "ece", "compression_ratio", "speedup"):
        assert key in result, key
    assert result["chosen_temperature"] in (4.0, 2.0)
    names = {a["name"] for a in acme.list_artifacts(job["id"])["data"]}
    assert {"model.safetensors", "report.json", "model.onnx", "model.torchscript.pt", "curves.svg"} <= names
    report = report_of(acme, job, tmp_path)
    assert len(report["hyperparameters"]["trials"]) == 2
    assert report["exports"]["onnx"]["check"]["top1_agreement"] == 1.0
    assert report["baseline"]["test_accuracy"] == result["baseline_test_accuracy"]
    trials = [e for e in acme.iter_events(job["id"]) if e["message"].startswith("auto trial")]
    assert len(trials) == 2
    # The curves: the distilled student against the baseline, the teacher as a line; a browser opens them.
    assert len(report["baseline_history"]) == len(report["history"]) == 4
    assert "val_accuracy" in report["baseline_history"][-1]
    svg = acme.download_artifact(job["id"], "curves.svg", tmp_path / "curves.svg").read_bytes()
    assert svg.startswith(b"<?xml")
    for label in (b"distilled student", b"baseline (from scratch)", b"teacher ("):
        assert label in svg, label
    redirect = httpx.get(
        f"{stack.url}/v1/jobs/{job['id']}/artifacts/curves.svg",
        headers={"Authorization": f"Bearer {acme.api_key}"},
    )
    assert redirect.status_code == 307
    presigned = httpx.get(redirect.headers["location"])
    assert presigned.status_code == 200 and presigned.content == svg
    assert presigned.headers["content-type"] == "image/svg+xml"
    assert presigned.headers["content-disposition"] == 'inline; filename="curves.svg"'
