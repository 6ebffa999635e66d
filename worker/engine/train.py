"""The training loop: plain supervised training, or knowledge distillation from teacher signals.

The pool of training examples is the labeled train set, then the (unlabeled) transfer set
(:func:`pool_inputs`). The teachers are not run here: :func:`worker.engine.signals.compute_signals` ran
them once over the pool (or a cache restored their outputs), and each step reads the batch's rows of those
:class:`~worker.engine.signals.TeacherSignals`. The loss is the spec's objective
(:mod:`worker.engine.objective`): by default ``alpha * KD`` over the whole batch plus ``(1 - alpha) * CE``
over its labeled examples.
"""

from __future__ import annotations

import functools
import logging
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from distill.datasets import ArrayDataset
from distill.nets import build_model
from distill.spec import DistillationSpec, StoredModelConfig, TrainingSpec
from worker.engine.distributed import DataParallel, RankGroup, train_data_parallel
from worker.engine.evaluate import autocast, predict_logits
from worker.engine.features import FeatureCapture
from worker.engine.loop import (
    Checkpoint,
    Loop,
    LoopState,
    NoCallbacks,
    TrainCallbacks,
    TrainingDiverged,
    check_finite,
    fit,
)
from worker.engine.objective import build_objective
from worker.engine.signals import TeacherSignals

log = logging.getLogger(__name__)

__all__ = [  # the loop's names, re-exported for the pipelines and benchmarks that train tabular students
    "NoCallbacks",
    "TrainCallbacks",
    "TrainInputs",
    "TrainOutcome",
    "TrainingDiverged",
    "check_finite",
    "pool_inputs",
    "sharding_for",
    "train_model",
]


@dataclass
class TrainInputs:
    train: ArrayDataset
    """Labeled."""
    validation: ArrayDataset
    """Labeled; evaluated after each epoch."""
    transfer: ArrayDataset | None = None
    """Extra inputs without labels (any ``y`` is ignored); only used with a teacher."""
    test: ArrayDataset | None = None
    """Labeled; where the final figures are measured (no choice sees it). None: the validation set."""

    @property
    def evaluation(self) -> ArrayDataset:
        """The split the final figures (``test_accuracy``...) are measured on."""
        return self.validation if self.test is None else self.test


@dataclass
class TrainOutcome:
    model: nn.Module
    stopped: bool
    history: list[dict[str, float]] = field(default_factory=list)
    """One entry per finished epoch: ``epoch`` and the epoch's metrics."""


def pool_inputs(inputs: TrainInputs) -> np.ndarray:
    """The pool's inputs (float32), in the order the teacher signals must follow: train, then transfer."""
    parts = [inputs.train.x] if inputs.transfer is None else [inputs.train.x, inputs.transfer.x]
    return np.concatenate(parts).astype(np.float32, copy=False)


def _pool_labels(inputs: TrainInputs) -> tuple[torch.Tensor, torch.Tensor]:
    """``(labels, labeled)`` for the pool: the train labels, then 0 / ``False`` for each transfer input."""
    assert inputs.train.y is not None  # checked by _check_inputs
    n_transfer = 0 if inputs.transfer is None else len(inputs.transfer)
    labels = np.concatenate([inputs.train.y, np.zeros(n_transfer, dtype=np.int64)])
    labeled = np.concatenate([np.ones(len(inputs.train), dtype=bool), np.zeros(n_transfer, dtype=bool)])
    return torch.from_numpy(labels), torch.from_numpy(labeled)


def train_model(
    cfg: StoredModelConfig,
    inputs: TrainInputs,
    training: TrainingSpec,
    distillation: DistillationSpec,
    signals: TeacherSignals | None,
    device: torch.device,
    callbacks: TrainCallbacks,
    *,
    temperature: float | None = None,
    alpha: float | None = None,
    state: LoopState | None = None,
    checkpoint: Checkpoint | None = None,
    checkpoint_every: int = 0,
    parallel: DataParallel | None = None,
) -> TrainOutcome:
    """Train a student of architecture ``cfg``; on CPU the same inputs and seed give the same weights.

    ``signals``: the teachers' outputs over :func:`pool_inputs` (``None``: no teacher, plain training).
    ``temperature`` / ``alpha``: the resolved numbers when the spec says ``"auto"``; ``None`` takes the
    spec's value. ``state`` / ``checkpoint`` / ``checkpoint_every``: see :func:`worker.engine.loop.fit`.
    ``parallel``: train data-parallel over ``parallel.world`` processes, this one rank 0 (it alone calls
    ``callbacks`` and ``checkpoint``; the same global batch and seed as one process, see
    :mod:`worker.engine.distributed`). Raises ``ValueError`` with a message for the user when inputs,
    signals or losses do not fit.
    """
    args = (cfg, inputs, training, distillation, signals, device)
    if parallel is None or parallel.world == 1:
        return _train(*args, callbacks, temperature, alpha, state, checkpoint, checkpoint_every, None)
    if parallel.sharding == "auto":
        parallel = sharding_for(parallel, cfg, device)
        log.info("data-parallel training: %s", parallel.describe())
    train = functools.partial(
        _rank_train, cfg, SharedInputs.of(inputs), training, distillation, signals, temperature, alpha
    )
    return train_data_parallel(
        parallel,
        device,
        train,
        callbacks,
        state=state,
        checkpoint=checkpoint,
        checkpoint_every=checkpoint_every,
    )


def sharding_for(parallel: DataParallel, cfg: StoredModelConfig, device: torch.device) -> DataParallel:
    """``parallel`` with an ``auto`` sharding decided for a student of ``cfg`` trained on ``device`` (rank
    0's): FSDP when its training state does not fit one device (the model is built on the meta device to
    be measured: no memory, no weights)."""
    if parallel.sharding != "auto":
        return parallel
    with torch.device("meta"):
        return parallel.resolved(build_model(cfg), device)


@dataclass
class SharedInputs:
    """:class:`TrainInputs` as tensors, for the spawned ranks: tensors travel through shared memory (one copy
    for every rank), where arrays would be pickled through each rank's pipe."""

    parts: dict[str, tuple[torch.Tensor, torch.Tensor | None] | None]

    @classmethod
    def of(cls, inputs: TrainInputs) -> SharedInputs:
        def share(ds: ArrayDataset | None) -> tuple[torch.Tensor, torch.Tensor | None] | None:
            if ds is None:
                return None
            with warnings.catch_warnings():  # read-only arrays: the ranks never write them
                warnings.simplefilter("ignore", UserWarning)
                return torch.from_numpy(ds.x), None if ds.y is None else torch.from_numpy(ds.y)

        return cls(
            {name: share(getattr(inputs, name)) for name in ("train", "validation", "transfer", "test")}
        )

    def inputs(self) -> TrainInputs:
        def back(part: tuple[torch.Tensor, torch.Tensor | None] | None) -> ArrayDataset | None:
            if part is None:
                return None
            x, y = part
            return ArrayDataset(x.numpy(), None if y is None else y.numpy())

        train, validation = back(self.parts["train"]), back(self.parts["validation"])
        assert train is not None and validation is not None
        return TrainInputs(train, validation, back(self.parts["transfer"]), back(self.parts["test"]))


def _rank_train(
    cfg: StoredModelConfig,
    inputs: SharedInputs,
    training: TrainingSpec,
    distillation: DistillationSpec,
    signals: TeacherSignals | None,
    temperature: float | None,
    alpha: float | None,
    *,
    ranks: RankGroup,
    device: torch.device,
    callbacks: TrainCallbacks,
    state: LoopState | None,
    checkpoint: Checkpoint | None,
    checkpoint_every: int,
) -> TrainOutcome:
    """One rank's part of :func:`train_model` (:func:`~worker.engine.distributed.train_data_parallel`)."""
    return _train(
        cfg,
        inputs.inputs(),
        training,
        distillation,
        signals,
        device,
        callbacks,
        temperature,
        alpha,
        state,
        checkpoint,
        checkpoint_every,
        ranks,
    )


def _train(
    cfg: StoredModelConfig,
    inputs: TrainInputs,
    training: TrainingSpec,
    distillation: DistillationSpec,
    signals: TeacherSignals | None,
    device: torch.device,
    callbacks: TrainCallbacks,
    temperature: float | None,
    alpha: float | None,
    state: LoopState | None,
    checkpoint: Checkpoint | None,
    checkpoint_every: int,
    ranks: RankGroup | None,
) -> TrainOutcome:
    _check_inputs(cfg, inputs, signals is not None)
    temperature, alpha = _resolve(distillation, temperature, alpha, has_teacher=signals is not None)
    x = torch.from_numpy(pool_inputs(inputs))
    y, labeled = _pool_labels(inputs)
    all_labeled = inputs.transfer is None  # then the loss skips the label mask (fewer ops per step)
    if signals is not None:
        _check_signals(signals, len(x), cfg.num_classes)

    torch.manual_seed(training.seed)
    model = build_model(cfg).to(device)
    objective = build_objective(
        distillation,
        temperature=temperature,
        alpha=alpha,
        student=model,
        teacher_feature_shapes={} if signals is None else signals.feature_shapes,
        has_teacher=signals is not None,
        student_input=x[:2].to(device),
    )
    # DDP's forward all-reduces the gradients; FSDP shards ``model`` in place, replacing its parameters,
    # so the optimizer is built after the wrap
    net = model if ranks is None else ranks.wrap(model)
    sharded = ranks is not None and ranks.sharded
    optimizer = adam([*model.parameters(), *objective.parameters()], training, device, fused=not sharded)
    student_features = FeatureCapture(model, objective.student_layers, role="student")
    if signals is not None:
        signals.precompute(objective.temperatures)

    def step(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xb = x[idx].to(device, non_blocking=True)
        yb = y[idx].to(device, non_blocking=True)
        mb = None if all_labeled else labeled[idx].to(device, non_blocking=True)
        teacher = None
        if signals is not None:
            teacher = signals.batch(idx, device, logits=objective.needs_teacher_logits)
        with student_features, autocast(device):
            logits = net(xb)
        loss, values = objective(logits, student_features.outputs, yb, mb, teacher)
        return loss, values if signals is not None else values[:1]

    # without a teacher the loss terms are the loss itself: only ``train_loss`` is reported
    keys = list(objective.keys) if signals is not None else ["loss"]
    outcome = fit(
        Loop(
            model=model,
            optimizer=optimizer,
            step=step,
            keys=keys,
            evaluate=lambda: _validate(model, inputs.validation, device),
            examples=len(x),
            epochs=training.epochs,
            batch_size=training.batch_size,
            seed=training.seed,
            learning_rate=training.learning_rate,
            extra=objective.projections if len(objective.projections) else None,
            device=device,
            ranks=ranks,
        ),
        callbacks,
        state=state,
        checkpoint=checkpoint,
        checkpoint_every=checkpoint_every,
    )
    if sharded:  # gathered whole (every rank takes part) for rank 0's final evaluation and export
        assert ranks is not None
        whole, _ = ranks.full_state(model, optimizer)
        model = build_model(cfg).to(device)
        model.load_state_dict(whole)
        model.eval()
    return TrainOutcome(model=model, stopped=outcome.stopped, history=outcome.history)


def adam(
    params: list[nn.Parameter], training: TrainingSpec, device: torch.device, *, fused: bool = True
) -> torch.optim.Adam:
    """Adam with the spec's learning rate and weight decay; the fused implementation (one kernel for all
    parameters instead of a loop of small ops per parameter) on CPU and CUDA, the same update rule
    (``fused=False``: the default implementation, for sharded parameters)."""
    fused = fused and device.type in ("cpu", "cuda") and all(p.dtype.is_floating_point for p in params)
    return torch.optim.Adam(
        params, lr=training.learning_rate, weight_decay=training.weight_decay, fused=fused or None
    )


def _resolve(
    distillation: DistillationSpec, temperature: float | None, alpha: float | None, *, has_teacher: bool
) -> tuple[float, float]:
    """The temperature and alpha to train with: the arguments, else the spec's numbers (unused, and so
    allowed to stay ``"auto"``, without a teacher)."""
    t = distillation.temperature if temperature is None else temperature
    a = distillation.alpha if alpha is None else alpha
    if isinstance(t, str) or isinstance(a, str):
        if has_teacher:
            raise ValueError('distillation: "auto" temperature / alpha must be resolved before training')
        return 1.0, 0.0
    return float(t), float(a)


def _check_signals(signals: TeacherSignals, n: int, num_classes: int) -> None:
    if signals.num_examples != n:
        raise ValueError(
            f"the teacher signals cover {signals.num_examples} examples but the pool has {n} "
            "(train inputs, then transfer inputs)"
        )
    if signals.num_classes != num_classes:
        raise ValueError(
            f"the teacher predicts {signals.num_classes} classes but the student has {num_classes}"
        )


def _validate(model: nn.Module, validation: ArrayDataset, device: torch.device) -> dict[str, float]:
    assert validation.y is not None
    logits = predict_logits(model, validation.x, device)
    labels = torch.from_numpy(validation.y)
    return {
        "val_accuracy": (logits.argmax(dim=1) == labels).float().mean().item(),
        "val_loss": F.cross_entropy(logits, labels).item(),
    }


def _check_inputs(cfg: StoredModelConfig, inputs: TrainInputs, has_teacher: bool) -> None:
    """Raise ``ValueError`` with a clear message for inputs that do not fit the model or each other."""
    named = [("train", inputs.train), ("validation", inputs.validation)]
    if inputs.test is not None:
        named.append(("test", inputs.test))
    if inputs.transfer is not None:
        if not has_teacher:
            raise ValueError("a transfer set is only used with a teacher")
        named.append(("transfer", inputs.transfer))
    for name, ds in named:
        if len(ds) == 0:
            raise ValueError(f"the {name} set is empty")
        if ds.input_shape != list(cfg.input_shape):
            raise ValueError(
                f"the {name} set's examples have shape {ds.input_shape} "
                f"but the model expects {cfg.input_shape}"
            )
        if name == "transfer":
            continue
        if ds.y is None:
            raise ValueError(f"the {name} set has no labels; it needs a label for every example")
        if len(ds.y) != len(ds):
            raise ValueError(f"the {name} set has {len(ds)} examples but {len(ds.y)} labels")
        if int(ds.y.min()) < 0 or int(ds.y.max()) >= cfg.num_classes:
            raise ValueError(
                f"the {name} set has labels in [{int(ds.y.min())}, {int(ds.y.max())}] but the model has "
                f"{cfg.num_classes} classes (labels 0 to {cfg.num_classes - 1})"
            )
