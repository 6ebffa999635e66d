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

Data-parallel: with :attr:`Loop.ranks` set (a :class:`worker.engine.distributed.RankGroup`), each rank
trains on its shard of every global batch, and only rank 0 evaluates, calls the callbacks and checkpoints
(see :mod:`worker.engine.distributed` for the layout).
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn

if TYPE_CHECKING:
    from worker.engine.distributed import RankGroup


STOP_EVERY = 8
"""Data-parallel: batches between two agreements of the ranks on whether to stop."""


class TrainCallbacks(Protocol):
    def on_step(self, *, epoch: int, epochs: int, step: int, steps: int) -> None:
        """After each optimizer step; ``step`` counts from 1 to ``steps`` over all epochs."""

    def on_epoch(
        self,
        *,
        epoch: int,
        epochs: int,
        step: int,
        steps: int,
        metrics: dict[str, float],
        learning_rate: float,
        throughput: float | None,
    ) -> None:
        """After each epoch: ``train_loss``, each loss term's epoch mean and the evaluation's metrics; the
        learning rate at the epoch's end (the first parameter group's, after the scheduler) and the
        training throughput in examples per second (the epoch's optimizer steps, evaluation excluded)."""

    def should_stop(self) -> bool:
        """Polled before each step; true stops training at once (e.g. the job was cancelled)."""


class NoCallbacks:
    """Callbacks that do nothing and never stop."""

    def on_step(self, *, epoch: int, epochs: int, step: int, steps: int) -> None:
        pass

    def on_epoch(
        self,
        *,
        epoch: int,
        epochs: int,
        step: int,
        steps: int,
        metrics: dict[str, float],
        learning_rate: float,
        throughput: float | None,
    ) -> None:
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
    batch's, and with ranks each rank's by its shard's share (:func:`_weighted`), so N ranks give one
    process's gradient; None: each batch of a group counts the same (``loss / group``)."""
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    ranks: RankGroup | None = None
    """Data-parallel: this process's rank; ``step`` must then run the DDP-wrapped model
    (:meth:`RankGroup.wrap`). None: one process. Sharded (FSDP): ``model`` is the sharded model, every rank
    runs ``evaluate`` and, when any rank has a ``checkpoint``, every rank must be given one (the state is
    gathered by all of them; the peers' may discard it)."""

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
    ranks = loop.ranks
    main = ranks is None or ranks.is_main
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
        if main:  # the state's sums are every rank's: counted once
            totals = state.totals.to(loop.device).clone()

    def snapshot(epoch: int, at: int, epoch_shuffle: torch.Tensor, sums: torch.Tensor) -> LoopState:
        if ranks is not None and ranks.sharded:  # gathered whole on every rank (a collective)
            model_state, optimizer_state = ranks.full_state(model, loop.optimizer)
        else:
            model_state = copy.deepcopy(model.state_dict())
            optimizer_state = copy.deepcopy(loop.optimizer.state_dict())
        return LoopState(
            epoch=epoch,
            position=at,
            step=step,
            model=model_state,
            optimizer=optimizer_state,
            scheduler=None if loop.scheduler is None else copy.deepcopy(loop.scheduler.state_dict()),
            shuffle=epoch_shuffle.clone(),
            rng=torch.get_rng_state(),
            totals=sums.detach().cpu().clone(),
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
        epoch_started, trained = time.perf_counter(), n - position
        for b, start in enumerate(batches):
            if ranks is None:
                stop = cb.should_stop()
            else:  # every rank stops at the same batch (rank 0 holds the callbacks)
                stop = b % STOP_EVERY == 0 and ranks.agree_to_stop(cb.should_stop())
            if stop:
                model.eval()
                return FitOutcome(stopped=True, history=history, steps=step)
            idx = order[start : start + bs]
            # the group this batch belongs to: ``accumulate`` batches, fewer at the epoch's end
            group = loop.accumulate
            index_in_epoch = start // bs
            group_start = index_in_epoch - index_in_epoch % group
            group = min(group, math.ceil(n / bs) - group_start)
            last = (index_in_epoch + 1 - group_start) >= group
            mine, scale, weight = (idx, 1.0, len(idx)) if ranks is None else ranks.shard(idx)
            factor, counts = scale / group, float(weight)
            if loop.weight is not None:
                members = [order[g * bs : (g + 1) * bs] for g in range(group_start, group_start + group)]
                factor, counts = _weighted(loop.weight, idx, mine, weight, members, ranks, (factor, counts))
            with contextlib.nullcontext() if ranks is None else ranks.no_sync(last):
                loss, values = loop.step(mine)
                if index_in_epoch % loop.accumulate == 0:
                    loop.optimizer.zero_grad(set_to_none=True)
                (loss * factor if factor != 1.0 else loss).backward()
            totals.add_(values.to(totals.device), alpha=counts)
            if not last:
                continue
            if ranks is not None and loop.extra is not None:
                ranks.average_gradients(loop.extra)
            loop.optimizer.step()
            if loop.scheduler is not None:
                loop.scheduler.step()
            step += 1
            cb.on_step(epoch=epoch, epochs=epochs, step=step, steps=steps)
            more = b + 1 < len(batches)
            if checkpoint_every > 0 and step % checkpoint_every == 0 and more:
                if ranks is not None:  # every rank takes part in the sum; rank 0 saves it
                    sums = ranks.summed(totals)
                    if checkpoint is not None:
                        checkpoint(snapshot(epoch, start + bs, epoch_shuffle, sums))
                elif checkpoint is not None:
                    checkpoint(snapshot(epoch, start + bs, epoch_shuffle, totals))

        epoch_totals = totals if ranks is None else ranks.summed(totals)
        means = dict(zip(loop.keys, (epoch_totals / n).tolist(), strict=True))  # (reading syncs the device)
        seconds = time.perf_counter() - epoch_started
        first = loop.keys[0]
        check_finite(epoch, means[first], loop.learning_rate)
        metrics = {"train_loss": means.pop(first), **means}
        model.eval()
        if main:
            with torch.inference_mode():
                metrics |= loop.evaluate()
        elif ranks is not None and ranks.sharded:  # a sharded forward needs every rank: rank 0 keeps them
            with torch.inference_mode():
                loop.evaluate()
        history.append({"epoch": float(epoch), **metrics})
        cb.on_epoch(
            epoch=epoch,
            epochs=epochs,
            step=step,
            steps=steps,
            metrics=metrics,
            learning_rate=float(loop.optimizer.param_groups[0]["lr"]),
            throughput=trained / seconds if seconds > 0 and trained > 0 else None,
        )
        if checkpoint is not None:
            totals.zero_()
            checkpoint(snapshot(epoch + 1, 0, shuffle.get_state(), totals))

    model.eval()
    return FitOutcome(stopped=False, history=history, steps=step)


def _weighted(
    weight: Callable[[torch.Tensor], float],
    batch: torch.Tensor,
    mine: torch.Tensor,
    examples: int,
    members: list[torch.Tensor],
    ranks: RankGroup | None,
    unweighted: tuple[float, float],
) -> tuple[float, float]:
    """``(factor, counts)`` for a loss that is a mean over ``weight`` units (a causal LM's completion
    tokens): the factor this process's batch loss is multiplied by before ``backward`` so that the step's
    gradient is the mean over every unit of the accumulation group (``members``, the global batches) and of
    every rank, and how many examples its ``values`` count for in the epoch's means.

    One process: ``weight(batch) / weight(group)``. Data-parallel: a rank's loss is a mean over its shard's
    units, so ``weight(shard) / weight(group) * world`` (DDP averages over the ranks): the gradient is then
    the one-process gradient of the whole batch however unevenly the units fall across the shards. The
    global count needs no collective: every rank knows the whole global batch's pool indices, and ``weight``
    is a sum over them (the sum the ranks' own counts would all-reduce to). ``values`` (per-shard means)
    count for ``len(batch) * weight(shard) / weight(batch)`` examples, so the epoch's means are the
    one-process ones. A group without units (on-policy prompts) falls back to ``unweighted``."""
    total = sum(weight(m) for m in members)
    if total <= 0:
        return unweighted
    own = weight(mine) if examples > 0 else 0.0  # an empty shard runs one example at weight 0
    if ranks is None:
        return own / total, unweighted[1]
    whole = weight(batch)
    counts = len(batch) * own / whole if whole > 0 else unweighted[1]
    return own / total * ranks.world, counts


def _restore(loop: Loop, state: LoopState) -> None:
    if loop.ranks is not None and loop.ranks.sharded:  # each rank keeps its shard of the whole state
        loop.ranks.load_full_state(loop.model, loop.optimizer, state.model, state.optimizer)
    else:
        loop.model.load_state_dict(state.model)
        # a copy: Optimizer.load_state_dict keeps the state's tensors and updates them in place, which would
        # change the LoopState (reused by another run, or shared with the other ranks' processes)
        loop.optimizer.load_state_dict(copy.deepcopy(state.optimizer))
    if loop.scheduler is not None and state.scheduler is not None:
        loop.scheduler.load_state_dict(state.scheduler)
    if loop.extra is not None and state.extra:
        loop.extra.load_state_dict(state.extra)
    torch.set_rng_state(state.rng)


def stack_values(loss: torch.Tensor, *parts: torch.Tensor) -> torch.Tensor:
    """``values`` for a :data:`Step`: the loss and its terms, detached, as one 1-D float32 tensor."""
    return torch.stack([loss.detach().float(), *(p.detach().float() for p in parts)])
