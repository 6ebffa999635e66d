"""Text jobs through the REST API and a real worker: an embedding student of the builtin MiniLM, and a text
classifier teacher job with a distilled student. Small on purpose (a few hundred template sentences, one
epoch, 32 tokens, a 1-layer student) so that it runs in well under a minute on a CPU."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch

from distill.client.sdk import Client
from worker.engine.text import TextClassifier, TextEncoder, load_text_model
from worker.engine.text_data import sentiment_examples, template_sentences

pytestmark = pytest.mark.integration

MINILM = {"builtin": "all-minilm-l6-v2"}
STUDENT = {"arch": "encoder", "layers": 1, "max_length": 32}


@pytest.fixture(scope="module")
def acme(stack) -> Client:
    return stack.client("acme-text")


def write_jsonl(path: Path, texts: list[str], labels: list[int] | None = None) -> Path:
    rows = [{"text": t, **({"label": labels[i]} if labels is not None else {})} for i, t in enumerate(texts)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def run(client: Client, spec: dict) -> dict:
    job = client.wait(client.create_job(spec)["id"], poll_interval=0.3, timeout=300)
    assert job["status"] == "succeeded", job["error"]
    return job


def test_embedding_student_of_the_builtin_minilm(acme, tmp_path):
    data = acme.upload_file(write_jsonl(tmp_path / "sentences.jsonl", template_sentences(300, seed=1)))
    assert data["metadata"]["kind"] == "text"
    spec = {
        "data": {"train": {"file": data["id"]}},
        "model": STUDENT,
        "teacher": MINILM,
        "task": "embedding",
        "training": {"epochs": 1, "batch_size": 16, "learning_rate": 0.002},
        "export": ["onnx"],
    }
    job = run(acme, spec)
    result = job["result"]
    assert result["cosine_to_teacher"] > 0.5, result
    assert result["parameters"] < result["teacher_parameters"]
    assert result["speedup"] > 1.0
    assert result["teacher_cache_hit"] is False
    names = {a["name"] for a in acme.list_artifacts(job["id"])["data"]}
    assert names == {"model.safetensors", "model.onnx", "report.json", "curves.svg"}
    path = acme.download_artifact(job["id"], "model.safetensors", tmp_path / "student.safetensors")
    model, tokenizer, meta = load_text_model(path)
    assert isinstance(model, TextEncoder) and meta.task == "embedding" and meta.max_length == 32
    assert model.config.num_hidden_layers == 1
    assert tokenizer("a test")["input_ids"][0] == tokenizer.cls_token_id
    report = json.loads(acme.download_artifact(job["id"], "report.json", tmp_path / "r.json").read_text())
    assert report["student"]["val_cosine"] == pytest.approx(result["cosine_to_teacher"], abs=1e-5)
    assert report["data"]["validation_examples"] == 60 and report["data"]["held_out_validation"] is True
    assert report["teacher"]["cpu_latency_seconds"] > report["student"]["cpu_latency_seconds"]
    svg = acme.download_artifact(job["id"], "curves.svg", tmp_path / "curves.svg").read_bytes()
    assert svg.startswith(b"<?xml") and b"validation cosine to the teacher" in svg
    onnx_check = report["exports"]["onnx"]["check"]
    assert onnx_check["ok"] and onnx_check["examples"] == 60 and onnx_check["min_cosine"] > 0.9999
    print(f"text embedding onnx: max difference {onnx_check['max_abs_diff']:.2e}")
    # The same teacher on the same texts: its embeddings come from the cache.
    again = run(acme, {**spec, "training": {**spec["training"], "seed": 1}})
    assert again["result"]["teacher_cache_hit"] is True
    messages = [e["message"] for e in acme.iter_events(again["id"])]
    assert "teacher outputs reused from the cache: the teacher did not run" in messages


@pytest.fixture(scope="module")
def sentiment(acme, tmp_path_factory) -> tuple[str, dict]:
    """A labeled review set and a text classifier teacher job trained on it (MiniLM frozen + a head)."""
    texts, labels = sentiment_examples(200, seed=2)
    path = write_jsonl(tmp_path_factory.mktemp("sentiment") / "reviews.jsonl", texts, labels)
    data = acme.upload_file(path)
    teacher = run(
        acme,
        {
            "data": {"train": {"file": data["id"]}},
            "model": {"arch": "encoder", "layers": 6, "max_length": 32},
            "training": {"epochs": 10, "batch_size": 16, "learning_rate": 0.01},
        },
    )
    return data["id"], teacher


def test_text_classifier_teacher_job_then_a_distilled_student(acme, sentiment, tmp_path):
    data_id, teacher = sentiment
    assert teacher["result"]["test_accuracy"] >= 0.7, teacher["result"]
    student = run(
        acme,
        {
            "data": {"train": {"file": data_id}},
            "model": STUDENT,
            "teacher": {"job": teacher["id"]},
            "training": {"epochs": 2, "batch_size": 16, "learning_rate": 0.001},
        },
    )
    result = student["result"]
    for key in ("test_accuracy", "parameters", "teacher_test_accuracy", "agreement_with_teacher", "speedup"):
        assert key in result, key
    assert result["teacher_test_accuracy"] == pytest.approx(teacher["result"]["test_accuracy"], abs=1e-6)
    assert result["parameters"] < result["teacher_parameters"]
    path = acme.download_artifact(student["id"], "model.safetensors", tmp_path / "student.safetensors")
    model, _, meta = load_text_model(path)
    assert isinstance(model, TextClassifier) and model.num_classes == 2 and meta.task == "classification"
    # The same teacher with kd + attention-map transfer: the epoch events report each term.
    attention = run(
        acme,
        {
            "data": {"train": {"file": data_id}},
            "model": STUDENT,
            "teacher": {"job": teacher["id"]},
            "distillation": {"losses": [{"type": "kd", "weight": 0.7}, {"type": "attention", "weight": 0.3}]},
            "training": {"epochs": 1, "batch_size": 16, "learning_rate": 0.001},
        },
    )
    epochs = [e for e in acme.iter_events(attention["id"]) if e["message"].startswith("epoch ")]
    assert epochs and "attention_loss" in epochs[-1]["data"] and "kd_loss" in epochs[-1]["data"], epochs
    assert epochs[-1]["data"]["attention_loss"] > 0


def test_text_student_with_a_baseline_and_exports(acme, sentiment, tmp_path):
    data_id, teacher = sentiment
    job = run(
        acme,
        {
            "data": {"train": {"file": data_id}},
            "model": STUDENT,
            "teacher": {"job": teacher["id"]},
            "baseline": True,
            "export": ["onnx", "torchscript"],
            "training": {"epochs": 2, "batch_size": 16, "learning_rate": 0.001},
        },
    )
    result = job["result"]
    report = json.loads(acme.download_artifact(job["id"], "report.json", tmp_path / "r.json").read_text())
    # The baseline: the same 1-layer student from random weights, on the labels alone; compared as in
    # tabular jobs (points gained, share of the teacher-baseline gap recovered).
    baseline = report["baseline"]
    assert baseline["init"] == "random" and baseline["parameters"] == result["parameters"]
    assert "from scratch" in baseline["description"]
    assert result["baseline_test_accuracy"] == pytest.approx(baseline["test_accuracy"])
    gain = 100 * (result["test_accuracy"] - result["baseline_test_accuracy"])
    assert result["gain_over_baseline"] == pytest.approx(gain, abs=1e-3)
    comparison = report["comparison"]
    assert comparison["gain_over_baseline_points"] == pytest.approx(gain, abs=1e-3)
    gap = result["teacher_test_accuracy"] - result["baseline_test_accuracy"]
    if gap > 0:
        assert result["gap_recovered"] == pytest.approx(gain / 100 / gap, abs=1e-3)
    assert comparison["baseline_agreement_with_teacher"] is not None
    assert comparison["speedup"] > 1 and comparison["compression_ratio"] > 1
    messages = [e["message"] for e in acme.iter_events(job["id"])]
    assert "training the baseline: the same student from scratch, on labels only" in messages
    # The curves: the distilled student, the baseline (its history is in the report) and the teacher.
    assert [row["epoch"] for row in report["baseline_history"]] == [1.0, 2.0]
    assert "baseline_history" not in report["baseline"]
    svg = acme.download_artifact(job["id"], "curves.svg", tmp_path / "curves.svg").read_bytes()
    assert svg.startswith(b"<?xml")
    assert b"distilled student" in svg and b"baseline (from scratch)" in svg and b"teacher (" in svg
    # Exports: checked against PyTorch on the held-out texts, stored, and described in the report.
    names = {a["name"] for a in acme.list_artifacts(job["id"])["data"]}
    assert names == {"model.safetensors", "model.onnx", "model.torchscript.pt", "report.json", "curves.svg"}
    onnx_check = report["exports"]["onnx"]["check"]
    assert onnx_check["ok"] and onnx_check["examples"] == 40 and onnx_check["top1_agreement"] == 1.0
    assert report["exports"]["torchscript"]["check"]["ok"]
    path = acme.download_artifact(job["id"], "model.onnx", tmp_path / "model.onnx")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == report["exports"]["onnx"]["sha256"]
    model, tokenizer, _ = load_text_model(
        acme.download_artifact(job["id"], "model.safetensors", tmp_path / "s.safetensors")
    )
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    enc = tokenizer(["What a wonderful concert it was."], return_tensors="np")
    logits = session.run(None, {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})[0]
    torch_logits = model(torch.from_numpy(enc["input_ids"]), torch.from_numpy(enc["attention_mask"]))
    assert np.abs(logits - torch_logits.detach().numpy()).max() < 1e-4
    print(f"text onnx: max logit difference {onnx_check['max_abs_logit_diff']:.2e}")
    accuracies = (result["test_accuracy"], result["baseline_test_accuracy"], result["teacher_test_accuracy"])
    print("text accuracy: distilled {:.3f}, baseline {:.3f}, teacher {:.3f}".format(*accuracies))


def test_text_student_with_a_transfer_set(acme, sentiment, tmp_path):
    data_id, teacher = sentiment
    extra, _ = sentiment_examples(300, seed=9)
    transfer = acme.upload_file(write_jsonl(tmp_path / "extra.jsonl", extra[:100]))  # no labels
    other = acme.upload_file(write_jsonl(tmp_path / "other.jsonl", extra[100:150]))
    spec = {
        "data": {"train": {"file": data_id}, "transfer": {"file": transfer["id"]}},
        "model": STUDENT,
        "teacher": {"job": teacher["id"]},
        "training": {"epochs": 1, "batch_size": 16, "learning_rate": 0.001},
    }
    job = run(acme, spec)
    report = json.loads(acme.download_artifact(job["id"], "report.json", tmp_path / "r.json").read_text())
    assert report["data"]["transfer_examples"] == 100 and report["data"]["train_examples"] == 160
    cache = report["teacher_cache"]
    assert cache["hit"] is False and cache["examples"] == 260 and cache["transfer_examples"] == 100
    epochs = [e for e in acme.iter_events(job["id"]) if e["message"].startswith("epoch ")]
    assert epochs[-1]["data"]["kd_loss"] > 0 and epochs[-1]["data"]["ce_loss"] > 0
    assert job["result"]["test_accuracy"] >= 0.5
    # Another transfer set: other teacher outputs, so another cache entry. With "auto" temperature and
    # alpha: two short trials pick them, as in tabular jobs.
    again = run(
        acme,
        {
            **spec,
            "data": {**spec["data"], "transfer": {"file": other["id"]}},
            "distillation": {"temperature": "auto", "alpha": "auto", "auto_budget": 2},
        },
    )
    assert again["result"]["teacher_cache_hit"] is False
    second = json.loads(acme.download_artifact(again["id"], "report.json", tmp_path / "r2.json").read_text())
    assert second["teacher_cache"]["key"] != cache["key"] and second["data"]["transfer_examples"] == 50
    chosen = second["hyperparameters"]
    assert len(chosen["trials"]) == 2 and "trial runs" in chosen["why"]
    assert (again["result"]["chosen_temperature"], again["result"]["chosen_alpha"]) in {
        (4.0, 0.9),
        (2.0, 0.9),
    }
    messages = [e["message"] for e in acme.iter_events(again["id"])]
    assert sum(m.startswith("auto trial") for m in messages) == 2 and any(
        m.startswith("auto chose") for m in messages
    )
