"""``InputLoader.hf_model``: an uploaded HF archive or a job's ``model.hf.zip``, fetched and extracted into
the job's working folder, within the tenant (SQLite and a local store: no services needed)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from lm_support import archive, char_tokenizer, tiny_causal_lm
from sqlalchemy import create_engine
from sqlalchemy.orm import Session, sessionmaker

from distill.hfarchive import HF_ARCHIVE_ARTIFACT
from distill.spec import FileTeacher, JobTeacher
from distill.storage import LocalStore
from distill.tables import Artifact, Base, File, Job, Tenant
from worker.failures import JobFailure
from worker.inputs import InputLoader


@pytest.fixture(scope="module")
def blob() -> bytes:
    tok = char_tokenizer()
    return archive(tiny_causal_lm(tok, arch="llama"), tok, fmt="tar.gz", prefix="llama/")


@pytest.fixture
def world(tmp_path: Path, blob: bytes) -> tuple[sessionmaker[Session], LocalStore, dict[str, Any]]:
    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    Base.metadata.create_all(engine)
    sessions = sessionmaker(engine, expire_on_commit=False)
    store = LocalStore(tmp_path / "objects")
    sha = hashlib.sha256(blob).hexdigest()
    meta = {"format": "hf", "kind": "causal_lm"}  # what the loader reads from the row: that it is an archive
    with sessions() as session:
        session.add_all([Tenant(id="t1", name="one"), Tenant(id="t2", name="two")])
        session.flush()
        for file_id, tenant, purpose, file_meta in (
            ("file_hf", "t1", "model", meta),
            ("file_st", "t1", "model", {"config": {}}),
            ("file_other", "t2", "model", meta),
        ):
            key = f"tenants/{tenant}/files/{file_id}"
            store.put_bytes(key, blob)
            session.add(
                File(
                    id=file_id,
                    tenant_id=tenant,
                    purpose=purpose,
                    filename="m.tar.gz",
                    bytes=len(blob),
                    sha256=sha,
                    storage_key=key,
                    meta=file_meta,
                )
            )
        session.add_all(
            [Job(id="job_hf", tenant_id="t1", spec={}), Job(id="job_plain", tenant_id="t1", spec={})]
        )
        session.flush()
        key = f"tenants/t1/jobs/job_hf/artifacts/{HF_ARCHIVE_ARTIFACT}"
        store.put_bytes(key, blob)
        session.add(
            Artifact(job_id="job_hf", name=HF_ARCHIVE_ARTIFACT, bytes=len(blob), sha256=sha, storage_key=key)
        )
        session.commit()
    return sessions, store, {"sha": sha}


def loader(world: Any, tmp_path: Path, **limits: int) -> InputLoader:
    sessions, store, _ = world
    workdir = tmp_path / "work"
    workdir.mkdir(exist_ok=True)
    return InputLoader(
        sessions=sessions,
        store=store,
        cache_dir=tmp_path / "cache",
        tenant_id="t1",
        workdir=workdir,
        **limits,
    )


def test_an_uploaded_archive_and_a_jobs_archive_are_extracted_once(world: Any, tmp_path: Path) -> None:
    inputs = loader(world, tmp_path)
    folder, info = inputs.hf_model(FileTeacher(file="file_hf"), "teacher")
    assert folder.is_relative_to(tmp_path / "work") and (folder / "config.json").is_file()
    assert info.architecture == "LlamaForCausalLM"
    assert inputs.hf_model(FileTeacher(file="file_hf"), "teacher")[0] == folder  # fetched once
    found = inputs.hf_model_source(JobTeacher(job="job_hf"), "teacher")
    assert found.info == info and found.sha256 == world[2]["sha"] and found.name == "job_hf"
    assert not list((tmp_path / "work").glob("*.archive"))  # the downloaded archive is not kept


@pytest.mark.parametrize(
    ("ref", "code", "words"),
    [
        (FileTeacher(file="file_st"), "invalid_model", "not a Hugging Face model archive"),
        (FileTeacher(file="file_other"), "missing_input", "no longer exists"),
        (JobTeacher(job="job_plain"), "missing_input", "has no model.hf.zip artifact"),
        (JobTeacher(job="job_nope"), "missing_input", "has no model.hf.zip artifact"),
    ],
)
def test_what_is_not_an_archive_of_this_tenant_fails_the_job(
    world: Any, tmp_path: Path, ref: Any, code: str, words: str
) -> None:
    with pytest.raises(JobFailure) as failure:
        loader(world, tmp_path).hf_model(ref, "teacher")
    assert failure.value.code == code and words in failure.value.message


def test_the_workers_archive_limits_apply(world: Any, tmp_path: Path) -> None:
    with pytest.raises(JobFailure) as failure:
        loader(world, tmp_path, max_archive_files=2).hf_model(FileTeacher(file="file_hf"), "student")
    assert failure.value.code == "invalid_model"
    assert (
        failure.value.message.startswith("student: the archive holds")
        and "limit of 2" in failure.value.message
    )
