"""Black-box distillation end to end (issue 8, items 5 and 7), through the REST API and a real worker:
a teacher causal LM is fine-tuned by a teacher-less causal_lm job, served on loopback by
``distill serve-model JOB_ID`` (which downloads its model.hf.zip through the client) behind an API key,
and used as the endpoint teacher of a black-box job. The job's ``teacher_answers.jsonl`` holds the
served model's real answers (checked against the teacher run in-process with transformers), the student's
``model.hf.zip`` loads with ``from_pretrained``, and the endpoint's key is in no answer, event, log line
or artifact of the job."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import free_port, stop_process
from lm_support import archive, char_tokenizer, tiny_causal_lm, unpack

from distill.client.sdk import Client, DistillError

pytestmark = pytest.mark.integration

KEY = "sk-blackbox-4f9a1c2e7d5b8a3f"


def chats(pairs: list[tuple[int, int]], *, answered: bool) -> list[dict[str, Any]]:
    rows = []
    for a, b in pairs:
        messages = [{"role": "user", "content": f"{a}+{b}"}]
        if answered:
            messages.append({"role": "assistant", "content": str(a + b)})
        rows.append({"messages": messages})
    return rows


def upload_jsonl(client: Client, path: Path, rows: list[dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(client.upload_file(path)["id"])


def finished(client: Client, job_id: str) -> dict[str, Any]:
    job = client.wait(job_id, poll_interval=0.3, timeout=400)
    assert job["status"] == "succeeded", job["error"]
    return job.model_dump(mode="json")


def serve_job_model(stack: Any, api_key: str, job_id: str, cache: Path) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    env = {
        **os.environ,
        **stack.env,
        "DISTILL_API_URL": stack.url,
        "DISTILL_API_KEY": api_key,
        "DISTILL_MODEL_CACHE": str(cache),
        "DISTILL_SERVE_API_KEY": KEY,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "distill.cli", "serve-model", job_id, "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 180
    while True:
        try:
            if httpx.get(f"{url}/models", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        if process.poll() is not None:
            raise AssertionError(f"serve-model exited: {process.stderr.read() if process.stderr else ''}")
        assert time.monotonic() < deadline, "serve-model did not start"
        time.sleep(0.3)


def test_a_served_teacher_teaches_a_black_box_job(stack: Any, tmp_path: Path) -> None:
    client = stack.client("acme-bb")
    tok = char_tokenizer()
    (tmp_path / "start.zip").write_bytes(archive(tiny_causal_lm(tok, layers=2, hidden=64), tok))
    start = client.upload_file(tmp_path / "start.zip", purpose="model")["id"]
    pairs = [(a, b) for a in range(10) for b in range(10)]
    sums = upload_jsonl(client, tmp_path / "sums.jsonl", chats(pairs * 3, answered=True))

    # 1. a teacher: the starting model fine-tuned on the sums (lm's teacher-less causal_lm job)
    teacher = finished(
        client,
        client.create_job(
            {
                "task": "causal_lm",
                "data": {"train": {"file": sums}},
                "model": {"arch": "pretrained", "file": start, "max_length": 24},
                "training": {"epochs": 6, "batch_size": 16, "learning_rate": 0.003},
            }
        )["id"],
    )

    # 2. served on loopback by `distill serve-model JOB_ID`, behind an API key
    process, url = serve_job_model(stack, str(client.api_key), teacher["id"], tmp_path / "cache")
    try:
        prompts = upload_jsonl(client, tmp_path / "prompts.jsonl", chats(pairs[::2], answered=False))
        spec = {
            "task": "causal_lm",
            "name": "black-box student",
            "data": {"train": {"file": prompts}},
            "teacher": {
                "endpoint": {
                    "base_url": url,
                    "model": teacher["id"],
                    "api_key": KEY,
                    "max_tokens": 8,
                    "concurrency": 4,
                }
            },
            "model": {"arch": "pretrained", "file": start, "max_length": 24},
            "training": {"epochs": 2, "batch_size": 16, "learning_rate": 0.003},
        }
        created = client.create_job(spec)
        assert created["spec"]["teacher"]["endpoint"]["api_key"] == "***"
        job = finished(client, created["id"])
    finally:
        stop_process(process)

    # 3. the answers are the served teacher's, computed again here with transformers
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    teacher_dir = unpack(client.read_artifact(teacher["id"], "model.hf.zip"), tmp_path / "teacher")
    teacher_model = AutoModelForCausalLM.from_pretrained(teacher_dir).eval()
    teacher_tok = PreTrainedTokenizerFast.from_pretrained(str(teacher_dir))
    lines = [json.loads(x) for x in client.read_artifact(job["id"], "teacher_answers.jsonl").splitlines()]
    asked = {line["messages"][0]["content"]: line for line in lines}
    assert {f"{a}+{b}" for a, b in pairs[::2]} <= set(asked)
    right = 0
    for a, b in pairs[::2]:
        text = teacher_tok.apply_chat_template(
            [{"role": "user", "content": f"{a}+{b}"}], tokenize=False, add_generation_prompt=True
        )
        ids = teacher_tok(text, return_tensors="pt", add_special_tokens=False)
        out = teacher_model.generate(**ids, max_new_tokens=8, do_sample=False)
        expected = teacher_tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
        assert asked[f"{a}+{b}"]["completion"] == expected
        right += expected == str(a + b)
    completions = [line["completion"] for line in lines]
    assert len(set(completions)) > 3 and right > 0  # a model's answers, not one canned reply
    assert job["result"]["teacher_answers"]["prompts"] == len(lines)

    # 4. the student loads with from_pretrained
    student_dir = unpack(client.read_artifact(job["id"], "model.hf.zip"), tmp_path / "student")
    student = AutoModelForCausalLM.from_pretrained(student_dir)
    assert student.num_parameters() > 0

    # 5. the key is nowhere: answers, lists, events, artifacts, the worker's log
    answers = [
        client._http.get(f"/v1/jobs/{job['id']}").text,
        client._http.get("/v1/jobs", params={"limit": 100}).text,
        client._http.get(f"/v1/jobs/{job['id']}/events", params={"limit": 1000}).text,
    ]
    for text in answers:
        assert KEY not in text
    for artifact in client.list_artifacts(job["id"])["data"]:
        assert KEY.encode() not in client.read_artifact(job["id"], artifact["name"])
    assert KEY not in stack.worker_log.read_text(errors="replace")
    events = client._http.get(f"/v1/jobs/{job['id']}/events", params={"limit": 1000}).json()["data"]
    assert any("teacher answers collected" in e["message"] for e in events)

    # 6. the stored spec cannot be sent back with its placeholder as the key
    with pytest.raises(DistillError) as refused:
        client.create_job(job["spec"])
    assert refused.value.status == 422 and refused.value.field == "teacher.endpoint.api_key"
