"""The training objective: the spec's weighted sum of registered losses (:data:`LOSSES`).

Without ``distillation.losses`` the objective is Hinton's ``alpha * KD + (1 - alpha) * CE`` (just CE
without a teacher). With it, ``sum(weight_i * loss_i)``. KD, logit MSE and DKD apply to every example of
the batch; CE only to the labeled ones. DKD decouples each example around its label, or, for unlabeled
(transfer) examples, around the teacher's most likely class. Hint losses train a projection (see
:func:`~worker.engine.losses.hint_projection`) along with the student: add :meth:`Objective.parameters`
to the optimizer.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from distill.spec import (
    AttentionLoss,
    CELoss,
    DistillationSpec,
    DKDLoss,
    HintLoss,
    KDLoss,
    LogitMSELoss,
    LossSpec,
)
from worker.engine.evaluate import eval_mode
from worker.engine.features import (
    ATTENTIONS,
    FeatureCapture,
    attention_key,
    attention_layers,
    exposes_attentions,
)
from worker.engine.losses import (
    LOSSES,
    attention_loss,
    default_layer_map,
    dkd_loss,
    hint_loss,
    hint_projection,
    kd_loss,
    logit_mse_loss,
    masked_attention_loss,
    masked_cross_entropy,
)
from worker.engine.signals import TeacherBatch

__all__ = [
    "LOSSES",
    "Objective",
    "build_layered_objective",
    "build_objective",
    "check_layer_map",
    "loss_specs",
    "student_capture",
    "teacher_capture",
]


def loss_specs(distillation: DistillationSpec, *, alpha: float, has_teacher: bool = True) -> list[LossSpec]:
    """The spec's losses, or the default: ``[kd (weight alpha), ce (weight 1 - alpha)]``; ``[ce]`` without
    a teacher."""
    if distillation.losses is not None:
        return list(distillation.losses)
    if not has_teacher:
        return [CELoss(type="ce", weight=1.0)]
    return [KDLoss(type="kd", weight=alpha), CELoss(type="ce", weight=1.0 - alpha)]


def teacher_capture(distillation: DistillationSpec) -> list[str]:
    """The teacher layers to capture for these losses (pass as ``compute_signals(capture=...)``)."""
    return _captured(distillation, "teacher")


def student_capture(distillation: DistillationSpec) -> list[str]:
    """The student layers the losses read (hint layers, and the attention maps for attention losses)."""
    return _captured(distillation, "student")


def _captured(distillation: DistillationSpec, side: Literal["student", "teacher"]) -> list[str]:
    """Each hint loss's layer on ``side`` and :data:`ATTENTIONS` for attention losses, once each, in order."""
    names: list[str] = []
    for spec in distillation.losses or []:
        if isinstance(spec, HintLoss):
            name = spec.student_layer if side == "student" else spec.teacher_layer
        elif isinstance(spec, AttentionLoss):
            name = ATTENTIONS
        else:
            continue
        if name not in names:
            names.append(name)
    return names


@dataclass
class _Term:
    key: str
    """Its name in the reported parts: ``kd_loss``, ``ce_loss``, ``hint2_loss`` (the second hint), ..."""
    spec: LossSpec
    layer_map: list[tuple[int, int]] | None = None
    """Attention only: the resolved (student layer, teacher layer) pairs."""


class Objective:
    """``objective(student_logits, student_features, labels, labeled_mask, teacher) -> (loss, values)``.

    ``values`` is a detached 1-D tensor on the loss's device: the loss, then each term's unweighted value,
    named by :attr:`keys` (``loss``, ``kd_loss``, ``ce_loss``, ...; :meth:`named` pairs them up). It stays
    on the device so a training loop can sum it over an epoch without a device sync per step.
    ``student_layers`` / ``teacher_layers`` say what to capture on each side (see
    :mod:`worker.engine.features`).
    """

    def __init__(
        self,
        terms: list[_Term],
        *,
        temperature: float,
        projections: nn.ModuleDict,
        student_layers: list[str],
        teacher_layers: list[str],
    ) -> None:
        self.terms = terms
        self.temperature = temperature
        self.projections = projections
        self.student_layers = student_layers
        self.teacher_layers = teacher_layers
        self.needs_teacher = any(not isinstance(term.spec, CELoss) for term in terms)
        self.needs_teacher_logits = any(isinstance(term.spec, LogitMSELoss) for term in terms)
        self.keys = ["loss", *(term.key for term in terms)]
        self._weights: dict[torch.device, torch.Tensor] = {}

    @property
    def temperatures(self) -> set[float]:
        """The temperatures at which the losses read the teachers' distributions."""
        return {
            float(self.temperature if term.spec.temperature is None else term.spec.temperature)
            for term in self.terms
            if isinstance(term.spec, KDLoss | DKDLoss)
        }

    def parameters(self) -> Iterator[nn.Parameter]:
        """The hint projections' parameters: train them with the student."""
        return self.projections.parameters()

    def to(self, device: torch.device) -> Objective:
        self.projections.to(device)
        return self

    def __call__(
        self,
        student_logits: torch.Tensor,
        student_features: Mapping[str, torch.Tensor],
        labels: torch.Tensor,
        labeled_mask: torch.Tensor | None,
        teacher: TeacherBatch | None,
        *,
        attention_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``labeled_mask``: which examples have a label (``None``: all of them, the fast path).
        ``attention_mask``: ``[b, tokens]`` for padded token batches (text): attention losses then count
        real tokens only (:func:`~worker.engine.losses.masked_attention_loss`)."""
        if teacher is None and self.needs_teacher:
            raise ValueError("this objective has teacher losses but no teacher signals were given")
        logits = student_logits.float()
        probs_at: dict[float, torch.Tensor] = {}

        def teacher_probs(temperature: float) -> torch.Tensor:
            assert teacher is not None
            if temperature not in probs_at:
                probs_at[temperature] = teacher.probs(temperature)
            return probs_at[temperature]

        values: list[torch.Tensor] = []
        for index, term in enumerate(self.terms):
            spec = term.spec
            if isinstance(spec, CELoss):
                value = masked_cross_entropy(logits, labels, labeled_mask)
            elif isinstance(spec, KDLoss):
                t = self.temperature if spec.temperature is None else spec.temperature
                value = kd_loss(logits, teacher_probs(t), t)
            elif isinstance(spec, LogitMSELoss):
                assert teacher is not None
                value = logit_mse_loss(logits, teacher.logits)
            elif isinstance(spec, DKDLoss):
                t = self.temperature if spec.temperature is None else spec.temperature
                probs = teacher_probs(t)
                target = (
                    labels if labeled_mask is None else torch.where(labeled_mask, labels, probs.argmax(1))
                )
                value = dkd_loss(logits, probs, target, spec.alpha, spec.beta, t)
            elif isinstance(spec, HintLoss):
                assert teacher is not None
                projection = self.projections[str(index)]
                value = hint_loss(
                    student_features[spec.student_layer], teacher.features[spec.teacher_layer], projection
                )
            else:
                assert isinstance(spec, AttentionLoss) and teacher is not None and term.layer_map is not None
                # only the mapped layers are read (a text teacher's maps are captured for those alone)
                s_layers = sorted({i for i, _ in term.layer_map})
                t_layers = sorted({j for _, j in term.layer_map})
                pairs = [(s_layers.index(i), t_layers.index(j)) for i, j in term.layer_map]
                s_maps = [student_features[attention_key(i)] for i in s_layers]
                t_maps = [teacher.features[attention_key(j)] for j in t_layers]
                if attention_mask is None:
                    value = attention_loss(s_maps, t_maps, pairs)
                else:
                    value = masked_attention_loss(s_maps, t_maps, pairs, attention_mask)
            values.append(value)
        if len(values) == 1 and self.terms[0].spec.weight == 1.0:  # e.g. plain training: no extra ops
            return values[0], values[0].detach().expand(2)
        stacked = torch.stack(values)
        loss = torch.dot(self._weights_on(logits.device), stacked)
        return loss, torch.cat([loss.detach().reshape(1), stacked.detach()])

    def named(self, values: torch.Tensor) -> dict[str, float]:
        """``values`` (one step's, or a sum of them) as ``{key: number}`` (a device sync)."""
        return dict(zip(self.keys, values.tolist(), strict=True))

    def _weights_on(self, device: torch.device) -> torch.Tensor:
        if device not in self._weights:
            weights = [float(term.spec.weight) for term in self.terms]
            self._weights[device] = torch.tensor(weights, dtype=torch.float32, device=device)
        return self._weights[device]


def build_objective(
    distillation: DistillationSpec,
    *,
    temperature: float,
    alpha: float,
    student: nn.Module,
    teacher_feature_shapes: Mapping[str, torch.Size],
    has_teacher: bool = True,
    student_input: torch.Tensor | None = None,
) -> Objective:
    """The objective for ``distillation`` (see the module doc), with ``temperature`` / ``alpha`` resolved.

    ``teacher_feature_shapes``: per-example shapes of the captured teacher layers
    (:attr:`TeacherSignals.feature_shapes`). ``student_input``: a few examples on the student's device,
    run once (eval mode, no grad) to size the hint projections; needed only with hint losses. Raises
    ``ValueError`` with a message for the user: a teacher loss without a teacher, a layer that does not
    exist (listing those that do), an attention loss without transformers, a bad layer map.
    Projections are initialised from torch's global RNG (seed it first).
    """
    specs = loss_specs(distillation, alpha=alpha, has_teacher=has_teacher)
    field = "distillation.losses"
    for i, spec in enumerate(specs):
        if spec.type not in LOSSES:  # the spec and the registry are kept in step by a test
            raise ValueError(f"{field}[{i}]: unknown loss {spec.type!r}; choose one of {sorted(LOSSES)}")
        if not has_teacher and not isinstance(spec, CELoss):
            raise ValueError(
                f"{field}[{i}]: the {spec.type} loss needs a teacher; without one only ce is allowed"
            )
    student_layers = student_capture(distillation)
    if ATTENTIONS in student_layers and not exposes_attentions(student):
        raise ValueError(
            "attention loss needs a transformer student (one that exposes its attention maps); "
            "this student has none"
        )
    hint_layers = [name for name in student_layers if name != ATTENTIONS]
    student_shapes = _probe(student, hint_layers, student_input) if hint_layers else {}

    counts: dict[str, int] = {}
    terms: list[_Term] = []
    projections = nn.ModuleDict()
    for i, spec in enumerate(specs):
        counts[spec.type] = counts.get(spec.type, 0) + 1
        n = counts[spec.type]
        term = _Term(key=f"{spec.type}{n if n > 1 else ''}_loss", spec=spec)
        if isinstance(spec, HintLoss):
            if spec.teacher_layer not in teacher_feature_shapes:
                captured = sorted(teacher_feature_shapes) or "none"
                raise ValueError(
                    f"{field}[{i}]: the teacher layer {spec.teacher_layer!r} was not captured "
                    f"(captured: {captured}); compute the signals with teacher_capture(distillation)"
                )
            try:
                projections[str(i)] = hint_projection(
                    student_shapes[spec.student_layer], teacher_feature_shapes[spec.teacher_layer]
                )
            except ValueError as exc:
                raise ValueError(f"{field}[{i}]: {exc}") from exc
        elif isinstance(spec, AttentionLoss):
            term.layer_map = _attention_map(spec, student, teacher_feature_shapes, f"{field}[{i}]")
        terms.append(term)
    if student_input is not None:
        projections.to(student_input.device)
    return Objective(
        terms,
        temperature=temperature,
        projections=projections,
        student_layers=student_layers,
        teacher_layers=teacher_capture(distillation),
    )


def check_layer_map(
    layer_map: Sequence[tuple[int, int]] | None, student_layers: int, teacher_layers: int
) -> list[tuple[int, int]]:
    """The layer map to use (the default one when None); ValueError when a pair names a missing layer."""
    if layer_map is None:
        return default_layer_map(student_layers, teacher_layers)
    if not layer_map:
        raise ValueError("attention: the layer map is empty")
    pairs = [(int(i), int(j)) for i, j in layer_map]
    for i, j in pairs:
        if not (0 <= i < student_layers and 0 <= j < teacher_layers):
            raise ValueError(
                f"attention: layer pair ({i}, {j}) is out of range: the student has {student_layers} "
                f"attention layers (0..{student_layers - 1}) and the teacher {teacher_layers} "
                f"(0..{teacher_layers - 1})"
            )
    return pairs


def build_layered_objective(
    losses: Sequence[LossSpec] | None,
    *,
    temperature: float,
    alpha: float,
    has_labels: bool,
    student_layers: int,
    teacher_layers: int,
) -> Objective:
    """The objective of a transformer student whose attention maps come per layer index (text models):
    the same terms, keys and weights as :func:`build_objective` (``losses`` None: ``alpha`` KD +
    ``(1 - alpha)`` CE, or KD alone without labels), attention layer maps checked against the layer
    counts. Only the registry's logit losses (kd, logit_mse, dkd, ce) and attention apply here: hint
    layers are tabular module names."""
    if losses is None:
        specs: list[LossSpec] = (
            loss_specs(DistillationSpec(), alpha=alpha) if has_labels else [KDLoss(type="kd", weight=1.0)]
        )
    else:
        specs = list(losses)
    if not specs:
        raise ValueError("losses: give at least one loss")
    counts: dict[str, int] = {}
    terms: list[_Term] = []
    for spec in specs:
        if isinstance(spec, HintLoss):
            raise ValueError("losses: hint losses name tabular layers; use attention for text models")
        if isinstance(spec, CELoss) and not has_labels:
            raise ValueError("losses: the ce loss needs train_labels")
        counts[spec.type] = counts.get(spec.type, 0) + 1
        n = counts[spec.type]
        term = _Term(key=f"{spec.type}{n if n > 1 else ''}_loss", spec=spec)
        if isinstance(spec, AttentionLoss):
            term.layer_map = check_layer_map(spec.layer_map, student_layers, teacher_layers)
        terms.append(term)
    return Objective(
        terms, temperature=temperature, projections=nn.ModuleDict(), student_layers=[], teacher_layers=[]
    )


def _probe(student: nn.Module, names: list[str], student_input: torch.Tensor | None) -> dict[str, torch.Size]:
    """Per-example output shapes of the student's layers ``names`` (checks that they exist first)."""
    capture = FeatureCapture(student, names, role="student")  # raises for unknown layers
    if student_input is None:
        raise ValueError("build_objective needs student_input to size the hint projections")
    with eval_mode(student), torch.no_grad(), capture:
        student(student_input)
    return {key: value.shape[1:] for key, value in capture.outputs.items()}


def _attention_map(
    spec: AttentionLoss, student: nn.Module, teacher_shapes: Mapping[str, torch.Size], field: str
) -> list[tuple[int, int]]:
    n_student = len(attention_layers(student))
    n_teacher = sum(1 for key in teacher_shapes if key.startswith(f"{ATTENTIONS}."))
    if n_teacher == 0:
        raise ValueError(
            f"{field}: attention loss needs a transformer teacher whose attention maps were captured "
            f"(capture {ATTENTIONS!r})"
        )
    layer_map = [tuple(pair) for pair in spec.layer_map] if spec.layer_map else None
    pairs = default_layer_map(n_student, n_teacher) if layer_map is None else layer_map
    for s, t in pairs:
        if not (0 <= s < n_student and 0 <= t < n_teacher):
            raise ValueError(
                f"{field}.layer_map: pair [{s}, {t}] is out of range: the student has {n_student} "
                f"attention layers (0 to {n_student - 1}) and the teacher {n_teacher} (0 to {n_teacher - 1})"
            )
    return [(int(s), int(t)) for s, t in pairs]
