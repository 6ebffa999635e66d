"""Data-parallel training of Hugging Face students (``resources.gpus > 1`` for ``causal_lm`` and text jobs):
two gloo processes on CPU train what one process trains on the same global batches and seed, through the
same ``fit`` / ``RankGroup`` machinery as tabular students (tests/unit/engine/test_distributed.py).

A causal LM's loss is a mean over the step's completion tokens, and the ranks' shards hold different
numbers of them: each rank's loss counts by its share of the whole batch's tokens, so the gradient is one
process's. Tolerance: the runs differ in the order of float sums (each shard's sum, then DDP's average):
a causal LM's weights agree within 1e-6 after AdamW's updates (measured: ~6e-8); a BERT classifier's
within 1e-5 (measured: 3e-6, on one weight of the pooler whose gradient is tiny, which AdamW's division by
its root mean square turns into a full step; 2e-7 elsewhere). Attention key biases are left out of the
comparison (the causal LMs here are Llama ones, which have none): a softmax ignores a shift of every key's
score, so their true gradient is 0 and AdamW turns each run's float noise into steps of its own.
"""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest
import torch
from engine_support import TWO_RANKS, Recorder, no_dropout, weights
from lm_support import char_tokenizer, tiny_causal_lm, tiny_classifier

from distill.spec import (
    AttentionLoss,
    CELoss,
    ForwardKLLoss,
    KDLoss,
    LossSpec,
    OnPolicySpec,
    TrainingSpec,
)
from worker.engine.hf import HFTextClassifier
from worker.engine.lm_cache import TeacherTopK, compute_topk
from worker.engine.lm_data import LMExample, encode
from worker.engine.lm_train import LMTraining, train_lm
from worker.engine.loop import LoopState
from worker.engine.text import TextClassifier, build_text_student, tokenize
from worker.engine.text_inference import _run_batched
from worker.engine.text_train import (
    classifier_signals,
    distill_embeddings,
    distill_text_classifier,
    train_text_classifier,
)

CPU = torch.device("cpu")
TOLERANCE = 1e-6
TEXT_TOLERANCE = 1e-5
BATCH = 4


@pytest.fixture(scope="module")
def tok() -> Any:
    return char_tokenizer()


def learned(model: torch.nn.Module) -> torch.Tensor:
    """The weights of ``model`` that have a gradient (see the module doc), flattened."""
    return torch.cat(
        [p.detach().flatten() for n, p in model.named_parameters() if not n.endswith("key.bias")]
    )


def records(n: int, seed: int) -> list[dict[str, str]]:
    """Completions of 1 to 14 characters: the ranks' shards of a batch hold unequal token counts."""
    rng = random.Random(seed)
    return [
        {"prompt": f"{rng.randrange(100)}+{rng.randrange(100)}=", "completion": "ab" * rng.randrange(1, 8)}
        for _ in range(n)
    ]


def shard_tokens(examples: list[LMExample], seed: int) -> list[tuple[int, int]]:
    """Each global batch of the first epoch: the completion tokens of rank 0's and rank 1's shards (the
    loop's own shuffle and split)."""
    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(seed))
    return [
        tuple(sum(examples[int(i)].loss_tokens for i in part) for part in torch.tensor_split(batch, 2))  # type: ignore[misc]
        for batch in order.split(BATCH)
    ]


def lm_run(tok: Any, examples: list[LMExample], terms: list[tuple[str, LossSpec]], **more: Any) -> LMTraining:
    return LMTraining(
        train=examples,
        validation=examples[:4],
        terms=terms,
        temperatures=[2.0] * len(terms),
        training=TrainingSpec(epochs=2, batch_size=BATCH, learning_rate=0.003, seed=5),
        epochs=2,
        pad_id=tok.pad_token_id,
        max_length=48,
        tokenizer=tok,
        **more,
    )


KD = [
    ("forward_kl_loss", ForwardKLLoss(type="forward_kl", weight=0.7)),
    ("ce_loss", CELoss(type="ce", weight=0.3)),
]


@pytest.mark.parametrize("teacher_kind", ["cached top-k", "live full logits", "none (ce)"])
def test_a_causal_lm_trained_by_two_ranks_gets_one_processs_weights_with_unequal_tokens_per_rank(
    tok: Any, teacher_kind: str
) -> None:
    examples = encode(records(11, 0), tok, max_length=48)  # batches of 4: the last one splits 2 / 1
    assert any(a != b for a, b in shard_tokens(examples, seed=5))  # the point: unequal token counts
    teacher = no_dropout(tiny_causal_lm(tok, layers=2, hidden=32, seed=1)).eval()
    student = no_dropout(tiny_causal_lm(tok, arch="llama", layers=1, hidden=32, seed=2))
    if teacher_kind == "cached top-k":
        topk = compute_topk(teacher, examples, k=8, pad_id=tok.pad_token_id, device=CPU)
        cached = TeacherTopK.from_signals(topk.to_signals()).align(examples)
        run = lm_run(tok, examples, KD, teacher=teacher, cached=cached)
    elif teacher_kind == "live full logits":  # each rank runs the teacher on its own shard
        run = lm_run(tok, examples, KD, teacher=teacher)
    else:
        run = lm_run(tok, examples, [("ce_loss", CELoss(type="ce"))])

    one_rec, two_rec = Recorder(), Recorder()
    one = copy.deepcopy(student)
    one_out = train_lm(one, run, CPU, one_rec)
    two = copy.deepcopy(student)
    two_out = train_lm(two, run, CPU, two_rec, parallel=TWO_RANKS)

    assert not two_out.stopped and two_out.steps == one_out.steps == 2 * 3
    assert (weights(two) - weights(one)).abs().max().item() < TOLERANCE
    assert (weights(two) - weights(student)).abs().max().item() > 100 * TOLERANCE  # it trained
    assert two_rec.steps == one_rec.steps and len(two_rec.epochs) == 2  # rank 0 alone reports
    for got, want in zip(two_out.history, one_out.history, strict=True):
        for key, value in want.items():  # the epoch's token-weighted loss means, and rank 0's evaluation
            assert abs(got[key] - value) < TOLERANCE * max(1.0, abs(value)), key


def test_a_causal_lm_checkpoint_from_two_ranks_resumes_with_two_ranks_where_one_process_ends(
    tok: Any,
) -> None:
    examples = encode(records(11, 1), tok, max_length=48)
    teacher = no_dropout(tiny_causal_lm(tok, layers=2, hidden=32, seed=1)).eval()
    student = no_dropout(tiny_causal_lm(tok, arch="llama", layers=1, hidden=32, seed=2))
    run = lm_run(tok, examples, KD, teacher=teacher)
    one = copy.deepcopy(student)
    train_lm(one, run, CPU, Recorder())

    states: list[LoopState] = []
    train_lm(
        copy.deepcopy(student),
        run,
        CPU,
        Recorder(),
        checkpoint=states.append,
        checkpoint_every=2,
        parallel=TWO_RANKS,
    )
    # 3 steps per epoch: after step 2 of each epoch and at each epoch's end, rank 0's alone
    assert [(s.epoch, s.position) for s in states] == [(1, 8), (2, 0), (2, 4), (3, 0)]
    assert set(states[0].model) == set(student.state_dict())  # the unwrapped student's keys

    again = copy.deepcopy(student)
    resumed = train_lm(again, run, CPU, Recorder(), state=states[2], parallel=TWO_RANKS)
    assert [h["epoch"] for h in resumed.history] == [1.0, 2.0]
    assert (weights(again) - weights(one)).abs().max().item() < TOLERANCE


def test_an_on_policy_causal_lm_trains_in_two_ranks_each_sampling_its_own_prompts(tok: Any) -> None:
    # every rank draws the same coin, so all of them take a live batch together; each samples completions
    # of its own shard's prompts (so the run matches one process in distribution only) and runs the
    # teacher on them
    examples = encode(records(10, 2), tok, max_length=48)
    teacher = no_dropout(tiny_causal_lm(tok, layers=2, hidden=32, seed=1)).eval()
    student = no_dropout(tiny_causal_lm(tok, arch="llama", layers=1, hidden=32, seed=2))
    on_policy = OnPolicySpec(fraction=0.5, max_new_tokens=6)
    run = lm_run(tok, examples, KD, teacher=teacher, on_policy=on_policy)
    two = copy.deepcopy(student)
    rec = Recorder()
    outcome = train_lm(two, run, CPU, rec, parallel=TWO_RANKS)
    assert not outcome.stopped and len(rec.steps) == 2 * 3 and len(outcome.history) == 2
    assert all(h["forward_kl_loss"] > 0 and h["val_perplexity"] < float("inf") for h in outcome.history)
    assert (weights(two) - weights(student)).abs().max().item() > 100 * TOLERANCE


@pytest.mark.parametrize("attention", [False, True], ids=["kd+ce", "kd+ce+attention"])
def test_an_hf_text_classifier_distilled_by_two_ranks_gets_one_processs_weights(
    tok: Any, attention: bool
) -> None:
    # with an attention term the student also runs outside DDP's forward (its attention maps): the
    # gradients of both passes reach DDP's all-reduce together
    rng = random.Random(3)
    texts = [
        " ".join(
            rng.choice(["good", "bad", "fine", "dull", "film", "plot"]) for _ in range(rng.randrange(1, 9))
        )
        for _ in range(13)
    ]
    labels = [rng.randrange(2) for _ in texts]
    teacher = HFTextClassifier(no_dropout(tiny_classifier(tok, num_labels=2, seed=1)).eval())
    student = HFTextClassifier(no_dropout(tiny_classifier(tok, num_labels=2, layers=1, hidden=32, seed=2)))
    signals = classifier_signals(teacher, tokenize(tok, texts, 32), device=CPU)
    settings: dict[str, Any] = {
        "train_labels": labels,
        "temperature": 2.0,
        "alpha": 0.6,
        "epochs": 2,
        "batch_size": 4,  # 13 texts: the last batch of 1 is fewer than the ranks
        "lr": 0.001,
        "seed": 4,
        "max_length": 32,
        "signals": signals,
        "device": CPU,
    }
    one_rec, two_rec = Recorder(), Recorder()
    one = distill_text_classifier(
        teacher, copy.deepcopy(student), tok, texts, texts[:5], labels[:5], callbacks=one_rec, **settings
    )
    two = distill_text_classifier(
        teacher,
        copy.deepcopy(student),
        tok,
        texts,
        texts[:5],
        labels[:5],
        callbacks=two_rec,
        parallel=TWO_RANKS,
        **settings,
    )
    assert not two.stopped
    assert (learned(two.model) - learned(one.model)).abs().max().item() < TEXT_TOLERANCE
    assert (learned(two.model) - learned(student)).abs().max().item() > 100 * TEXT_TOLERANCE
    assert two_rec.steps == one_rec.steps and len(two_rec.epochs) == 2
    for got, want in zip(two.history, one.history, strict=True):
        assert abs(got["train_loss"] - want["train_loss"]) < TEXT_TOLERANCE
        assert got["val_agreement"] == want["val_agreement"]  # rank 0 ran the teacher on the validation texts


def sentences(n: int, seed: int, length: int | None = None) -> list[str]:
    """Sentences of common words (one MiniLM token each): ``length`` words each, else 2 to 9."""
    rng = random.Random(seed)
    words = ["the", "film", "was", "good", "bad", "a", "long", "plot", "and", "dull", "fine", "cast"]
    return [" ".join(rng.choice(words) for _ in range(length or rng.randrange(2, 10))) for _ in range(n)]


def test_a_minilm_student_matching_embeddings_in_two_ranks_gets_one_processs_weights(minilm: Any) -> None:
    # the student's forward is its pooled embedding: what DDP runs (a module of its own around it)
    teacher, tokenizer = minilm
    train, val = sentences(13, 0), sentences(5, 1)
    outputs = [_run_batched(teacher.pooled, tokenize(tokenizer, t, 32), CPU, 64) for t in (train, val)]
    torch.manual_seed(0)
    student = no_dropout(build_text_student(teacher, layers=1))
    settings: dict[str, Any] = {
        "teacher_train": outputs[0],
        "teacher_val": outputs[1],
        "epochs": 2,
        "batch_size": 4,
        "lr": 0.0005,
        "max_length": 32,
        "freeze_word_embeddings": True,
        "device": CPU,
    }
    one = distill_embeddings(None, copy.deepcopy(student), tokenizer, train, val, **settings)
    two = distill_embeddings(
        None, copy.deepcopy(student), tokenizer, train, val, parallel=TWO_RANKS, **settings
    )
    assert (learned(two.model) - learned(one.model)).abs().max().item() < TEXT_TOLERANCE
    assert (learned(two.model) - learned(student)).abs().max().item() > 100 * TEXT_TOLERANCE
    for got, want in zip(two.history, one.history, strict=True):
        assert abs(got["val_cosine"] - want["val_cosine"]) < TEXT_TOLERANCE


def test_a_classifier_head_over_a_frozen_encoder_trains_in_two_ranks_as_in_one(minilm: Any) -> None:
    # a teacher job: the encoder's embeddings are computed once per rank; DDP runs the head alone
    teacher, tokenizer = minilm
    texts = sentences(15, 2)
    labels = [int("good" in t) for t in texts]
    torch.manual_seed(0)
    encoder = no_dropout(build_text_student(teacher, layers=1))
    settings: dict[str, Any] = {"num_classes": 2, "epochs": 2, "batch_size": 4, "lr": 0.01, "device": CPU}
    one = train_text_classifier(encoder, tokenizer, texts, labels, texts[:5], labels[:5], **settings)
    two = train_text_classifier(
        encoder, tokenizer, texts, labels, texts[:5], labels[:5], parallel=TWO_RANKS, **settings
    )
    assert (weights(two.model) - weights(one.model)).abs().max().item() < TEXT_TOLERANCE
    assert (weights(two.model.head) - weights(one.model.head)).abs().max().item() < TEXT_TOLERANCE
    for got, want in zip(two.history, one.history, strict=True):
        assert abs(got["train_loss"] - want["train_loss"]) < TEXT_TOLERANCE


def test_a_minilm_classifier_with_an_attention_loss_distilled_by_two_ranks_gets_one_processs_weights(
    minilm: Any,
) -> None:
    # the attention term runs the student a second time outside DDP's forward (for its attention maps):
    # the gradients of both passes reach DDP's all-reduce together. The term is a mean over the batch's
    # real (query, key) pairs, so with texts of different lengths a rank's shard mean is the one-process
    # mean only in expectation: texts of one length here make it exact
    encoder, tokenizer = minilm
    texts = sentences(13, 3, length=6)
    assert len({len(ids) for ids in tokenize(tokenizer, texts, 32).ids}) == 1
    labels = [int("good" in t) for t in texts]
    torch.manual_seed(0)
    teacher = TextClassifier(copy.deepcopy(encoder), 2).eval()
    student = no_dropout(build_text_student(teacher, layers=1))
    signals = classifier_signals(teacher, tokenize(tokenizer, texts, 32), [2], device=CPU)
    settings: dict[str, Any] = {
        "train_labels": labels,
        "losses": [
            KDLoss(type="kd", weight=0.6),
            CELoss(type="ce", weight=0.4),
            AttentionLoss(type="attention", weight=0.5, layer_map=[(0, 2)]),
        ],
        "temperature": 2.0,
        "epochs": 2,
        "batch_size": 4,
        "lr": 0.0005,
        "seed": 4,
        "max_length": 32,
        "signals": signals,
        "device": CPU,
    }
    one = distill_text_classifier(
        teacher, copy.deepcopy(student), tokenizer, texts, texts[:5], labels[:5], **settings
    )
    two = distill_text_classifier(
        teacher,
        copy.deepcopy(student),
        tokenizer,
        texts,
        texts[:5],
        labels[:5],
        parallel=TWO_RANKS,
        **settings,
    )
    assert (learned(two.model) - learned(one.model)).abs().max().item() < TEXT_TOLERANCE
    assert (learned(two.model) - learned(student)).abs().max().item() > 100 * TEXT_TOLERANCE
    for got, want in zip(two.history, one.history, strict=True):
        assert abs(got["attention_loss"] - want["attention_loss"]) < TEXT_TOLERANCE
