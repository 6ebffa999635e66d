"""A real ``distill serve-model`` app on a loopback port, and a tiny causal LM trained in-process to answer
single-digit sums with its working in a ``<think>`` block (a teacher with real, checkable answers)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lm_support import char_tokenizer, save_pretrained, tiny_causal_lm

SUMS = [(a, b) for a in range(10) for b in range(10)]


def sum_prompt(a: int, b: int) -> str:
    return f"{a}+{b}"


def sum_answer(a: int, b: int) -> tuple[str, str]:
    """(reasoning, answer) the teacher is trained to give."""
    return f"{a}+{b}={a + b}", str(a + b)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def running(app: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a thread on a free loopback port; yields ``http://127.0.0.1:PORT``."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def train_sum_teacher(folder: Path, *, steps: int = 400, seed: int = 0) -> Path:
    """Train a 2-layer GPT-2 on every ``a+b`` (0-9) chat to answer ``<think>a+b=c</think>c``; save it to
    ``folder`` (``save_pretrained``). Greedy decoding then gets nearly every sum right."""
    import torch

    tok = char_tokenizer()
    model = tiny_causal_lm(tok, arch="gpt2", layers=2, hidden=64, heads=4, seed=seed)
    texts = []
    for a, b in SUMS:
        reasoning, answer = sum_answer(a, b)
        chat = [
            {"role": "user", "content": sum_prompt(a, b)},
            {"role": "assistant", "content": f"<think>{reasoning}</think>{answer}"},
        ]
        texts.append(tok.apply_chat_template(chat, tokenize=False))
    batch = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        loss = model(**batch, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    return save_pretrained(model, tok, folder)
