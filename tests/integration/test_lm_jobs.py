"""causal_lm jobs through the REST API and a real worker: an arithmetic JSONL dataset; a teacher-less job
fine-tunes an uploaded tiny GPT-2 into a teacher; a white-box job distils it into a student of under a
quarter of its parameters (top-k teacher cache); the student's model.hf.zip loads with from_pretrained
and generates. Tiny models and few steps, so it runs in well under a minute on a CPU."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from lm_support import archive, char_tokenizer, tiny_causal_lm, unpack

from distill.client.sdk import Client, DistillError

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def acme(stack) -> Client:
    return stack.client("acme-lm")


def arithmetic(n: int, seed: int) -> list[dict[str, str]]:
    rng = random.Random(seed)
    return [
        {"prompt": f"{a}+{b}=", "completion": str(a + b)}
        for a, b in ((rng.randrange(10), rng.randrange(10)) for _ in range(n))
    ]


def run(client: Client, spec: dict) -> dict:
    job = client.wait(client.create_job(spec)["id"], poll_interval=0.3, timeout=600)
    assert job["status"] == "succeeded", job["error"]
    return job


def test_fine_tune_a_teacher_then_distil_a_student(acme: Client, tmp_path: Path) -> None:
    path = tmp_path / "sums.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in arithmetic(300, seed=0)))
    data = acme.upload_file(path)
    assert data["metadata"]["kind"] == "lm" and data["metadata"]["examples"] == 300
    tok = char_tokenizer()
    start_path = tmp_path / "start.zip"
    start_path.write_bytes(archive(tiny_causal_lm(tok, layers=2, hidden=64), tok))
    start = acme.upload_file(start_path, purpose="model")

    teacher = run(
        acme,
        {
            "task": "causal_lm",
            "data": {"train": {"file": data["id"]}},
            "model": {"arch": "pretrained", "file": start["id"], "max_length": 12},
            "training": {"epochs": 5, "batch_size": 16, "learning_rate": 0.003},
        },
    )
    assert teacher["result"]["token_accuracy"] > 0.5, teacher["result"]

    spec = {
        "task": "causal_lm",
        "data": {"train": {"file": data["id"]}},
        "teacher": {"job": teacher["id"]},
        "model": {"arch": "gpt2", "n_layer": 1, "n_embd": 32, "n_head": 2, "max_length": 12},
        "distillation": {"losses": [{"type": "forward_kl", "weight": 0.9}, {"type": "ce", "weight": 0.1}]},
        "training": {"epochs": 1, "batch_size": 16, "learning_rate": 0.003},
    }
    student = run(acme, spec)
    result = student["result"]
    assert result["parameters"] * 4 <= result["teacher_parameters"]
    assert result["teacher_cache_hit"] is False and result["teacher_cache_bytes_per_token"] <= 128
    assert result["teacher_exact_match"] == pytest.approx(teacher["result"]["exact_match"])
    names = {a["name"] for a in acme.list_artifacts(student["id"])["data"]}
    assert {"model.hf.zip", "report.json", "curves.svg"} <= names

    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    blob = acme.download_artifact(student["id"], "model.hf.zip", tmp_path / "student.zip").read_bytes()
    unpack(blob, tmp_path / "student")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "student")
    loaded_tok = PreTrainedTokenizerFast.from_pretrained(str(tmp_path / "student"))
    out = model.generate(**loaded_tok("3+4=", return_tensors="pt"), max_new_tokens=3, do_sample=False)
    assert out.shape[1] > 4

    # a second student with the same teacher and data: the teacher's top-k comes from the cache
    again = run(acme, {**spec, "training": {**spec["training"], "seed": 1}})
    assert again["result"]["teacher_cache_hit"] is True
    report = json.loads(acme.read_artifact(again["id"], "report.json"))
    assert report["teacher_cache"]["teacher_compute_skipped"] == 1.0


def test_submission_refuses_what_a_causal_lm_job_cannot_use(acme: Client, tmp_path: Path) -> None:
    path = tmp_path / "sums.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in arithmetic(10, seed=1)))
    data = acme.upload_file(path)
    with pytest.raises(DistillError) as exc:
        acme.create_job(
            {
                "task": "causal_lm",
                "data": {"train": {"file": data["id"]}},
                "model": {"arch": "gpt2"},
                "teacher": {"job": "job_x"},
                "baseline": True,
            }
        )
    assert exc.value.status == 422 and exc.value.field == "baseline"
    with pytest.raises(DistillError) as exc:  # an lm dataset in a classification job
        acme.create_job({"data": {"train": {"file": data["id"]}}})
    assert exc.value.status == 422 and exc.value.field == "data.train"
