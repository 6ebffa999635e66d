"""A black-box teacher: collect a served model's answers to a dataset's prompts (issue 8, item 5).

The worker posts each prompt to ``{base_url}/chat/completions`` (any OpenAI-compatible server: OpenAI,
vLLM, ``distill serve-model``) with at most ``concurrency`` requests in flight, retrying with exponential
backoff and jitter (tenacity; ``Retry-After`` honoured) on 429, 5xx, timeouts and broken connections.
Answers are appended to the object store in chunks (:class:`AnswerLog`, under the job's checkpoint
prefix), so a collection stopped by a worker restart, a cancel or a hand-back resumes without sending the
answered prompts again. Each answer keeps the teacher's reasoning where the server returns it
(``reasoning_content``/``reasoning`` on the message, or a ``<think>…</think>`` block that opens the content).

The API key travels only in the ``Authorization`` header: it is never logged, never in an event, an error
message (a server's error text is scrubbed of it) or an artifact.

(Over 500 lines: the HTTP client with its retries, the bounded concurrent collection, the resumable answer
log and the records it hands the causal-LM pipeline are one contract — what is asked, kept and trained on
— and are tested together.)
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from typing import Any

import httpx
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from distill.spec import EndpointSettings
from distill.storage import ObjectStore, checkpoints_prefix
from worker.lm_inputs import LoadedLMData

log = logging.getLogger(__name__)

ANSWERS_ARTIFACT = "teacher_answers.jsonl"
RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
_THINK = re.compile(r"^\s*<think>(.*?)</think>\s*", re.DOTALL)


class EndpointFailure(Exception):
    """The endpoint cannot teach this job (a refused key, an unknown model, retries used up): ``field``
    and ``message`` say what to fix (never the key)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class _Retryable(Exception):
    def __init__(self, status: int, detail: str, retry_after: float | None) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status
        self.retry_after = retry_after


@dataclass(frozen=True)
class Prompt:
    """One dataset record's question: the chat turns sent to the teacher, and the record's ``prompt`` text
    (None for ``messages`` records)."""

    messages: tuple[tuple[str, str], ...]
    text: str | None = None

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Prompt:
        """``{"prompt": …}`` or ``{"messages": […]}`` (a final assistant turn, the reference answer, is
        dropped: the teacher writes its own)."""
        if isinstance(record.get("prompt"), str):
            return cls(messages=(("user", record["prompt"]),), text=record["prompt"])
        turns = [(str(m["role"]), str(m.get("content") or "")) for m in record["messages"]]
        while turns and turns[-1][0] == "assistant":
            turns.pop()
        if not turns:
            raise ValueError("a messages record without a turn before the assistant's answer")
        return cls(messages=tuple(turns))

    def chat(self) -> list[dict[str, str]]:
        return [{"role": role, "content": content} for role, content in self.messages]


@dataclass(frozen=True)
class Answer:
    completion: str
    reasoning: str | None
    finish_reason: str | None


def split_reasoning(message: dict[str, Any]) -> tuple[str, str | None]:
    """The answer and the reasoning of a chat-completion ``message``: ``reasoning_content`` (DeepSeek,
    vLLM) or ``reasoning`` fields, else a ``<think>…</think>`` block at the start of the content."""
    content = message.get("content") or ""
    for name in ("reasoning_content", "reasoning"):
        value = message.get(name)
        if isinstance(value, str) and value.strip():
            return content, value.strip()
    match = _THINK.match(content)
    if match:
        return content[match.end() :], match[1].strip()
    return content, None


def answer_key(index: int, prompt: Prompt, settings: EndpointSettings) -> str:
    """Names one request: the record's position and question, and what shapes the answer (model, sampling).
    A resumed collection of another dataset or model shares no key with this one."""
    body = [index, prompt.chat(), settings.base_url, settings.model, settings.max_tokens]
    body += [settings.temperature, settings.top_p]
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


class AnswerLog:
    """Collected answers as JSONL chunks under ``{job checkpoints}/teacher-answers/``: each chunk is one
    object written once (``chunk-000001.jsonl``…), so a crash leaves whole chunks only."""

    def __init__(self, store: ObjectStore, tenant_id: str, job_id: str) -> None:
        self.store = store
        self.prefix = f"{checkpoints_prefix(tenant_id, job_id)}teacher-answers/"
        self.chunks = 0

    def load(self) -> dict[str, Answer]:
        found: dict[str, Answer] = {}
        names = sorted(obj.key for obj in self.store.list(self.prefix))
        for key in names:
            for line in self.store.get_bytes(key).decode().splitlines():
                row = json.loads(line)
                found[row["key"]] = Answer(row["completion"], row["reasoning"], row["finish_reason"])
        self.chunks = len(names)
        return found

    def append(self, items: Sequence[tuple[str, Answer]]) -> None:
        if not items:
            return
        self.chunks += 1
        lines = [json.dumps({"key": key, **asdict(answer)}) for key, answer in items]
        self.store.put_bytes(
            f"{self.prefix}chunk-{self.chunks:06d}.jsonl", ("\n".join(lines) + "\n").encode()
        )


@dataclass
class Collected:
    answers: list[Answer]
    resumed: int
    """Answers read back from an earlier attempt (not asked again)."""
    requested: int
    """Prompts sent to the endpoint by this attempt."""
    retries: int
    seconds: float


class EndpointTeacher:
    """Sends prompts to one endpoint, one request per prompt, with retries (thread-safe)."""

    def __init__(
        self,
        settings: EndpointSettings,
        api_key: str | None,
        *,
        max_attempts: int = 6,
        max_wait_s: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self._key = api_key
        self.max_attempts = max_attempts
        self.max_wait_s = max_wait_s
        self.retries = 0
        self._backoff = wait_exponential(multiplier=0.5, max=max_wait_s) + wait_random(
            0, min(0.5, max_wait_s)
        )
        self._lock = threading.Lock()
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        limits = httpx.Limits(
            max_connections=settings.concurrency, max_keepalive_connections=settings.concurrency
        )
        self.client = httpx.Client(
            base_url=settings.base_url.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(settings.timeout_s, connect=min(settings.timeout_s, 10.0)),
            limits=limits,
            transport=transport,
        )

    def close(self) -> None:
        self.client.close()

    def _scrub(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    def _wait(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        backoff = min(self._backoff(state), self.max_wait_s)
        if isinstance(error, _Retryable) and error.retry_after is not None:
            return min(max(error.retry_after, backoff), self.max_wait_s)
        return backoff

    def _count_retry(self, state: RetryCallState) -> None:
        with self._lock:
            self.retries += 1
        error = state.outcome.exception() if state.outcome else None
        log.info(
            "teacher endpoint: retry %d (%s)",
            state.attempt_number,
            self._scrub(f"{type(error).__name__}: {error}"),
        )

    def ask(self, prompt: Prompt) -> Answer:
        retrying = Retrying(
            retry=retry_if_exception(
                lambda e: isinstance(e, _Retryable | httpx.TimeoutException | httpx.TransportError)
            ),
            stop=stop_after_attempt(self.max_attempts),
            wait=self._wait,
            before_sleep=self._count_retry,
            reraise=True,
        )
        try:
            return retrying(self._ask_once, prompt)
        except (_Retryable, httpx.HTTPError) as error:
            raise EndpointFailure(
                "teacher.endpoint.base_url",
                f"teacher.endpoint: {self.settings.base_url} did not answer after {self.max_attempts} "
                "attempts "
                f"({self._scrub(f'{type(error).__name__}: {error}')}); check that the server is up, or lower "
                "teacher.endpoint.concurrency",
            ) from None

    def _ask_once(self, prompt: Prompt) -> Answer:
        s = self.settings
        body = {
            "model": s.model,
            "messages": prompt.chat(),
            "max_tokens": s.max_tokens,
            "temperature": s.temperature,
            "top_p": s.top_p,
            "n": 1,
            "stream": False,
        }
        response = self.client.post("/chat/completions", json=body)
        if response.status_code in RETRY_STATUSES:
            raise _Retryable(response.status_code, self._detail(response), _retry_after(response))
        if response.status_code in (401, 403):  # the body may quote the key: never shown
            raise EndpointFailure(
                "teacher.endpoint.api_key",
                f"teacher.endpoint.api_key: {s.base_url} refused the key (HTTP {response.status_code}); "
                "submit the job again with a valid key",
            )
        if response.status_code == 404:
            raise EndpointFailure(
                "teacher.endpoint.model",
                f"teacher.endpoint: {s.base_url}/chat/completions answered 404 for model {s.model!r} "
                f"({self._detail(response)}); check base_url (up to /v1) and model",
            )
        if response.status_code >= 400:
            raise EndpointFailure(
                "teacher.endpoint",
                f"teacher.endpoint: {s.base_url} refused a request (HTTP {response.status_code}: "
                f"{self._detail(response)}); check max_tokens, temperature and the prompts",
            )
        try:
            choice = response.json()["choices"][0]
            completion, reasoning = split_reasoning(choice["message"])
        except (ValueError, KeyError, IndexError, TypeError) as error:
            raise EndpointFailure(
                "teacher.endpoint.base_url",
                f"teacher.endpoint: {s.base_url} answered something that is not a chat completion "
                f"({type(error).__name__}); is it an OpenAI-compatible server?",
            ) from None
        return Answer(completion, reasoning, choice.get("finish_reason"))

    def _detail(self, response: httpx.Response) -> str:
        try:
            error = response.json().get("error")
            text = error.get("message") if isinstance(error, dict) else str(error)
        except (ValueError, AttributeError):
            text = response.text
        return self._scrub(str(text or response.reason_phrase))[:300]


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return max(0.0, float(response.headers.get("retry-after", "")))
    except ValueError:
        return None


def collect(
    prompts: Sequence[Prompt],
    teacher: EndpointTeacher,
    answers: AnswerLog,
    *,
    progress: Callable[[int, int], None] = lambda done, total: None,
    check: Callable[[], None] = lambda: None,
    chunk_size: int = 32,
    flush_seconds: float = 10.0,
) -> Collected:
    """Every prompt's answer, in order: those an earlier attempt stored are read back, the rest are asked
    (``teacher.settings.concurrency`` at once) and stored a chunk at a time. ``check`` is called between
    answers and may raise to stop (what was answered is stored first); ``progress(done, total)`` after
    each chunk."""
    started = time.monotonic()
    keys = [answer_key(i, p, teacher.settings) for i, p in enumerate(prompts)]
    known = answers.load()
    resumed = sum(1 for k in keys if k in known)
    pending = [i for i, k in enumerate(keys) if k not in known]
    done = len(prompts) - len(pending)
    progress(done, len(prompts))
    buffer: list[tuple[str, Answer]] = []
    last_flush = time.monotonic()

    def flush() -> None:
        nonlocal last_flush
        answers.append(buffer)
        buffer.clear()
        last_flush = time.monotonic()

    pool = ThreadPoolExecutor(max_workers=teacher.settings.concurrency, thread_name_prefix="endpoint")
    running: dict[Future[Answer], int] = {}
    try:
        queue = iter(pending)

        def top_up() -> None:  # keep at most `concurrency` prompts in flight, so a stop wastes little
            while len(running) < teacher.settings.concurrency:
                index = next(queue, None)
                if index is None:
                    return
                running[pool.submit(teacher.ask, prompts[index])] = index

        top_up()
        while running:
            finished, _ = wait(running, timeout=1.0, return_when=FIRST_COMPLETED)
            for future in finished:
                index = running.pop(future)
                answer = future.result()  # an EndpointFailure ends the collection (what was answered is kept)
                known[keys[index]] = answer
                buffer.append((keys[index], answer))
                done += 1
            if len(buffer) >= chunk_size or (buffer and time.monotonic() - last_flush >= flush_seconds):
                flush()
                progress(done, len(prompts))
            check()
            top_up()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        for future, index in running.items():  # answers that came in while stopping are kept too
            if future.done() and not future.cancelled() and future.exception() is None:
                buffer.append((keys[index], future.result()))
        flush()
    progress(done, len(prompts))
    return Collected(
        answers=[known[k] for k in keys],
        resumed=resumed,
        requested=len(pending),
        retries=teacher.retries,
        seconds=time.monotonic() - started,
    )


def answers_jsonl(prompts: Sequence[Prompt], answers: Sequence[Answer]) -> bytes:
    """``teacher_answers.jsonl``: one line per prompt, ``prompt`` (or the chat ``messages``), ``completion``,
    ``reasoning`` (null when the server gave none) and ``finish_reason``. Uploaded again as a dataset, it
    teaches a teacher-less causal-LM job the teacher's answers."""
    lines = []
    for prompt, answer in zip(prompts, answers, strict=True):
        row: dict[str, Any] = (
            {"prompt": prompt.text} if prompt.text is not None else {"messages": prompt.chat()}
        )
        row.update(
            completion=answer.completion, reasoning=answer.reasoning, finish_reason=answer.finish_reason
        )
        lines.append(json.dumps(row, ensure_ascii=False))
    return ("\n".join(lines) + "\n").encode()


def training_records(
    prompts: Sequence[Prompt], answers: Iterable[Answer], *, with_reasoning: bool
) -> list[dict[str, Any]]:
    """What the student fine-tunes on: ``{"prompt", "completion"}`` (or ``messages`` ending with the
    teacher's turn), the completion opening with ``<think>reasoning</think>`` when ``with_reasoning`` and
    the teacher gave some."""
    records: list[dict[str, Any]] = []
    for prompt, answer in zip(prompts, answers, strict=True):
        completion = answer.completion
        if with_reasoning and answer.reasoning:
            completion = f"<think>\n{answer.reasoning}\n</think>\n{completion}"
        if prompt.text is not None:
            records.append({"prompt": prompt.text, "completion": completion})
        else:
            records.append({"messages": [*prompt.chat(), {"role": "assistant", "content": completion}]})
    return records


@dataclass
class Gathered:
    """What the black-box step hands the causal-LM fine-tuning: its records, the artifact, the report."""

    records: list[dict[str, Any]]
    artifact: bytes
    """``teacher_answers.jsonl``."""
    summary: dict[str, Any]


def endpoint_label(settings: EndpointSettings) -> str:
    """``model at scheme://host[:port]/path``: the endpoint as events and reports show it (a user name or
    password in the URL is left out)."""
    url = httpx.URL(settings.base_url)
    return f"{settings.model} at {url.copy_with(username=None, password=None)}"


def gather_answers(
    records: Sequence[dict[str, Any]],
    settings: EndpointSettings,
    api_key: str | None,
    answers: AnswerLog,
    *,
    event: Callable[[str, dict[str, Any]], None],
    should_stop: Callable[[], bool],
    stopped: Callable[[], BaseException],
    progress_every_s: float = 15.0,
) -> Gathered:
    """Collect the teacher's answer to every record's prompt (resuming an earlier attempt's), with events
    along the way, and make the fine-tuning records (reasoning kept per ``train_on_reasoning``) and
    ``teacher_answers.jsonl``. An endpoint that cannot teach raises :class:`EndpointFailure`."""
    prompts = [Prompt.from_record(record) for record in records]
    where = endpoint_label(settings)
    event(
        f"collecting the teacher's answers: {len(prompts)} prompts to {where}",
        {"prompts": len(prompts), "model": settings.model, "concurrency": settings.concurrency},
    )
    last = 0.0

    def progress(done: int, total: int) -> None:
        nonlocal last
        now = time.monotonic()
        if done not in (0, total) and now - last >= progress_every_s:
            last = now
            event(f"teacher answers: {done}/{total}", {"answered": done, "prompts": total})

    def check() -> None:
        if should_stop():
            raise stopped()

    teacher = EndpointTeacher(settings, api_key)
    try:
        got = collect(prompts, teacher, answers, progress=progress, check=check)
    finally:
        teacher.close()
    with_reasoning = sum(1 for a in got.answers if a.reasoning)
    summary = {
        "endpoint": where,
        "prompts": len(prompts),
        "resumed": got.resumed,
        "requested": got.requested,
        "retries": got.retries,
        "with_reasoning": with_reasoning,
        "truncated": sum(1 for a in got.answers if a.finish_reason == "length"),
        "seconds": round(got.seconds, 3),
        "train_on_reasoning": settings.train_on_reasoning,
    }
    event(
        f"teacher answers collected: {len(prompts)} ({got.resumed} from an earlier attempt, {got.retries} "
        f"retries, {with_reasoning} with reasoning)",
        summary,
    )
    records_out = training_records(prompts, got.answers, with_reasoning=settings.train_on_reasoning)
    return Gathered(records=records_out, artifact=answers_jsonl(prompts, got.answers), summary=summary)


def taught_data(
    data: LoadedLMData,
    settings: EndpointSettings,
    api_key: str | None,
    answers: AnswerLog,
    *,
    event: Callable[[str, dict[str, Any]], None],
    should_stop: Callable[[], bool],
    stopped: Callable[[], BaseException],
) -> tuple[LoadedLMData, Gathered]:
    """A black-box ``causal_lm`` job's data: every training record's completion is the teacher's answer
    (with its reasoning per ``train_on_reasoning``); validation and test records keep a reference
    completion where they have one, and get the teacher's answer where they do not (the student is then
    measured against its teacher). ``teacher_answers.jsonl`` covers every prompt asked."""
    from distill.datasets import LMDataset
    from distill.datasets.types import lm_record_has_completion

    held = [data.validation] + ([data.test] if data.test is not None else [])
    asked = list(data.train.records)
    for split in held:
        asked += [r for r in split.records if not lm_record_has_completion(r)]
    gathered = gather_answers(
        asked, settings, api_key, answers, event=event, should_stop=should_stop, stopped=stopped
    )
    taught = iter(gathered.records)
    train = LMDataset([next(taught) for _ in data.train.records])

    def complete(split: LMDataset) -> LMDataset:
        return LMDataset([r if lm_record_has_completion(r) else next(taught) for r in split.records])

    validation = complete(data.validation)
    test = None if data.test is None else complete(data.test)
    return LoadedLMData(train=train, validation=validation, test=test, splits=dict(data.splits)), gathered


class BlackBoxPipeline:
    """The teacher-less causal-LM pipeline on the teacher's answers, plus ``teacher_answers.jsonl`` and
    the collection's figures (``result.teacher_answers``)."""

    def __init__(self, inner: Any, gathered: Gathered) -> None:
        self.inner = inner
        self.gathered = gathered

    def run(self, started: float) -> Any:
        outcome = self.inner.run(started)
        if not outcome.stopped:
            outcome.artifacts[ANSWERS_ARTIFACT] = self.gathered.artifact
            outcome.result["teacher_answers"] = self.gathered.summary
        return outcome
