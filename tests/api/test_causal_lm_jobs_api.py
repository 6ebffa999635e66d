"""``POST /v1/jobs`` with ``task: "causal_lm"``: a JSONL of prompts and completions uploads as an ``lm``
dataset, uploaded causal-LM archives resolve as teachers and starting students, and a teacher and student
whose tokenizers differ answer 422 at submission naming both."""

from __future__ import annotations

import json
from typing import Any

from fastapi.testclient import TestClient
from lm_support import archive, char_tokenizer, tiny_causal_lm
from test_files_api import upload


def _lm_dataset(client: TestClient, headers: dict[str, str]) -> str:
    rows = [{"prompt": f"{a}+1=", "completion": str(a + 1)} for a in range(10)]
    body = "".join(json.dumps(r) + "\n" for r in rows).encode()
    response = upload(client, headers, "sums.jsonl", body)
    assert response.status_code == 201, response.text
    assert response.json()["metadata"]["kind"] == "lm"
    return str(response.json()["id"])


def _model(client: TestClient, headers: dict[str, str], tok: Any, name: str) -> str:
    response = upload(client, headers, name, archive(tiny_causal_lm(tok, layers=1, hidden=32), tok), "model")
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def test_tokenizers_that_differ_answer_422_naming_both(client: TestClient, acme: dict[str, str]) -> None:
    data = _lm_dataset(client, acme)
    teacher = _model(client, acme, char_tokenizer(), "teacher.zip")
    other = _model(client, acme, char_tokenizer(alphabet="0123456789+=abc "), "other.zip")
    same = _model(client, acme, char_tokenizer(), "same.zip")
    spec: dict[str, Any] = {
        "task": "causal_lm",
        "data": {"train": {"file": data}},
        "teacher": {"file": teacher},
        "model": {"arch": "pretrained", "file": other},
    }
    response = client.post("/v1/jobs", headers=acme, json=spec)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == "model.file"
    assert other in error["message"] and teacher in error["message"] and "tokenizer" in error["message"]
    ok = client.post("/v1/jobs", headers=acme, json={**spec, "model": {"arch": "pretrained", "file": same}})
    assert ok.status_code == 201, ok.text
    config = client.post(
        "/v1/jobs", headers=acme, json={**spec, "model": {"arch": "teacher_layers", "layers": [0]}}
    )
    assert config.status_code == 201, config.text
    assert config.json()["spec"]["distillation"]["temperature"] == 1.0


def test_a_classification_model_or_data_does_not_fit(client: TestClient, acme: dict[str, str]) -> None:
    data = _lm_dataset(client, acme)
    teacher = _model(client, acme, char_tokenizer(), "teacher.zip")
    tabular = client.post(
        "/v1/jobs", headers=acme, json={"data": {"train": {"file": data}}, "model": {"arch": "mlp"}}
    )
    assert tabular.status_code == 422 and tabular.json()["error"]["field"] == "data.train"
    builtin = client.post(
        "/v1/jobs",
        headers=acme,
        json={
            "task": "causal_lm",
            "data": {"train": {"builtin": "digits"}},
            "teacher": {"file": teacher},
            "model": {"arch": "gpt2", "n_layer": 1, "n_embd": 32, "n_head": 2},
        },
    )
    assert builtin.status_code == 422 and builtin.json()["error"]["field"] == "data.train"


def test_a_causal_lm_config_over_the_parameter_ceiling_answers_422(
    client: TestClient, acme: dict[str, str]
) -> None:
    data = _lm_dataset(client, acme)
    teacher = _model(client, acme, char_tokenizer(), "teacher.zip")
    huge = {"arch": "llama", "num_hidden_layers": 64, "hidden_size": 8192, "num_attention_heads": 64}
    response = client.post(
        "/v1/jobs",
        headers=acme,
        json={
            "task": "causal_lm",
            "data": {"train": {"file": data}},
            "teacher": {"file": teacher},
            "model": huge,
        },
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "over_limit" and response.json()["error"]["field"] == "model"
