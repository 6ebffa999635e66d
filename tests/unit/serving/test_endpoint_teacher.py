"""Collecting a served teacher's answers (worker/endpoint_teacher.py): against the real ``serve-model`` app
with a model trained in the test, its answers and ``<think>`` reasoning kept, bounded concurrency,
retries on 429/5xx/timeouts, a refused key, and progress kept across a stop (nothing asked twice)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from serving_support import SUMS, running, sum_answer, sum_prompt

from distill.serving import ChatModel, build_app, load_model_dir
from distill.spec import EndpointSettings
from distill.storage import LocalStore
from worker.endpoint_teacher import (
    AnswerLog,
    EndpointFailure,
    EndpointTeacher,
    Prompt,
    answers_jsonl,
    collect,
    split_reasoning,
    training_records,
)

NAME = "sum-teacher"
KEY = "sk-test-very-secret-0123456789"
PROMPTS = [Prompt.from_record({"prompt": sum_prompt(a, b)}) for a, b in SUMS[:24]]


class Recorder:
    """ASGI middleware on the real app: counts chat requests per prompt, tracks how many run at once, and
    can fail the first ``fail_first`` requests of each prompt (429/503 or a slow answer)."""

    def __init__(self, app: Any, *, fail_first: int = 0, status: int = 503, delay_s: float = 0.0) -> None:
        self.app, self.fail_first, self.status, self.delay_s = app, fail_first, status, delay_s
        self.calls: Counter[str] = Counter()
        self.in_flight = self.peak = 0
        self.lock = threading.Lock()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/v1/chat/completions":
            return await self.app(scope, receive, send)
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        prompt = json.loads(body)["messages"][-1]["content"]
        with self.lock:
            self.calls[prompt] += 1
            failing = self.calls[prompt] <= self.fail_first
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        left = False

        def leave() -> (
            None
        ):  # once per request, before its last byte goes out (the client may then send more)
            nonlocal left
            with self.lock:
                if not left:
                    left, self.in_flight = True, self.in_flight - 1

        async def answered(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                leave()
            await send(message)

        async def replay() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        try:
            if failing and self.delay_s:
                await asyncio.sleep(self.delay_s)
            elif failing:
                headers = [(b"retry-after", b"0")]
                await answered({"type": "http.response.start", "status": self.status, "headers": headers})
                await answered({"type": "http.response.body", "body": b'{"error": {"message": "busy"}}'})
                return None
            await asyncio.sleep(0.01)  # let requests overlap, so the concurrency bound is visible
            return await self.app(scope, replay, answered)
        finally:
            leave()


@pytest.fixture(scope="module")
def chat_model(sum_teacher_dir: Path) -> ChatModel:
    model, tokenizer = load_model_dir(sum_teacher_dir)
    return ChatModel(model, tokenizer, NAME)


@contextlib.contextmanager
def served(chat: ChatModel, *, api_key: str | None = KEY, **faults: Any) -> Iterator[tuple[str, Recorder]]:
    recorder = Recorder(build_app(chat, api_key=api_key), **faults)
    with running(recorder) as url:
        yield f"{url}/v1", recorder


def settings(base_url: str, **extra: Any) -> EndpointSettings:
    return EndpointSettings(base_url=base_url, model=NAME, api_key=KEY, max_tokens=40, **extra)


def test_answers_and_reasoning_are_the_served_models(chat_model: ChatModel, tmp_path: Path) -> None:
    answers = AnswerLog(LocalStore(tmp_path), "ten_1", "job_1")
    with served(chat_model) as (url, recorder):
        teacher = EndpointTeacher(settings(url, concurrency=3), KEY)
        seen: list[tuple[int, int]] = []
        got = collect(PROMPTS, teacher, answers, chunk_size=5, progress=lambda d, t: seen.append((d, t)))
        teacher.close()
    assert got.requested == len(PROMPTS) and got.resumed == 0
    assert sum(recorder.calls.values()) == len(PROMPTS)
    assert 1 < recorder.peak <= 3  # bounded concurrency
    assert seen[0] == (0, len(PROMPTS)) and seen[-1] == (len(PROMPTS), len(PROMPTS))
    right = 0
    for (a, b), answer in zip(SUMS[:24], got.answers, strict=True):
        direct = ask_directly(chat_model, sum_prompt(a, b))
        assert f"<think>{answer.reasoning}</think>{answer.completion}" == direct  # the server's real answer
        right += (answer.reasoning, answer.completion) == sum_answer(a, b)
    assert right >= 0.8 * len(PROMPTS)
    lines = [json.loads(line) for line in answers_jsonl(PROMPTS, got.answers).decode().splitlines()]
    assert lines[3]["prompt"] == PROMPTS[3].text
    assert (lines[3]["reasoning"], lines[3]["completion"]) == (
        got.answers[3].reasoning,
        got.answers[3].completion,
    )
    records = training_records(PROMPTS, got.answers, with_reasoning=True)
    assert records[3]["completion"] == f"<think>\n{lines[3]['reasoning']}\n</think>\n{lines[3]['completion']}"
    plain = training_records(PROMPTS, got.answers, with_reasoning=False)
    assert plain[3] == {"prompt": PROMPTS[3].text, "completion": lines[3]["completion"]}


def ask_directly(chat: ChatModel, content: str) -> str:
    from distill.serving import ChatMessage, ChatRequest

    request = ChatRequest(
        model=NAME, messages=[ChatMessage(role="user", content=content)], temperature=0, max_tokens=40
    )
    *_, final = chat.generate(request)
    return final.text


class Stop(Exception):
    pass


def test_a_stopped_collection_resumes_without_asking_again(chat_model: ChatModel, tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    with served(chat_model) as (url, recorder):
        teacher = EndpointTeacher(settings(url, concurrency=2), KEY)
        checks = 0

        def stop_soon() -> None:
            nonlocal checks
            checks += 1
            if checks == 7:
                raise Stop  # a cancel or a worker restart, mid-collection

        with pytest.raises(Stop):
            collect(PROMPTS, teacher, AnswerLog(store, "ten_1", "job_1"), chunk_size=4, check=stop_soon)
        first = sum(recorder.calls.values())
        assert 0 < first < len(PROMPTS)
        kept = AnswerLog(store, "ten_1", "job_1").load()
        assert len(kept) == first  # every answer that came back is stored, those in flight at the stop too

        again = collect(
            PROMPTS, EndpointTeacher(settings(url, concurrency=2), KEY), AnswerLog(store, "ten_1", "job_1")
        )
        assert again.resumed == len(kept) and again.requested == len(PROMPTS) - len(kept)
        assert set(recorder.calls.values()) == {1} and len(recorder.calls) == len(PROMPTS)  # none asked twice
    fresh = [ask_directly(chat_model, p.text or "") for p in PROMPTS]
    assert [f"<think>{a.reasoning}</think>{a.completion}" for a in again.answers] == fresh


@pytest.mark.parametrize("status", [429, 503])
def test_busy_answers_are_retried(chat_model: ChatModel, tmp_path: Path, status: int) -> None:
    with served(chat_model, fail_first=2, status=status) as (url, recorder):
        teacher = EndpointTeacher(settings(url, concurrency=4), KEY, max_wait_s=0.05)
        got = collect(PROMPTS[:6], teacher, AnswerLog(LocalStore(tmp_path), "ten_1", "job_1"))
    assert set(recorder.calls.values()) == {3}
    assert got.retries == 12
    assert all(a.completion for a in got.answers)


def test_timeouts_are_retried(chat_model: ChatModel, tmp_path: Path) -> None:
    with served(chat_model, fail_first=1, delay_s=3.0) as (url, recorder):
        teacher = EndpointTeacher(settings(url, concurrency=2, timeout_s=0.5), KEY, max_wait_s=0.05)
        got = collect(PROMPTS[:2], teacher, AnswerLog(LocalStore(tmp_path), "ten_1", "job_1"))
    assert set(recorder.calls.values()) == {2} and got.retries == 2


def test_retries_used_up_fail_with_a_message(chat_model: ChatModel, tmp_path: Path) -> None:
    with served(chat_model, fail_first=100) as (url, _):
        teacher = EndpointTeacher(settings(url), KEY, max_attempts=3, max_wait_s=0.01)
        with pytest.raises(EndpointFailure) as failure:
            collect(PROMPTS[:2], teacher, AnswerLog(LocalStore(tmp_path), "ten_1", "job_1"))
    assert "did not answer after 3 attempts" in failure.value.message and "503" in failure.value.message


def test_a_refused_key_fails_without_showing_it(chat_model: ChatModel, tmp_path: Path) -> None:
    with served(chat_model, api_key="sk-other") as (url, recorder):
        teacher = EndpointTeacher(settings(url), KEY)
        with pytest.raises(EndpointFailure) as failure:
            collect(PROMPTS[:3], teacher, AnswerLog(LocalStore(tmp_path), "ten_1", "job_1"))
    assert failure.value.field == "teacher.endpoint.api_key"
    assert "HTTP 401" in failure.value.message and KEY not in failure.value.message
    assert sum(recorder.calls.values()) <= 3  # not retried


def test_a_wrong_model_name_is_named(chat_model: ChatModel, tmp_path: Path) -> None:
    with served(chat_model) as (url, _):
        teacher = EndpointTeacher(EndpointSettings(base_url=url, model="gpt-9", api_key=KEY), KEY)
        with pytest.raises(EndpointFailure) as failure:
            collect(PROMPTS[:1], teacher, AnswerLog(LocalStore(tmp_path), "ten_1", "job_1"))
    assert failure.value.field == "teacher.endpoint.model" and "gpt-9" in failure.value.message


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ({"content": "42", "reasoning_content": "6*7"}, ("42", "6*7")),
        ({"content": "42", "reasoning": " 6*7 "}, ("42", "6*7")),
        ({"content": "  <think>\n6*7\n</think>\n42"}, ("42", "6*7")),
        ({"content": "42 <think>not a lead block</think>"}, ("42 <think>not a lead block</think>", None)),
        ({"content": None}, ("", None)),
    ],
)
def test_reasoning_is_split_from_the_answer(
    message: dict[str, Any], expected: tuple[str, str | None]
) -> None:
    assert split_reasoning(message) == expected


def test_messages_records_drop_the_reference_answer() -> None:
    prompt = Prompt.from_record(
        {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "1+1"},
                      {"role": "assistant", "content": "2"}]}
    )  # fmt: skip
    assert prompt.chat() == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "1+1"}]
    assert prompt.text is None
