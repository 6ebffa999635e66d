"""Jobs: submission (every reference resolved within the tenant and checked by :func:`distill.plan.plan`
before anything is queued), listing, cancellation."""

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
from distill.hfarchive import HFModelInfo, is_hf_meta
from distill.ids import new_job_id
from distill.jobstate import JobStatus
from distill.modelfile import BUILTIN_TEXT_TEACHERS, TextModelInfo
from distill.plan import Plan, Resolved, TeacherInfo, plan
from distill.queue import enqueue_job
from distill.secrets import delete_secrets, split_secrets, store_secrets
from distill.settings import Settings
from distill.spec import (
    BuiltinData,
    BuiltinTeacher,
    DataRef,
    EndpointTeacher,
    FileTeacher,
    JobSpec,
    JobTeacher,
    PretrainedStudentConfig,
    SpecError,
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


def _optional_data_info(
    session: Session, tenant: Tenant, ref: DataRef | None, field: str
) -> DatasetInfo | None:
    return None if ref is None else _data_info(session, tenant, ref, field)


def _teacher_info(session: Session, tenant: Tenant, teacher: TeacherRef, field: str) -> TeacherInfo:
    """What a teacher reference is: a tabular model's config, or a text model's description."""
    if isinstance(teacher, BuiltinTeacher):
        return BUILTIN_TEXT_TEACHERS[teacher.builtin]
    if isinstance(teacher, EndpointTeacher):  # known only by its answers: nothing to look up
        return teacher.endpoint
    if isinstance(teacher, JobTeacher):
        job = find_owned(session, Job, teacher.job, tenant)
        if job is None:
            raise Invalid(f"{field}: no job {teacher.job!r}", field=field)
        if job.status != JobStatus.SUCCEEDED or not job.result:
            raise Invalid(
                f"{field}: {teacher.job} has not succeeded (status: {job.status}); "
                "wait for it to succeed or pick another teacher",
                field=field,
            )
        if is_hf_meta(job.result.get("hf_model")):
            return HFModelInfo.from_meta(job.result["hf_model"])
        if "text_model" in job.result:
            return TextModelInfo.from_meta(job.result["text_model"])
        return StoredModelConfig.model_validate(job.result["model_config"])
    row = _usable_file(session, tenant, teacher.file, "model", field.removesuffix(".file"))
    if is_hf_meta(row.meta):  # an uploaded archive (a causal LM's is read as one by the causal-LM plan)
        return HFModelInfo.from_meta(row.meta)
    if row.meta.get("kind") == "text":
        return TextModelInfo.from_meta(row.meta)
    return StoredModelConfig.model_validate(row.meta["config"])


def resolve_references(session: Session, tenant: Tenant, spec: JobSpec) -> Resolved:
    """What every file and job the spec names is, looked up within the tenant; 422 when one does not exist,
    is another tenant's, is of the wrong purpose or (a teacher job) has not succeeded."""
    data = spec.data
    return Resolved(
        train=_data_info(session, tenant, data.train, "data.train"),
        validation=_optional_data_info(session, tenant, data.validation, "data.validation"),
        test=_optional_data_info(session, tenant, data.test, "data.test"),
        transfer=_optional_data_info(session, tenant, data.transfer, "data.transfer"),
        teachers=[
            _teacher_info(session, tenant, ref, spec.teacher_field(index))
            for index, ref in enumerate(spec.teachers)
        ],
        student=_student_start_info(session, tenant, spec),
    )


def _student_start_info(session: Session, tenant: Tenant, spec: JobSpec) -> TeacherInfo | None:
    """What a ``{"arch": "pretrained"}`` student continues from (a model file or a job's output)."""
    model = spec.model
    if not isinstance(model, PretrainedStudentConfig):
        return None
    if model.job is not None:
        return _teacher_info(session, tenant, JobTeacher(job=model.job), "model.job")
    assert model.file is not None
    return _teacher_info(session, tenant, FileTeacher(file=model.file), "model.file")


def check_references(session: Session, tenant: Tenant, spec: JobSpec) -> Plan:
    """Resolve the spec's references and check that they fit it (:func:`distill.plan.plan`), or 422."""
    resolved = resolve_references(session, tenant, spec)
    try:
        return plan(spec, resolved)
    except SpecError as exc:
        raise Invalid(exc.message, field=exc.field) from exc


def check_queue(spec: JobSpec, allowed: str, default: str) -> None:
    """``resources.queue`` must name a queue a worker pool serves, when ``DISTILL_QUEUES`` lists them."""
    names = {q.strip() for q in allowed.split(",") if q.strip()} | {default}
    wanted = spec.resources.queue
    if wanted and allowed.strip() and wanted not in names:
        raise Invalid(
            f"resources.queue: no worker pool serves {wanted!r}; the queues are {', '.join(sorted(names))}",
            field="resources.queue",
        )


def create_job(
    *, session: Session, queue: Celery, tenant: Tenant, spec: JobSpec, settings: Settings | None = None
) -> Job:
    if settings is not None:
        check_queue(spec, settings.queues, settings.queue_name)
    check_references(session, tenant, spec)
    try:  # an endpoint's API key goes to job_secrets, never into the stored spec
        stored, secrets = split_secrets(spec)
    except SpecError as exc:
        raise Invalid(exc.message, field=exc.field) from exc
    job = Job(
        id=new_job_id(),
        tenant_id=tenant.id,
        name=spec.name,
        spec=stored,
        status=JobStatus.QUEUED,
        progress={"epoch": 0, "epochs": spec.training.epochs, "step": 0, "steps": 0},
    )
    session.add(job)
    session.flush()
    store_secrets(session, job.id, secrets)
    append_event(session, job.id, "job queued", data={"status": JobStatus.QUEUED.value})
    session.commit()
    try:  # the row is the outbox: a job whose wake-up was not marked sent gets one from the reconciler
        enqueue_job(queue, job.id, spec.resources.queue)
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
    if outcome is lifecycle.CancelOutcome.CANCELLED:
        delete_secrets(session, job_id)  # a queued job ends here, without a worker
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
