"""The one training loop every job kind uses: :func:`fit`.

What differs between kinds of job (tabular classification, text classification, text embedding) is the
*step*: how a batch of pool indices becomes a loss (a forward pass and the objective), and the
*evaluation* after each epoch. Everything else is written here once: epochs, shuffling, gradient
accumulation, the optimizer and scheduler steps, cancellation, progress, the epoch history, the divergence
check, and the hooks checkpointing needs (a :class:`LoopState` handed to ``checkpoint`` every
``checkpoint_every`` optimizer steps and at each epoch's end, and ``state=`` to resume from one).

Resuming is exact on CPU: the state holds the model, optimizer and scheduler, the shuffling generator as it
was when the epoch began, torch's global RNG (dropout) and the position in the epoch, so a run resumed from
any state ends where the uninterrupted run ends.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn


class TrainCallbacks(Protocol):
    def on_step(self, *, epoch: int, epochs: int, step: int, steps: int) -> None:
        """After each optimizer step; ``step`` counts from 1 to ``steps`` over all epochs."""

    def on_epoch(self, *, epoch: int, epochs: int, step: int, steps: int, metrics: dict[str, float]) -> None:
        """After each epoch: ``train_loss``, each loss term's epoch mean and the evaluation's metrics."""

    def should_stop(self) -> bool:
        """Polled before each step; true stops training at once (e.g. the job was cancelled)."""


class NoCallbacks:
    """Callbacks that do nothing and never stop."""

    def on_step(self, *, epoch: int, epochs: int, step: int, steps: int) -> None:
        pass

    def on_epoch(self, *, epoch: int, epochs: int, step: int, steps: int, metrics: dict[str, float]) -> None:
        pass

    def should_stop(self) -> bool:
        return False


class TrainingDiverged(ValueError):
    """The training loss became NaN or infinite: the message says in which epoch and what to change."""

    def __init__(self, epoch: int, loss: float, learning_rate: float) -> None:
        super().__init__(
            f"training diverged in epoch {epoch}: the training loss became {loss}; lower "
            f"training.learning_rate (now {learning_rate:g}), or check the inputs for NaN or huge values"
        )
        self.epoch = epoch


def check_finite(epoch: int, loss: float, learning_rate: float) -> None:
    """Raise :class:`TrainingDiverged` when an epoch's training loss is NaN or infinite."""
    if not math.isfinite(loss):
        raise TrainingDiverged(epoch, loss, learning_rate)


Step = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
"""``step(indices) -> (loss, values)``: the forward pass and the objective over the pool's rows
``indices``; ``values`` is a detached 1-D tensor, one entry per name of :attr:`Loop.keys` (the first one
the total loss)."""


@dataclass
class LoopState:
    """Where a run is: enough to resume it exactly (see the module docstring). ``epoch`` is the epoch in
    progress (1-based) and ``position`` the index in its shuffled order where the next batch starts;
    ``position == 0`` with ``epoch == epochs + 1`` means finished."""

    epoch: int
    position: int
    step: int
    model: dict[str, Any]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any] | None
    shuffle: torch.Tensor
    """The shuffling generator's state when ``epoch`` began (its order is drawn again on resume)."""
    rng: torch.Tensor
    """torch's global RNG state (dropout masks)."""
    totals: torch.Tensor
    """The running per-key loss sums of the epoch in progress."""
    history: list[dict[str, float]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    """Parameters the objective owns (hint projections...), saved with the model's."""


@dataclass
class Loop:
    """What one run of :func:`fit` trains and how."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    step: Step
    keys: Sequence[str]
    """Names of the step's ``values``: the first becomes ``train_loss``, the rest keep their names."""
    evaluate: Callable[[], dict[str, float]]
    """Metrics after each epoch (``val_accuracy``, ``val_cosine``...), the model in eval mode."""
    examples: int
    epochs: int
    batch_size: int
    seed: int
    learning_rate: float
    """Named in the divergence message."""
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    accumulate: int = 1
    """Gradient accumulation: one optimizer step per ``accumulate`` batches (the loss is averaged)."""
    train_mode: Callable[[], None] | None = None
    """Puts the trained parts in train mode at each epoch's start (default: ``model.train()``)."""
    extra: nn.Module | None = None
    """Other trained parameters to checkpoint with the model (the objective's projections)."""
    weight: Callable[[torch.Tensor], float] | None = None
    """What a batch's loss is a mean over, for a batch of pool indices (the completion tokens of a causal
    LM's examples). Given, the losses of an accumulation group are weighted by their batch's share of the
    group's total (``loss * weight(batch) / weight(group)``), so accumulated gradients are exactly one big
    batch's; None: each batch of a group counts the same (``loss / group``)."""
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(math.ceil(self.examples / self.batch_size) / self.accumulate)


@dataclass
class FitOutcome:
    stopped: bool
    history: list[dict[str, float]] = field(default_factory=list)
    """One entry per finished epoch: ``epoch`` and the epoch's metrics."""
    steps: int = 0


Checkpoint = Callable[[LoopState], None]


def fit(
    loop: Loop,
    callbacks: TrainCallbacks | None = None,
    *,
    state: LoopState | None = None,
    checkpoint: Checkpoint | None = None,
    checkpoint_every: int = 0,
) -> FitOutcome:
    """Train ``loop.model`` for ``loop.epochs`` epochs over shuffled batches of the pool's indices.

    ``state``: resume from a :class:`LoopState` given earlier to ``checkpoint``. ``checkpoint``: called
    with the state every ``checkpoint_every`` optimizer steps (0: never) and at each epoch's end; nothing is
    saved unless it is given. Raises :class:`TrainingDiverged` when an epoch's loss is not finite.
    """
    cb = callbacks or NoCallbacks()
    model, n, bs = loop.model, loop.examples, loop.batch_size
    epochs, steps = loop.epochs, loop.epochs * loop.steps_per_epoch
    shuffle = torch.Generator().manual_seed(loop.seed)
    history: list[dict[str, float]] = []
    step, first_epoch, position = 0, 1, 0
    totals = torch.zeros(len(loop.keys), device=loop.device)  # summed on the device, read once per epoch
    if state is not None:
        _restore(loop, state)
        shuffle.set_state(state.shuffle)
        history, step = [dict(h) for h in state.history], state.step
        first_epoch, position = state.epoch, state.position
        totals = state.totals.to(loop.device).clone()

    def snapshot(epoch: int, at: int, epoch_shuffle: torch.Tensor) -> LoopState:
        return LoopState(
            epoch=epoch,
            position=at,
            step=step,
            model=copy.deepcopy(model.state_dict()),
            optimizer=copy.deepcopy(loop.optimizer.state_dict()),
            scheduler=None if loop.scheduler is None else copy.deepcopy(loop.scheduler.state_dict()),
            shuffle=epoch_shuffle.clone(),
            rng=torch.get_rng_state(),
            totals=totals.detach().cpu().clone(),
            history=[dict(h) for h in history],
            extra={} if loop.extra is None else copy.deepcopy(loop.extra.state_dict()),
        )

    for epoch in range(first_epoch, epochs + 1):
        epoch_shuffle = shuffle.get_state()
        order = torch.randperm(n, generator=shuffle)
        if epoch != first_epoch or state is None:
            position = 0
            totals.zero_()
        (loop.train_mode or model.train)()
        batches = list(range(position, n, bs))
        for b, start in enumerate(batches):
            if cb.should_stop():
                model.eval()
                return FitOutcome(stopped=True, history=history, steps=step)
            idx = order[start : start + bs]
            # the group this batch belongs to: ``accumulate`` batches, fewer at the epoch's end
            group = loop.accumulate
            index_in_epoch = start // bs
            group_start = index_in_epoch - index_in_epoch % group
            group = min(group, math.ceil(n / bs) - group_start)
            loss, values = loop.step(idx)
            if index_in_epoch % loop.accumulate == 0:
                loop.optimizer.zero_grad(set_to_none=True)
            if loop.weight is not None and group > 1:
                members = [order[g * bs : (g + 1) * bs] for g in range(group_start, group_start + group)]
                total = sum(loop.weight(m) for m in members)
                (loss * (loop.weight(idx) / total if total > 0 else 0.0)).backward()
            else:
                (loss / group if group > 1 else loss).backward()
            totals.add_(values.to(totals.device), alpha=len(idx))
            if (index_in_epoch + 1 - group_start) < group:
                continue
            loop.optimizer.step()
            if loop.scheduler is not None:
                loop.scheduler.step()
            step += 1
            cb.on_step(epoch=epoch, epochs=epochs, step=step, steps=steps)
            more = b + 1 < len(batches)
            if checkpoint is not None and checkpoint_every > 0 and step % checkpoint_every == 0 and more:
                checkpoint(snapshot(epoch, start + bs, epoch_shuffle))

        means = dict(zip(loop.keys, (totals / n).tolist(), strict=True))
        first = loop.keys[0]
        check_finite(epoch, means[first], loop.learning_rate)
        metrics = {"train_loss": means.pop(first), **means}
        model.eval()
        with torch.inference_mode():
            metrics |= loop.evaluate()
        history.append({"epoch": float(epoch), **metrics})
        cb.on_epoch(epoch=epoch, epochs=epochs, step=step, steps=steps, metrics=metrics)
        if checkpoint is not None:
            totals.zero_()
            checkpoint(snapshot(epoch + 1, 0, shuffle.get_state()))

    model.eval()
    return FitOutcome(stopped=False, history=history, steps=step)


def _restore(loop: Loop, state: LoopState) -> None:
    loop.model.load_state_dict(state.model)
    loop.optimizer.load_state_dict(state.optimizer)
    if loop.scheduler is not None and state.scheduler is not None:
        loop.scheduler.load_state_dict(state.scheduler)
    if loop.extra is not None and state.extra:
        loop.extra.load_state_dict(state.extra)
    torch.set_rng_state(state.rng)


def stack_values(loss: torch.Tensor, *parts: torch.Tensor) -> torch.Tensor:
    """``values`` for a :data:`Step`: the loss and its terms, detached, as one 1-D float32 tensor."""
    return torch.stack([loss.detach().float(), *(p.detach().float() for p in parts)])
