"""Ceilings on what a job spec may ask for (``DISTILL_MAX_PARAMETERS``, ``_MAX_EPOCHS``, ``_MAX_RUNTIME_S``).

Checked at submission, before anything else is looked at closely: a spec over a ceiling answers 422 naming
the field and the setting. The student's parameter count needs the training data's input shape and class
count: a builtin's are known, an uploaded dataset's are in its file's metadata (a missing or foreign file is
left to the reference checks that follow).
"""

from __future__ import annotations

import math
from itertools import pairwise

from sqlalchemy.orm import Session

from api.errors import Invalid
from api.tenancy import find_owned
from distill.datasets import BUILTIN_INFO, DatasetError, DatasetInfo
from distill.settings import Settings
from distill.spec import BuiltinData, CNNConfig, EncoderConfig, JobSpec, MLPConfig
from distill.tables import File, Tenant

MINILM_HIDDEN = 384
BERT_VOCAB = 30522
BERT_POSITIONS = 512


def mlp_parameters(model: MLPConfig, input_shape: list[int], num_classes: int) -> int:
    """Exactly what ``distill.nets`` builds: weights and biases of each linear layer."""
    widths = [math.prod(input_shape), *model.hidden, num_classes]
    return sum(a * b + b for a, b in pairwise(widths))


def cnn_parameters(model: CNNConfig, input_shape: list[int], num_classes: int) -> int:
    """Exactly what ``distill.nets`` builds: each conv block's kernel and bias, then the linear head."""
    in_channels = input_shape[0] if len(input_shape) == 3 else 1
    dims = 1 if len(input_shape) == 1 else 2
    total = 0
    for channels in model.channels:
        total += in_channels * channels * model.kernel_size**dims + channels
        in_channels = channels
    return total + in_channels * num_classes + num_classes


def encoder_parameters(model: EncoderConfig) -> int:
    """About what a BERT-style encoder of this shape holds (the teacher's width when ``hidden`` is None is
    taken as MiniLM's 384): embeddings, then per layer attention (4 h^2) and feed-forward (2 h i)."""
    hidden = model.hidden or MINILM_HIDDEN
    intermediate = model.intermediate or 4 * hidden
    per_layer = 4 * (hidden * hidden + hidden) + 2 * hidden * intermediate + intermediate + hidden
    return (BERT_VOCAB + BERT_POSITIONS) * hidden + model.layers * per_layer


def _train_info(session: Session, tenant: Tenant, spec: JobSpec) -> DatasetInfo | None:
    ref = spec.data.train
    if isinstance(ref, BuiltinData):
        return BUILTIN_INFO[ref.builtin]
    row = find_owned(session, File, ref.file, tenant)
    if row is None or row.purpose != "dataset":
        return None
    try:
        return DatasetInfo.from_meta(row.meta)
    except DatasetError:
        return None


def student_parameters(session: Session, tenant: Tenant, spec: JobSpec) -> int | None:
    """The student's parameter count, or None when the training data cannot tell it yet."""
    if isinstance(spec.model, EncoderConfig):
        return encoder_parameters(spec.model)
    if not isinstance(spec.model, MLPConfig | CNNConfig):
        return None  # causal-LM students: their vocabulary is the teacher's, known to the worker
    info = _train_info(session, tenant, spec)
    if info is None or info.kind != "tabular" or not info.input_shape:
        return None
    classes = max(info.num_classes or 2, 2)
    if isinstance(spec.model, MLPConfig):
        return mlp_parameters(spec.model, info.input_shape, classes)
    return cnn_parameters(spec.model, info.input_shape, classes)


def check_ceilings(session: Session, tenant: Tenant, spec: JobSpec, settings: Settings) -> None:
    """422 naming the field when ``spec`` asks for more than this server allows."""
    if spec.training.epochs > settings.max_epochs:
        raise Invalid(
            f"training.epochs: {spec.training.epochs} is over this server's limit of {settings.max_epochs} "
            "(DISTILL_MAX_EPOCHS)",
            field="training.epochs",
            code="over_limit",
        )
    runtime = spec.training.max_runtime_s
    if runtime is not None and runtime > settings.max_runtime_s:
        raise Invalid(
            f"training.max_runtime_s: {runtime} s is over this server's limit of {settings.max_runtime_s} s "
            "(DISTILL_MAX_RUNTIME_S)",
            field="training.max_runtime_s",
            code="over_limit",
        )
    parameters = student_parameters(session, tenant, spec)
    if parameters is not None and parameters > settings.max_parameters:
        field = {"mlp": "model.hidden", "cnn": "model.channels"}.get(spec.model.arch, "model")
        raise Invalid(
            f"{field}: the student would have {parameters:,} parameters, over this server's limit of "
            f"{settings.max_parameters:,} (DISTILL_MAX_PARAMETERS); use fewer or narrower layers",
            field=field,
            code="over_limit",
        )
