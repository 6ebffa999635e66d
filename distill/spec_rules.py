"""The rules between a job spec's own fields, run by :class:`distill.spec.JobSpec`'s validator.

A transfer set needs a teacher, text jobs take one teacher that fits their task, ``"auto"`` needs a
classification student with a teacher... Each raises :class:`distill.spec.SpecError` naming the field; the
spec turns it into a pydantic error at that location, so the API's 422 and the Python client name it
alike. Nothing here needs a database or the references' contents (those rules are :mod:`distill.plan`).
"""

from __future__ import annotations

from distill.spec import (
    LM_LOSS_TYPES,
    AttentionLoss,
    BuiltinTeacher,
    EncoderConfig,
    EndpointTeacher,
    GPT2StudentConfig,
    HintLoss,
    JobSpec,
    LlamaStudentConfig,
    PretrainedStudentConfig,
    SpecError,
    TeacherLayersConfig,
)

TEXT_LOSSES = ("kd", "ce", "attention")
"""The ``distillation.losses`` types a text job supports (classification students with a teacher)."""
UNTAUGHT_TEXT_LAYERS = 6
"""A text job without a teacher starts from the builtin MiniLM, which has this many layers."""


def check_spec_rules(spec: JobSpec) -> None:
    """Every rule between the spec's fields (no references resolved); raises :class:`SpecError`."""
    _endpoint_rules(spec)
    lm_model = isinstance(
        spec.model, GPT2StudentConfig | LlamaStudentConfig | TeacherLayersConfig | PretrainedStudentConfig
    )
    if spec.task == "causal_lm" or lm_model:
        _causal_lm_rules(spec)
        return
    _no_lm_fields(spec)
    if spec.data.transfer is not None and spec.teacher is None:
        raise SpecError(
            "data.transfer",
            "data.transfer: a transfer set is only used with a teacher; add `teacher` or drop data.transfer",
        )
    if isinstance(spec.model, EncoderConfig):
        _text_rules(spec, spec.model)
        return
    if spec.data.augment is not None and spec.teacher is None:
        raise SpecError(
            "data.augment",
            "data.augment: augmented inputs are labeled by a teacher's soft targets; add `teacher`",
        )
    if spec.task == "embedding":
        raise SpecError(
            "task",
            'task: "embedding" is for text jobs (model.arch "encoder", a text dataset and a text teacher)',
        )
    for index, ref in enumerate(spec.teachers):
        if isinstance(ref, BuiltinTeacher):
            field = spec.teacher_field(index)
            raise SpecError(
                field,
                f"{field}: {ref.builtin} is a text teacher; it teaches encoder students on text datasets "
                '(model.arch "encoder")',
            )
    for index, loss in enumerate(spec.distillation.losses or []):
        field = f"distillation.losses.{index}"
        if spec.teacher is None and loss.type != "ce":
            raise SpecError(
                f"{field}.type", f"{field}.type: the {loss.type} loss needs a teacher; add `teacher`"
            )
        if isinstance(loss, AttentionLoss):
            raise SpecError(
                f"{field}.type",
                f"{field}.type: the attention loss needs a transformer student and teacher; "
                f"{spec.model.arch} models have no attention maps",
            )
        if isinstance(loss, HintLoss) and len(spec.teachers) != 1:
            raise SpecError(
                field, f"{field}: a hint loss matches one teacher's layer; this job has {len(spec.teachers)}"
            )


LM_ONLY_DISTILLATION = ("on_policy", "top_k", "full_logits")
"""``distillation`` fields that only ``causal_lm`` jobs read (each None or false unless asked for)."""


def _lm_options_given(spec: JobSpec) -> list[str]:
    """The causal-LM-only ``distillation`` fields given values (judged by value, not by whether they were
    set: a stored spec is dumped whole, defaults included, and validated again by the worker)."""
    return [name for name in LM_ONLY_DISTILLATION if getattr(spec.distillation, name) not in (None, False)]


def _no_lm_fields(spec: JobSpec) -> None:
    """A classification or embedding job names no causal-LM loss or option."""
    for name in _lm_options_given(spec):
        field = f"distillation.{name}"
        raise SpecError(field, f'{field}: is for task "causal_lm" jobs only; drop {field}')
    for index, loss in enumerate(spec.distillation.losses or []):
        if loss.type in LM_LOSS_TYPES and loss.type != "ce":
            field = f"distillation.losses.{index}.type"
            raise SpecError(
                field,
                f'{field}: the {loss.type} loss compares token distributions; it is for task "causal_lm" '
                "jobs (use kd for classifiers)",
            )


def _causal_lm_rules(spec: JobSpec) -> None:
    """A ``causal_lm`` job: a causal-LM student, at most one teacher, token-level losses only, and none of
    the fields that only classifiers read."""
    _unsharded(spec, "causal_lm")
    model = spec.model
    if spec.task != "causal_lm":
        raise SpecError(
            "task", f'task: a {model.arch} model is a causal language model; set task "causal_lm"'
        )
    if not isinstance(
        model, GPT2StudentConfig | LlamaStudentConfig | TeacherLayersConfig | PretrainedStudentConfig
    ):
        raise SpecError(
            "model.arch",
            f"model.arch: a causal_lm job needs a causal-LM student (gpt2, llama, qwen2, teacher_layers or "
            f"pretrained), not {model.arch}",
        )
    classification_only = {
        "data.transfer": spec.data.transfer is not None,
        "data.augment": spec.data.augment is not None,
        "data.standardize": spec.data.standardize is not None,
        "baseline": spec.baseline,
        "export": bool(spec.export),
    }
    for field, given in classification_only.items():
        if given:
            raise SpecError(
                field,
                f"{field}: is a classification job's field; a causal_lm job does not use it: drop {field}",
            )
    for name in ("temperature", "alpha"):
        if getattr(spec.distillation, name) == "auto":
            field = f"distillation.{name}"
            raise SpecError(
                field, f'{field}: "auto" is for classification jobs; give a number for a causal_lm job'
            )
    teachers = spec.teachers
    if len(teachers) > 1 or isinstance(spec.teacher, list):
        raise SpecError("teacher", "teacher: a causal_lm job takes one teacher (a file or a job), not a list")
    if teachers and isinstance(teachers[0], BuiltinTeacher):
        raise SpecError(
            "teacher.builtin",
            f"teacher.builtin: {teachers[0].builtin} is a sentence encoder, not a causal language model; "
            'use {"file": <an uploaded model archive>} or {"job": <a causal_lm job>}',
        )
    for index, loss in enumerate(spec.distillation.losses or []):
        field = f"distillation.losses.{index}.type"
        if loss.type not in LM_LOSS_TYPES:
            raise SpecError(
                field,
                f"{field}: causal_lm jobs support the {', '.join(LM_LOSS_TYPES)} losses, not {loss.type}",
            )
        if loss.type != "ce" and not teachers:
            raise SpecError(field, f"{field}: the {loss.type} loss needs a teacher; add `teacher`")
    if not teachers:
        for name in _lm_options_given(spec):
            field = f"distillation.{name}"
            raise SpecError(
                field,
                f"{field}: reads a teacher's token distributions; this job has no teacher (it fine-tunes "
                f"the student on the completions): add `teacher` or drop {field}",
            )
        if isinstance(model, GPT2StudentConfig | LlamaStudentConfig | TeacherLayersConfig):
            raise SpecError(
                "model.arch",
                f"model.arch: a {model.arch} student takes its teacher's vocabulary and tokenizer, and this "
                'job has no teacher; start from a model instead ({"arch": "pretrained", "file": ...}) or add '
                "`teacher`",
            )
    if spec.distillation.full_logits and spec.distillation.top_k is not None:
        raise SpecError(
            "distillation.top_k",
            "distillation.top_k: sizes the top-k cache, which full_logits does without; drop one of them",
        )
    _lm_shape_rules(model)


def _lm_shape_rules(model: object) -> None:
    if isinstance(model, GPT2StudentConfig) and model.n_embd % model.n_head:
        raise SpecError(
            "model.n_head", f"model.n_head: n_embd {model.n_embd} is not a multiple of {model.n_head} heads"
        )
    if isinstance(model, LlamaStudentConfig):
        heads = model.num_attention_heads
        if model.hidden_size % heads:
            raise SpecError(
                "model.num_attention_heads",
                f"model.num_attention_heads: hidden_size {model.hidden_size} is not a multiple of {heads} "
                "heads",
            )
        kv = model.num_key_value_heads
        if kv is not None and heads % kv:
            raise SpecError(
                "model.num_key_value_heads",
                f"model.num_key_value_heads: {heads} attention heads are not a multiple of {kv} key-value "
                "heads",
            )
    if isinstance(model, TeacherLayersConfig) and len(set(model.layers)) != len(model.layers):
        raise SpecError("model.layers", f"model.layers: {model.layers} names a layer twice")


def unsharded_message(kind: str) -> str:
    """Why a ``text`` or ``causal_lm`` job cannot ask for ``resources.sharding: fsdp``."""
    return (
        f"resources.sharding: {kind} jobs train data-parallel with DDP (every device holds the whole "
        "student); sharding with FSDP is built for tabular students: use sharding ddp or auto"
    )


def _unsharded(spec: JobSpec, kind: str) -> None:
    if spec.resources.gpus > 1 and spec.resources.sharding == "fsdp":
        raise SpecError("resources.sharding", unsharded_message(kind))


def _text_rules(spec: JobSpec, model: EncoderConfig) -> None:
    """A text job (an ``encoder`` student): one teacher that fits the task, engine options it supports."""
    _unsharded(spec, "text")
    if spec.data.augment is not None:
        raise SpecError(
            "data.augment",
            "data.augment: text jobs do not support augmentation yet (its noise and shifts are for numeric "
            "inputs; add unlabeled texts with data.transfer instead); drop data.augment",
        )
    teachers = spec.teachers
    for name in ("temperature", "alpha"):
        if getattr(spec.distillation, name) != "auto":
            continue
        field = f"distillation.{name}"
        if spec.task == "embedding" or not teachers:
            raise SpecError(
                field,
                f'{field}: "auto" tunes the soft-target loss of a classification student with a teacher; '
                "this job has none (an embedding student matches embeddings, a job without a teacher trains "
                f"on labels): drop {field}",
            )
        if name == "alpha" and spec.distillation.losses is not None:
            raise SpecError(
                field,
                'distillation.alpha: "auto" tunes the kd/ce mix of the default loss, and '
                "distillation.losses gives each term its own weight; drop one of them",
            )
    if spec.baseline and spec.task == "embedding":
        raise SpecError(
            "baseline",
            "baseline: an embedding job has no labels to train a from-scratch baseline on (its student "
            "learns only the teacher's embeddings, and its metric is the cosine to them); drop baseline",
        )
    if spec.baseline and not teachers:
        raise SpecError(
            "baseline",
            "baseline: a job without a teacher already trains on the labels alone; a baseline is what a "
            "distilled student is compared with: add a text classifier `teacher` or drop baseline",
        )
    _text_loss_rules(spec, model)
    if model.hidden is not None and model.heads is not None and model.hidden % model.heads:
        raise SpecError(
            "model.heads",
            f"model.heads: hidden size {model.hidden} is not a multiple of {model.heads} heads",
        )
    if model.init == "teacher" and (model.hidden is not None or model.heads is not None):
        raise SpecError(
            "model.init",
            "model.init: \"teacher\" copies the teacher's layers, so it keeps the teacher's hidden size and "
            'heads; drop model.hidden/model.heads or use init "random"',
        )
    if len(teachers) > 1:
        raise SpecError("teacher", "teacher: a text job takes one teacher")
    if not teachers:
        if spec.task == "embedding":
            raise SpecError(
                "teacher",
                'teacher: task "embedding" learns a teacher\'s sentence embeddings; add a text teacher, '
                'e.g. {"builtin": "all-minilm-l6-v2"}',
            )
        if model.layers > UNTAUGHT_TEXT_LAYERS:
            raise SpecError(
                "model.layers",
                f"model.layers: a text job without a teacher starts from MiniLM's {UNTAUGHT_TEXT_LAYERS} "
                f"layers; use at most {UNTAUGHT_TEXT_LAYERS}",
            )
        return
    teacher = teachers[0]
    if isinstance(teacher, BuiltinTeacher) and spec.task == "classification":
        field = spec.teacher_field(0)
        raise SpecError(
            field,
            f"{field}: {teacher.builtin} gives sentence embeddings, not classes; for classification, first "
            "run a teacher job (no teacher: MiniLM + a head trained on the labels) and use "
            '{"job": <its id>}, or use task "embedding"',
        )


def _text_loss_rules(spec: JobSpec, model: EncoderConfig) -> None:
    losses = spec.distillation.losses
    if losses is None:
        return
    if spec.task != "classification" or not spec.teachers:
        raise SpecError(
            "distillation.losses",
            "distillation.losses: text jobs support custom losses only for classification students with a "
            f"teacher ({', '.join(TEXT_LOSSES)}); drop distillation.losses",
        )
    for index, loss in enumerate(losses):
        if loss.type not in TEXT_LOSSES:
            field = f"distillation.losses.{index}.type"
            raise SpecError(
                field, f"{field}: text jobs support the {', '.join(TEXT_LOSSES)} losses, not {loss.type}"
            )
        if isinstance(loss, AttentionLoss) and loss.layer_map is not None:
            check_layer_map(loss.layer_map, model.layers, None, f"distillation.losses.{index}.layer_map")


def check_layer_map(
    layer_map: list[tuple[int, int]], student_layers: int, teacher_layers: int | None, field: str
) -> None:
    """An attention ``layer_map`` names existing layers: ``0 <= i < student_layers`` for each pair
    ``[i, j]``, and ``0 <= j < teacher_layers`` once the teacher's count is known (None: not checked)."""
    if not layer_map:
        raise SpecError(field, f"{field}: the layer map is empty; give pairs or drop layer_map")
    for i, j in layer_map:
        bad_student = not 0 <= i < student_layers
        bad_teacher = teacher_layers is not None and not 0 <= j < teacher_layers
        if bad_student or bad_teacher or j < 0:
            teacher_text = (
                f"the teacher {teacher_layers} (0..{teacher_layers - 1})"
                if teacher_layers is not None
                else "the teacher's count is checked against the teacher"
            )
            raise SpecError(
                field,
                f"{field}: layer pair [{i}, {j}] is out of range: the student has {student_layers} "
                f"attention layers (0..{student_layers - 1}) and {teacher_text}",
            )


REDACTED = "***"
"""What a stored job shows in place of ``teacher.endpoint.api_key`` (``distill.secrets``)."""


def _endpoint_rules(spec: JobSpec) -> None:
    """An endpoint teacher is the one teacher of a ``causal_lm`` job whose student starts from a model (it
    brings the tokenizer) and learns the answers only (no token-level losses)."""
    for index, ref in enumerate(spec.teachers):
        if not isinstance(ref, EndpointTeacher):
            continue
        field = spec.teacher_field(index)
        if isinstance(spec.teacher, list):
            raise SpecError(field, f"{field}: an endpoint teacher must be the job's only teacher")
        if spec.task != "causal_lm":
            raise SpecError(
                field,
                f"{field}: an endpoint teacher teaches causal-LM students by its answers; "
                'set task "causal_lm"',
            )
        model = spec.model
        if not isinstance(model, PretrainedStudentConfig):
            raise SpecError(
                "model.arch",
                f"model.arch: a {model.arch} student takes its teacher's tokenizer, and an endpoint teacher "
                'shares none; start from a model ({"arch": "pretrained", "file": ...} or "job")',
            )
        for index, loss in enumerate(spec.distillation.losses or []):
            if loss.type != "ce":
                where = f"distillation.losses.{index}.type"
                raise SpecError(
                    where,
                    f"{where}: an endpoint teacher gives answers, not token distributions; the student "
                    f"fine-tunes on them (ce), so drop the {loss.type} loss",
                )
        for name in _lm_options_given(spec):
            where = f"distillation.{name}"
            raise SpecError(
                where, f"{where}: reads a teacher's token distributions, which an endpoint does not give"
            )
