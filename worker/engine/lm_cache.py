"""A causal-LM teacher's outputs, computed once: its top-k next-token log-probabilities at every
completion position of every training example, plus the tail mass.

Stored per token: ``k`` log-probabilities (float16), their token ids (int32) and the tail mass (float32):
``6 k + 4`` bytes, 100 bytes at the default ``k = 16`` (the full logits of a 32k-token vocabulary in
float16 would take 64 KiB a token). Only completion positions are kept (the losses read no other). The
blob is safetensors (never a pickle) with an ``offsets`` array: example ``i``'s rows are
``offsets[i]:offsets[i + 1]``, in the order of :func:`worker.engine.lm_data.completion_positions`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import safetensors.torch
import torch

from worker.engine.lm_data import LMExample, collate
from worker.engine.lm_losses import TopK, top_k

FORMAT = "distill.lm_teacher_topk/1"
DEFAULT_TOP_K = 16


@dataclass
class TeacherTopK:
    logprobs: torch.Tensor
    """``[tokens, k]`` float16, at ``T = 1``."""
    ids: torch.Tensor
    """``[tokens, k]`` int32."""
    tail: torch.Tensor
    """``[tokens]`` float32: the probability of every token outside the top k."""
    offsets: torch.Tensor
    """``[examples + 1]`` int64."""
    vocab_size: int
    _first: list[int] = field(default_factory=list, repr=False)
    """Where each example's first kept position is (set by :meth:`align`)."""

    @property
    def tokens(self) -> int:
        return int(self.tail.shape[0])

    @property
    def k(self) -> int:
        return int(self.ids.shape[1])

    @property
    def bytes_per_token(self) -> int:
        """What one token's entry takes (the offsets, one int64 per example, aside)."""
        return self.k * (self.logprobs.element_size() + self.ids.element_size()) + self.tail.element_size()

    def to_bytes(self) -> bytes:
        return safetensors.torch.save(
            {"logprobs": self.logprobs, "ids": self.ids, "tail": self.tail, "offsets": self.offsets},
            metadata={"format": FORMAT, "meta": json.dumps({"vocab_size": self.vocab_size})},
        )

    @classmethod
    def from_bytes(cls, blob: bytes) -> TeacherTopK:
        tensors = safetensors.torch.load(blob)
        meta = json.loads(_metadata(blob)["meta"])
        return cls(
            tensors["logprobs"], tensors["ids"], tensors["tail"], tensors["offsets"], meta["vocab_size"]
        )

    def batch(self, indices: Sequence[int], positions: int, device: torch.device) -> TopK:
        """The rows of examples ``indices`` laid out like :func:`collate`'s ``loss_mask``
        (``[batch, positions, k]``; masked positions hold zeros)."""
        k = self.k
        logprobs = torch.zeros((len(indices), positions, k), dtype=torch.float32)
        ids = torch.zeros((len(indices), positions, k), dtype=torch.long)
        tail = torch.ones((len(indices), positions), dtype=torch.float32)
        for row, i in enumerate(indices):
            start, end = int(self.offsets[i]), int(self.offsets[i + 1])
            if end == start:
                continue
            first = self._first[i]
            logprobs[row, first : first + end - start] = self.logprobs[start:end].float()
            ids[row, first : first + end - start] = self.ids[start:end].long()
            tail[row, first : first + end - start] = self.tail[start:end]
        return TopK(logprobs.to(device), ids.to(device), tail.to(device), self.vocab_size)

    def align(self, examples: Sequence[LMExample]) -> TeacherTopK:
        """Remember where each example's completion starts (its first kept position), for :meth:`batch`;
        raises ValueError if the rows do not fit the examples (another tokenizer or length)."""
        if len(examples) + 1 != len(self.offsets):
            raise ValueError(
                f"cached teacher outputs hold {len(self.offsets) - 1} examples, not {len(examples)}"
            )
        for i, ex in enumerate(examples):
            if int(self.offsets[i + 1] - self.offsets[i]) != ex.loss_tokens:
                raise ValueError(f"cached teacher outputs do not fit example {i}")
        self._first = [ex.prompt_length - 1 for ex in examples]
        return self


def _metadata(blob: bytes) -> dict[str, str]:
    header_len = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + header_len])
    return dict(header.get("__metadata__", {}))


@torch.inference_mode()
def compute_topk(
    teacher: torch.nn.Module,
    examples: Sequence[LMExample],
    *,
    k: int,
    pad_id: int,
    device: torch.device,
    batch_size: int = 16,
) -> TeacherTopK:
    """Run ``teacher`` once over ``examples`` and keep its top-k at every completion position."""
    teacher.eval()
    logprobs, ids, tails = [], [], []
    offsets = [0]
    vocab = int(getattr(teacher.config, "vocab_size", 0))
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        batch = collate(chunk, pad_id, device)
        logits = teacher(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1]
        vocab = int(logits.shape[-1])
        kept = top_k(logits[batch.loss_mask], k)
        logprobs.append(kept.logprobs.half().cpu())
        ids.append(kept.ids.int().cpu())
        tails.append(kept.tail.float().cpu())
        for ex in chunk:
            offsets.append(offsets[-1] + ex.loss_tokens)
    return TeacherTopK(
        torch.cat(logprobs) if logprobs else torch.zeros((0, k), dtype=torch.float16),
        torch.cat(ids) if ids else torch.zeros((0, k), dtype=torch.int32),
        torch.cat(tails) if tails else torch.zeros((0,), dtype=torch.float32),
        torch.tensor(offsets, dtype=torch.int64),
        vocab,
    ).align(examples)
