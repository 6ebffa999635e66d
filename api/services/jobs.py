"""Jobs: submission (with every reference checked before anything is queued), listing, cancellation."""

from __future__ import annotations

import contextlib
import logging

from celery import Celery
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from api.errors import Conflict, Invalid, NotFound
from api.pagination import Page, paginate
from api.tenancy import find_owned, get_owned, scoped
from distill import lifecycle
from distill.datasets import BUILTIN_INFO, DatasetInfo
from distill.events import append_event
from distill.ids import new_job_id
from distill.jobstate import JobStatus
from distill.modelfile import TextModelInfo
from distill.queue import enqueue_job
from distill.spec import (
    AttentionLoss,
    BuiltinData,
    BuiltinTeacher,
    DataRef,
    EncoderConfig,
    FileTeacher,
    HintLoss,
    JobSpec,
    JobTeacher,
    StoredModelConfig,
    TeacherRef,
)
from distill.tables import Artifact, File, Job, JobEvent, Tenant

log = logging.getLogger(__name__)


def _usable_file(session: Session, tenant: Tenant, file_id: str, purpose: str, field: str) -> File:
    """The caller's file ``file_id`` uploaded for ``purpose``, or 422 on ``{field}.file`` saying why not."""
    row = find_owned(session, File, file_id, tenant)
    if row is None:
        raise Invalid(f"{field}.file: no file {file_id!r}", field=f"{field}.file")
    if row.purpose != purpose:
        raise Invalid(
            f"{field}.file: {file_id} is a {row.purpose}, not a {purpose} (upload it with purpose={purpose})",
            field=f"{field}.file",
        )
    return row


def _data_info(session: Session, tenant: Tenant, ref: DataRef, field: str) -> DatasetInfo:
    if isinstance(ref, BuiltinData):
        return BUILTIN_INFO[ref.builtin]
    return DatasetInfo.from_meta(_usable_file(session, tenant, ref.file, "dataset", field).meta)


def _teacher_config(session: Session, tenant: Tenant, teacher: TeacherRef, field: str) -> StoredModelConfig:
    """The config of one tabular teacher reference; ``field``: where it sits in the spec (``teacher.0``…)."""
    if isinstance(teacher, BuiltinTeacher):
        raise Invalid(
            f"{field}.builtin: {teacher.builtin} is a text teacher; it teaches encoder students on text "
            'datasets (model.arch "encoder")',
            field=f"{field}.builtin",
        )
    found = _teacher_model(session, tenant, teacher, field)
    if isinstance(found, TextModelInfo):
        kind = "job" if isinstance(teacher, JobTeacher) else "file"
        raise Invalid(
            f"{field}.{kind}: the teacher is a text model; it teaches encoder students on text datasets "
            '(model.arch "encoder")',
            field=f"{field}.{kind}",
        )
    return found


def _teacher_model(
    session: Session, tenant: Tenant, teacher: JobTeacher | FileTeacher, field: str
) -> StoredModelConfig | TextModelInfo:
    """What a job or file teacher is: a tabular model's config, or a text model's description."""
    if isinstance(teacher, JobTeacher):
        job = find_owned(session, Job, teacher.job, tenant)
        if job is None:
            raise Invalid(f"{field}.job: no job {teacher.job!r}", field=f"{field}.job")
        if job.status != JobStatus.SUCCEEDED or not job.result:
            raise Invalid(
                f"{field}.job: {teacher.job} has not succeeded (status: {job.status}); "
                "wait for it to succeed or pick another teacher",
                field=f"{field}.job",
            )
        if "text_model" in job.result:
            return TextModelInfo.from_meta(job.result["text_model"])
        return StoredModelConfig.model_validate(job.result["model_config"])
    row = _usable_file(session, tenant, teacher.file, "model", field)
    if row.meta.get("kind") == "text":
        return TextModelInfo.from_meta(row.meta)
    return StoredModelConfig.model_validate(row.meta["config"])


def _check_losses(spec: JobSpec, train: DatasetInfo, teachers: list[StoredModelConfig]) -> None:
    """Layer names and loss/teacher combinations, so a bad loss answers 422 now, not a failed job later."""
    assert train.num_classes is not None
    student = StoredModelConfig(
        model=spec.model, input_shape=train.input_shape, num_classes=train.num_classes
    )
    for index, loss in enumerate(spec.distillation.losses or []):
        field = f"distillation.losses.{index}"
        if isinstance(loss, AttentionLoss):
            raise Invalid(
                f"{field}.type: the attention loss needs a transformer student and teacher; "
                f"{spec.model.arch} models have no attention maps",
                field=f"{field}.type",
            )
        if isinstance(loss, HintLoss):
            if len(teachers) != 1:
                raise Invalid(
                    f"{field}: a hint loss matches one teacher's layer; this job has {len(teachers)}",
                    field=field,
                )
            for role, name, config in (
                ("student", loss.student_layer, student),
                ("teacher", loss.teacher_layer, teachers[0]),
            ):
                names = config.layer_names()
                if name not in names:
                    raise Invalid(
                        f"{field}.{role}_layer: the {role} has no layer {name!r}; its layers are "
                        f"{', '.join(names)}",
                        field=f"{field}.{role}_layer",
                    )


def _check_teachers(
    session: Session, tenant: Tenant, spec: JobSpec, train: DatasetInfo
) -> list[StoredModelConfig]:
    several = isinstance(spec.teacher, list)
    configs = []
    for index, teacher in enumerate(spec.teachers):
        base = f"teacher.{index}" if several else "teacher"
        field = f"{base}.job" if isinstance(teacher, JobTeacher) else f"{base}.file"
        config = _teacher_config(session, tenant, teacher, base)
        if config.num_classes != train.num_classes:
            others = " (all teachers must predict the same classes)" if several else ""
            raise Invalid(
                f"{field}: the teacher predicts {config.num_classes} classes but the data has "
                f"{train.num_classes}{others}",
                field=field,
            )
        if config.input_shape != train.input_shape:
            raise Invalid(
                f"{field}: the teacher takes inputs of shape {config.input_shape} but the data has "
                f"{train.input_shape}",
                field=field,
            )
        configs.append(config)
    return configs


def check_references(session: Session, tenant: Tenant, spec: JobSpec) -> DatasetInfo:
    """Check that every file and job the spec names exists, is the caller's and fits; return train's info."""
    if spec.data.transfer is not None and spec.teacher is None:
        raise Invalid(
            "data.transfer: a transfer set is only used with a teacher; add `teacher` or drop data.transfer",
            field="data.transfer",
        )
    if spec.data.augment is not None and spec.teacher is None:
        raise Invalid(
            "data.augment: augmented inputs are labeled by a teacher's soft targets; add `teacher`",
            field="data.augment",
        )
    if spec.teacher is None:
        for index, loss in enumerate(spec.distillation.losses or []):
            if loss.type != "ce":
                raise Invalid(
                    f"distillation.losses.{index}.type: the {loss.type} loss needs a teacher; add `teacher`",
                    field=f"distillation.losses.{index}.type",
                )
    train = _data_info(session, tenant, spec.data.train, "data.train")
    if train.kind == "text" and not isinstance(spec.model, EncoderConfig):
        raise Invalid(
            f'data.train: text datasets need model.arch "encoder", not {spec.model.arch!r}; '
            "numeric features (CSV, NPZ, Parquet or JSONL with numbers) suit mlp and cnn models",
            field="data.train",
        )
    if isinstance(spec.model, EncoderConfig):
        if train.kind != "text":
            raise Invalid(
                f"model.arch: an encoder reads texts but data.train is a {train.kind} dataset; use a text "
                'dataset ({"text": "...", "label": ...} lines) or an mlp/cnn model',
                field="model.arch",
            )
        _check_text_job(session, tenant, spec, train)
        return train
    if spec.task == "embedding":
        raise Invalid(
            'task: "embedding" is for text jobs (model.arch "encoder", a text dataset and a text teacher)',
            field="task",
        )
    if not train.has_labels or train.num_classes is None:
        raise Invalid(
            "data.train: the training set has no labels (a `label` column or `y` array); "
            "unlabeled inputs go in data.transfer",
            field="data.train",
        )
    for name in ("validation", "transfer"):
        ref = getattr(spec.data, name)
        if ref is None:
            continue
        info = _data_info(session, tenant, ref, f"data.{name}")
        if info.input_shape != train.input_shape:
            raise Invalid(
                f"data.{name}: inputs have shape {info.input_shape} but the training inputs have "
                f"{train.input_shape}",
                field=f"data.{name}",
            )
        if name == "validation" and not info.has_labels:
            raise Invalid("data.validation: the validation set needs labels", field="data.validation")
        if info.num_classes is not None and info.num_classes > train.num_classes:
            raise Invalid(
                f"data.{name}: has labels up to {info.num_classes - 1} but the training set has only "
                f"{train.num_classes} classes",
                field=f"data.{name}",
            )
    _check_losses(spec, train, _check_teachers(session, tenant, spec, train))
    return train


def _check_text_job(session: Session, tenant: Tenant, spec: JobSpec, train: DatasetInfo) -> None:
    """A text job: text data everywhere, one text teacher that fits the task, engine options it supports."""
    assert isinstance(spec.model, EncoderConfig)
    if spec.data.augment is not None:
        raise Invalid(
            "data.augment: text jobs do not support augmentation yet (its noise and shifts are for numeric "
            "inputs; add unlabeled texts with data.transfer instead); drop data.augment",
            field="data.augment",
        )
    for name in ("temperature", "alpha"):
        if getattr(spec.distillation, name) != "auto":
            continue
        field = f"distillation.{name}"
        if spec.task == "embedding" or not spec.teachers:
            raise Invalid(
                f'{field}: "auto" tunes the soft-target loss of a classification student with a teacher; '
                "this job has none (an embedding student matches embeddings, a job without a teacher trains "
                f"on labels): drop {field}",
                field=field,
            )
        if name == "alpha" and spec.distillation.losses is not None:
            raise Invalid(
                'distillation.alpha: "auto" tunes the kd/ce mix of the default loss, and '
                "distillation.losses gives each term its own weight; drop one of them",
                field=field,
            )
    if spec.baseline and spec.task == "embedding":
        raise Invalid(
            "baseline: an embedding job has no labels to train a from-scratch baseline on (its student "
            "learns only the teacher's embeddings, and its metric is the cosine to them); drop baseline",
            field="baseline",
        )
    if spec.baseline and not spec.teachers:
        raise Invalid(
            "baseline: a job without a teacher already trains on the labels alone; a baseline is what a "
            "distilled student is compared with: add a text classifier `teacher` or drop baseline",
            field="baseline",
        )
    _check_text_loss_types(spec)
    if (
        spec.model.hidden is not None
        and spec.model.heads is not None
        and spec.model.hidden % spec.model.heads
    ):
        raise Invalid(
            f"model.heads: hidden size {spec.model.hidden} is not a multiple of {spec.model.heads} heads",
            field="model.heads",
        )
    if spec.model.init == "teacher" and (spec.model.hidden is not None or spec.model.heads is not None):
        raise Invalid(
            "model.init: \"teacher\" copies the teacher's layers, so it keeps the teacher's hidden size and "
            'heads; drop model.hidden/model.heads or use init "random"',
            field="model.init",
        )
    if spec.data.validation is not None:
        info = _data_info(session, tenant, spec.data.validation, "data.validation")
        if info.kind != "text":
            raise Invalid("data.validation: a text job needs a text validation set", field="data.validation")
        if spec.task == "classification":
            if not info.has_labels:
                raise Invalid("data.validation: the validation set needs labels", field="data.validation")
            if train.num_classes is not None and (info.num_classes or 0) > train.num_classes:
                raise Invalid(
                    f"data.validation: has labels up to {(info.num_classes or 0) - 1} but the training set "
                    f"has only {train.num_classes} classes",
                    field="data.validation",
                )
    if spec.data.transfer is not None:
        info = _data_info(session, tenant, spec.data.transfer, "data.transfer")
        if info.kind != "text":
            raise Invalid(
                'data.transfer: a text job needs a text transfer set ({"text": ...} lines), not a '
                f"{info.kind} dataset",
                field="data.transfer",
            )
    teachers = spec.teachers
    if len(teachers) > 1:
        raise Invalid("teacher: a text job takes one teacher", field="teacher")
    if spec.task == "classification" and (not train.has_labels or train.num_classes is None):
        raise Invalid(
            'data.train: a classification job needs labels on every text (or use task "embedding" with a '
            "text teacher)",
            field="data.train",
        )
    if not teachers:
        if spec.task == "embedding":
            raise Invalid(
                'teacher: task "embedding" learns a teacher\'s sentence embeddings; add a text teacher, '
                'e.g. {"builtin": "all-minilm-l6-v2"}',
                field="teacher",
            )
        if spec.model.layers > 6:
            raise Invalid(
                "model.layers: a text job without a teacher starts from MiniLM's 6 layers; use at most 6",
                field="model.layers",
            )
        return  # custom losses need a teacher: refused by _check_text_loss_types
    teacher = teachers[0]
    if isinstance(teacher, BuiltinTeacher):
        if spec.task == "classification":
            raise Invalid(
                f"teacher.builtin: {teacher.builtin} gives sentence embeddings, not classes; for "
                "classification, first run a teacher job (no teacher: MiniLM + a head trained on the labels) "
                'and use {"job": <its id>}, or use task "embedding"',
                field="teacher.builtin",
            )
        t_layers: int | None = 6
    else:
        field = "teacher.job" if isinstance(teacher, JobTeacher) else "teacher.file"
        found = _teacher_model(session, tenant, teacher, "teacher")
        if not isinstance(found, TextModelInfo) or not found.has_tokenizer:
            raise Invalid(
                f"{field}: a text job needs a text teacher with its tokenizer (a text job's model, or a "
                ".safetensors saved by save_text_model); this teacher has no tokenizer",
                field=field,
            )
        if spec.task == "classification":
            if found.task != "classification":
                raise Invalid(
                    f"{field}: the teacher is a text {found.task} model; a classification student needs a "
                    'text classifier teacher (or use task "embedding")',
                    field=field,
                )
            if found.num_classes != train.num_classes:
                raise Invalid(
                    f"{field}: the teacher predicts {found.num_classes} classes but the data has "
                    f"{train.num_classes}",
                    field=field,
                )
        t_layers = found.layers
    if t_layers is not None and spec.model.layers > t_layers:
        raise Invalid(
            f"model.layers: the student cannot have more layers ({spec.model.layers}) than its teacher "
            f"({t_layers})",
            field="model.layers",
        )
    _check_text_layer_maps(spec, t_layers)


TEXT_LOSSES = ("kd", "ce", "attention")
"""The ``distillation.losses`` types a text job supports (classification students with a teacher)."""


def _check_text_loss_types(spec: JobSpec) -> None:
    losses = spec.distillation.losses
    if losses is None:
        return
    if spec.task != "classification" or not spec.teachers:
        raise Invalid(
            "distillation.losses: text jobs support custom losses only for classification students with a "
            f"teacher ({', '.join(TEXT_LOSSES)}); drop distillation.losses",
            field="distillation.losses",
        )
    for index, loss in enumerate(losses):
        if loss.type not in TEXT_LOSSES:
            field = f"distillation.losses.{index}.type"
            raise Invalid(
                f"{field}: text jobs support the {', '.join(TEXT_LOSSES)} losses, not {loss.type}",
                field=field,
            )


def _check_text_layer_maps(spec: JobSpec, teacher_layers: int | None) -> None:
    """Attention layer maps name existing layers (student: ``model.layers``; teacher: its stored count)."""
    assert isinstance(spec.model, EncoderConfig)
    student_layers = spec.model.layers
    for index, loss in enumerate(spec.distillation.losses or []):
        if not isinstance(loss, AttentionLoss) or loss.layer_map is None:
            continue
        field = f"distillation.losses.{index}.layer_map"
        if not loss.layer_map:
            raise Invalid(f"{field}: the layer map is empty; give pairs or drop layer_map", field=field)
        for i, j in loss.layer_map:
            bad_student = not 0 <= i < student_layers
            bad_teacher = teacher_layers is not None and not 0 <= j < teacher_layers
            if bad_student or bad_teacher:
                teacher_text = (
                    f"the teacher {teacher_layers} (0..{teacher_layers - 1})"
                    if teacher_layers is not None
                    else "the teacher's count is unknown"
                )
                raise Invalid(
                    f"{field}: layer pair [{i}, {j}] is out of range: the student has {student_layers} "
                    f"attention layers (0..{student_layers - 1}) and {teacher_text}",
                    field=field,
                )


def create_job(*, session: Session, queue: Celery, tenant: Tenant, spec: JobSpec) -> Job:
    check_references(session, tenant, spec)
    job = Job(
        id=new_job_id(),
        tenant_id=tenant.id,
        name=spec.name,
        spec=spec.model_dump(mode="json"),
        status=JobStatus.QUEUED,
        progress={"epoch": 0, "epochs": spec.training.epochs, "step": 0, "steps": 0},
    )
    session.add(job)
    session.flush()
    append_event(session, job.id, "job queued")
    session.commit()
    try:  # the row is the outbox: a job whose wake-up was not marked sent gets one from the reconciler
        enqueue_job(queue, job.id)
    except Exception as error:
        log.warning("job %s: broker unavailable (%s); the reconciler sends its wake-up", job.id, error)
        return job
    with contextlib.suppress(SQLAlchemyError):  # unmarked, it is only sent once more (the claim dedupes)
        lifecycle.wakeup_sent(session, job.id)
        session.commit()
    return job


def list_jobs(
    *, session: Session, tenant: Tenant, limit: int, after: str | None, status: JobStatus | None
) -> Page[Job]:
    query = scoped(Job, tenant)
    if status is not None:
        query = query.where(Job.status == status)
    return paginate(session, query, Job.id, limit=limit, after=after)


def cancel_job(*, session: Session, tenant: Tenant, job_id: str) -> Job:
    """A queued job (or one whose worker was lost) is cancelled at once; a running one is asked to stop
    and ends ``cancelled`` within seconds; a finished one answers 409 (``distill.lifecycle``)."""
    job = get_owned(session, Job, job_id, tenant)
    outcome = lifecycle.request_cancel(session, job_id)
    session.commit()
    session.refresh(job)
    if outcome is lifecycle.CancelOutcome.FINISHED:
        raise Conflict(f"job {job_id} has already finished (status: {job.status})", field="id")
    return job


def list_events(
    *, session: Session, tenant: Tenant, job_id: str, after: int | None, limit: int
) -> Page[JobEvent]:
    get_owned(session, Job, job_id, tenant)
    query = select(JobEvent).where(JobEvent.job_id == job_id)
    return paginate(session, query, JobEvent.seq, limit=limit, after=after, descending=False)


def list_artifacts(*, session: Session, tenant: Tenant, job_id: str) -> list[Artifact]:
    get_owned(session, Job, job_id, tenant)
    return list(session.scalars(select(Artifact).where(Artifact.job_id == job_id).order_by(Artifact.name)))


def get_artifact(*, session: Session, tenant: Tenant, job_id: str, name: str) -> Artifact:
    get_owned(session, Job, job_id, tenant)
    row = session.scalar(select(Artifact).where(Artifact.job_id == job_id, Artifact.name == name))
    if row is None:
        raise NotFound(f"job {job_id} has no artifact {name!r}", field="name")
    return row
