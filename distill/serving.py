"""``distill serve-model``: a causal LM (a Distill job's ``model.hf.zip``, or a ``save_pretrained`` folder)
behind an OpenAI-compatible chat-completions API.

Routes: ``GET /v1/models``, ``POST /v1/chat/completions`` (``messages`` through the tokenizer's chat
template, ``max_tokens``, ``temperature`` (0: greedy), ``top_p``, ``stop``, ``seed``, ``n`` = 1, ``usage``;
``"stream": true`` answers Server-Sent Events of ``chat.completion.chunk`` objects ending with
``data: [DONE]``). Errors have OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``.

It is for trying a student at once and for giving tests a real teacher; production serving of the same
folder is vLLM's job (``vllm serve ./model``, see the README). One request generates at a time.
torch, transformers and FastAPI load inside the functions, so ``import distill`` stays light.
"""

from __future__ import annotations

import inspect
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

if TYPE_CHECKING:
    from fastapi import FastAPI

DEFAULT_MAX_TOKENS = 256
MAX_ARCHIVE_FILES = 64
MAX_ARCHIVE_BYTES = 20 << 30


class ServingError(ValueError):
    """A model folder or archive that cannot be served: the message says what is wrong."""


# -- the model -----------------------------------------------------------------------------------------------


def extract_model_zip(archive: Path, dest: Path) -> Path:
    """Unpack a ``model.hf.zip`` safely into ``dest`` with :func:`distill.hfarchive.extract_archive` (regular
    files with allowed names only, no links, absolute paths or ``..``, at most :data:`MAX_ARCHIVE_FILES`
    files and :data:`MAX_ARCHIVE_BYTES` bytes). Returns the folder that holds ``config.json``."""
    from distill.hfarchive import ArchiveError, extract_archive

    try:
        return extract_archive(archive, dest, max_bytes=MAX_ARCHIVE_BYTES, max_files=MAX_ARCHIVE_FILES)
    except ArchiveError as exc:
        raise ServingError(f"{archive.name}: {exc}") from exc


def load_model_dir(folder: Path, device: str = "cpu") -> tuple[Any, Any]:
    """A causal LM and its tokenizer from a ``save_pretrained`` folder: safetensors weights only,
    ``trust_remote_code`` never set; the tokenizer read from ``tokenizer.json`` as written."""
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    if not (folder / "config.json").is_file():
        raise ServingError(f"{folder}: no config.json (not a save_pretrained folder)")
    if not (folder / "tokenizer.json").is_file():
        raise ServingError(f"{folder}: no tokenizer.json (save the tokenizer with the model)")
    if not any(folder.glob("*.safetensors")):
        raise ServingError(f"{folder}: no *.safetensors weights (only safetensors are loaded)")
    model: Any = AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True, trust_remote_code=False)
    model = model.to(device).eval()
    tokenizer = PreTrainedTokenizerFast.from_pretrained(folder)
    return model, tokenizer


# -- the requests --------------------------------------------------------------------------------------------


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):  # OpenAI's content parts: the text parts, in order
            return "".join(str(part.get("text", "")) for part in self.content if part.get("type") == "text")
        return self.content or ""


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class ChatRequest(BaseModel):
    """The fields of OpenAI's chat-completions request that this server honours; others are ignored, as
    OpenAI-compatible servers do."""

    model_config = ConfigDict(extra="ignore")

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    n: int = Field(default=1, ge=1, le=1)
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else value or []
        if len(stops) > 4 or any(not s for s in stops):
            raise ValueError("up to 4 non-empty stop sequences")
        return value

    @property
    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


class OpenAIError(Exception):
    """An error answered in OpenAI's shape."""

    def __init__(
        self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
        code: str | None = None,
    ) -> None:  # fmt: skip
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


# -- generation ----------------------------------------------------------------------------------------------


@dataclass
class Generation:
    """What one request produced so far: the text, its token counts and why it stopped."""

    prompt_tokens: int
    completion_tokens: int = 0
    text: str = ""
    finish_reason: str | None = None
    deltas: list[str] = field(default_factory=list)


class ChatModel:
    """A loaded causal LM and tokenizer that answers chat requests (one at a time: ``lock``)."""

    def __init__(self, model: Any, tokenizer: Any, name: str) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.created = int(time.time())
        self.lock = threading.Lock()
        # transformers renamed the KV cache argument (``past_key_values`` → ``cache``, 5.2x)
        self._cache_arg = (
            "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        )
        config = model.config
        self.context = int(
            getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None) or 2048
        )

    def prompt_ids(self, messages: list[ChatMessage]) -> list[int]:
        chat = [
            {"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in messages
        ]
        if getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        else:
            text = "".join(f"{m['role']}: {m['content']}\n" for m in chat) + "assistant: "
        ids: list[int] = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids

    def generate(self, request: ChatRequest) -> Iterator[Generation]:
        """Generate token by token, yielding the state after each new piece of text that is safe to show
        (text that might be the start of a stop sequence is held back until it is not)."""
        import torch

        ids = self.prompt_ids(request.messages)
        room = self.context - len(ids)
        if room < 1:
            raise OpenAIError(
                400,
                f"the prompt is {len(ids)} tokens; this model's context is {self.context} tokens",
                param="messages",
                code="context_length_exceeded",
            )
        wanted = request.max_completion_tokens or request.max_tokens or DEFAULT_MAX_TOKENS
        budget = min(wanted, room)
        stops = request.stops
        hold = max((len(s) for s in stops), default=1) - 1
        eos = self.tokenizer.eos_token_id
        device = next(self.model.parameters()).device
        generator = torch.Generator(device=device)
        generator.manual_seed(
            request.seed if request.seed is not None else int.from_bytes(uuid.uuid4().bytes[:4])
        )
        state = Generation(prompt_tokens=len(ids))
        produced: list[int] = []
        shown = 0
        past = None
        step_input = torch.tensor([ids], device=device)
        with torch.inference_mode():
            while state.finish_reason is None:
                out = self.model(input_ids=step_input, use_cache=True, **{self._cache_arg: past})
                past = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
                token = _sample(out.logits[0, -1].float(), request.temperature, request.top_p, generator)
                if eos is not None and token == eos:
                    state.finish_reason = "stop"
                    break
                produced.append(token)
                state.completion_tokens = len(produced)
                text = self.tokenizer.decode(produced, skip_special_tokens=True)
                cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
                if cut >= 0:
                    text, state.finish_reason = text[:cut], "stop"
                elif len(produced) >= budget:
                    state.finish_reason = "length"
                state.text = text
                safe = len(text) if state.finish_reason else max(shown, len(text) - hold)
                if text.endswith("\ufffd") and not state.finish_reason:  # half a multi-byte character
                    safe = min(safe, len(text) - 1)
                if safe > shown:
                    state.deltas.append(text[shown:safe])
                    shown = safe
                    yield state
                step_input = torch.tensor([[token]], device=device)
        if shown < len(state.text):
            state.deltas.append(state.text[shown:])
        yield state


def _sample(logits: Any, temperature: float, top_p: float, generator: Any) -> int:
    import torch

    if temperature == 0.0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        ordered, order = torch.sort(probs, descending=True)
        keep = torch.cumsum(ordered, dim=-1) - ordered < top_p  # always keeps the most likely token
        probs = torch.zeros_like(probs).scatter(0, order[keep], ordered[keep])
    return int(torch.multinomial(probs / probs.sum(), 1, generator=generator))


# -- the app -------------------------------------------------------------------------------------------------


def build_app(chat: ChatModel, api_key: str | None = None) -> FastAPI:
    """The OpenAI-compatible app around ``chat``; with ``api_key`` every route wants ``Bearer <api_key>``."""
    import hmac

    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.exceptions import HTTPException

    app = FastAPI(title=f"distill serve-model: {chat.name}", docs_url=None, redoc_url=None)

    @app.exception_handler(OpenAIError)
    async def _openai_error(request: Request, exc: OpenAIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        param = ".".join(loc) or None
        message = f"{param}: {first['msg']}" if param else str(first["msg"])
        return JSONResponse(OpenAIError(400, message, param=param).body(), status_code=400)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        error = OpenAIError(
            exc.status_code, str(exc.detail), code="not_found" if exc.status_code == 404 else None
        )
        return JSONResponse(error.body(), status_code=exc.status_code)

    @app.middleware("http")
    async def _auth(request: Request, call_next: Any) -> Any:
        if api_key is not None:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
                error = OpenAIError(
                    401, "invalid API key", type="authentication_error", code="invalid_api_key"
                )
                return JSONResponse(error.body(), status_code=401)
        return await call_next(request)

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        entry = {"id": chat.name, "object": "model", "created": chat.created, "owned_by": "distill"}
        return {"object": "list", "data": [entry]}

    @app.post("/v1/chat/completions", response_model=None)
    def completions(request: ChatRequest) -> JSONResponse | StreamingResponse:
        if request.model != chat.name:
            raise OpenAIError(
                404, f"the model {request.model!r} does not exist; this server serves {chat.name!r}",
                param="model", code="model_not_found",
            )  # fmt: skip
        ident = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        if request.stream:
            first = _first_state(chat, request)  # errors (a prompt too long) answer before the stream starts
            return StreamingResponse(
                _sse(chat, request, ident, created, first), media_type="text/event-stream",
                headers={"Cache-Control": "no-cache"},
            )  # fmt: skip
        with chat.lock:
            *_, final = chat.generate(request)
        return JSONResponse(
            {
                "id": ident,
                "object": "chat.completion",
                "created": created,
                "model": chat.name,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": final.text},
                        "logprobs": None,
                        "finish_reason": final.finish_reason,
                    }
                ],
                "usage": _usage(final),
            }
        )

    return app


@dataclass
class _Started:
    steps: Iterator[Generation]
    first: Generation | None


def _first_state(chat: ChatModel, request: ChatRequest) -> _Started:
    """Take the lock and run generation up to its first piece of text (released by the stream's end)."""
    chat.lock.acquire()
    try:
        steps = chat.generate(request)
        return _Started(steps, next(steps, None))
    except BaseException:
        chat.lock.release()
        raise


def _usage(state: Generation) -> dict[str, int]:
    return {
        "prompt_tokens": state.prompt_tokens,
        "completion_tokens": state.completion_tokens,
        "total_tokens": state.prompt_tokens + state.completion_tokens,
    }


def _sse(chat: ChatModel, request: ChatRequest, ident: str, created: int, started: _Started) -> Iterator[str]:
    def chunk(delta: dict[str, Any], finish: str | None = None, usage: dict[str, int] | None = None) -> str:
        body: dict[str, Any] = {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": created,
            "model": chat.name,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if usage is not None:
            body["choices"], body["usage"] = [], usage
        return f"data: {json.dumps(body)}\n\n"

    try:
        yield chunk({"role": "assistant", "content": ""})
        last, sent = started.first, 0
        states = [] if last is None else [last]
        for state in _chain(states, started.steps):
            last = state
            while sent < len(state.deltas):
                yield chunk({"content": state.deltas[sent]})
                sent += 1
        assert last is not None
        yield chunk({}, finish=last.finish_reason)
        if request.stream_options is not None and request.stream_options.include_usage:
            yield chunk({}, usage=_usage(last))
        yield "data: [DONE]\n\n"
    finally:
        chat.lock.release()


def _chain(first: list[Generation], rest: Iterator[Generation]) -> Iterator[Generation]:
    yield from first
    yield from rest


def serve(
    folder: Path, *, name: str, host: str = "127.0.0.1", port: int = 8001, api_key: str | None = None,
    device: str = "cpu", loaded: Callable[[], None] | None = None,
) -> None:  # fmt: skip
    """Load ``folder`` and serve it until interrupted; ``loaded`` is called once the model is in memory,
    just before the server binds (so "serving on …" is not said while the weights still load)."""
    import uvicorn

    model, tokenizer = load_model_dir(folder, device)
    app = build_app(ChatModel(model, tokenizer, name), api_key=api_key)
    if loaded is not None:
        loaded()
    uvicorn.run(app, host=host, port=port, log_level="info")
