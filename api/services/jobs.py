"""Jobs: submission (with every reference checked before anything is queued), listing, cancellation."""

from __future__ import annotations

import logging

from celery import Celery
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from api.errors import Conflict, Invalid, NotFound
from api.pagination import Page, paginate
from api.tenancy import find_owned, get_owned, scoped
from distill.clock import utcnow
from distill.datasets import BUILTIN_INFO, DatasetInfo
from distill.db import affected
from distill.events import append_event
from distill.ids import new_job_id
from distill.jobstate import TERMINAL, JobStatus
from distill.queue import enqueue_job
from distill.spec import BuiltinData, DataRef, FileTeacher, JobSpec, JobTeacher, StoredModelConfig
from distill.tables import Artifact, File, Job, JobEvent, Tenant

log = logging.getLogger(__name__)


def _data_info(session: Session, tenant: Tenant, ref: DataRef, field: str) -> DatasetInfo:
    if isinstance(ref, BuiltinData):
        return BUILTIN_INFO[ref.builtin]
    row = find_owned(session, File, ref.file, tenant)
    if row is None:
        raise Invalid(f"{field}.file: no file {ref.file!r}", field=f"{field}.file")
    if row.purpose != "dataset":
        raise Invalid(
            f"{field}.file: {ref.file} is a {row.purpose}, not a dataset (upload it with purpose=dataset)",
            field=f"{field}.file",
        )
    return DatasetInfo.from_meta(row.meta)


def _teacher_config(session: Session, tenant: Tenant, spec: JobSpec) -> StoredModelConfig | None:
    teacher = spec.teacher
    if isinstance(teacher, JobTeacher):
        job = find_owned(session, Job, teacher.job, tenant)
        if job is None:
            raise Invalid(f"teacher.job: no job {teacher.job!r}", field="teacher.job")
        if job.status != JobStatus.SUCCEEDED or not job.result:
            raise Invalid(
                f"teacher.job: {teacher.job} has not succeeded (status: {job.status}); "
                "wait for it to succeed or pick another teacher",
                field="teacher.job",
            )
        return StoredModelConfig.model_validate(job.result["model_config"])
    if isinstance(teacher, FileTeacher):
        row = find_owned(session, File, teacher.file, tenant)
        if row is None:
            raise Invalid(f"teacher.file: no file {teacher.file!r}", field="teacher.file")
        if row.purpose != "model":
            raise Invalid(
                f"teacher.file: {teacher.file} is a {row.purpose}, not a model "
                "(upload it with purpose=model)",
                field="teacher.file",
            )
        return StoredModelConfig.model_validate(row.meta["config"])
    return None


def check_references(session: Session, tenant: Tenant, spec: JobSpec) -> DatasetInfo:
    """Check that every file and job the spec names exists, is the caller's and fits; return train's info."""
    if spec.data.transfer is not None and spec.teacher is None:
        raise Invalid(
            "data.transfer: a transfer set is only used with a teacher; add `teacher` or drop data.transfer",
            field="data.transfer",
        )
    train = _data_info(session, tenant, spec.data.train, "data.train")
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
    teacher = _teacher_config(session, tenant, spec)
    if teacher is not None:
        field = "teacher.job" if isinstance(spec.teacher, JobTeacher) else "teacher.file"
        if teacher.num_classes != train.num_classes:
            raise Invalid(
                f"{field}: the teacher predicts {teacher.num_classes} classes but the data has "
                f"{train.num_classes}",
                field=field,
            )
        if teacher.input_shape != train.input_shape:
            raise Invalid(
                f"{field}: the teacher takes inputs of shape {teacher.input_shape} but the data has "
                f"{train.input_shape}",
                field=field,
            )
    return train


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
    try:
        enqueue_job(queue, job.id)
    except Exception:  # the row is the truth: a sweep can send the message again later
        log.exception("could not send job %s to the queue; it stays queued", job.id)
    return job


def list_jobs(
    *, session: Session, tenant: Tenant, limit: int, after: str | None, status: JobStatus | None
) -> Page[Job]:
    query = scoped(Job, tenant)
    if status is not None:
        query = query.where(Job.status == status)
    return paginate(session, query, Job.id, limit=limit, after=after)


def cancel_job(*, session: Session, tenant: Tenant, job_id: str) -> Job:
    """A queued job is cancelled at once; a running one is asked to stop and ends ``cancelled``."""
    job = get_owned(session, Job, job_id, tenant)
    if job.status in TERMINAL:
        raise Conflict(f"job {job_id} has already finished (status: {job.status})", field="id")
    now = utcnow()
    done = affected(
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.QUEUED)
            .values(status=JobStatus.CANCELLED, finished_at=now, cancel_requested=True)
        )
    )
    if done:
        append_event(session, job_id, "job cancelled before it started")
    else:
        done = affected(
            session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == JobStatus.RUNNING)
                .values(cancel_requested=True)
            )
        )
        if done:
            append_event(session, job_id, "cancellation requested; the job stops at its next step")
    session.commit()
    session.refresh(job)
    if not done and job.status in TERMINAL:
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
