"""The job spec: what a user submits to ``POST /v1/jobs``.

Every model forbids unknown fields, so a typo answers 422 naming the field instead of being ignored.
References to files and jobs are checked against the database by the API (see ``api/services/jobs.py``);
this module only checks shape and ranges.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

BUILTIN_DATASETS = ("digits", "mnist1d")
BuiltinName = Literal["digits", "mnist1d"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BuiltinData(_Strict):
    """A dataset that ships with Distill's dependencies (no download)."""

    builtin: BuiltinName


class FileData(_Strict):
    """A dataset uploaded through ``POST /v1/files`` with ``purpose=dataset``."""

    file: str = Field(min_length=1)


DataRef = BuiltinData | FileData


class DataSpec(_Strict):
    train: DataRef
    validation: DataRef | None = None
    transfer: DataRef | None = None


class MLPConfig(_Strict):
    arch: Literal["mlp"] = "mlp"
    hidden: list[Annotated[int, Field(gt=0, le=65536)]] = Field(default_factory=lambda: [128], max_length=16)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)


class CNNConfig(_Strict):
    """A small CNN: conv blocks (conv, ReLU, max-pool 2) then global average pooling and a linear head.

    Works on 1-D inputs (``[length]``) with ``Conv1d`` and on 2-D inputs (``[height, width]``) with
    ``Conv2d``.
    """

    arch: Literal["cnn"] = "cnn"
    channels: list[Annotated[int, Field(gt=0, le=4096)]] = Field(
        default_factory=lambda: [32, 64], min_length=1, max_length=8
    )
    kernel_size: int = Field(default=3, ge=1, le=15)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)


def _arch(value: object) -> str:
    """The ``arch`` of a model config; ``mlp`` when omitted, so every field has a default."""
    if isinstance(value, dict):
        return str(value.get("arch", "mlp"))
    return str(getattr(value, "arch", "mlp"))


ModelConfig = Annotated[
    Annotated[MLPConfig, Tag("mlp")] | Annotated[CNNConfig, Tag("cnn")],
    Discriminator(
        _arch, custom_error_type="invalid_arch", custom_error_message="model.arch: must be mlp or cnn"
    ),
]


class JobTeacher(_Strict):
    """The model that a succeeded job produced."""

    job: str = Field(min_length=1)


class FileTeacher(_Strict):
    """An uploaded ``.safetensors`` model (``purpose=model``)."""

    file: str = Field(min_length=1)


TeacherRef = JobTeacher | FileTeacher


class DistillationSpec(_Strict):
    """Hinton et al. (2015): ``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(labels)``."""

    temperature: float = Field(default=4.0, gt=0.0, le=100.0)
    alpha: float = Field(default=0.9, ge=0.0, le=1.0)


class TrainingSpec(_Strict):
    epochs: int = Field(default=10, ge=1, le=10_000)
    batch_size: int = Field(default=64, ge=1, le=65_536)
    learning_rate: float = Field(default=1e-3, gt=0.0, le=10.0)
    weight_decay: float = Field(default=0.0, ge=0.0, le=1.0)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)


class JobSpec(_Strict):
    name: str | None = Field(default=None, max_length=200)
    data: DataSpec
    model: ModelConfig = Field(default_factory=MLPConfig)
    teacher: TeacherRef | None = None
    distillation: DistillationSpec = Field(default_factory=DistillationSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)


class StoredModelConfig(_Strict):
    """What a ``.safetensors`` model carries in its metadata (key ``distill.config``): self-describing."""

    model: ModelConfig
    input_shape: list[Annotated[int, Field(gt=0)]] = Field(min_length=1, max_length=3)
    num_classes: int = Field(ge=2)
