"""Text training: embedding distillation, a classifier teacher, and classifier distillation.

There is no loop here: each of the three sets up its data, student, optimizer and schedule and hands
:func:`worker.engine.loop.fit` a ``step`` and an ``evaluate``; classifier losses are
:mod:`worker.engine.objective`'s. The file is over 500 lines because those three setups share the
optimizer, schedule, label checks and outcome type, and read best side by side.

Teacher outputs (un-normalised sentence embeddings, or a classifier's :class:`TeacherSignals`: logits and
attention maps) are computed once, before the loop, and returned in the outcome so a caller can store
them and pass them back (``teacher_train=`` / ``signals=``) to skip the teacher entirely next time.

Callbacks have the shape of :class:`worker.engine.loop.TrainCallbacks` (``on_step``, ``on_epoch``,
``should_stop``), so the runner's callbacks fit as they are.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from distill.spec import AttentionLoss, CELoss, LossSpec
from worker.engine.distributed import DataParallel, RankGroup, for_ranks, train_data_parallel
from worker.engine.evaluate import eval_mode
from worker.engine.features import attention_key
from worker.engine.loop import Checkpoint, Loop, LoopState, NoCallbacks, TrainCallbacks, fit, stack_values
from worker.engine.objective import build_layered_objective, check_layer_map
from worker.engine.signals import TeacherSignals, signals_from_logits
from worker.engine.text import (
    DEFAULT_MAX_LENGTH,
    TextClassifier,
    TextEncoder,
    TextModel,
    TokenizedTexts,
    Tokenizer,
    attention_maps,
    clone_text_model,
    encoder_of,
    tokenize,
)
from worker.engine.text_inference import (
    _device,
    _run_batched,
    mean_cosine,
    teacher_attention_maps,
)

TextCallbacks = TrainCallbacks
"""Text training reports through the same callbacks as :func:`worker.engine.train.train_model`."""


@dataclass
class TextTrainOutcome:
    model: TextModel
    stopped: bool
    history: list[dict[str, float]] = field(default_factory=list)
    """One entry per finished epoch: ``epoch`` and the epoch's metrics."""
    teacher_train: torch.Tensor | None = None
    """Teacher outputs for the train texts (embeddings ``[n, d]`` un-normalised, or logits ``[n, k]``)."""
    teacher_val: torch.Tensor | None = None
    """The same for the validation texts."""
    seconds: float = 0.0
    """Wall time of the whole call, teacher outputs included."""


# --------------------------------------------------------------------------------------------- helpers


def _optimizer(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    groups: list[tuple[list[nn.Parameter], float]] | None = None,
) -> torch.optim.Optimizer:
    if groups is None:
        groups = [([p for p in model.parameters() if p.requires_grad], lr)]
    return torch.optim.AdamW(
        [{"params": ps, "lr": g_lr} for ps, g_lr in groups if ps], weight_decay=weight_decay
    )


def _schedule(
    optimizer: torch.optim.Optimizer, steps: int, warmup_ratio: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up then linear decay to 0 (the usual BERT fine-tuning schedule)."""
    warmup = max(1, int(steps * warmup_ratio)) if warmup_ratio > 0 else 0

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (steps - step) / max(1, steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _check_texts(name: str, texts: Sequence[str]) -> None:
    if len(texts) == 0:
        raise ValueError(f"the {name} set is empty")


RANK_ARGUMENTS = ("device", "callbacks", "state", "checkpoint", "checkpoint_every")
"""What :func:`~worker.engine.distributed.train_data_parallel` gives each rank's run itself."""


def _data_parallel(run: Callable[..., TextTrainOutcome], arguments: dict[str, Any]) -> TextTrainOutcome:
    """``run`` (one of this module's trainings) data-parallel: called on every rank with ``arguments``
    (its own, as ``locals()`` gives them on entry) and ``ranks``; rank 0 keeps the job's callbacks and
    checkpoint. Models go to the ranks ready for them (:func:`~worker.engine.distributed.for_ranks`)."""
    parallel = arguments.pop("parallel")
    assert isinstance(parallel, DataParallel)
    if parallel.sharding != "ddp":
        raise ValueError("resources.sharding: text students train data-parallel with DDP only")
    own = {name: arguments.pop(name) for name in RANK_ARGUMENTS}
    arguments.pop("ranks")
    for value in arguments.values():
        if isinstance(value, nn.Module):
            for_ranks(value)
    return train_data_parallel(
        parallel,
        _device(own["device"]),
        functools.partial(run, **arguments),
        own["callbacks"] or NoCallbacks(),
        state=own["state"],
        checkpoint=own["checkpoint"],
        checkpoint_every=own["checkpoint_every"],
    )


class _Pooled(nn.Module):
    """An encoder whose forward is its un-normalised embedding (what DDP must run: its forward prepares
    the gradient all-reduce)."""

    def __init__(self, encoder: TextEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.encoder.pooled(input_ids, attention_mask)


# --------------------------------------------------------------------------------------------- embeddings


def embedding_loss(
    student: torch.Tensor, teacher: torch.Tensor, mse_weight: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``mean(1 - cos(student, teacher)) + mse_weight * MSE(student, teacher)``, un-normalised embeddings.

    ``(loss, values)``: ``values`` detached, named by :func:`embedding_loss_keys` (the loss, then its terms).
    """
    cos = (1.0 - F.cosine_similarity(student.float(), teacher.float(), dim=-1)).mean()
    if mse_weight <= 0:
        return cos, stack_values(cos, cos)
    mse = F.mse_loss(student.float(), teacher.float())
    loss = cos + mse_weight * mse
    return loss, stack_values(loss, cos, mse)


def embedding_loss_keys(mse_weight: float = 0.0) -> list[str]:
    return ["loss", "cos_loss", "mse_loss"] if mse_weight > 0 else ["loss", "cos_loss"]


def distill_embeddings(
    teacher: TextEncoder | None,
    student: TextEncoder,
    tokenizer: Tokenizer,
    train_texts: Sequence[str],
    val_texts: Sequence[str],
    *,
    epochs: int = 3,
    batch_size: int = 32,
    lr: float = 1e-4,
    seed: int = 0,
    max_length: int = DEFAULT_MAX_LENGTH,
    weight_decay: float = 0.01,
    warmup_ratio: float = 0.06,
    mse_weight: float = 0.0,
    freeze_word_embeddings: bool = False,
    teacher_train: torch.Tensor | None = None,
    teacher_val: torch.Tensor | None = None,
    device: torch.device | None = None,
    callbacks: TextCallbacks | None = None,
    state: LoopState | None = None,
    checkpoint: Checkpoint | None = None,
    checkpoint_every: int = 0,
    parallel: DataParallel | None = None,
    ranks: RankGroup | None = None,
) -> TextTrainOutcome:
    """Train ``student`` (in place) to reproduce ``teacher``'s sentence embeddings.

    Loss: :func:`embedding_loss` between the student's and the teacher's pooled (un-normalised) embeddings.
    Metric after each epoch: ``val_cosine``, the mean cosine between the student's and the teacher's
    embeddings of ``val_texts``. ``teacher`` may be None when both ``teacher_train`` and ``teacher_val``
    are given (cached outputs of an earlier call). ``freeze_word_embeddings`` keeps the (teacher-copied)
    token embeddings fixed: faster steps, and words the training texts never use stay where the teacher
    put them.

    ``parallel``: data-parallel over its processes (:mod:`worker.engine.distributed`; ``ranks`` is set by
    it for each rank's run). Every rank computes missing teacher outputs itself: pass them cached.
    """
    if parallel is not None and parallel.world > 1:
        arguments = locals()
        if teacher_train is not None and teacher_val is not None:
            arguments["teacher"] = None  # cached outputs: the ranks need no teacher
        return _data_parallel(distill_embeddings, arguments)
    began = time.perf_counter()
    _check_texts("train", train_texts)
    _check_texts("validation", val_texts)
    dev, cb = _device(device), callbacks or NoCallbacks()
    if ranks is not None:
        student = ranks.own(student)
        teacher = None if teacher is None else ranks.received(teacher)
    train_tokens = tokenize(tokenizer, train_texts, max_length)
    val_tokens = tokenize(tokenizer, val_texts, max_length)
    if teacher_train is None or teacher_val is None:
        if teacher is None:
            raise ValueError("pass a teacher, or both teacher_train and teacher_val")
        with eval_mode(teacher.to(dev)):
            if teacher_train is None:
                teacher_train = _run_batched(teacher.pooled, train_tokens, dev, 64)
            if teacher_val is None:
                teacher_val = _run_batched(teacher.pooled, val_tokens, dev, 64)
    if len(teacher_train) != len(train_texts) or len(teacher_val) != len(val_texts):
        raise ValueError("cached teacher outputs do not match the number of texts")
    if teacher_train.shape[1] != student.output_dim:
        raise ValueError(
            f"the teacher's embeddings have {teacher_train.shape[1]} dimensions but the student's "
            f"{student.output_dim}: build the student with a projection (build_text_student)"
        )

    torch.manual_seed(seed)
    student.to(dev)
    student.bert.embeddings.word_embeddings.weight.requires_grad_(not freeze_word_embeddings)
    pooled = _Pooled(student) if ranks is None else ranks.wrap(_Pooled(student))
    optimizer = _optimizer(student, lr, weight_decay)
    epoch_steps = math.ceil(len(train_texts) / batch_size)
    scheduler = _schedule(optimizer, epochs * epoch_steps, warmup_ratio)
    targets = teacher_train

    def step(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = train_tokens.batch(idx)
        return embedding_loss(pooled(ids.to(dev), mask.to(dev)), targets[idx].to(dev), mse_weight)

    def evaluate() -> dict[str, float]:
        assert teacher_val is not None
        return {"val_cosine": mean_cosine(_run_batched(student.pooled, val_tokens, dev, 64), teacher_val)}

    loop = Loop(
        model=student,
        optimizer=optimizer,
        scheduler=scheduler,
        step=step,
        keys=embedding_loss_keys(mse_weight),
        evaluate=evaluate,
        examples=len(train_texts),
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        learning_rate=lr,
        device=dev,
        ranks=ranks,
    )
    try:
        outcome = fit(loop, cb, state=state, checkpoint=checkpoint, checkpoint_every=checkpoint_every)
    finally:
        student.bert.embeddings.word_embeddings.weight.requires_grad_(True)
    return TextTrainOutcome(
        student, outcome.stopped, outcome.history, teacher_train, teacher_val, time.perf_counter() - began
    )


# --------------------------------------------------------------------------------------------- classifiers


def _labels(name: str, labels: Sequence[int], n: int, num_classes: int) -> torch.Tensor:
    if len(labels) != n:
        raise ValueError(f"the {name} set has {n} texts but {len(labels)} labels")
    y = torch.as_tensor(list(labels), dtype=torch.long)
    if int(y.min()) < 0 or int(y.max()) >= num_classes:
        raise ValueError(f"the {name} set has labels outside 0..{num_classes - 1}")
    return y


def train_text_classifier(
    encoder: TextEncoder,
    tokenizer: Tokenizer,
    train_texts: Sequence[str],
    train_labels: Sequence[int],
    val_texts: Sequence[str],
    val_labels: Sequence[int],
    *,
    num_classes: int | None = None,
    epochs: int = 20,
    batch_size: int = 32,
    lr: float = 1e-2,
    seed: int = 0,
    max_length: int = DEFAULT_MAX_LENGTH,
    finetune: bool = False,
    encoder_lr: float = 2e-5,
    weight_decay: float = 0.0,
    device: torch.device | None = None,
    callbacks: TextCallbacks | None = None,
    state: LoopState | None = None,
    checkpoint: Checkpoint | None = None,
    checkpoint_every: int = 0,
    parallel: DataParallel | None = None,
    ranks: RankGroup | None = None,
) -> TextTrainOutcome:
    """A classifier teacher (a "teacher job"): a copy of ``encoder`` + a linear head trained on the labels.

    ``finetune=False`` freezes the encoder: its embeddings are computed once (``teacher_train`` /
    ``teacher_val`` of the outcome) and only the head trains, which takes seconds on a CPU.
    ``finetune=True`` also trains the encoder, at ``encoder_lr``. ``encoder`` itself is never modified.
    Metrics per epoch: ``train_loss``, ``val_accuracy``, ``val_loss``. ``parallel``: data-parallel (as
    :func:`distill_embeddings`; each rank embeds the texts for a frozen encoder itself).
    """
    if parallel is not None and parallel.world > 1:
        return _data_parallel(train_text_classifier, locals())
    began = time.perf_counter()
    _check_texts("train", train_texts)
    _check_texts("validation", val_texts)
    k = num_classes if num_classes is not None else max(max(train_labels), max(val_labels)) + 1
    y_train = _labels("train", train_labels, len(train_texts), k)
    y_val = _labels("validation", val_labels, len(val_texts), k)
    dev, cb = _device(device), callbacks or NoCallbacks()
    if ranks is not None:
        encoder = ranks.received(encoder)  # (cloned below: every rank trains its own copy)
    torch.manual_seed(seed)
    model = TextClassifier(clone_text_model(encoder), k).to(dev)  # type: ignore[arg-type]
    train_tokens = tokenize(tokenizer, train_texts, max_length)
    val_tokens = tokenize(tokenizer, val_texts, max_length)

    feats_train = feats_val = None
    if not finetune:
        model.encoder.requires_grad_(False)
        model.encoder.eval()
        feats_train = _run_batched(model.encoder, train_tokens, dev, 64)
        feats_val = _run_batched(model.encoder, val_tokens, dev, 64)
        groups = [(list(model.head.parameters()), lr)]
    else:
        groups = [(list(model.head.parameters()), lr), (list(model.encoder.parameters()), encoder_lr)]

    steps = epochs * math.ceil(len(train_texts) / batch_size)
    # data-parallel: what the step runs goes through DDP (the head alone over a frozen encoder)
    head: nn.Module = model.head
    net: nn.Module = model
    if ranks is not None:
        head, net = (ranks.wrap(model.head), model) if feats_train is not None else (head, ranks.wrap(model))
    optimizer = _optimizer(model, lr, weight_decay, groups)
    scheduler = _schedule(optimizer, steps, 0.06 if finetune else 0.0)

    def step(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if feats_train is not None:
            logits = head(feats_train[idx].to(dev))
        else:
            ids, mask = train_tokens.batch(idx)
            logits = net(ids.to(dev), mask.to(dev))
        loss = F.cross_entropy(logits.float(), y_train[idx].to(dev))
        return loss, stack_values(loss)

    def evaluate() -> dict[str, float]:
        if feats_val is not None:
            val_logits = model.head(feats_val.to(dev)).float().cpu()
        else:
            val_logits = _run_batched(model, val_tokens, dev, 64)
        return {
            "val_accuracy": (val_logits.argmax(1) == y_val).float().mean().item(),
            "val_loss": F.cross_entropy(val_logits, y_val).item(),
        }

    def train_mode() -> None:
        model.head.train()
        if finetune:
            model.encoder.train()

    outcome = fit(
        Loop(
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            step=step,
            keys=["loss"],
            evaluate=evaluate,
            examples=len(train_texts),
            epochs=epochs,
            batch_size=batch_size,
            seed=seed,
            learning_rate=lr,
            train_mode=train_mode,
            device=dev,
            ranks=ranks,
        ),
        cb,
        state=state,
        checkpoint=checkpoint,
        checkpoint_every=checkpoint_every,
    )
    if not outcome.stopped:
        model.requires_grad_(True)
    return TextTrainOutcome(
        model, outcome.stopped, outcome.history, feats_train, feats_val, time.perf_counter() - began
    )


def attention_layers(
    losses: Sequence[LossSpec] | None, *, student_layers: int, teacher_layers: int
) -> list[int]:
    """The teacher layers whose attention maps the ``attention`` terms of ``losses`` read, in first-use
    order (``[]``: no attention term). ``ValueError`` for a layer map out of range."""
    layers: list[int] = []
    for spec in losses or []:
        if isinstance(spec, AttentionLoss):
            pairs = check_layer_map(spec.layer_map, student_layers, teacher_layers)
            layers.extend(j for _, j in pairs if j not in layers)
    return layers


def classifier_signals(
    teacher: TextClassifier,
    tokens: TokenizedTexts,
    layers: Sequence[int] = (),
    *,
    device: torch.device | None = None,
    top_k: int | None = None,
    logits: torch.Tensor | None = None,
) -> TeacherSignals:
    """A text classifier teacher's signals over ``tokens`` (one teacher, weight 1): its logits (dense, or
    top-k past :data:`~worker.engine.signals.TOPK_THRESHOLD` classes; ``logits`` given: those) and, for
    each of ``layers``, its head-averaged attention maps as the feature ``attention_key(layer)``:
    ``[n, 1, L, L]`` float16, zero-padded to the longest text ``L`` (a batch reads its own width)."""
    dev = _device(device)
    if logits is None:
        with eval_mode(teacher.to(dev)):
            logits = _run_batched(teacher, tokens, dev, 64)
    features: dict[str, torch.Tensor] = {}
    if layers:
        maps = teacher_attention_maps(teacher, tokens, list(layers), device=dev)
        width = max(len(ids) for ids in tokens.ids)
        for p, j in enumerate(layers):
            stacked = torch.zeros((len(maps), 1, width, width), dtype=torch.float16)
            for i, example in enumerate(maps):
                n = example.shape[-1]
                stacked[i, 0, :n, :n] = example[p]
            features[attention_key(j)] = stacked
    return signals_from_logits(
        [logits], [1.0], top_k=top_k, features=features, capture=[attention_key(j) for j in layers]
    )


def distill_text_classifier(
    teacher: TextClassifier | None,
    student: TextClassifier,
    tokenizer: Tokenizer,
    train_texts: Sequence[str],
    val_texts: Sequence[str],
    val_labels: Sequence[int],
    *,
    train_labels: Sequence[int] | None = None,
    transfer_texts: Sequence[str] | None = None,
    temperature: float = 4.0,
    alpha: float = 0.9,
    epochs: int = 3,
    batch_size: int = 32,
    lr: float = 1e-4,
    seed: int = 0,
    max_length: int = DEFAULT_MAX_LENGTH,
    weight_decay: float = 0.01,
    warmup_ratio: float = 0.06,
    teacher_logits: torch.Tensor | None = None,
    signals: TeacherSignals | None = None,
    losses: Sequence[LossSpec] | None = None,
    device: torch.device | None = None,
    callbacks: TextCallbacks | None = None,
    state: LoopState | None = None,
    checkpoint: Checkpoint | None = None,
    checkpoint_every: int = 0,
    parallel: DataParallel | None = None,
    ranks: RankGroup | None = None,
) -> TextTrainOutcome:
    """Train ``student`` (in place) on ``teacher``'s logits: ``alpha * T^2 KL + (1 - alpha) * CE``.

    The train texts need no labels (KD only: pass ``train_labels`` to add cross-entropy). The teacher's
    train logits are computed once (``teacher_train`` of the outcome; pass them back as
    ``teacher_logits`` to skip the teacher). Metrics per epoch: ``train_loss``, ``kd_loss``, ``ce_loss``
    (with labels), ``val_accuracy``, ``val_loss``, ``val_agreement`` (same top class as the teacher, when
    the teacher is given).

    ``losses`` replaces that default with a weighted sum of the registry's losses (``distill.spec`` loss
    models: ``kd``, ``ce``, ``attention``...; the objective is :mod:`worker.engine.objective`'s, as for
    tabular students); each term's mean is reported per epoch as ``<type>_loss``. ``attention`` needs the
    teacher model (not only cached logits): see :func:`teacher_attention_maps` and
    :func:`text_attention_loss`. With ``ce`` terms only, neither a teacher nor its logits is needed: that
    trains on the labels alone (a from-scratch baseline, :func:`train_text_baseline`).

    ``transfer_texts``: unlabeled texts that join the training pool after the train texts: the KD and
    attention terms cover the whole pool, cross-entropy only the labeled train texts (its mean over the
    labeled texts of each batch). Teacher logits (computed or passed) follow the pool's order: train
    texts, then transfer texts.

    ``signals``: the teacher's :class:`TeacherSignals` over that pool (:func:`classifier_signals`, or the
    teacher cache's), dense or top-k, with the attention maps the attention terms read; then the teacher
    runs only on the validation texts (for ``val_agreement``). ``teacher_logits`` (dense ``[n, classes]``)
    is the older form of the same.

    ``parallel``: data-parallel (as :func:`distill_embeddings`): pass ``signals``, or every rank computes
    them; rank 0 alone runs the teacher on the validation texts.
    """
    if parallel is not None and parallel.world > 1:
        return _data_parallel(distill_text_classifier, locals())
    began = time.perf_counter()
    _check_texts("train", train_texts)
    _check_texts("validation", val_texts)
    k = student.num_classes
    y_val = _labels("validation", val_labels, len(val_texts), k)
    y_train = _labels("train", train_labels, len(train_texts), k) if train_labels is not None else None
    transfer = list(transfer_texts or [])
    labeled: torch.Tensor | None = None  # None: every example of the pool is labeled (or none is)
    if y_train is not None and transfer:
        labeled = torch.cat(
            [torch.ones(len(y_train), dtype=torch.bool), torch.zeros(len(transfer), dtype=torch.bool)]
        )
        y_train = torch.cat([y_train, torch.zeros(len(transfer), dtype=torch.long)])
    train_texts = [*train_texts, *transfer]
    dev, cb = _device(device), callbacks or NoCallbacks()
    if ranks is not None:
        student = ranks.own(student)
        teacher = None if teacher is None else ranks.received(teacher)
    main = ranks is None or ranks.is_main
    train_tokens = tokenize(tokenizer, train_texts, max_length)
    val_tokens = tokenize(tokenizer, val_texts, max_length)
    teacher_val = None
    labels_only = losses is not None and bool(losses) and all(term.type == "ce" for term in losses)
    s_layers = int(encoder_of(student).config.num_hidden_layers)
    t_layers = int(encoder_of(teacher).config.num_hidden_layers) if teacher is not None else s_layers
    objective = build_layered_objective(
        losses,
        temperature=temperature,
        alpha=alpha,
        has_labels=y_train is not None,
        student_layers=s_layers,
        teacher_layers=t_layers,
    )
    attention_terms = [term for term in objective.terms if term.layer_map is not None]
    maps_for = attention_layers(losses, student_layers=s_layers, teacher_layers=t_layers)
    missing = [
        attention_key(j) for j in maps_for if signals is None or attention_key(j) not in signals.features
    ]
    if teacher is not None and (main or signals is None or missing):
        with eval_mode(teacher.to(dev)):
            if signals is None or missing:
                signals = classifier_signals(
                    teacher, train_tokens, maps_for, device=dev, logits=teacher_logits, top_k=k
                )
            if main:  # for val_agreement: rank 0 alone evaluates
                teacher_val = _run_batched(teacher, val_tokens, dev, 64)
    elif teacher_logits is not None and signals is None:
        signals = signals_from_logits([teacher_logits], [1.0], top_k=k)
    if signals is None and not labels_only:
        raise ValueError("pass a teacher or its cached teacher_logits")
    if signals is not None and (signals.num_examples, signals.num_classes) != (len(train_texts), k):
        raise ValueError(
            f"teacher logits have shape {[signals.num_examples, signals.num_classes]}, "
            f"expected [{len(train_texts)}, {k}]"
            + (
                f" (train then transfer texts: {len(train_texts) - len(transfer)} + {len(transfer)})"
                if transfer
                else ""
            )
        )
    if labels_only and transfer:
        raise ValueError("transfer texts have no labels: they need a kd or attention term")
    if attention_terms and (
        signals is None or any(attention_key(j) not in signals.features for j in maps_for)
    ):
        raise ValueError("attention: the attention loss needs the teacher model, not only its logits")
    y_pool = y_train if y_train is not None else torch.zeros(len(train_texts), dtype=torch.long)

    torch.manual_seed(seed)
    student.to(dev)
    net = student if ranks is None else ranks.wrap(student)
    optimizer = _optimizer(student, lr, weight_decay)
    scheduler = _schedule(optimizer, epochs * math.ceil(len(train_texts) / batch_size), warmup_ratio)

    def step(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = train_tokens.batch(idx)
        ids, mask = ids.to(dev), mask.to(dev)
        logits = net(ids, mask).float()
        teacher_batch = None
        student_features: dict[str, torch.Tensor] = {}
        if signals is not None:
            teacher_batch = signals.batch(idx, dev)
            width = mask.shape[1]  # the cached maps are padded to the longest text of the pool
            teacher_batch.features = {
                key: teacher_batch.features[key][:, :, :width, :width].float()
                for key in (attention_key(j) for j in maps_for)
            }
            if attention_terms:
                maps = attention_maps(student, ids, mask)
                student_features = {attention_key(i): m for i, m in enumerate(maps)}
        mask_b = None if labeled is None else labeled[idx].to(dev)
        return objective(
            logits, student_features, y_pool[idx].to(dev), mask_b, teacher_batch, attention_mask=mask
        )

    def evaluate() -> dict[str, float]:
        val_logits = _run_batched(student, val_tokens, dev, 64)
        metrics = {
            "val_accuracy": (val_logits.argmax(1) == y_val).float().mean().item(),
            "val_loss": F.cross_entropy(val_logits, y_val).item(),
        }
        if teacher_val is not None:
            metrics["val_agreement"] = (val_logits.argmax(1) == teacher_val.argmax(1)).float().mean().item()
        return metrics

    outcome = fit(
        Loop(
            model=student,
            optimizer=optimizer,
            scheduler=scheduler,
            step=step,
            keys=objective.keys,
            evaluate=evaluate,
            examples=len(train_texts),
            epochs=epochs,
            batch_size=batch_size,
            seed=seed,
            learning_rate=lr,
            device=dev,
            ranks=ranks,
        ),
        cb,
        state=state,
        checkpoint=checkpoint,
        checkpoint_every=checkpoint_every,
    )
    teacher_train = None if signals is None or signals.logits is None else signals.logits[0]
    return TextTrainOutcome(
        student, outcome.stopped, outcome.history, teacher_train, teacher_val, time.perf_counter() - began
    )


def train_text_baseline(
    student: TextClassifier,
    tokenizer: Tokenizer,
    train_texts: Sequence[str],
    train_labels: Sequence[int],
    val_texts: Sequence[str],
    val_labels: Sequence[int],
    **settings: Any,
) -> TextTrainOutcome:
    """Train ``student`` (in place) on the labels alone, no teacher: the from-scratch baseline a distilled
    student is compared with. ``settings``: those of :func:`distill_text_classifier` (``epochs``,
    ``batch_size``, ``lr``, ``seed``, ``max_length``, ``weight_decay``, ``warmup_ratio``, ``device``,
    ``callbacks``), so that both runs differ only in the loss."""
    return distill_text_classifier(
        None,
        student,
        tokenizer,
        train_texts,
        val_texts,
        val_labels,
        train_labels=train_labels,
        losses=[CELoss(type="ce")],
        **settings,
    )
