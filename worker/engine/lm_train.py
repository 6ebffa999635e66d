"""Training a causal-LM student: the step (a forward pass over a batch of prompt/completion examples and
the weighted token-level losses against the teacher) handed to :func:`worker.engine.loop.fit`, in one
process or data-parallel (``resources.gpus > 1``).

Every loss term is a mean over the batch's completion tokens; :attr:`Loop.weight` (the examples'
completion-token counts) makes an accumulation group, and with ranks the whole global batch, count every
token once: N ranks give the gradient one process gives on the whole batch (see
:func:`worker.engine.loop._weighted`).

Data-parallel: every rank runs :func:`_train` on its shard of each global batch (through
:func:`worker.engine.distributed.train_data_parallel`), with what :class:`LMTraining` holds: the examples,
the tokenizer, the teacher (each rank runs it on its own shard when it runs live: ``full_logits`` or
on-policy batches) and the cached top-k rows (tensors: shared memory, one copy for every rank). The
student's forward runs through DDP; rank 0 alone evaluates, reports and checkpoints. On-policy batches are
sampled by each rank from its own prompts (a coin drawn alike on every rank decides which batches are
live), so an on-policy run matches a one-process run in distribution, not to the last bit.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from distill.spec import CELoss, ForwardKLLoss, JSDLoss, LossSpec, OnPolicySpec, ReverseKLLoss, TrainingSpec
from worker.engine.distributed import DataParallel, RankGroup, for_ranks, train_data_parallel
from worker.engine.lm import generate, token_metrics
from worker.engine.lm_cache import TeacherTopK
from worker.engine.lm_data import LMExample, collate
from worker.engine.lm_losses import Divergence, TopK, generalized_jsd, next_token_ce, token_divergence
from worker.engine.loop import Checkpoint, FitOutcome, Loop, LoopState, TrainCallbacks, fit, stack_values

SAMPLER_RANK_STRIDE = 7919
"""On-policy sampling: rank ``r`` seeds its sampler ``seed + 2 + r * stride`` (rank 0: one process's)."""


@dataclass
class LMTraining:
    """What a causal-LM training run reads besides the student (it pickles whole, for the ranks)."""

    train: list[LMExample]
    validation: list[LMExample]
    terms: list[tuple[str, LossSpec]]
    """``(key, loss)`` of each weighted term (keys name the epoch's loss values)."""
    temperatures: list[float]
    """Each term's temperature (unused by ``ce``)."""
    training: TrainingSpec
    epochs: int
    pad_id: int
    max_length: int
    tokenizer: Any
    teacher: nn.Module | None = None
    """Runs live when a term needs it and no cached rows cover the batch (``full_logits``, on-policy)."""
    cached: TeacherTopK | None = None
    """The teacher's top-k rows, aligned with ``train``."""
    on_policy: OnPolicySpec | None = None


def train_lm(
    student: nn.Module,
    run: LMTraining,
    device: torch.device,
    callbacks: TrainCallbacks,
    *,
    state: LoopState | None = None,
    checkpoint: Checkpoint | None = None,
    checkpoint_every: int = 0,
    parallel: DataParallel | None = None,
) -> FitOutcome:
    """Train ``student`` (in place) on ``run``; ``state`` / ``checkpoint`` / ``checkpoint_every`` as in
    :func:`~worker.engine.loop.fit`. ``parallel``: data-parallel over ``parallel.world`` processes (DDP;
    this one rank 0, the only one to call ``callbacks`` and ``checkpoint``). Raises
    :class:`~worker.engine.loop.TrainingDiverged`."""
    if parallel is None or parallel.world == 1:
        return _train(
            student,
            run,
            ranks=None,
            device=device,
            callbacks=callbacks,
            state=state,
            checkpoint=checkpoint,
            checkpoint_every=checkpoint_every,
        )
    if parallel.sharding != "ddp":
        raise ValueError("resources.sharding: causal_lm students train data-parallel with DDP only")
    for_ranks(student)  # the ranks receive the models through the spawn pickler
    if run.teacher is not None:
        for_ranks(run.teacher)
    return train_data_parallel(
        parallel,
        device,
        functools.partial(_train, student, run),
        callbacks,
        state=state,
        checkpoint=checkpoint,
        checkpoint_every=checkpoint_every,
    )


def _train(
    student: nn.Module,
    run: LMTraining,
    *,
    ranks: RankGroup | None,
    device: torch.device,
    callbacks: TrainCallbacks,
    state: LoopState | None,
    checkpoint: Checkpoint | None,
    checkpoint_every: int,
) -> FitOutcome:
    t, train, terms = run.training, run.train, run.terms
    student = (student if ranks is None else ranks.own(student)).to(device)
    teacher = run.teacher if run.teacher is None or ranks is None else ranks.received(run.teacher)
    teacher = None if teacher is None else teacher.to(device).eval()
    on_policy, cached = run.on_policy, run.cached
    rank = 0 if ranks is None else ranks.rank
    coin = torch.Generator().manual_seed(t.seed + 1)  # the same draws on every rank: live batches agree
    sampler = torch.Generator().manual_seed(t.seed + 2 + rank * SAMPLER_RANK_STRIDE)
    keys = ["loss", *(key for key, _ in terms)]
    needs_teacher = teacher is not None and any(not isinstance(s, CELoss) for _, s in terms)
    net = student if ranks is None else ranks.wrap(student)

    def step(indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        chosen = [train[int(i)] for i in indices]
        live = on_policy is not None and float(torch.rand((), generator=coin)) < on_policy.fraction
        if live:
            assert on_policy is not None and teacher is not None
            chosen = _sampled(
                student,
                chosen,
                run,
                max_new_tokens=on_policy.max_new_tokens,
                temperature=on_policy.temperature,
                generator=sampler,
                device=device,
            )
        batch = collate(chosen, run.pad_id, device)
        logits = net(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1]
        target: torch.Tensor | TopK | None = None
        if needs_teacher:
            assert teacher is not None
            if cached is not None and not live:
                target = cached.batch([int(i) for i in indices], logits.shape[1], device)
            else:
                with torch.no_grad():
                    target = teacher(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[
                        :, :-1
                    ]
        parts = [
            _term(spec, temperature, logits, target, batch.targets, batch.loss_mask, live)
            for (_, spec), temperature in zip(terms, run.temperatures, strict=True)
        ]
        loss = sum(
            (spec.weight * p for (_, spec), p in zip(terms, parts, strict=True)),
            torch.zeros((), device=device),
        )
        return loss, stack_values(loss, *parts)

    def evaluate() -> dict[str, float]:
        metrics = token_metrics(student, run.validation, pad_id=run.pad_id, device=device)
        return {"val_token_accuracy": metrics["token_accuracy"], "val_perplexity": metrics["perplexity"]}

    optimizer = torch.optim.AdamW(student.parameters(), lr=t.learning_rate, weight_decay=t.weight_decay)
    loop = Loop(
        model=student,
        optimizer=optimizer,
        step=step,
        keys=keys,
        evaluate=evaluate,
        examples=len(train),
        epochs=run.epochs,
        batch_size=t.batch_size,
        seed=t.seed,
        learning_rate=t.learning_rate,
        weight=lambda indices: float(sum(train[int(i)].loss_tokens for i in indices)),
        device=device,
        ranks=ranks,
    )
    return fit(loop, callbacks, state=state, checkpoint=checkpoint, checkpoint_every=checkpoint_every)


def _term(
    spec: LossSpec,
    temperature: float,
    logits: torch.Tensor,
    teacher: torch.Tensor | TopK | None,
    targets: torch.Tensor,
    mask: torch.Tensor,
    live: bool,
) -> torch.Tensor:
    if isinstance(spec, CELoss):
        if live:  # the student's own samples are not a reference to imitate
            return torch.zeros((), device=logits.device)
        return next_token_ce(logits, targets, mask)
    assert teacher is not None
    if isinstance(spec, JSDLoss):
        return generalized_jsd(logits, teacher, mask, beta=spec.beta, temperature=temperature)
    assert isinstance(spec, ForwardKLLoss | ReverseKLLoss)
    kind: Divergence = "forward_kl" if isinstance(spec, ForwardKLLoss) else "reverse_kl"
    return token_divergence(logits, teacher, mask, kind=kind, temperature=temperature)


def _sampled(
    student: nn.Module,
    examples: Sequence[LMExample],
    run: LMTraining,
    *,
    max_new_tokens: int,
    temperature: float,
    generator: torch.Generator,
    device: torch.device,
) -> list[LMExample]:
    """The prompts of ``examples`` completed by the student's own samples (on-policy batches)."""
    was_training = student.training
    student.eval()
    room = [max(min(max_new_tokens, run.max_length - ex.prompt_length), 1) for ex in examples]
    outs = generate(
        student,
        [ex.ids[: ex.prompt_length] for ex in examples],
        run.tokenizer,
        max_new_tokens=max(room),
        device=device,
        sample=True,
        temperature=temperature,
        generator=generator,
    )
    if was_training:
        student.train()
    return [
        LMExample(ex.ids[: ex.prompt_length] + out[:r], ex.prompt_length, None)
        for ex, out, r in zip(examples, outs, room, strict=True)
    ]
