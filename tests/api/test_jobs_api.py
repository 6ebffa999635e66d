"""``/v1/jobs``: submission checks every reference before queueing; list, get, cancel, events."""

from __future__ import annotations

import base64
import json

import pytest
import redis
from factories import digits_arrays, npz_bytes
from fastapi.testclient import TestClient
from sqlalchemy import update
from test_files_api import model_bytes, upload

from distill.tables import Job

DIGITS = {"data": {"train": {"builtin": "digits"}}, "training": {"epochs": 2}}


def queued_messages(client: TestClient) -> list[str]:
    """The job ids of the Celery messages waiting in Redis (a message carries only the id)."""
    settings = client.app_state.settings  # type: ignore[attr-defined]
    raw = redis.Redis.from_url(settings.broker_url).lrange(settings.queue_name, 0, -1)
    return [json.loads(base64.b64decode(json.loads(m)["body"]))[0][0] for m in raw]


def finish(client: TestClient, job_id: str, status: str, result: dict | None = None) -> None:
    with client.app_state.engine.begin() as conn:  # type: ignore[attr-defined]
        conn.execute(update(Job).where(Job.id == job_id).values(status=status, result=result))


def test_create_job_answers_201_fills_defaults_and_sends_only_the_id(client, acme):
    response = client.post("/v1/jobs", headers=acme, json={"name": "t", **DIGITS})
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["id"].startswith("job_")
    assert job["object"] == "job"
    assert job["status"] == "queued"
    assert job["name"] == "t"
    assert job["spec"]["model"] == {"arch": "mlp", "hidden": [128], "dropout": 0.0}
    assert job["spec"]["training"]["epochs"] == 2
    assert job["progress"] == {"epoch": 0, "epochs": 2, "step": 0, "steps": 0}
    assert job["result"] is None and job["error"] is None
    assert job["started_at"] is None and job["finished_at"] is None
    assert queued_messages(client) == [job["id"]]
    events = client.get(f"/v1/jobs/{job['id']}/events", headers=acme).json()
    assert [(e["seq"], e["message"]) for e in events["data"]] == [(1, "job queued")]


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"data": {"train": {"builtin": "cifar"}}}, "data.train.builtin"),
        ({}, "data"),
        ({"data": {"train": {"builtin": "digits"}}, "training": {"epochs": 0}}, "training.epochs"),
        (
            {"data": {"train": {"builtin": "digits"}}, "training": {"learning_rate": -1}},
            "training.learning_rate",
        ),
        ({"data": {"train": {"builtin": "digits"}}, "distillation": {"alpha": 2}}, "distillation.alpha"),
        ({"data": {"train": {"builtin": "digits"}}, "model": {"arch": "resnet"}}, "model"),
        (
            {"data": {"train": {"builtin": "digits"}}, "model": {"arch": "mlp", "hidden": [0]}},
            "model.hidden.0",
        ),
        ({"data": {"train": {"builtin": "digits"}}, "training": {"epoch": 3}}, "training.epoch"),
        ({"data": {"train": {"builtin": "digits"}, "transfer": {"builtin": "digits"}}}, "data.transfer"),
    ],
)
def test_bad_spec_answers_422_naming_the_field(client, acme, spec, field):
    response = client.post("/v1/jobs", headers=acme, json=spec)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == field
    assert field in error["message"]
    assert client.get("/v1/jobs", headers=acme).json()["data"] == []
    assert queued_messages(client) == []


def test_references_are_checked_before_queueing(client, acme, globex):
    x, y = digits_arrays()
    unlabeled = upload(client, acme, "u.npz", npz_bytes(x[:30])).json()["id"]
    flat = upload(client, acme, "flat.npz", npz_bytes(x.reshape(len(x), -1)[:30], y[:30])).json()["id"]
    model = upload(client, acme, "m.safetensors", model_bytes([8, 8]), "model").json()["id"]
    wrong_classes = upload(client, acme, "m3.safetensors", model_bytes([8, 8], 3), "model").json()["id"]
    wrong_shape = upload(client, acme, "m64.safetensors", model_bytes([64]), "model").json()["id"]
    theirs = upload(client, globex, "g.npz", npz_bytes(x[:30], y[:30])).json()["id"]
    pending = client.post("/v1/jobs", headers=acme, json=DIGITS).json()["id"]
    digits = {"builtin": "digits"}
    cases = [
        ({"data": {"train": {"file": "file_nope"}}}, "data.train.file", "no file"),
        ({"data": {"train": {"file": theirs}}}, "data.train.file", "no file"),
        ({"data": {"train": {"file": unlabeled}}}, "data.train", "no labels"),
        ({"data": {"train": {"file": model}}}, "data.train.file", "not a dataset"),
        ({"data": {"train": digits, "validation": {"file": flat}}}, "data.validation", "shape"),
        ({"data": {"train": digits}, "teacher": {"job": "job_nope"}}, "teacher.job", "no job"),
        ({"data": {"train": digits}, "teacher": {"job": pending}}, "teacher.job", "has not succeeded"),
        ({"data": {"train": digits}, "teacher": {"file": unlabeled}}, "teacher.file", "not a model"),
        ({"data": {"train": digits}, "teacher": {"file": wrong_classes}}, "teacher.file", "3 classes"),
        ({"data": {"train": digits}, "teacher": {"file": wrong_shape}}, "teacher.file", "shape"),
    ]
    for spec, field, words in cases:
        response = client.post("/v1/jobs", headers=acme, json=spec)
        assert response.status_code == 422, (spec, response.text)
        error = response.json()["error"]
        assert error["field"] == field, (spec, error)
        assert words in error["message"], (spec, error)
    assert len(client.get("/v1/jobs", headers=acme).json()["data"]) == 1


def test_a_single_class_training_set_answers_422_not_500(client, acme):
    # The upload is a valid dataset (it may serve as a validation set); only as data.train is it unusable.
    x, y = digits_arrays()
    one_class = upload(client, acme, "one.npz", npz_bytes(x[:30], 0 * y[:30]))
    assert one_class.status_code == 201, one_class.text
    assert one_class.json()["metadata"]["num_classes"] == 1
    response = client.post(
        "/v1/jobs", headers=acme, json={"data": {"train": {"file": one_class.json()["id"]}}}
    )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == "data.train"
    assert "at least two classes" in error["message"]
    text_one = upload(client, acme, "one.jsonl", text_jsonl(labels=True, classes=1)).json()["id"]
    text_job = {"data": {"train": {"file": text_one}}, "model": {"arch": "encoder", "layers": 1}}
    response = client.post("/v1/jobs", headers=acme, json=text_job)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == "data.train"
    assert "at least two classes" in response.json()["error"]["message"]
    assert client.get("/v1/jobs", headers=acme).json()["data"] == []
    assert queued_messages(client) == []


def test_teacher_from_uploaded_model_and_transfer_set_are_accepted(client, acme):
    x, _ = digits_arrays()
    transfer = upload(client, acme, "u.npz", npz_bytes(x[:30])).json()["id"]
    model = upload(client, acme, "m.safetensors", model_bytes([8, 8]), "model").json()["id"]
    spec = {
        "data": {"train": {"builtin": "digits"}, "transfer": {"file": transfer}},
        "teacher": {"file": model},
    }
    response = client.post("/v1/jobs", headers=acme, json=spec)
    assert response.status_code == 201, response.text


def test_list_jobs_newest_first_with_cursor_and_status_filter(client, acme):
    ids = [client.post("/v1/jobs", headers=acme, json=DIGITS).json()["id"] for _ in range(3)]
    finish(client, ids[1], "succeeded", {"test_accuracy": 0.9})
    page = client.get("/v1/jobs?limit=2", headers=acme).json()
    assert [j["id"] for j in page["data"]] == [ids[2], ids[1]]
    assert page["has_more"] is True
    rest = client.get(f"/v1/jobs?after={ids[1]}", headers=acme).json()
    assert [j["id"] for j in rest["data"]] == [ids[0]] and rest["has_more"] is False
    succeeded = client.get("/v1/jobs?status=succeeded", headers=acme).json()
    assert [j["id"] for j in succeeded["data"]] == [ids[1]]
    assert client.get("/v1/jobs?status=bogus", headers=acme).json()["error"]["field"] == "status"


def test_cancel_queued_job_is_immediate_and_finished_job_answers_409(client, acme):
    job_id = client.post("/v1/jobs", headers=acme, json=DIGITS).json()["id"]
    response = client.post(f"/v1/jobs/{job_id}/cancel", headers=acme)
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert response.json()["finished_at"] is not None
    events = client.get(f"/v1/jobs/{job_id}/events", headers=acme).json()["data"]
    assert [e["message"] for e in events] == ["job queued", "job cancelled before it started"]
    assert [e["data"] for e in events] == [
        {"status": "queued"},
        {"status": "cancelled"},
    ]  # status events say it
    again = client.post(f"/v1/jobs/{job_id}/cancel", headers=acme)
    assert again.status_code == 409
    assert "already finished" in again.json()["error"]["message"]


def test_cancel_running_job_sets_the_flag(client, acme):
    job_id = client.post("/v1/jobs", headers=acme, json=DIGITS).json()["id"]
    finish(client, job_id, "running")
    response = client.post(f"/v1/jobs/{job_id}/cancel", headers=acme)
    assert response.status_code == 200
    assert response.json()["status"] == "running"
    assert response.json()["cancel_requested"] is True


def test_events_paginate_by_seq(client, acme):
    job_id = client.post("/v1/jobs", headers=acme, json=DIGITS).json()["id"]
    client.post(f"/v1/jobs/{job_id}/cancel", headers=acme)
    first = client.get(f"/v1/jobs/{job_id}/events?limit=1", headers=acme).json()
    assert [e["seq"] for e in first["data"]] == [1] and first["has_more"] is True
    rest = client.get(f"/v1/jobs/{job_id}/events?after=1", headers=acme).json()
    assert [e["seq"] for e in rest["data"]] == [2] and rest["has_more"] is False


def test_artifacts_of_a_job_without_any(client, acme):
    job_id = client.post("/v1/jobs", headers=acme, json=DIGITS).json()["id"]
    assert client.get(f"/v1/jobs/{job_id}/artifacts", headers=acme).json()["data"] == []
    missing = client.get(f"/v1/jobs/{job_id}/artifacts/model.safetensors", headers=acme)
    assert missing.status_code == 404


def test_several_teachers_must_agree_on_classes_and_each_is_checked(client, acme):
    ten = upload(client, acme, "m.safetensors", model_bytes([8, 8]), "model").json()["id"]
    three = upload(client, acme, "m3.safetensors", model_bytes([8, 8], 3), "model").json()["id"]
    digits = {"builtin": "digits"}
    ok = client.post(
        "/v1/jobs",
        headers=acme,
        json={"data": {"train": digits}, "teacher": [{"file": ten, "weight": 2}, {"file": ten}]},
    )
    assert ok.status_code == 201, ok.text
    assert ok.json()["spec"]["teacher"][0]["weight"] == 2
    cases = [
        ({"teacher": [{"file": ten}, {"file": three}]}, "teacher.1.file", "same classes"),
        ({"teacher": [{"file": ten}, {"job": "job_nope"}]}, "teacher.1.job", "no job"),
        ({"teacher": [{"file": ten, "weight": 0}]}, "teacher.0.weight", "greater than 0"),
    ]
    for extra, field, words in cases:
        response = client.post("/v1/jobs", headers=acme, json={"data": {"train": digits}, **extra})
        assert response.status_code == 422, (extra, response.text)
        assert response.json()["error"]["field"] == field
        assert words in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("spec", "field", "words"),
    [
        ({"data": {"train": {"builtin": "digits"}, "augment": {"copies": 2}}}, "data.augment", "teacher"),
        ({"distillation": {"losses": [{"type": "kd"}]}}, "distillation.losses.0.type", "needs a teacher"),
        ({"distillation": {"losses": [{"type": "nope"}]}}, "distillation.losses.0", "type"),
        ({"distillation": {"alpha": "auto", "auto_budget": 0}}, "distillation.auto_budget", "budget"),
        ({"distillation": {"temperature": 0}}, "distillation.temperature", "auto"),
        ({"export": ["tflite"]}, "export.0", "onnx"),
    ],
)
def test_engine_options_are_checked_on_submission(client, acme, spec, field, words):
    body = {"data": {"train": {"builtin": "digits"}}, **spec}
    response = client.post("/v1/jobs", headers=acme, json=body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == field, error
    assert words in error["message"], error


def test_loss_layers_and_combinations_are_checked_on_submission(client, acme):
    ten = upload(client, acme, "m.safetensors", model_bytes([8, 8]), "model").json()["id"]
    digits = {"builtin": "digits"}
    hint = {"type": "hint", "student_layer": "1", "teacher_layer": "1"}
    ok = client.post(
        "/v1/jobs",
        headers=acme,
        json={
            "data": {"train": digits},
            "teacher": {"file": ten},
            "distillation": {"losses": [{"type": "kd"}, hint]},
        },
    )
    assert ok.status_code == 201, ok.text
    cases = [
        (
            {**hint, "student_layer": "99"},
            {"file": ten},
            "distillation.losses.0.student_layer",
            "no layer '99'",
        ),
        (
            {**hint, "teacher_layer": "fc"},
            {"file": ten},
            "distillation.losses.0.teacher_layer",
            "its layers are",
        ),
        (hint, [{"file": ten}, {"file": ten}], "distillation.losses.0", "one teacher"),
        ({"type": "attention"}, {"file": ten}, "distillation.losses.0.type", "transformer"),
    ]
    for loss, teacher, field, words in cases:
        body = {"data": {"train": digits}, "teacher": teacher, "distillation": {"losses": [loss]}}
        response = client.post("/v1/jobs", headers=acme, json=body)
        assert response.status_code == 422, (loss, response.text)
        assert response.json()["error"]["field"] == field
        assert words in response.json()["error"]["message"]


# -- text jobs ---------------------------------------------------------------------------------------------


def text_jsonl(n: int = 20, labels: bool = True, classes: int = 2) -> bytes:
    lines = [
        json.dumps(
            {
                "text": f"sentence number {i} is {'good' if i % 2 else 'bad'}",
                **({"label": i % classes} if labels else {}),
            }
        )
        for i in range(n)
    ]
    return ("\n".join(lines) + "\n").encode()


def text_model_bytes(num_classes: int | None = 2, tokenizer: bool = True) -> bytes:
    """A tiny text model file (save_text_model); without ``tokenizer``, the same minus its tokenizer."""
    import safetensors.torch
    from transformers import AutoTokenizer, BertConfig

    from worker.engine.text import (
        TEXT_TOKENIZER_KEY,
        TextClassifier,
        TextEncoder,
        minilm_path,
        new_bert,
        save_text_model,
    )

    tok = AutoTokenizer.from_pretrained(str(minilm_path()), local_files_only=True)
    cfg = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=8,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=16,
    )
    encoder = TextEncoder(new_bert(cfg))
    model = TextClassifier(encoder, num_classes) if num_classes is not None else encoder
    blob = save_text_model(model, tok, max_length=32)
    if tokenizer:
        return blob
    header = json.loads(blob[8 : 8 + int.from_bytes(blob[:8], "little")])
    metadata = {k: v for k, v in header["__metadata__"].items() if k != TEXT_TOKENIZER_KEY}
    return safetensors.torch.save(safetensors.torch.load(blob), metadata=metadata)


MINILM_TEACHER = {"builtin": "all-minilm-l6-v2"}


def test_text_model_upload_is_recognised_without_loading_weights(client, acme):
    response = upload(client, acme, "text.safetensors", text_model_bytes(3), "model")
    assert response.status_code == 201, response.text
    meta = response.json()["metadata"]
    assert meta["kind"] == "text"
    assert meta["task"] == "classification" and meta["num_classes"] == 3
    assert meta["has_tokenizer"] is True and meta["layers"] == 2 and meta["parameters"] > 0
    bare = upload(client, acme, "bare.safetensors", text_model_bytes(None, tokenizer=False), "model")
    assert bare.status_code == 201, bare.text
    assert bare.json()["metadata"]["has_tokenizer"] is False
    assert bare.json()["metadata"]["task"] == "embedding"


def test_text_jobs_are_accepted_with_a_fitting_text_teacher(client, acme):
    labeled = upload(client, acme, "l.jsonl", text_jsonl()).json()["id"]
    unlabeled = upload(client, acme, "u.jsonl", text_jsonl(labels=False)).json()["id"]
    classifier = upload(client, acme, "c.safetensors", text_model_bytes(2), "model").json()["id"]
    encoder = {"arch": "encoder", "layers": 1, "max_length": 32}
    accepted = [
        {
            "data": {"train": {"file": unlabeled}},
            "model": encoder,
            "teacher": MINILM_TEACHER,
            "task": "embedding",
        },
        {"data": {"train": {"file": labeled}}, "model": {"arch": "encoder", "layers": 6}},
        {"data": {"train": {"file": labeled}}, "model": encoder, "teacher": {"file": classifier}},
        {
            "data": {"train": {"file": labeled}},
            "model": encoder,
            "teacher": {"file": classifier},
            "baseline": True,
            "export": ["onnx", "torchscript"],
        },
        {
            "data": {"train": {"file": unlabeled}, "transfer": {"file": labeled}},
            "model": encoder,
            "teacher": MINILM_TEACHER,
            "task": "embedding",
            "export": ["onnx"],
        },
        {
            "data": {"train": {"file": labeled}, "transfer": {"file": unlabeled}},
            "model": encoder,
            "teacher": {"file": classifier},
            "distillation": {"temperature": "auto", "alpha": "auto", "auto_budget": 2},
        },
    ]
    for spec in accepted:
        response = client.post("/v1/jobs", headers=acme, json=spec)
        assert response.status_code == 201, (spec, response.text)
    job = client.post("/v1/jobs", headers=acme, json=accepted[0]).json()
    assert job["spec"]["model"] == {
        "arch": "encoder",
        "layers": 1,
        "hidden": None,
        "heads": None,
        "intermediate": None,
        "init": "teacher",
        "max_length": 32,
        "format": "distill",
    }
    assert job["spec"]["task"] == "embedding"
    assert job["spec"]["teacher"] == {"builtin": "all-minilm-l6-v2", "weight": 1.0}


def test_text_job_mismatches_answer_422_naming_the_field(client, acme):
    labeled = upload(client, acme, "l.jsonl", text_jsonl()).json()["id"]
    unlabeled = upload(client, acme, "u.jsonl", text_jsonl(labels=False)).json()["id"]
    bare = upload(client, acme, "b.safetensors", text_model_bytes(2, tokenizer=False), "model").json()["id"]
    three = upload(client, acme, "c3.safetensors", text_model_bytes(3), "model").json()["id"]
    embedder = upload(client, acme, "e.safetensors", text_model_bytes(None), "model").json()["id"]
    two = upload(client, acme, "c2.safetensors", text_model_bytes(2), "model").json()["id"]
    tabular = upload(client, acme, "m.safetensors", model_bytes([8, 8]), "model").json()["id"]
    text, plain = {"file": labeled}, {"file": unlabeled}
    enc = {"arch": "encoder", "layers": 1}
    digits = {"builtin": "digits"}
    cases = [
        ({"data": {"train": text}}, "data.train", "encoder"),
        ({"data": {"train": text}, "model": {"arch": "cnn"}}, "data.train", "encoder"),
        ({"data": {"train": digits}, "model": enc}, "model.arch", "texts"),
        ({"data": {"train": text}, "model": enc, "task": "embedding"}, "teacher", "text teacher"),
        ({"data": {"train": plain}, "model": enc}, "data.train", "labels"),
        ({"data": {"train": text}, "model": enc, "teacher": {"file": bare}}, "teacher.file", "no tokenizer"),
        (
            {"data": {"train": text}, "model": enc, "teacher": {"file": tabular}},
            "teacher.file",
            "no tokenizer",
        ),
        ({"data": {"train": text}, "model": enc, "teacher": {"file": three}}, "teacher.file", "3 classes"),
        (
            {"data": {"train": text}, "model": enc, "teacher": {"file": embedder}},
            "teacher.file",
            "classifier",
        ),
        ({"data": {"train": text}, "model": enc, "teacher": MINILM_TEACHER}, "teacher.builtin", "classes"),
        (
            {
                "data": {"train": plain},
                "model": {"arch": "encoder", "layers": 7},
                "teacher": MINILM_TEACHER,
                "task": "embedding",
            },
            "model.layers",
            "more layers",
        ),
        (
            {
                "data": {"train": plain},
                "model": enc,
                "teacher": MINILM_TEACHER,
                "task": "embedding",
                "baseline": True,
            },
            "baseline",
            "no labels",
        ),
        ({"data": {"train": text}, "model": enc, "baseline": True}, "baseline", "without a teacher"),
        (
            {"data": {"train": text, "transfer": digits}, "model": enc, "teacher": {"file": two}},
            "data.transfer",
            "text transfer set",
        ),
        ({"data": {"train": text, "transfer": plain}, "model": enc}, "data.transfer", "with a teacher"),
        (
            {"data": {"train": text, "augment": {"copies": 2}}, "model": enc, "teacher": {"file": two}},
            "data.augment",
            "text jobs do not support",
        ),
        (
            {
                "data": {"train": plain},
                "model": enc,
                "teacher": MINILM_TEACHER,
                "task": "embedding",
                "distillation": {"temperature": "auto"},
            },
            "distillation.temperature",
            "classification student with a teacher",
        ),
        (
            {"data": {"train": text}, "model": enc, "distillation": {"alpha": "auto"}},
            "distillation.alpha",
            "classification student with a teacher",
        ),
        (
            {
                "data": {"train": text},
                "model": enc,
                "teacher": {"file": two},
                "distillation": {"alpha": "auto", "losses": [{"type": "kd"}]},
            },
            "distillation.alpha",
            "own weight",
        ),
        ({"data": {"train": digits}, "teacher": MINILM_TEACHER}, "teacher.builtin", "encoder"),
        ({"data": {"train": digits}, "teacher": {"file": embedder}}, "teacher.file", "text model"),
        ({"data": {"train": digits}, "task": "embedding"}, "task", "text"),
        ({"data": {"train": digits}, "model": {"arch": "encoder", "layers": 13}}, "model.layers", "12"),
        (
            {"data": {"train": digits}, "teacher": {"builtin": "bert-large"}},
            "teacher.builtin",
            "all-minilm-l6-v2",
        ),
    ]
    for spec, field, words in cases:
        response = client.post("/v1/jobs", headers=acme, json=spec)
        assert response.status_code == 422, (spec, response.text)
        error = response.json()["error"]
        assert error["field"] == field, (spec, error)
        assert words in error["message"], (spec, error)
    assert client.get("/v1/jobs", headers=acme).json()["data"] == []
    assert queued_messages(client) == []


def test_text_losses_kd_ce_attention_are_accepted_and_checked(client, acme):
    labeled = upload(client, acme, "l.jsonl", text_jsonl()).json()["id"]
    unlabeled = upload(client, acme, "u.jsonl", text_jsonl(labels=False)).json()["id"]
    two = upload(client, acme, "c.safetensors", text_model_bytes(2), "model").json()["id"]  # 2 layers
    enc = {"arch": "encoder", "layers": 1}
    base = {"data": {"train": {"file": labeled}}, "model": enc, "teacher": {"file": two}}

    def losses(*items: dict) -> dict:
        return {**base, "distillation": {"losses": list(items)}}

    attention = {"type": "attention", "weight": 0.3}
    for spec in (
        losses({"type": "kd", "weight": 0.7}, attention),
        losses({"type": "ce"}, {**attention, "layer_map": [[0, 1], [0, 0]]}),
    ):
        response = client.post("/v1/jobs", headers=acme, json=spec)
        assert response.status_code == 201, (spec, response.text)
    cases = [
        (
            losses({"type": "kd"}, {**attention, "layer_map": [[1, 0]]}),
            "distillation.losses.1.layer_map",
            "1 attention layers",
        ),
        (losses({**attention, "layer_map": [[0, 2]]}), "distillation.losses.0.layer_map", "the teacher 2"),
        (losses({**attention, "layer_map": [[0, -1]]}), "distillation.losses.0.layer_map", "out of range"),
        (losses({**attention, "layer_map": []}), "distillation.losses.0.layer_map", "empty"),
        (losses({"type": "kd"}, {"type": "logit_mse"}), "distillation.losses.1.type", "kd, ce, attention"),
        (
            {
                "data": {"train": {"file": labeled}},
                "model": enc,
                "distillation": {"losses": [{"type": "ce"}]},
            },
            "distillation.losses",
            "with a teacher",
        ),
        (
            {
                "data": {"train": {"file": unlabeled}},
                "model": enc,
                "teacher": MINILM_TEACHER,
                "task": "embedding",
                "distillation": {"losses": [attention]},
            },
            "distillation.losses",
            "classification",
        ),
    ]
    for spec, field, words in cases:
        response = client.post("/v1/jobs", headers=acme, json=spec)
        assert response.status_code == 422, (spec, response.text)
        error = response.json()["error"]
        assert error["field"] == field, (spec, error)
        assert words in error["message"], (spec, error)
