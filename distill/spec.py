"""The job spec: what a user submits to ``POST /v1/jobs``, with every rule that needs no database.

Every model forbids unknown fields, so a typo answers 422 naming the field instead of being ignored.
Besides shapes and ranges, ``JobSpec`` validates the rules between its own fields (a transfer set needs a
teacher, text jobs take one teacher...: :mod:`distill.spec_rules`), so the Python client can check a spec
before sending it. Rules that need to know what a reference is (a dataset's classes, a teacher's layers)
are in :mod:`distill.plan`, one pure function that the API and the worker both call.

(Over 500 lines: the spec is one public contract — every field a user may send, with its range and its
docstring — shared by the API, the worker and the client; its rules live in spec_rules and plan.)
"""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

BuiltinName = Literal["digits", "mnist1d"]
BUILTIN_DATASETS: tuple[str, ...] = get_args(BuiltinName)
"""The names in :data:`distill.datasets.builtins.BUILTINS` (a unit test keeps the two in step)."""


class SpecError(ValueError):
    """A job spec that breaks a rule: ``field`` is the dotted path (``data.train``), ``message`` says why.

    The message starts with the field's name, as every 422 of the API does.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message

    def as_validation_error(self, title: str) -> ValidationError:
        """The same error as pydantic reports it, located at ``field`` (so a 422 names it)."""
        loc = tuple(int(p) if p.isdigit() else p for p in self.field.split("."))
        return ValidationError.from_exception_data(
            title,
            [InitErrorDetails(type=PydanticCustomError("spec_rule", self.message), loc=loc, input=None)],
        )


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BuiltinData(_Strict):
    """A dataset that ships with Distill's dependencies (no download)."""

    builtin: BuiltinName


class FileData(_Strict):
    """A dataset uploaded through ``POST /v1/files`` with ``purpose=dataset``."""

    file: str = Field(min_length=1)


DataRef = BuiltinData | FileData


class AugmentSpec(_Strict):
    """Enlarge the transfer set with jittered copies (what made Hinton's small MNIST students work).

    Applies to ``data.transfer`` or, without one, to the training inputs; only with a teacher, whose soft
    targets label the new inputs.
    """

    copies: int = Field(default=4, ge=1, le=64)
    """Jittered copies of each input (the originals are kept too)."""
    noise: float = Field(default=0.0, ge=0.0, le=10.0)
    """Gaussian noise, in units of each feature's standard deviation."""
    shift: int = Field(default=0, ge=0, le=64)
    """Largest shift along each spatial axis, in positions (zero-padded)."""


class DataSpec(_Strict):
    train: DataRef
    validation: DataRef | None = None
    transfer: DataRef | None = None
    augment: AugmentSpec | None = None
    standardize: bool | None = None
    """Tabular jobs: fit per-feature standardisation on the training split and build it into the model.
    None (the default) means true; left out of a dumped spec so that older servers still accept it."""
    test: DataRef | None = None
    """Where ``test_accuracy`` is measured (no choice sees it); None: the builtin's official test split,
    else a seeded held-out part of the training file."""


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


class EncoderConfig(_Strict):
    """A BERT-style text encoder student (text datasets only), built from its text teacher.

    ``init="teacher"`` copies the teacher's embeddings and evenly spaced layers (DistilBERT's recipe; needs
    the teacher's width and heads); ``"random"`` draws every weight afresh. ``hidden``/``heads``/
    ``intermediate`` None keep the teacher's. A job without a teacher (a text *teacher job*, classification
    only) builds this encoder from the builtin MiniLM and trains it with a linear head on the labels; with
    ``layers: 6`` and nothing else changed it is MiniLM itself, frozen, and only the head trains.
    """

    arch: Literal["encoder"] = "encoder"
    layers: int = Field(default=3, ge=1, le=12)
    hidden: int | None = Field(default=None, gt=0, le=4096)
    heads: int | None = Field(default=None, ge=1, le=64)
    intermediate: int | None = Field(default=None, gt=0, le=65536)
    init: Literal["teacher", "random"] = "teacher"
    max_length: int = Field(default=128, ge=8, le=512)
    """Tokens per text (longer texts are truncated)."""
    format: Literal["distill", "hf"] = "distill"
    """``"hf"`` (classification students with a teacher): the student is a transformers
    ``BertForSequenceClassification`` stored as ``model.hf.zip`` (``from_pretrained`` loads it) instead of a
    Distill text model. A Hugging Face teacher's student is always one."""


class _CausalLMConfig(_Strict):
    """What every causal-LM student config shares (``task: "causal_lm"`` jobs)."""

    max_length: int = Field(default=256, ge=8, le=8192)
    """Tokens per example, prompt and completion together (longer examples are cut at the end)."""


class GPT2StudentConfig(_CausalLMConfig):
    """A GPT-2 style causal LM drawn afresh, over its teacher's vocabulary and tokenizer."""

    arch: Literal["gpt2"]
    n_layer: int = Field(default=4, ge=1, le=96)
    n_embd: int = Field(default=256, ge=8, le=16384)
    n_head: int = Field(default=4, ge=1, le=128)


class LlamaStudentConfig(_CausalLMConfig):
    """A Llama- or Qwen2-style causal LM drawn afresh, over its teacher's vocabulary and tokenizer."""

    arch: Literal["llama", "qwen2"]
    num_hidden_layers: int = Field(default=4, ge=1, le=128)
    hidden_size: int = Field(default=256, ge=8, le=16384)
    num_attention_heads: int = Field(default=4, ge=1, le=128)
    num_key_value_heads: int | None = Field(default=None, ge=1, le=128)
    """None: as many as ``num_attention_heads`` (no grouped-query attention)."""
    intermediate_size: int | None = Field(default=None, ge=8, le=65536)
    """None: four times ``hidden_size``."""


class TeacherLayersConfig(_CausalLMConfig):
    """A copy of the teacher (embeddings, head and the named decoder layers, in order) as the student."""

    arch: Literal["teacher_layers"]
    layers: list[Annotated[int, Field(ge=0, le=1023)]] = Field(min_length=1, max_length=128)


class PretrainedStudentConfig(_CausalLMConfig):
    """Continue from a causal LM: an uploaded Hugging Face archive (``file``) or a job's output (``job``)."""

    arch: Literal["pretrained"]
    file: str | None = Field(default=None, min_length=1)
    job: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_source(self) -> PretrainedStudentConfig:
        if (self.file is None) == (self.job is None):
            raise ValueError(
                'give exactly one of "file" (an uploaded model archive) or "job" (a job\'s output)'
            )
        return self


CausalLMConfig = GPT2StudentConfig | LlamaStudentConfig | TeacherLayersConfig | PretrainedStudentConfig
CAUSAL_LM_ARCHS = ("gpt2", "llama", "qwen2", "teacher_layers", "pretrained")


def _arch(value: object) -> str:
    """The ``arch`` of a model config; ``mlp`` when omitted, so every field has a default. ``qwen2``
    configs share the Llama-style fields."""
    arch = str(value.get("arch", "mlp")) if isinstance(value, dict) else str(getattr(value, "arch", "mlp"))
    return "llama" if arch == "qwen2" else arch


ModelConfig = Annotated[
    Annotated[MLPConfig, Tag("mlp")]
    | Annotated[CNNConfig, Tag("cnn")]
    | Annotated[EncoderConfig, Tag("encoder")]
    | Annotated[GPT2StudentConfig, Tag("gpt2")]
    | Annotated[LlamaStudentConfig, Tag("llama")]
    | Annotated[TeacherLayersConfig, Tag("teacher_layers")]
    | Annotated[PretrainedStudentConfig, Tag("pretrained")],
    Discriminator(
        _arch,
        custom_error_type="invalid_arch",
        custom_error_message=(
            "model.arch: must be mlp, cnn or encoder, or for causal_lm jobs gpt2, llama, qwen2, "
            "teacher_layers or pretrained"
        ),
    ),
]


class JobTeacher(_Strict):
    """The model that a succeeded job produced."""

    job: str = Field(min_length=1)
    weight: float = Field(default=1.0, gt=0.0, le=1000.0)
    """With several teachers: this teacher's share of the mixed soft targets (weights are normalised)."""


class FileTeacher(_Strict):
    """An uploaded ``.safetensors`` model (``purpose=model``)."""

    file: str = Field(min_length=1)
    weight: float = Field(default=1.0, gt=0.0, le=1000.0)


BUILTIN_TEXT_TEACHERS = ("all-minilm-l6-v2",)


class BuiltinTeacher(_Strict):
    """A text teacher that ships with Distill: ``all-minilm-l6-v2`` (sentence-transformers' MiniLM)."""

    builtin: Literal["all-minilm-l6-v2"]
    weight: float = Field(default=1.0, gt=0.0, le=1000.0)


class EndpointSettings(_Strict):
    """An OpenAI-compatible chat-completions server whose answers teach a ``causal_lm`` student (black-box,
    sequence-level distillation). ``api_key`` is a secret: the API stores it apart from the job and shows
    ``"***"`` in its place; only the worker reads it (``distill.secrets``)."""

    base_url: str = Field(min_length=1, max_length=2000, pattern=r"^https?://\S+$")
    """Up to ``/v1``: the worker posts to ``{base_url}/chat/completions``."""
    model: str = Field(min_length=1, max_length=200)
    api_key: str | None = Field(default=None, min_length=1, max_length=4096, repr=False)
    max_tokens: int = Field(default=512, ge=1, le=32_768)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    concurrency: int = Field(default=8, ge=1, le=256)
    """Requests in flight at once."""
    timeout_s: float = Field(default=120.0, gt=0.0, le=3600.0)
    """Per request; a timeout is retried like a 429 or a 5xx."""
    train_on_reasoning: bool = True
    """Fine-tune the student on the teacher's reasoning (``<think>…</think>`` before the answer) where the
    server returns it; false: on the answers alone."""


class EndpointTeacher(_Strict):
    """A served teacher, known only by its answers: ``{"endpoint": {"base_url": …, "model": …}}``."""

    endpoint: EndpointSettings
    weight: float = Field(default=1.0, gt=0.0, le=1000.0)
    """As on every teacher (an endpoint teacher is a job's only one)."""


TeacherRef = JobTeacher | FileTeacher | BuiltinTeacher | EndpointTeacher


class _Loss(_Strict):
    weight: float = Field(default=1.0, ge=0.0, le=1000.0)


class KDLoss(_Loss):
    """Hinton's soft-target loss: ``T^2 * KL(teacher_T || student_T)``."""

    type: Literal["kd"]
    temperature: float | None = Field(default=None, gt=0.0, le=100.0)
    """None: ``distillation.temperature``."""


class LogitMSELoss(_Loss):
    """Mean squared error between student and teacher logits."""

    type: Literal["logit_mse"]


class DKDLoss(_Loss):
    """Decoupled KD (Zhao et al., 2022): ``alpha * TCKD + beta * NCKD``."""

    type: Literal["dkd"]
    alpha: float = Field(default=1.0, ge=0.0, le=100.0)
    """Weight of the target-class term (TCKD)."""
    beta: float = Field(default=8.0, ge=0.0, le=100.0)
    """Weight of the non-target-class term (NCKD)."""
    temperature: float | None = Field(default=None, gt=0.0, le=100.0)


class HintLoss(_Loss):
    """FitNets: MSE between a student layer's output and a teacher layer's, through a learned projection."""

    type: Literal["hint"]
    student_layer: str = Field(min_length=1, max_length=200)
    teacher_layer: str = Field(min_length=1, max_length=200)


class AttentionLoss(_Loss):
    """Attention-map transfer between transformer layers (student layer i learns teacher layer j)."""

    type: Literal["attention"]
    layer_map: list[tuple[int, int]] | None = Field(default=None, max_length=64)
    """``[[student_layer, teacher_layer], ...]``; None: student layers to evenly spaced teacher layers."""


class CELoss(_Loss):
    """Cross-entropy with the hard labels (labeled examples only); in ``causal_lm`` jobs, next-token
    cross-entropy on the completion's tokens."""

    type: Literal["ce"]


class ForwardKLLoss(_Loss):
    """Token-level ``KL(teacher_T || student_T)`` over the completion's tokens (``causal_lm`` jobs)."""

    type: Literal["forward_kl"]
    temperature: float | None = Field(default=None, gt=0.0, le=100.0)
    """None: ``distillation.temperature``."""


class ReverseKLLoss(_Loss):
    """Token-level ``KL(student_T || teacher_T)`` over the completion's tokens (``causal_lm`` jobs)."""

    type: Literal["reverse_kl"]
    temperature: float | None = Field(default=None, gt=0.0, le=100.0)


class JSDLoss(_Loss):
    """The generalised Jensen-Shannon divergence of GKD (Agarwal et al. 2024) with mixture
    ``beta * teacher + (1 - beta) * student``: ``beta * KL(teacher || M) + (1 - beta) * KL(student || M)``
    (``beta`` 0 is forward KL, 1 reverse KL; ``causal_lm`` jobs)."""

    type: Literal["jsd"]
    beta: float = Field(default=0.5, ge=0.0, le=1.0)
    temperature: float | None = Field(default=None, gt=0.0, le=100.0)


LM_DEFAULT_TEMPERATURE = 1.0
"""``distillation.temperature`` of a ``causal_lm`` job that does not give one."""
LM_LOSS_TYPES = ("forward_kl", "reverse_kl", "jsd", "ce")
"""The ``distillation.losses`` types of ``causal_lm`` jobs."""

LossSpec = Annotated[
    KDLoss
    | LogitMSELoss
    | DKDLoss
    | HintLoss
    | AttentionLoss
    | CELoss
    | ForwardKLLoss
    | ReverseKLLoss
    | JSDLoss,
    Field(discriminator="type"),
]


class OnPolicySpec(_Strict):
    """GKD's on-policy mode (``causal_lm`` jobs with a teacher): a share ``fraction`` of the training
    batches complete their prompts with the student's own samples (up to ``max_new_tokens``), which the
    teacher then scores token by token."""

    fraction: float = Field(default=0.5, ge=0.0, le=1.0)
    max_new_tokens: int = Field(default=32, ge=1, le=2048)
    temperature: float = Field(default=1.0, gt=0.0, le=10.0)
    """Sampling temperature of the student's completions."""


class DistillationSpec(_Strict):
    """Hinton et al. (2015): ``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(labels)``.

    ``losses`` replaces that default with a weighted sum of any of the registered losses. ``temperature``
    and ``alpha`` may be ``"auto"``: the job then tries up to ``auto_budget`` candidates on the validation
    split and reports which it chose.
    """

    temperature: float | Literal["auto"] = Field(default=4.0)
    alpha: float | Literal["auto"] = Field(default=0.9)
    losses: list[LossSpec] | None = Field(default=None, min_length=1, max_length=8)
    auto_budget: int = Field(default=4, ge=0, le=64)
    """How many short trial runs "auto" may spend."""
    on_policy: OnPolicySpec | None = None
    """``causal_lm`` jobs with a teacher: train on the student's own samples for a share of batches."""
    top_k: int | None = Field(default=None, ge=1, le=64)
    """``causal_lm`` jobs: the teacher-output cache keeps the teacher's top ``top_k`` log-probabilities per
    token plus the tail mass (None: 16, 98 bytes a token)."""
    full_logits: bool = False
    """``causal_lm`` jobs: train on the teacher's full distributions, computed live each step (nothing is
    cached), instead of the top-k cache."""

    @field_validator("temperature")
    @classmethod
    def _temperature_range(cls, value: float | str) -> float | str:
        if isinstance(value, float | int) and not 0.0 < value <= 100.0:
            raise ValueError('must be in (0, 100] or "auto"')
        return value

    @field_validator("alpha")
    @classmethod
    def _alpha_range(cls, value: float | str) -> float | str:
        if isinstance(value, float | int) and not 0.0 <= value <= 1.0:
            raise ValueError('must be in [0, 1] or "auto"')
        return value

    @field_validator("auto_budget")
    @classmethod
    def _budget_for_auto(cls, value: int, info: ValidationInfo) -> int:
        wants_auto = "auto" in (info.data.get("temperature"), info.data.get("alpha"))
        if wants_auto and value < 1:
            raise ValueError('"auto" needs a budget of at least one trial run')
        return value

    @property
    def uses_auto(self) -> bool:
        return "auto" in (self.temperature, self.alpha)


class TrainingSpec(_Strict):
    epochs: int = Field(default=10, ge=1, le=10_000)
    batch_size: int = Field(default=64, ge=1, le=65_536)
    learning_rate: float = Field(default=1e-3, gt=0.0, le=10.0)
    weight_decay: float = Field(default=0.0, ge=0.0, le=1.0)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    max_runtime_s: int | None = Field(default=None, ge=1)
    """Wall-clock limit of one attempt; past it the job stops and fails with ``timeout``."""
    keep_checkpoints: bool = False
    """Keep the job's checkpoints (``GET /v1/jobs/{id}/checkpoints``) after it ends; by default they are
    deleted with its other temporary state."""


class ResourcesSpec(_Strict):
    """Where a job runs: the worker pool's queue (one per GPU class) and how many GPUs it needs."""

    queue: str | None = Field(
        default=None, min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$"
    )
    """A named queue that a worker pool serves (``DISTILL_QUEUE_NAME`` of its workers); none: the default."""
    gpus: int = Field(default=1, ge=0, le=64)
    """Devices the job trains on: above 1, data-parallel with one process per device on one worker node
    (tabular jobs; the worker must have that many, ``DISTILL_WORKER_DEVICES``); 0 or 1: the worker's one
    device."""
    sharding: Literal["auto", "ddp", "fsdp"] = "auto"
    """With ``gpus > 1``: ``ddp`` keeps the whole student on every device; ``fsdp`` shards its parameters,
    gradients and optimizer state across them (for a student whose training state does not fit one
    device); ``auto`` picks FSDP exactly then."""


class JobSpec(_Strict):
    name: str | None = Field(default=None, max_length=200)
    data: DataSpec
    model: ModelConfig = Field(default_factory=MLPConfig)
    teacher: TeacherRef | list[TeacherRef] | None = None
    """One teacher, or several (``[{"job": …, "weight": 2}, {"file": …}]``) whose soft targets are mixed."""
    distillation: DistillationSpec = Field(default_factory=DistillationSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    baseline: bool = False
    """Also train the same student from scratch in this job, and compare in the report."""
    export: list[Literal["onnx", "torchscript"]] = Field(default_factory=list, max_length=2)
    """Formats exported besides ``model.safetensors``."""
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    task: Literal["classification", "embedding", "causal_lm"] = "classification"
    """``embedding`` (text only): the student learns its text teacher's sentence embeddings (no labels
    needed); its metric is the mean cosine to the teacher's embeddings of held-out texts. ``causal_lm``:
    a language model learns to complete prompts (JSONL with ``prompt``/``completion`` or ``messages``), from
    a causal-LM teacher's token distributions or, without a teacher, from the completions."""

    @model_validator(mode="after")
    def _rules(self) -> JobSpec:
        from distill.spec_rules import check_spec_rules  # the rules import these models

        try:
            check_spec_rules(self)
        except SpecError as exc:
            raise exc.as_validation_error(type(self).__name__) from None
        if self.task == "causal_lm" and "temperature" not in self.distillation.model_fields_set:
            # a vocabulary-sized distribution at the classifiers' default of 4 is nearly flat: causal_lm
            # jobs default to 1 (written into the spec, so the stored spec says it)
            self.distillation.temperature = LM_DEFAULT_TEMPERATURE
        return self

    @property
    def teachers(self) -> list[TeacherRef]:
        if self.teacher is None:
            return []
        return list(self.teacher) if isinstance(self.teacher, list) else [self.teacher]

    def teacher_field(self, index: int) -> str:
        """Where teacher ``index`` sits: ``teacher.file``, ``teacher.1.job``, ``teacher.builtin``..."""
        ref = self.teachers[index]
        base = f"teacher.{index}" if isinstance(self.teacher, list) else "teacher"
        kinds = {
            JobTeacher: "job",
            FileTeacher: "file",
            BuiltinTeacher: "builtin",
            EndpointTeacher: "endpoint",
        }
        kind = kinds[type(ref)]
        return f"{base}.{kind}"


class Standardization(_Strict):
    """Per-feature ``(x - mean) / std`` (flattened input order), fitted on a job's training split: the model
    applies it as its first layer (``standardize``), so it takes raw features."""

    mean: list[float]
    std: list[Annotated[float, Field(gt=0)]]


class StoredModelConfig(_Strict):
    """What a ``.safetensors`` model carries in its metadata (key ``distill.config``): self-describing."""

    model: ModelConfig
    input_shape: list[Annotated[int, Field(gt=0)]] = Field(min_length=1, max_length=3)
    num_classes: int = Field(ge=2)
    standardize: Standardization | None = None

    @field_validator("model")
    @classmethod
    def _not_text(cls, value: object) -> object:
        if isinstance(value, EncoderConfig):
            raise ValueError("encoder models are stored as text models (distill.format 'text-1')")
        if not isinstance(value, MLPConfig | CNNConfig):
            raise ValueError("causal language models are stored as Hugging Face archives (model.hf.zip)")
        return value

    def layer_names(self) -> list[str]:
        """The model's layer names (``named_modules()`` of the engine's ``nn.Sequential``: "0", "1", …).

        Known without PyTorch so that the API can check a loss's layer names on submission; a unit test
        keeps this in step with ``distill.nets.build_model``.
        """
        if isinstance(self.model, MLPConfig):
            count = 1 + 3 * len(self.model.hidden) + 1  # flatten, (linear, relu, dropout)*, head
        elif isinstance(self.model, CNNConfig):
            add_channel = 1 if len(self.input_shape) < 3 else 0
            count = (
                add_channel + 3 * len(self.model.channels) + 4
            )  # (conv, relu, pool)*, avg, flatten, dropout, head
        else:
            return []
        first = ["standardize"] if self.standardize is not None else []
        return first + [str(i) for i in range(count)]
