"""A causal-LM teacher's outputs, computed once: its top-k next-token log-probabilities at every
completion position of every training example, plus the tail mass.

Stored per token: ``k`` log-probabilities (float16), their token ids (int32) and the tail mass (float32):
``6 k + 4`` bytes, 100 bytes at the default ``k = 16`` (the full logits of a 32k-token vocabulary in
float16 would take 64 KiB a token). Only completion positions are kept (the losses read no other).

They are cached as the one teacher cache's :class:`~worker.engine.signals.TeacherSignals` (sequence
signals: top-k values, indices and tail of one teacher, with ``offsets``: example ``i``'s rows are
``offsets[i]:offsets[i + 1]``, in the order of :func:`worker.engine.lm_data.completion_positions`), through
:meth:`TeacherTopK.to_signals` / :meth:`TeacherTopK.from_signals`; :class:`TeacherTopK` lays them out per
training batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from worker.engine.lm_data import LMExample, collate
from worker.engine.lm_losses import TopK, top_k
from worker.engine.signals import TeacherSignals

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

    def to_signals(self, capture: Sequence[str] = ()) -> TeacherSignals:
        """The teacher cache's form: one teacher's sequence signals (dtypes kept: 6 k + 4 bytes a token)."""
        return TeacherSignals(
            num_classes=self.vocab_size,
            weights=[1.0],
            topk_values=self.logprobs.unsqueeze(0),
            topk_indices=self.ids.unsqueeze(0),
            tail_mass=self.tail.unsqueeze(0),
            offsets=self.offsets,
            capture=list(capture),
        )

    @classmethod
    def from_signals(cls, signals: TeacherSignals) -> TeacherTopK:
        """The top-k of :meth:`to_signals` (``ValueError`` for other signals); :meth:`align` it before use."""
        values, ids, tail = signals.topk_values, signals.topk_indices, signals.tail_mass
        if signals.offsets is None or values is None or ids is None or tail is None:
            raise ValueError("not a causal-LM teacher's top-k (sequence signals with offsets)")
        if signals.num_teachers != 1:
            raise ValueError(f"a causal-LM job has one teacher, not {signals.num_teachers}")
        return cls(values[0], ids[0], tail[0], signals.offsets, signals.num_classes)

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
