"""The rules of a job spec that depend on what its references are: one pure function, :func:`plan`.

The API resolves each reference through the database (tenant-scoped: a file's recorded metadata, a teacher
job's result) and calls :func:`plan` at submission, answering 422 naming the field; the worker describes
what it actually loaded the same way and calls the same function before training (a failed job,
``invalid_spec``). The rules between the spec's own fields are validators of :class:`distill.spec.JobSpec`;
whether a reference exists and belongs to the tenant is the caller's business (only it can look).

No I/O, no database, no torch: every rule here has a unit test that needs no services.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from distill.datasets import DatasetInfo
from distill.hfarchive import HFModelInfo
from distill.lminfo import CausalLMInfo
from distill.modelfile import TextModelInfo
from distill.spec import (
    AttentionLoss,
    EncoderConfig,
    EndpointSettings,
    HintLoss,
    JobSpec,
    PretrainedStudentConfig,
    SpecError,
    StoredModelConfig,
    TeacherLayersConfig,
)
from distill.spec_rules import check_layer_map

TeacherInfo = StoredModelConfig | TextModelInfo | HFModelInfo | CausalLMInfo | EndpointSettings
"""What a teacher reference resolved to: a tabular model's config, a text model's description (the
builtin text teachers are described by :data:`distill.modelfile.BUILTIN_TEXT_TEACHERS`), a Hugging Face
model archive's (:class:`distill.hfarchive.HFModelInfo`), a causal language model's (a causal_lm job's
output, or an archive's described as :class:`distill.lminfo.CausalLMInfo`), or an endpoint's settings (a
served teacher known only by its answers)."""


@dataclass(frozen=True)
class Resolved:
    """What each reference of a spec resolved to (``None``: the spec has no such reference)."""

    train: DatasetInfo
    validation: DatasetInfo | None = None
    test: DatasetInfo | None = None
    transfer: DatasetInfo | None = None
    teachers: list[TeacherInfo] = field(default_factory=list)
    """One per ``spec.teachers``, in order."""
    student: TeacherInfo | None = None
    """What a ``{"arch": "pretrained"}`` student starts from (None for every other student)."""


@dataclass(frozen=True)
class Plan:
    """What a valid spec amounts to, once its references are known."""

    kind: Literal["tabular", "text", "lm"]
    num_classes: int | None
    """Classes of the training labels; None for a text embedding job without labels."""
    input_shape: list[int]
    """The shape of one input (``[]`` for texts)."""
    student: StoredModelConfig | None
    """The student's stored config (tabular jobs; text students are built from their teacher)."""


def plan(spec: JobSpec, resolved: Resolved) -> Plan:
    """Check the spec against what its references are; raise :class:`SpecError` naming the field."""
    if len(resolved.teachers) != len(spec.teachers):
        raise ValueError(f"resolved {len(resolved.teachers)} teachers for a spec with {len(spec.teachers)}")
    train = resolved.train
    if spec.task == "causal_lm":
        return _lm_plan(spec, resolved)
    if train.kind == "lm":
        raise SpecError(
            "data.train",
            'data.train: a prompt/completion dataset trains language models; set task "causal_lm" with a '
            'causal-LM model (e.g. {"arch": "gpt2", ...})',
        )
    if isinstance(spec.model, EncoderConfig):
        if train.kind != "text":
            raise SpecError(
                "model.arch",
                f"model.arch: an encoder reads texts but data.train is a {train.kind} dataset; use a text "
                'dataset ({"text": "...", "label": ...} lines) or an mlp/cnn model',
            )
        return _text_plan(spec, spec.model, resolved)
    if train.kind == "text":
        raise SpecError(
            "data.train",
            f'data.train: text datasets need model.arch "encoder", not {spec.model.arch!r}; '
            "numeric features (CSV, NPZ, Parquet or JSONL with numbers) suit mlp and cnn models",
        )
    if not train.has_labels or train.num_classes is None:
        raise SpecError(
            "data.train",
            "data.train: the training set has no labels (a `label` column or `y` array); "
            "unlabeled inputs go in data.transfer",
        )
    num_classes = _enough_classes(train.num_classes)
    others = (("validation", resolved.validation), ("test", resolved.test), ("transfer", resolved.transfer))
    for name, info in others:
        if info is None:
            continue
        where = f"data.{name}"
        if info.kind != "tabular":
            raise SpecError(where, f"{where}: a {info.kind} dataset, but the training inputs are numeric")
        if info.input_shape != train.input_shape:
            raise SpecError(
                where,
                f"{where}: inputs have shape {info.input_shape} but the training inputs have "
                f"{train.input_shape}",
            )
        if name in ("validation", "test") and not info.has_labels:
            raise SpecError(where, f"{where}: the {name} set needs labels")
        _labels_within(info, num_classes, where)
    student = StoredModelConfig(model=spec.model, input_shape=train.input_shape, num_classes=num_classes)
    teachers = _tabular_teachers(spec, resolved.teachers, train, num_classes)
    _check_hints(spec, student, teachers)
    return Plan(kind="tabular", num_classes=num_classes, input_shape=train.input_shape, student=student)


def _enough_classes(num_classes: int) -> int:
    if num_classes < 2:
        raise SpecError(
            "data.train",
            f"data.train: the training labels have only {num_classes} class (every label is "
            f"{num_classes - 1}); a classifier needs at least two classes: label examples of another class",
        )
    return num_classes


def _labels_within(info: DatasetInfo, num_classes: int, where: str) -> None:
    if info.num_classes is not None and info.num_classes > num_classes:
        raise SpecError(
            where,
            f"{where}: has labels up to {info.num_classes - 1} but the training set has only "
            f"{num_classes} classes",
        )


def _tabular_teachers(
    spec: JobSpec, teachers: list[TeacherInfo], train: DatasetInfo, num_classes: int
) -> list[StoredModelConfig]:
    several = len(teachers) > 1 or isinstance(spec.teacher, list)
    configs = []
    for index, info in enumerate(teachers):
        where = spec.teacher_field(index)
        if isinstance(info, TextModelInfo | HFModelInfo):
            raise SpecError(
                where,
                f"{where}: the teacher is a text model; it teaches encoder students on text datasets "
                '(model.arch "encoder")',
            )
        if isinstance(info, EndpointSettings):  # (the spec's rules allow it in causal_lm jobs only)
            raise SpecError(
                where, f'{where}: an endpoint teacher teaches causal-LM students (task "causal_lm")'
            )
        if isinstance(info, CausalLMInfo):
            raise SpecError(
                where,
                f'{where}: the teacher is a causal language model; it teaches task "causal_lm" jobs',
            )
        if info.num_classes != num_classes:
            others = " (all teachers must predict the same classes)" if several else ""
            raise SpecError(
                where,
                f"{where}: the teacher predicts {info.num_classes} classes but the data has "
                f"{num_classes}{others}",
            )
        if info.input_shape != train.input_shape:
            raise SpecError(
                where,
                f"{where}: the teacher takes inputs of shape {info.input_shape} but the data has "
                f"{train.input_shape}",
            )
        configs.append(info)
    return configs


def _check_hints(spec: JobSpec, student: StoredModelConfig, teachers: list[StoredModelConfig]) -> None:
    """A hint loss names layers the student and its one teacher have (the spec checks it has one)."""
    for index, loss in enumerate(spec.distillation.losses or []):
        if not isinstance(loss, HintLoss):
            continue
        for role, name, config in (
            ("student", loss.student_layer, student),
            ("teacher", loss.teacher_layer, teachers[0]),
        ):
            names = config.layer_names()
            if name not in names:
                where = f"distillation.losses.{index}.{role}_layer"
                raise SpecError(
                    where, f"{where}: the {role} has no layer {name!r}; its layers are {', '.join(names)}"
                )


def _text_plan(spec: JobSpec, model: EncoderConfig, resolved: Resolved) -> Plan:
    train = resolved.train
    classify = spec.task == "classification"
    num_classes: int | None = None
    if classify:
        if not train.has_labels or train.num_classes is None:
            raise SpecError(
                "data.train",
                'data.train: a classification job needs labels on every text (or use task "embedding" with '
                "a text teacher)",
            )
        num_classes = _enough_classes(train.num_classes)
    elif train.has_labels:
        num_classes = train.num_classes
    for name, held in (("validation", resolved.validation), ("test", resolved.test)):
        if held is None:
            continue
        where = f"data.{name}"
        if held.kind != "text":
            raise SpecError(where, f"{where}: a text job needs a text {name} set")
        if num_classes is not None and classify:
            if not held.has_labels:
                raise SpecError(where, f"{where}: the {name} set needs labels")
            _labels_within(held, num_classes, where)
    transfer = resolved.transfer
    if transfer is not None and transfer.kind != "text":
        raise SpecError(
            "data.transfer",
            'data.transfer: a text job needs a text transfer set ({"text": ...} lines), not a '
            f"{transfer.kind} dataset",
        )
    if resolved.teachers:
        _text_teacher(spec, model, resolved.teachers[0], num_classes)
    if model.format == "hf":
        _hf_student(spec)
    return Plan(kind="text", num_classes=num_classes, input_shape=[], student=None)


def _hf_student(spec: JobSpec) -> None:
    """``model.format: "hf"``: a transformers classifier student, distilled from a teacher's logits."""
    if spec.task != "classification" or not spec.teachers:
        raise SpecError(
            "model.format",
            'model.format: "hf" students are text classifiers distilled from a teacher (a text classifier '
            'or a Hugging Face sequence classifier); use "distill" here',
        )
    for index, loss in enumerate(spec.distillation.losses or []):
        if isinstance(loss, AttentionLoss):
            field = f"distillation.losses.{index}"
            raise SpecError(field, f'{field}: attention is not available for model.format "hf" students')
    if spec.export:
        raise SpecError(
            "export",
            'export: a model.format "hf" student is stored as model.hf.zip (transformers from_pretrained); '
            "ONNX and TorchScript exports are not available for it",
        )


def _text_teacher(spec: JobSpec, model: EncoderConfig, info: TeacherInfo, num_classes: int | None) -> None:
    where = spec.teacher_field(0)
    if isinstance(info, HFModelInfo):
        _hf_text_teacher(spec, model, info, num_classes, where)
        return
    if not isinstance(info, TextModelInfo) or not info.has_tokenizer:
        raise SpecError(
            where,
            f"{where}: a text job needs a text teacher with its tokenizer (a text job's model, or a "
            ".safetensors saved by save_text_model); this teacher has no tokenizer",
        )
    if spec.task == "classification":  # (a builtin teacher gives embeddings: the spec refuses it)
        if info.task != "classification":
            raise SpecError(
                where,
                f"{where}: the teacher is a text {info.task} model; a classification student needs a "
                'text classifier teacher (or use task "embedding")',
            )
        if info.num_classes != num_classes:
            raise SpecError(
                where,
                f"{where}: the teacher predicts {info.num_classes} classes but the data has {num_classes}",
            )
    if info.layers is not None and model.layers > info.layers:
        raise SpecError(
            "model.layers",
            f"model.layers: the student cannot have more layers ({model.layers}) than its teacher "
            f"({info.layers})",
        )
    for index, loss in enumerate(spec.distillation.losses or []):
        if isinstance(loss, AttentionLoss) and loss.layer_map is not None:
            check_layer_map(
                loss.layer_map, model.layers, info.layers, f"distillation.losses.{index}.layer_map"
            )


def _lm_plan(spec: JobSpec, resolved: Resolved) -> Plan:
    """A ``causal_lm`` job: prompt/completion data, a causal-LM teacher and student with one tokenizer."""
    model = spec.model
    for name, held in (
        ("train", resolved.train),
        ("validation", resolved.validation),
        ("test", resolved.test),
    ):
        if held is None:
            continue
        where = f"data.{name}"
        if held.kind != "lm":
            raise SpecError(
                where,
                f'{where}: a causal_lm job reads JSONL records with "prompt" (and "completion") or chat '
                f'"messages"; this is a {held.kind} dataset',
            )
    on_policy = spec.distillation.on_policy
    generates = on_policy is not None and on_policy.fraction >= 1.0
    endpoint = bool(resolved.teachers) and isinstance(resolved.teachers[0], EndpointSettings)
    if not resolved.train.has_labels and not generates and not endpoint:  # an endpoint writes them
        raise SpecError(
            "data.train",
            'data.train: some records have no completion (a "completion", or a last assistant message); '
            "the job trains on completions: complete every record, or let the student write them "
            "(distillation.on_policy.fraction 1 with a teacher)",
        )
    teacher: CausalLMInfo | None = None
    if resolved.teachers:
        info = _as_causal_lm(resolved.teachers[0])
        where = spec.teacher_field(0)
        if isinstance(info, EndpointSettings):
            pass  # known only by its answers: no tokenizer to compare (the spec's rules)
        elif not isinstance(info, CausalLMInfo):
            raise SpecError(
                where,
                f"{where}: the teacher is not a causal language model; a causal_lm job needs an uploaded "
                "Hugging Face causal-LM archive or a causal_lm job's output",
            )
        else:
            teacher = info
    if isinstance(model, TeacherLayersConfig) and teacher is not None and teacher.layers is not None:
        bad = [i for i in model.layers if i >= teacher.layers]
        if bad:
            raise SpecError(
                "model.layers",
                f"model.layers: the teacher has {teacher.layers} layers (0..{teacher.layers - 1}); "
                f"{bad} do not exist",
            )
    if isinstance(model, PretrainedStudentConfig):
        student = None if resolved.student is None else _as_causal_lm(resolved.student)
        where = "model.file" if model.file is not None else "model.job"
        if not isinstance(student, CausalLMInfo):
            raise SpecError(where, f"{where}: the student to continue from is not a causal language model")
        _same_tokenizer(spec, teacher, student, where)
    return Plan(kind="lm", num_classes=None, input_shape=[], student=None)


def _as_causal_lm(info: TeacherInfo) -> TeacherInfo:
    """An uploaded Hugging Face causal LM's description as a :class:`CausalLMInfo` (others unchanged)."""
    if isinstance(info, HFModelInfo) and info.kind == "causal_lm":
        return CausalLMInfo.from_meta(info.to_meta())
    return info


def _same_tokenizer(spec: JobSpec, teacher: CausalLMInfo | None, student: CausalLMInfo, where: str) -> None:
    """Token-level distillation compares distributions over one vocabulary: the teacher's and the
    student's tokenizers must be the same (same ``tokenizer_sha256``)."""
    if teacher is None:
        return
    teacher_field = spec.teacher_field(0)
    model = spec.model
    assert isinstance(model, PretrainedStudentConfig)
    student_ref = model.file or model.job
    teacher_ref = spec.teachers[0]
    teacher_name = getattr(teacher_ref, "file", None) or getattr(teacher_ref, "job", None)
    differ = (
        teacher.tokenizer_sha256 is not None
        and student.tokenizer_sha256 is not None
        and teacher.tokenizer_sha256 != student.tokenizer_sha256
    )
    if differ or teacher.vocab_size != student.vocab_size:
        raise SpecError(
            where,
            f"{where}: the student ({student_ref}: {student.architecture}, vocabulary {student.vocab_size}, "
            f"tokenizer {str(student.tokenizer_sha256)[:12]}) and the teacher ({teacher_field} "
            f"{teacher_name}: {teacher.architecture}, vocabulary {teacher.vocab_size}, tokenizer "
            f"{str(teacher.tokenizer_sha256)[:12]}) have different tokenizers; token-level distillation "
            "needs one tokenizer: pick a student that shares the teacher's",
        )


def _hf_text_teacher(
    spec: JobSpec, model: EncoderConfig, info: HFModelInfo, num_classes: int | None, where: str
) -> None:
    """A Hugging Face sequence classifier teaching a text classification job: its labels must be the data's
    classes; its student is a ``BertForSequenceClassification`` over the teacher's tokenizer, so only the
    logit losses apply, layers are copied from a BERT teacher only, and the student comes out as an HF
    archive (no ONNX/TorchScript export)."""
    if info.kind != "sequence_classification":
        raise SpecError(
            where,
            f"{where}: the teacher is a causal language model ({info.architecture}); a text classification "
            "job needs a sequence classifier (AutoModelForSequenceClassification)",
        )
    if spec.task != "classification":
        raise SpecError(
            "task",
            f"task: a Hugging Face sequence classifier ({info.architecture}) teaches classification jobs, "
            f"not {spec.task!r}",
        )
    if info.num_labels != num_classes:
        named = f" ({', '.join(info.labels)})" if info.labels else ""
        raise SpecError(
            where,
            f"{where}: the teacher predicts {info.num_labels} labels{named} but the data has {num_classes} "
            "classes",
        )
    if info.context_length is not None and model.max_length > info.context_length:
        raise SpecError(
            "model.max_length",
            f"model.max_length: {model.max_length} tokens per text, but the teacher ({info.architecture}) "
            f"reads at most {info.context_length}",
        )
    if model.init == "teacher" and info.model_type != "bert":
        raise SpecError(
            "model.init",
            f'model.init: "teacher" copies a BERT teacher\'s layers, but this teacher is a {info.model_type} '
            'model; use "random"',
        )
    for index, loss in enumerate(spec.distillation.losses or []):
        if isinstance(loss, AttentionLoss | HintLoss):
            field = f"distillation.losses.{index}"
            raise SpecError(
                field,
                f"{field}: a Hugging Face teacher teaches through its logits (kd, ce); {loss.type} is not "
                "available",
            )
    if spec.export:
        raise SpecError(
            "export",
            "export: the student of a Hugging Face teacher is stored as model.hf.zip (transformers "
            "from_pretrained); ONNX and TorchScript exports are not available for it",
        )
