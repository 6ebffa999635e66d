"""``distill serve-model``: the OpenAI-compatible server on a loopback port, called with httpx (and the
``openai`` package when it is installed), streaming and not, with a model trained in the test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from lm_support import pack_folder
from serving_support import SUMS, free_port, running, sum_answer, sum_prompt

from distill.serving import ChatModel, build_app, extract_model_zip, load_model_dir

NAME = "sum-teacher"


@pytest.fixture(scope="module")
def chat_model(sum_teacher_dir: Path) -> ChatModel:
    model, tokenizer = load_model_dir(sum_teacher_dir)
    return ChatModel(model, tokenizer, NAME)


@pytest.fixture(scope="module")
def base_url(chat_model: ChatModel) -> Iterator[str]:
    with running(build_app(chat_model)) as url:
        yield url


def ask(base_url: str, content: str, **extra: Any) -> httpx.Response:
    body = {"model": NAME, "messages": [{"role": "user", "content": content}], "temperature": 0, **extra}
    return httpx.post(f"{base_url}/v1/chat/completions", json=body, timeout=60)


def stream(base_url: str, content: str, **extra: Any) -> list[Any]:
    """The stream's events: each ``data:`` line parsed, ``[DONE]`` kept as the string."""
    body = {
        "model": NAME,
        "messages": [{"role": "user", "content": content}],
        "temperature": 0,
        "stream": True,
    }
    events: list[Any] = []
    with httpx.stream("POST", f"{base_url}/v1/chat/completions", json={**body, **extra}, timeout=60) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                data = line.removeprefix("data: ")
                events.append(data if data == "[DONE]" else json.loads(data))
    return events


def test_models_lists_the_served_model(base_url: str) -> None:
    answer = httpx.get(f"{base_url}/v1/models").json()
    assert answer["object"] == "list"
    assert [m["id"] for m in answer["data"]] == [NAME]


def test_greedy_answers_are_the_trained_models_with_usage(base_url: str, chat_model: ChatModel) -> None:
    right = 0
    for a, b in SUMS[::7]:
        response = ask(base_url, sum_prompt(a, b), max_tokens=40)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["object"] == "chat.completion" and body["model"] == NAME
        (choice,) = body["choices"]
        assert choice["message"]["role"] == "assistant"
        assert choice["finish_reason"] == "stop"
        reasoning, answer = sum_answer(a, b)
        right += choice["message"]["content"] == f"<think>{reasoning}</think>{answer}"
        prompt_ids = chat_model.prompt_ids(chat_model_messages(sum_prompt(a, b)))
        completion_ids = chat_model.tokenizer(choice["message"]["content"], add_special_tokens=False)[
            "input_ids"
        ]
        usage = body["usage"]
        assert usage["prompt_tokens"] == len(prompt_ids)
        assert usage["completion_tokens"] == len(completion_ids)
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert right >= 0.8 * len(SUMS[::7])  # the model trained in the test answers, not a canned reply


def chat_model_messages(content: str) -> list[Any]:
    from distill.serving import ChatMessage

    return [ChatMessage(role="user", content=content)]


def test_stream_gives_the_same_text_as_the_plain_answer(base_url: str) -> None:
    plain = ask(base_url, "7+8", max_tokens=40).json()
    events = stream(base_url, "7+8", max_tokens=40, stream_options={"include_usage": True})
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == plain["choices"][0]["message"]["content"]
    assert len([c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]) > 3
    finals = [
        c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]
    ]
    assert finals == ["stop"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == plain["usage"]


def test_stop_sequences_and_max_tokens(base_url: str) -> None:
    body = ask(base_url, "3+4", stop=["</think>"], max_tokens=40).json()
    assert body["choices"][0]["message"]["content"] == "<think>3+4=7"
    assert body["choices"][0]["finish_reason"] == "stop"
    events = stream(base_url, "3+4", stop="</think>", max_tokens=40)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in events[:-1] if c["choices"])
    assert text == "<think>3+4=7"  # the held-back start of the stop sequence never went out
    short = ask(base_url, "3+4", max_tokens=3).json()
    assert short["choices"][0]["finish_reason"] == "length"
    assert short["usage"]["completion_tokens"] == 3
    assert short["choices"][0]["message"]["content"] == "<th"


def test_sampling_with_a_seed_is_repeatable(base_url: str) -> None:
    first = ask(base_url, "2+2", temperature=1.5, top_p=0.9, seed=7, max_tokens=20).json()
    again = ask(base_url, "2+2", temperature=1.5, top_p=0.9, seed=7, max_tokens=20).json()
    assert first["choices"][0]["message"]["content"] == again["choices"][0]["message"]["content"]


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"model": "other", "messages": [{"role": "user", "content": "1+1"}]}, 404, "model"),
        ({"model": NAME, "messages": [{"role": "user", "content": "1+1"}], "n": 2}, 400, "n"),
        ({"model": NAME, "messages": []}, 400, "messages"),
        (
            {"model": NAME, "messages": [{"role": "user", "content": "1+1"}], "temperature": 3},
            400,
            "temperature",
        ),
        ({"model": NAME, "messages": [{"role": "user", "content": "1" * 200}]}, 400, "messages"),
    ],
)
def test_errors_have_the_openai_shape(base_url: str, body: dict[str, Any], status: int, param: str) -> None:
    response = httpx.post(f"{base_url}/v1/chat/completions", json=body, timeout=60)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["message"] and error["type"] == "invalid_request_error"


def test_a_served_key_is_required_when_set(chat_model: ChatModel) -> None:
    with running(build_app(chat_model, api_key="sk-serve")) as url:
        assert httpx.get(f"{url}/v1/models").status_code == 401
        assert httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer nope"}).status_code == 401
        assert httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer sk-serve"}).status_code == 200


def test_the_openai_package_talks_to_it(base_url: str) -> None:
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused")
    answer = client.chat.completions.create(
        model=NAME, messages=[{"role": "user", "content": "4+5"}], temperature=0, max_tokens=40
    )
    streamed = client.chat.completions.create(
        model=NAME, messages=[{"role": "user", "content": "4+5"}], temperature=0, max_tokens=40, stream=True
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in streamed if chunk.choices)
    assert text == answer.choices[0].message.content


def test_unsafe_archives_are_refused(tmp_path: Path, sum_teacher_dir: Path) -> None:
    import zipfile

    from distill.serving import ServingError

    good = tmp_path / "model.hf.zip"
    good.write_bytes(pack_folder(sum_teacher_dir, prefix="model/"))
    assert (extract_model_zip(good, tmp_path / "out") / "config.json").is_file()
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("../escape.txt", "x")
    with pytest.raises(ServingError, match=r"\.\."):
        extract_model_zip(bad, tmp_path / "bad")
    assert not (tmp_path / "escape.txt").exists()


def test_the_command_serves_a_model_dir(sum_teacher_dir: Path) -> None:
    port = free_port()
    env = {**os.environ, "DISTILL_SERVE_API_KEY": ""}
    command = [sys.executable, "-m", "distill.cli", "serve-model", "--model-dir", str(sum_teacher_dir)]
    process = subprocess.Popen(
        [*command, "--port", str(port), "--name", NAME], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                models = httpx.get(f"http://127.0.0.1:{port}/v1/models").json()
                break
            except httpx.TransportError:
                assert process.poll() is None, process.stderr.read() if process.stderr else ""
                assert time.monotonic() < deadline, "serve-model did not start"
                time.sleep(0.2)
        assert models["data"][0]["id"] == NAME
        assert ask(f"http://127.0.0.1:{port}", "1+2", max_tokens=40).json()["choices"][0]["message"][
            "content"
        ]
    finally:
        process.terminate()
        process.wait(timeout=30)
