"""Language-model examples: records (prompt/completion or chat messages) to token ids, and padded batches.

A record becomes ``prompt`` token ids then ``completion`` token ids (ending with the tokenizer's end-of-
sequence token). Chat ``messages`` go through the tokenizer's chat template when it has one: the prompt is
every turn before the last assistant turn with the generation prompt added, the completion is what the
template writes for that last turn; without a template the turns are written ``role: content`` lines.
Every loss reads only the positions that predict a completion token: prompt tokens and padding are masked.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class LMExample:
    ids: list[int]
    prompt_length: int
    """Tokens of ``ids`` that are prompt (at least 1); the rest is the completion."""
    completion: str | None
    """The completion's text (exact match compares against it); None when the record has none."""

    @property
    def loss_tokens(self) -> int:
        """Positions that predict a completion token."""
        return max(len(self.ids) - self.prompt_length, 0)


def render(record: dict[str, Any], tokenizer: Any) -> tuple[str, str | None]:
    """``(prompt text, completion text or None)`` of a record."""
    if "messages" not in record:
        return str(record["prompt"]), record.get("completion")
    messages = list(record["messages"])
    last = messages[-1] if messages[-1]["role"] == "assistant" else None
    context = messages[:-1] if last is not None else messages
    if getattr(tokenizer, "chat_template", None):
        prompt = tokenizer.apply_chat_template(context, tokenize=False, add_generation_prompt=True)
        if last is None:
            return str(prompt), None
        full = str(tokenizer.apply_chat_template(messages, tokenize=False))
        if full.startswith(prompt):
            return str(prompt), full[len(prompt) :]
        return str(prompt), str(last["content"])
    prompt = "".join(f"{m['role']}: {m['content']}\n" for m in context) + "assistant: "
    return prompt, None if last is None else str(last["content"])


def encode(records: Sequence[dict[str, Any]], tokenizer: Any, max_length: int) -> list[LMExample]:
    """Token ids of each record, cut to ``max_length`` tokens (the completion's end goes first)."""
    eos = tokenizer.eos_token_id
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos
    out = []
    for record in records:
        prompt, completion = render(record, tokenizer)
        prompt_ids = list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        if not prompt_ids:
            prompt_ids = [start] if start is not None else [0]
        prompt_ids = prompt_ids[-max(max_length - 1, 1) :]  # keep the end of a very long prompt
        completion_ids: list[int] = []
        if completion is not None:
            completion_ids = list(tokenizer(completion, add_special_tokens=False)["input_ids"])
            if eos is not None and (not completion_ids or completion_ids[-1] != eos):
                completion_ids.append(eos)
        ids = (prompt_ids + completion_ids)[:max_length]
        out.append(LMExample(ids, len(prompt_ids), _plain(completion, tokenizer)))
    return out


def _plain(completion: str | None, tokenizer: Any) -> str | None:
    """The completion as generation would decode it (without the end-of-sequence token's text)."""
    if completion is None:
        return None
    eos = tokenizer.eos_token
    text = completion.strip()
    if eos and text.endswith(eos):
        text = text[: -len(eos)]
    return text.strip()


def examples_digest(examples: Sequence[LMExample]) -> str:
    """sha256 of the examples' token ids and prompt lengths in order: the data half of a cache key."""
    digest = hashlib.sha256(f"lm-examples/1 n={len(examples)}\n".encode())
    for ex in examples:
        digest.update(f"{ex.prompt_length}:{len(ex.ids)}:".encode())
        digest.update(torch.tensor(ex.ids, dtype=torch.int64).numpy().tobytes())
    return digest.hexdigest()


@dataclass
class LMBatch:
    input_ids: torch.Tensor
    """``[batch, length]``, right-padded."""
    attention_mask: torch.Tensor
    targets: torch.Tensor
    """``[batch, length - 1]``: the next token at each position."""
    loss_mask: torch.Tensor
    """``[batch, length - 1]``: positions that predict a completion token."""

    @property
    def tokens(self) -> int:
        return int(self.loss_mask.sum())


def collate(examples: Sequence[LMExample], pad_id: int, device: torch.device) -> LMBatch:
    """Right-padded ids, attention mask, next-token targets and the completion mask."""
    length = max(max(len(ex.ids) for ex in examples), 2)
    ids = torch.full((len(examples), length), pad_id, dtype=torch.long)
    attention = torch.zeros((len(examples), length), dtype=torch.long)
    mask = torch.zeros((len(examples), length - 1), dtype=torch.bool)
    for row, ex in enumerate(examples):
        ids[row, : len(ex.ids)] = torch.tensor(ex.ids, dtype=torch.long)
        attention[row, : len(ex.ids)] = 1
        mask[row, ex.prompt_length - 1 : len(ex.ids) - 1] = True
    return LMBatch(ids.to(device), attention.to(device), ids[:, 1:].to(device), mask.to(device))


def completion_positions(ex: LMExample) -> range:
    """The positions of ``ex.ids`` whose logits predict a completion token (those the cache keeps)."""
    return range(ex.prompt_length - 1, len(ex.ids) - 1)
