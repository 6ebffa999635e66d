"""worker.lm_pipeline and its engine parts, on tiny offline models (lm_support): records to tokens with
the prompt masked, the top-k cache's round trip and size, a teacher-less fine-tune, a distillation from it
through the cache (a second job reuses it), and the saved archive loading with from_pretrained."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import torch
from engine_support import TWO_RANKS
from lm_support import char_tokenizer, tiny_causal_lm, unpack

from distill.datasets import LMDataset
from distill.spec import JobSpec
from distill.storage import LocalStore
from worker.engine.lm import describe, teacher_layers
from worker.engine.lm_cache import TeacherTopK, compute_topk
from worker.engine.lm_data import collate, encode, render
from worker.engine.lm_losses import forward_kl, top_k
from worker.engine.loop import NoCallbacks
from worker.engine.signals import TeacherSignals
from worker.lm_inputs import LoadedLM, LoadedLMData, lm_data_from_records
from worker.lm_pipeline import LMPipeline
from worker.pipeline import JobContext
from worker.teacher_cache import TeacherCache

CPU = torch.device("cpu")


def arithmetic(n: int, seed: int = 0) -> list[dict[str, str]]:
    rng = random.Random(seed)
    return [
        {"prompt": f"{a}+{b}=", "completion": str(a + b)}
        for a, b in ((rng.randrange(10), rng.randrange(10)) for _ in range(n))
    ]


def test_records_become_prompt_then_completion_with_the_prompt_masked() -> None:
    tok = char_tokenizer()
    [ex] = encode([{"prompt": "12+7=", "completion": "19"}], tok, max_length=64)
    assert tok.decode(ex.ids[: ex.prompt_length]) == "12+7="
    assert ex.ids[-1] == tok.eos_token_id and ex.loss_tokens == 3 and ex.completion == "19"
    batch = collate([ex], tok.pad_token_id, CPU)
    assert batch.loss_mask[0].tolist() == [False] * 4 + [True] * 3  # predicting "1", "9", eos
    assert tok.decode(batch.targets[0][batch.loss_mask[0]][:2].tolist()) == "19"
    # chat records go through the chat template; the last assistant turn is the completion
    chat = {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]}
    prompt, completion = render(chat, tok)
    assert prompt == "Q: 2+2?\nA: " and completion is not None and completion.startswith("4</s>")
    [chat_ex] = encode([chat], tok, max_length=64)
    assert chat_ex.completion == "4"
    # max_length cuts the completion's end first
    [short] = encode([{"prompt": "12+7=", "completion": "19"}], tok, max_length=6)
    assert len(short.ids) == 6 and short.loss_tokens == 1


def test_the_top_k_cache_round_trips_as_teacher_signals_under_128_bytes_a_token() -> None:
    tok = char_tokenizer()
    teacher = tiny_causal_lm(tok, layers=1, hidden=32)
    examples = encode(arithmetic(10), tok, 32)
    cached = compute_topk(teacher, examples, k=16, pad_id=tok.pad_token_id, device=CPU, batch_size=4)
    assert cached.tokens == sum(ex.loss_tokens for ex in examples)
    assert cached.bytes_per_token == 16 * 2 + 16 * 4 + 4 <= 128
    # the one teacher cache's format: sequence signals, one row a token, offsets per example
    blob = cached.to_signals(["lm_topk"]).to_bytes()
    assert len(blob) / cached.tokens < 128 + 16  # the header and per-example offsets are small
    signals = TeacherSignals.from_bytes(blob)
    assert signals.num_examples == len(examples) and signals.num_rows == cached.tokens
    assert signals.topk_values is not None and signals.topk_values.dtype == torch.float16
    again = TeacherTopK.from_signals(signals).align(examples)
    batch = collate(examples[2:6], tok.pad_token_id, CPU)
    with torch.no_grad():
        live = teacher(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1]
    student = torch.randn_like(live)
    from_cache = forward_kl(student, again.batch([2, 3, 4, 5], live.shape[1], CPU), batch.loss_mask)
    from_live = forward_kl(student, top_k(live, 16), batch.loss_mask)
    assert from_cache.item() == pytest.approx(from_live.item(), rel=2e-3)  # fp16 log-probabilities
    with pytest.raises(ValueError):
        TeacherTopK.from_signals(signals).align(examples[:5])
    with pytest.raises(ValueError, match="token rows"):  # example-indexed batches would mix tokens up
        signals.batch(torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="offsets"):
        TeacherSignals(
            num_classes=cached.vocab_size,
            weights=[1.0],
            topk_values=signals.topk_values,
            topk_indices=signals.topk_indices,
            tail_mass=signals.tail_mass,
            offsets=cached.offsets[:-1],
        )


def test_teacher_layers_keeps_the_chosen_blocks() -> None:
    tok = char_tokenizer()
    for arch in ("gpt2", "llama"):
        teacher = tiny_causal_lm(tok, arch=arch, layers=4, hidden=32)  # type: ignore[arg-type]
        student = teacher_layers(teacher, [0, 3])
        assert describe(student, None).layers == 2
        ids = torch.tensor([tok("1+2=")["input_ids"]])
        assert student(input_ids=ids).logits.shape == teacher(input_ids=ids).logits.shape


def context(spec: dict[str, Any], tmp_path: Path, events: list[str]) -> JobContext:
    return JobContext(
        job_id="job_test",
        spec=JobSpec.model_validate(spec),
        cache=TeacherCache(LocalStore(tmp_path / "objects"), "tenant_test"),
        device=CPU,
        progress=NoCallbacks(),
        quiet=NoCallbacks(),
        event=lambda message, _data: events.append(message),
    )


def loaded(model: Any, tok: Any, name: str, field: str) -> LoadedLM:
    return LoadedLM(model, tok, f"sha-{name}", name, field, describe(model, "tok"))


def test_fine_tune_then_distil_through_the_cache(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    tok = char_tokenizer()
    records = arithmetic(300)
    data = lm_data_from_records(records)
    base = {"task": "causal_lm", "data": {"train": {"file": "file_data"}}}
    events: list[str] = []
    teacher_spec = base | {
        "model": {"arch": "pretrained", "file": "file_start", "max_length": 16},
        "training": {"epochs": 6, "batch_size": 16, "learning_rate": 3e-3},
    }
    start = tiny_causal_lm(tok, layers=2, hidden=64)
    sft = LMPipeline(
        context(teacher_spec, tmp_path, events),
        data=data,
        teacher=None,
        student_start=loaded(start, tok, "file_start", "model.file"),
    )
    assert len(sft.examples()) == len(data.train)
    out = sft.run(0.0)
    assert not out.stopped and out.result["token_accuracy"] > 0.5
    teacher = AutoModelForCausalLM.from_pretrained(
        unpack(out.artifacts["model.hf.zip"], tmp_path / "teacher")
    )

    student_spec = base | {
        "teacher": {"job": "job_teacher"},
        "model": {"arch": "gpt2", "n_layer": 1, "n_embd": 32, "n_head": 2, "max_length": 16},
        "distillation": {"losses": [{"type": "forward_kl", "weight": 0.9}, {"type": "ce", "weight": 0.1}]},
        "training": {"epochs": 2, "batch_size": 16, "learning_rate": 3e-3},
    }
    first = LMPipeline(
        context(student_spec, tmp_path, events),
        data=data,
        teacher=loaded(teacher, tok, "job_teacher", "teacher.job"),
    ).run(0.0)
    assert first.result["teacher_cache_hit"] is False
    assert first.result["teacher_cache_bytes_per_token"] <= 128
    assert first.result["parameters"] * 4 <= first.result["teacher_parameters"]
    assert "teacher_exact_match" in first.result and 0.0 <= first.result["exact_match"] <= 1.0
    second = LMPipeline(
        context(student_spec, tmp_path, events),
        data=data,
        teacher=loaded(teacher, tok, "job_teacher", "teacher.job"),
    ).run(0.0)
    assert second.result["teacher_cache_hit"] is True

    report = json.loads(second.artifacts["report.json"])
    assert report["teacher_cache"]["teacher_compute_skipped"] == 1.0
    assert any("reused from the cache" in e for e in events)
    # the same data and teacher give the same student from the cache as from the first run
    assert second.result["token_accuracy"] == pytest.approx(first.result["token_accuracy"])
    folder = unpack(second.artifacts["model.hf.zip"], tmp_path / "student")
    model = AutoModelForCausalLM.from_pretrained(folder)
    card = (folder / "README.md").read_text()
    assert "text-generation" in card and "held-out exact match" in card and "job_test" in card
    assert second.result["hf_model"]["kind"] == "causal_lm"
    assert second.result["hf_model"]["tokenizer_sha256"] == second.result["lm_model"]["tokenizer_sha256"]
    from transformers import PreTrainedTokenizerFast

    loaded_tok = PreTrainedTokenizerFast.from_pretrained(str(folder))
    out_ids = model.generate(**loaded_tok("3+4=", return_tensors="pt"), max_new_tokens=3, do_sample=False)
    assert out_ids.shape[1] > 4
    assert "curves.svg" in second.artifacts


def test_on_policy_and_full_logits_run(tmp_path: Path) -> None:
    tok = char_tokenizer()
    teacher = tiny_causal_lm(tok, layers=2, hidden=32)
    data = LoadedLMData(train=LMDataset(arithmetic(24)), validation=LMDataset(arithmetic(8, seed=1)))
    spec = {
        "task": "causal_lm",
        "data": {"train": {"file": "f"}},
        "teacher": {"file": "file_teacher"},
        "model": {"arch": "teacher_layers", "layers": [1], "max_length": 16},
        "distillation": {
            "losses": [{"type": "jsd", "beta": 0.5}],
            "full_logits": True,
            "on_policy": {"fraction": 0.5, "max_new_tokens": 4},
        },
        "training": {"epochs": 1, "batch_size": 8},
    }
    events: list[str] = []
    out = LMPipeline(
        context(spec, tmp_path, events),
        data=data,
        teacher=loaded(teacher, tok, "file_teacher", "teacher.file"),
    ).run(0.0)
    assert not out.stopped and "teacher_cache_hit" not in out.result
    assert out.result["lm_model"]["layers"] == 1


SMALL_DISTILLATION: dict[str, Any] = {
    "task": "causal_lm",
    "data": {"train": {"file": "f"}},
    "teacher": {"file": "file_teacher"},
    "model": {"arch": "gpt2", "n_layer": 1, "n_embd": 16, "n_head": 2, "max_length": 16},
    "training": {"epochs": 2, "batch_size": 8},
}
"""A 1-layer GPT-2 student distilled from an uploaded teacher (the default losses, top-k cache)."""


def test_a_resumed_job_ends_where_the_uninterrupted_one_ends(tmp_path: Path) -> None:
    """The pipeline trains through fit's checkpoint hooks: resumed from a mid-epoch state, the student
    ends with the same figures as the run that was never interrupted."""
    tok = char_tokenizer()
    teacher = tiny_causal_lm(tok, layers=2, hidden=32)
    data = LoadedLMData(train=LMDataset(arithmetic(48)), validation=LMDataset(arithmetic(8, seed=1)))
    spec = SMALL_DISTILLATION
    states: list[Any] = []
    first = context(spec, tmp_path, [])
    first.checkpoint, first.checkpoint_every = states.append, 2
    whole = LMPipeline(first, data=data, teacher=loaded(teacher, tok, "file_teacher", "teacher.file")).run(
        0.0
    )
    middle = next(s for s in states if s.epoch == 2 and s.position > 0)
    again = context(spec, tmp_path, [])
    again.resume = middle
    resumed = LMPipeline(again, data=data, teacher=loaded(teacher, tok, "file_teacher", "teacher.file")).run(
        0.0
    )
    assert resumed.result["perplexity"] == pytest.approx(whole.result["perplexity"], rel=1e-5)
    assert resumed.result["teacher_cache_hit"] is True  # the teacher did not run again on resume


def test_a_causal_lm_job_is_the_one_pipeline_over_its_modality_and_shares_the_teacher_cache(
    tmp_path: Path,
) -> None:
    """modality_for picks the causal-LM modality; its teacher top-k goes through Pipeline.signals (the one
    cache): a damaged entry under the job's key is recomputed and replaced, then reused."""
    from worker.modalities import modality_for
    from worker.modalities.causal_lm import CausalLMModality
    from worker.pipeline import Pipeline

    tok = char_tokenizer()
    teacher = tiny_causal_lm(tok, layers=2, hidden=32)
    data = LoadedLMData(train=LMDataset(arithmetic(24)), validation=LMDataset(arithmetic(8, seed=1)))
    spec = SMALL_DISTILLATION
    ctx = context(spec, tmp_path, [])
    assert modality_for(ctx.spec) is CausalLMModality
    modality = CausalLMModality(ctx, data=data, teacher=loaded(teacher, tok, "file_teacher", "teacher.file"))
    request = modality.signal_request()
    assert request is not None and request.top_k == 16 and request.examples == len(data.train)
    digest = Pipeline(ctx, modality).signals()[1]["key"]  # type: ignore[index]
    ctx.cache.put(digest, b"not safetensors")
    events: list[str] = []
    first = LMPipeline(
        context(spec, tmp_path, events),
        data=data,
        teacher=loaded(teacher, tok, "file_teacher", "teacher.file"),
    ).run(0.0)
    assert first.result["teacher_cache_hit"] is False and "teacher outputs computed once and cached" in events
    report = json.loads(first.artifacts["report.json"])
    assert report["kind"] == "lm" and report["task"] == "causal_lm"
    assert report["teacher_cache"]["key"] == digest and report["teacher_cache"]["bytes_per_token"] == 100
    assert report["teacher_cache"]["teacher_compute_skipped"] == 0.5  # one teacher pass for two epochs
    assert report["exports"]["hf"]["file"] == "model.hf.zip"
    assert report["hyperparameters"]["optimizer_steps"] > 0
    second = LMPipeline(
        context(spec, tmp_path, events),
        data=data,
        teacher=loaded(teacher, tok, "file_teacher", "teacher.file"),
    ).run(0.0)
    assert second.result["teacher_cache_hit"] is True
    assert second.result["perplexity"] == pytest.approx(first.result["perplexity"], rel=1e-6)


def test_a_causal_lm_job_laid_out_data_parallel_trains_its_student_in_two_ranks(tmp_path: Path) -> None:
    """The runner's layout (``resources.gpus: 2``) reaches the modality's training: the student trains in
    two gloo ranks (tests/unit/engine/test_distributed_hf.py compares them with one process) and rank 0's
    trained model is the one evaluated and saved."""
    tok = char_tokenizer()
    data = LoadedLMData(train=LMDataset(arithmetic(9)), validation=LMDataset(arithmetic(4, seed=1)))
    spec = {
        "task": "causal_lm",
        "data": {"train": {"file": "f"}},
        "model": {"arch": "pretrained", "file": "file_start", "max_length": 16},
        "training": {"epochs": 2, "batch_size": 4, "learning_rate": 0.01},
        "resources": {"gpus": 2},
    }
    events: list[str] = []
    ctx = context(spec, tmp_path, events)
    ctx.parallel = TWO_RANKS
    start = tiny_causal_lm(tok, layers=1, hidden=16)
    before = [p.detach().clone() for p in start.parameters()]
    outcome = LMPipeline(
        ctx, data=data, teacher=None, student_start=loaded(start, tok, "file_start", "model.file")
    ).run(0.0)
    assert not outcome.stopped
    report = json.loads(outcome.artifacts["report.json"])
    assert report["environment"]["processes"] == 2
    assert report["hyperparameters"]["optimizer_steps"] == 2 * 3  # 9 examples in global batches of 4
    assert any((p - b).abs().max() > 0 for p, b in zip(start.parameters(), before, strict=True))
