"""``POST /v1/files`` with ``purpose=model``: Hugging Face model archives (zip, tar, tar.gz of what
``save_pretrained`` writes). Accepted ones are described in ``metadata``; anything unsafe or unusable answers
422 ``invalid_model`` saying what, and nothing is stored."""

from __future__ import annotations

import io
import json
import stat
import tarfile
import zipfile
from typing import Any

import pytest
from fastapi.testclient import TestClient
from lm_support import archive, char_tokenizer, tiny_causal_lm, tiny_classifier
from test_files_api import client_with, stored_objects, upload

from distill.settings import Settings


@pytest.fixture(scope="module")
def tok() -> Any:
    return char_tokenizer()


@pytest.fixture(scope="module")
def gpt2_zip(tok: Any) -> bytes:
    return archive(tiny_causal_lm(tok, arch="gpt2"), tok)


def _model(client: TestClient, headers: dict[str, str], name: str, data: bytes) -> Any:
    return upload(client, headers, name, data, purpose="model")


@pytest.mark.parametrize(
    ("arch", "fmt", "name", "prefix"),
    [
        ("gpt2", "zip", "gpt2.zip", ""),
        ("llama", "tar", "llama.tar", "llama-tiny/"),
        ("gpt2", "tar.gz", "gpt2.tar.gz", "out/"),
        ("llama", "tar.gz", "llama.tgz", ""),
    ],
)
def test_causal_lm_archives_are_accepted_and_described(
    client: TestClient, acme: dict[str, str], tok: Any, arch: Any, fmt: Any, name: str, prefix: str
) -> None:
    model = tiny_causal_lm(tok, arch=arch)
    blob = archive(model, tok, fmt=fmt, prefix=prefix)
    response = _model(client, acme, name, blob)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["filename"] == name and body["bytes"] == len(blob)
    meta = body["metadata"]
    assert meta["format"] == "hf" and meta["kind"] == "causal_lm"
    assert meta["architecture"] == {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM"}[arch]
    assert meta["model_type"] == arch
    assert meta["parameters"] == sum(p.numel() for p in model.parameters())
    assert meta["vocab_size"] == len(tok)
    assert meta["tokenizer"] == "TokenizersBackend"  # tokenizer_config.json's tokenizer_class
    assert len(meta["tokenizer_sha256"]) == 64
    assert meta["context_length"] == 128 and meta["num_labels"] is None
    assert client.get(f"/v1/files/{body['id']}", headers=acme).json()["metadata"] == meta


def test_both_causal_lms_of_one_tokenizer_share_its_fingerprint(
    client: TestClient, acme: dict[str, str], tok: Any, gpt2_zip: bytes
) -> None:
    llama = archive(tiny_causal_lm(tok, arch="llama"), tok, fmt="tar")
    first = _model(client, acme, "a.zip", gpt2_zip).json()["metadata"]
    second = _model(client, acme, "b.tar", llama).json()["metadata"]
    assert first["tokenizer_sha256"] == second["tokenizer_sha256"]


def test_a_bert_classifier_archive_names_its_labels(
    client: TestClient, acme: dict[str, str], tok: Any
) -> None:
    model = tiny_classifier(tok, num_labels=3)
    model.config.id2label = {0: "negative", 1: "neutral", 2: "positive"}
    model.config.label2id = {v: k for k, v in model.config.id2label.items()}
    response = _model(client, acme, "sentiment.zip", archive(model, tok))
    assert response.status_code == 201, response.text
    meta = response.json()["metadata"]
    assert meta["kind"] == "sequence_classification"
    assert meta["architecture"] == "BertForSequenceClassification" and meta["model_type"] == "bert"
    assert meta["num_labels"] == 3 and meta["labels"] == ["negative", "neutral", "positive"]


def _rezip(blob: bytes, *, drop: tuple[str, ...] = (), add: dict[str, bytes] | None = None,
           edit: dict[str, Any] | None = None) -> bytes:  # fmt: skip
    """``blob`` (a zip) with entries dropped, added, or JSON entries updated."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(blob)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            if info.filename in drop:
                continue
            data = src.read(info)
            if edit and info.filename in edit:
                data = json.dumps({**json.loads(data), **edit[info.filename]}).encode()
            dst.writestr(info.filename, data)
        for name, data in (add or {}).items():
            dst.writestr(name, data)
    return out.getvalue()


def _with_symlink(blob: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(blob)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
        link = zipfile.ZipInfo("vocab.json")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        dst.writestr(link, "/etc/passwd")
    return out.getvalue()


def _tar_escape() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tf:
        data = b"{}"
        info = tarfile.TarInfo("../../config.json")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    return out.getvalue()


REFUSALS: list[tuple[str, Any, str]] = [
    ("link.zip", _with_symlink, "is a link"),
    ("escape.tar.gz", lambda blob: _tar_escape(), "'..'"),
    (
        "pickled.zip",
        lambda blob: _rezip(blob, add={"pytorch_model.bin": b"\x80\x04pickle"}),
        "pickled weights",
    ),
    ("only-pickle.zip", lambda blob: _rezip(blob, drop=("model.safetensors",)), "no *.safetensors"),
    ("code.zip", lambda blob: _rezip(blob, add={"modeling_x.py": b"import os"}), "code"),
    (
        "remote.zip",
        lambda blob: _rezip(blob, edit={"config.json": {"auto_map": {"AutoModel": "x.Y"}}}),
        "remote code",
    ),
    (
        "encoder.zip",
        lambda blob: _rezip(blob, edit={"config.json": {"architectures": ["GPT2Model"]}}),
        "not a transformers causal LM",
    ),
    ("no-config.zip", lambda blob: _rezip(blob, drop=("config.json",)), "no config.json"),
    ("no-tokenizer.zip", lambda blob: _rezip(blob, drop=("tokenizer.json",)), "tokenizer.json"),
    ("two.zip", lambda blob: _rezip(blob, add={"other/config.json": b"{}"}), "more than one folder"),
    ("junk.zip", lambda blob: b"PK\x03\x04 not really a zip", "not a readable zip"),
    ("model.tar", lambda blob: b"not a tar at all", "not a readable"),
]


@pytest.mark.parametrize(("name", "make", "words"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_bad_archives_answer_422_and_store_nothing(
    client: TestClient, acme: dict[str, str], gpt2_zip: bytes, name: str, make: Any, words: str
) -> None:
    before = stored_objects(client)
    response = _model(client, acme, name, make(gpt2_zip))
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_model" and error["field"] == "file"
    assert words.lower() in error["message"].lower(), error["message"]
    assert stored_objects(client) == before


def test_archive_limits_come_from_settings(
    api_settings: Settings, acme: dict[str, str], gpt2_zip: bytes
) -> None:
    with client_with(api_settings, max_archive_files=3) as client:
        response = _model(client, acme, "m.zip", gpt2_zip)
        assert response.status_code == 422
        assert "more than the limit of 3" in response.json()["error"]["message"]
    with client_with(api_settings, max_archive_bytes=10_000) as client:
        response = _model(client, acme, "m.zip", gpt2_zip)
        assert response.status_code == 422
        message = response.json()["error"]["message"]
        assert "uncompressed, more than the limit of 10000" in message


def test_a_dataset_archive_is_still_a_dataset_question(
    client: TestClient, acme: dict[str, str], gpt2_zip: bytes
) -> None:
    response = upload(client, acme, "gpt2.zip", gpt2_zip, purpose="dataset")
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_dataset"
