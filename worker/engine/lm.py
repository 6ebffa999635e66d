"""Causal language models for ``task: "causal_lm"`` jobs: building the student (from a config, or the
teacher's chosen layers), saving it as a Hugging Face archive, greedy and sampled generation, evaluation.

Archives are read by :mod:`distill.hfarchive` and :mod:`worker.engine.hf` (strict extraction, safetensors
only, ``trust_remote_code`` never set); this module only writes them.
"""

from __future__ import annotations

import copy
import functools
import math
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from distill.hfarchive import HF_ARCHIVE_ARTIFACT, HFModelInfo, inspect_model_dir, pack_folder
from distill.lminfo import CausalLMInfo
from distill.spec import GPT2StudentConfig, LlamaStudentConfig, TeacherLayersConfig
from worker.engine.lm_data import LMExample, collate

HF_ARCHIVE = HF_ARCHIVE_ARTIFACT


@functools.cache
def _cache_arg() -> str:
    """The key-value cache's argument (and output) name: ``cache`` in recent transformers, else
    ``past_key_values``."""
    import inspect

    from transformers import GPT2LMHeadModel

    return "cache" if "cache" in inspect.signature(GPT2LMHeadModel.forward).parameters else "past_key_values"


class LMError(ValueError):
    """A model or archive that cannot be used: the message says what is wrong."""


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The model's list of decoder blocks (``model.layers`` of Llama/Qwen2, ``transformer.h`` of GPT-2...)."""
    count = _layer_count(model.config)
    for _, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == count:
            return module
    raise LMError(f"cannot find the {count} decoder layers of this {type(model).__name__}")


def _layer_count(config: Any) -> int:
    for name in ("num_hidden_layers", "n_layer", "num_layers"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    raise LMError("the model's config does not say how many layers it has")


def describe(model: nn.Module, tokenizer_digest: str | None) -> CausalLMInfo:
    config: Any = model.config
    return CausalLMInfo(
        architecture=str(config.model_type),
        vocab_size=int(config.vocab_size),
        layers=_layer_count(config),
        parameters=count_parameters(model),
        tokenizer_sha256=tokenizer_digest,
    )


def build_student(
    config: GPT2StudentConfig | LlamaStudentConfig | TeacherLayersConfig,
    teacher: nn.Module,
    tokenizer: Any,
    *,
    seed: int,
) -> nn.Module:
    """A student over the teacher's vocabulary: drawn from a config, or the teacher's chosen layers."""
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, Qwen2Config

    teacher_config: Any = teacher.config
    if isinstance(config, TeacherLayersConfig):
        return teacher_layers(teacher, config.layers)
    ids = {
        "vocab_size": int(teacher_config.vocab_size),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    positions = max(config.max_length, 64)
    hf: Any
    if isinstance(config, GPT2StudentConfig):
        hf = GPT2Config(
            n_layer=config.n_layer, n_embd=config.n_embd, n_head=config.n_head, n_positions=positions, **ids
        )
    else:
        kind = LlamaConfig if config.arch == "llama" else Qwen2Config
        hf = kind(
            num_hidden_layers=config.num_hidden_layers,
            hidden_size=config.hidden_size,
            num_attention_heads=config.num_attention_heads,
            num_key_value_heads=config.num_key_value_heads or config.num_attention_heads,
            intermediate_size=config.intermediate_size or 4 * config.hidden_size,
            max_position_embeddings=positions,
            tie_word_embeddings=True,
            **ids,
        )
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(hf)


def teacher_layers(teacher: nn.Module, layers: Sequence[int]) -> nn.Module:
    """A copy of ``teacher`` keeping only decoder ``layers`` (in the order given), renumbered."""
    student = copy.deepcopy(teacher)
    blocks = decoder_layers(student)
    total = len(blocks)
    if any(i >= total for i in layers):
        raise LMError(f"the teacher has {total} layers (0..{total - 1}); cannot keep {list(layers)}")
    kept = [blocks[i] for i in layers]
    for position, block in enumerate(kept):
        for module in block.modules():
            if hasattr(module, "layer_idx"):
                setattr(module, "layer_idx", position)  # noqa: B010 (a cache index, not a parameter)
    blocks_parent, name = _parent_of(student, blocks)
    setattr(blocks_parent, name, nn.ModuleList(kept))
    config: Any = student.config
    for attr in ("num_hidden_layers", "n_layer"):
        if isinstance(getattr(config, attr, None), int):
            setattr(config, attr, len(kept))
    layer_types = getattr(config, "layer_types", None)
    if isinstance(layer_types, list) and len(layer_types) == total:
        config.layer_types = [layer_types[i] for i in layers]
    return student


def _parent_of(root: nn.Module, child: nn.Module) -> tuple[nn.Module, str]:
    for _, module in root.named_modules():
        for name, sub in module.named_children():
            if sub is child:
                return module, name
    raise LMError("cannot find the decoder layers' parent module")


def save_archive(model: nn.Module, tokenizer: Any, *, card: str) -> tuple[bytes, HFModelInfo]:
    """``model.hf.zip``: ``save_pretrained`` (safetensors), the tokenizer and ``card`` as README.md, zipped
    by :func:`distill.hfarchive.pack_folder` (as :func:`worker.engine.hf.save_archive`), with what
    :func:`distill.hfarchive.inspect_model_dir` says of it (recorded as the job's ``hf_model``, so the
    output is described exactly as an uploaded archive is)."""
    with tempfile.TemporaryDirectory(prefix="distill-lm-save-") as tmp:
        folder = Path(tmp)
        model.save_pretrained(str(folder))  # type: ignore[operator]
        tokenizer.save_pretrained(str(folder))
        (folder / "README.md").write_text(card, encoding="utf-8")
        info = inspect_model_dir(folder)
        return pack_folder(folder), info


# -- generation and evaluation ------------------------------------------------------------------------


@torch.inference_mode()
def generate(
    model: nn.Module,
    prompts: Sequence[list[int]],
    tokenizer: Any,
    *,
    max_new_tokens: int,
    device: torch.device,
    sample: bool = False,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> list[list[int]]:
    """Each prompt's continuation (token ids, up to and including the end-of-sequence token): greedy, or
    sampled at ``temperature``. A plain loop with the model's KV cache, left-padded batches."""
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    if not prompts:
        return []
    length = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), length), pad, dtype=torch.long)
    attention = torch.zeros((len(prompts), length), dtype=torch.long)
    for row, p in enumerate(prompts):
        ids[row, length - len(p) :] = torch.tensor(p, dtype=torch.long)
        attention[row, length - len(p) :] = 1
    ids, attention = ids.to(device), attention.to(device)
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    out: list[list[int]] = [[] for _ in prompts]
    done = torch.zeros(len(prompts), dtype=torch.bool, device=device)
    past: dict[str, Any] = {}
    step_ids, step_positions = ids, positions
    for _ in range(max_new_tokens):
        result = model(
            input_ids=step_ids, attention_mask=attention, position_ids=step_positions, use_cache=True, **past
        )
        past = {_cache_arg(): getattr(result, _cache_arg())}
        logits = result.logits[:, -1].float()
        if sample:
            probs = torch.softmax(logits / temperature, dim=-1)
            nxt = torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(-1).to(device)
        else:
            nxt = logits.argmax(-1)
        nxt = torch.where(done, torch.full_like(nxt, pad), nxt)
        for row, token in enumerate(nxt.tolist()):
            if not done[row]:
                out[row].append(token)
        if eos is not None:
            done |= nxt == eos
        if bool(done.all()):
            break
        step_ids = nxt.unsqueeze(-1)
        step_positions = step_positions[:, -1:] + 1
        attention = torch.cat([attention, torch.ones_like(attention[:, :1])], dim=-1)
    return out


def decode(tokenizer: Any, ids: list[int]) -> str:
    eos = tokenizer.eos_token_id
    if eos is not None and eos in ids:
        ids = ids[: ids.index(eos)]
    return str(tokenizer.decode(ids, skip_special_tokens=True)).strip()


def exact_match(
    model: nn.Module,
    tokenizer: Any,
    examples: Sequence[LMExample],
    *,
    device: torch.device,
    batch_size: int = 32,
) -> tuple[float, list[str]]:
    """Share of examples whose greedy completion equals the reference completion (whitespace at the ends
    aside), and the generated texts."""
    scored = [ex for ex in examples if ex.completion is not None]
    if not scored:
        return float("nan"), []
    longest = max(ex.loss_tokens for ex in scored) + 2
    texts: list[str] = []
    for start in range(0, len(scored), batch_size):
        chunk = scored[start : start + batch_size]
        outs = generate(
            model,
            [ex.ids[: ex.prompt_length] for ex in chunk],
            tokenizer,
            max_new_tokens=longest,
            device=device,
        )
        texts.extend(decode(tokenizer, o) for o in outs)
    hits = sum(t == ex.completion for t, ex in zip(texts, scored, strict=True))
    return hits / len(scored), texts


@torch.inference_mode()
def token_metrics(
    model: nn.Module,
    examples: Sequence[LMExample],
    *,
    pad_id: int,
    device: torch.device,
    batch_size: int = 32,
) -> dict[str, float]:
    """``token_accuracy`` (argmax equals the next completion token), ``perplexity`` (exp of the mean
    completion-token cross-entropy) and ``tokens_per_second`` (forward passes over every token)."""
    model.eval()
    correct = total = 0
    nll = 0.0
    seen, seconds = 0, 0.0
    for start in range(0, len(examples), batch_size):
        batch = collate(examples[start : start + batch_size], pad_id, device)
        began = time.perf_counter()
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1].float()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds += time.perf_counter() - began
        seen += int(batch.attention_mask.sum())
        mask = batch.loss_mask
        if not bool(mask.any()):
            continue
        picked = logits[mask]
        targets = batch.targets[mask]
        correct += int((picked.argmax(-1) == targets).sum())
        total += int(targets.numel())
        nll += float(torch.nn.functional.cross_entropy(picked, targets, reduction="sum"))
    return {
        "token_accuracy": correct / total if total else float("nan"),
        "perplexity": math.exp(min(nll / total, 50.0)) if total else float("nan"),
        "tokens_per_second": seen / seconds if seconds > 0 else float("nan"),
    }
