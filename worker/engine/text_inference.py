"""Running text models over texts: embeddings, logits, teacher attention maps, CPU latency.

What the text training loops (:mod:`worker.engine.text_train`), the text pipeline and the benchmarks read
from a model without training it. Texts run in length order in batches (less padding), results come back
in input order, on the CPU as float32.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from worker.engine.evaluate import eval_mode
from worker.engine.losses import masked_attention_loss
from worker.engine.text import (
    DEFAULT_MAX_LENGTH,
    TextClassifier,
    TextEncoder,
    TokenizedTexts,
    Tokenizer,
    attention_maps,
    tokenize,
)


def _device(device: torch.device | None) -> torch.device:
    return device if device is not None else torch.device("cpu")


@torch.no_grad()
def _run_batched(
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    tokens: TokenizedTexts,
    device: torch.device,
    batch_size: int,
) -> torch.Tensor:
    # Batches of similar lengths pad less: run in length order, then restore the input order.
    order = sorted(range(len(tokens)), key=lambda i: len(tokens.ids[i]))
    outputs: list[torch.Tensor] = []
    for start in range(0, len(order), batch_size):
        ids, mask = tokens.batch(order[start : start + batch_size])
        outputs.append(fn(ids.to(device), mask.to(device)).float().cpu())
    stacked = torch.cat(outputs)
    result = torch.empty_like(stacked)
    result[torch.tensor(order)] = stacked
    return result


def encode_texts(
    model: TextEncoder,
    tokenizer: Tokenizer,
    texts: Sequence[str],
    *,
    batch_size: int = 64,
    max_length: int = DEFAULT_MAX_LENGTH,
    normalize: bool = True,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Sentence embeddings ``[n, d]`` (CPU float32); ``normalize=False``: before L2 normalisation."""
    dev = _device(device)
    with eval_mode(model.to(dev)):
        fn = model.forward if normalize else model.pooled
        return _run_batched(fn, tokenize(tokenizer, texts, max_length), dev, batch_size)


def text_logits(
    model: TextClassifier,
    tokenizer: Tokenizer,
    texts: Sequence[str],
    *,
    batch_size: int = 64,
    max_length: int = DEFAULT_MAX_LENGTH,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Logits ``[n, classes]`` (CPU float32)."""
    dev = _device(device)
    with eval_mode(model.to(dev)):
        return _run_batched(model, tokenize(tokenizer, texts, max_length), dev, batch_size)


def mean_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean cosine similarity between matching rows of ``a`` and ``b``."""
    return F.cosine_similarity(a.float(), b.float(), dim=-1).mean().item()


def measure_latency(
    model: nn.Module,
    tokenizer: Tokenizer,
    texts: Sequence[str],
    *,
    batch_size: int,
    max_length: int = DEFAULT_MAX_LENGTH,
    repeats: int = 20,
    warmup: int = 3,
) -> float:
    """Median CPU seconds of one forward pass over a batch of ``batch_size`` texts (cycled from ``texts``)."""
    model.to("cpu").eval()
    batch = [texts[i % len(texts)] for i in range(batch_size)]
    enc = tokenizer(batch, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    times: list[float] = []
    with torch.inference_mode():
        for k in range(warmup + repeats):
            start = time.perf_counter()
            model(ids, mask)
            if k >= warmup:
                times.append(time.perf_counter() - start)
    return statistics.median(times)


@torch.no_grad()
def teacher_attention_maps(
    teacher: nn.Module,
    tokens: TokenizedTexts,
    layers: Sequence[int],
    *,
    device: torch.device | None = None,
    batch_size: int = 64,
) -> list[torch.Tensor]:
    """The teacher's head-averaged attention maps of ``layers``, one ``[len(layers), L, L]`` float16 tensor
    per text (``L``: that text's own token count, so no padding is stored).

    Computed once, before training, and kept in memory only (not in the teacher-output cache): about
    ``texts * len(layers) * L^2 * 2`` bytes.
    """
    dev = _device(device)
    result: list[torch.Tensor] = [torch.empty(0)] * len(tokens)
    order = sorted(range(len(tokens)), key=lambda i: len(tokens.ids[i]))
    with eval_mode(teacher.to(dev)):
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            ids, mask = tokens.batch(chunk)
            maps = attention_maps(teacher, ids.to(dev), mask.to(dev))
            chosen = torch.stack([maps[j].float().mean(dim=1) for j in layers], dim=1).half().cpu()
            for row, i in enumerate(chunk):
                n = len(tokens.ids[i])
                result[i] = chosen[row, :, :n, :n].clone()
    return result


def pad_teacher_maps(teacher_maps: Sequence[torch.Tensor], width: int, device: torch.device) -> torch.Tensor:
    """Per-example teacher maps (``[m, L_i, L_i]``, :func:`teacher_attention_maps`) zero-padded into one
    ``[b, m, width, width]`` float32 tensor."""
    m = teacher_maps[0].shape[0]
    target = torch.zeros((len(teacher_maps), m, width, width), device=device)
    for row, maps in enumerate(teacher_maps):
        n = maps.shape[-1]
        target[row, :, :n, :n] = maps.to(device, torch.float32)
    return target


def text_attention_loss(
    student_maps: Sequence[torch.Tensor],
    teacher_maps: Sequence[torch.Tensor],
    mask: torch.Tensor,
    layer_map: Sequence[tuple[int, int]],
    position: dict[int, int],
) -> torch.Tensor:
    """:func:`worker.engine.losses.masked_attention_loss` between the student's maps ``[b, heads, P, P]``
    per layer and per-example teacher maps (``position`` maps a teacher layer to its index in them)."""
    target = pad_teacher_maps(teacher_maps, mask.shape[1], student_maps[0].device)
    teacher_attn = [target[:, p : p + 1] for p in range(target.shape[1])]
    pairs = [(i, position[j]) for i, j in layer_map]
    return masked_attention_loss(student_maps, teacher_attn, pairs, mask)
