"""Text exports: ONNX (onnxruntime) and TorchScript files of tiny text students, checked against PyTorch."""

from __future__ import annotations

import io
import json
import warnings
from typing import Any

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from transformers import AutoTokenizer, BertConfig

from worker.engine.text import (
    TEXT_CONFIG_KEY,
    TEXT_TOKENIZER_KEY,
    TextClassifier,
    TextEncoder,
    build_text_student,
    minilm_path,
    new_bert,
    tokenize,
)
from worker.engine.text_data import sentiment_examples
from worker.engine.text_export import (
    TEXT_EXPORTERS,
    check_text_onnx,
    check_text_torchscript,
    text_to_onnx,
    text_to_torchscript,
)


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return AutoTokenizer.from_pretrained(str(minilm_path()), local_files_only=True)


@pytest.fixture(scope="module")
def texts() -> list[str]:
    texts, _ = sentiment_examples(40, seed=5)
    return [*texts, "Ok.", " ".join(["a very long review"] * 20)]  # one token long, and truncated


def _encoder(tokenizer: Any, projection: int | None = None) -> TextEncoder:
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
    )
    return TextEncoder(new_bert(cfg), projection_dim=projection).eval()


def _classifier(tokenizer: Any) -> TextClassifier:
    model = TextClassifier(_encoder(tokenizer), 3).eval()
    with torch.no_grad():  # a random head gives near-equal logits: spread them so top classes are clear
        model.head.weight.mul_(20.0)
    return model


def test_classifier_onnx_matches_pytorch_on_texts_of_any_batch_and_length(
    tokenizer: Any, texts: list[str]
) -> None:
    model = _classifier(tokenizer)
    blob = text_to_onnx(model, tokenizer, max_length=32)
    proto = onnx.load_from_string(blob)
    assert [i.name for i in proto.graph.input] == ["input_ids", "attention_mask"]
    assert [o.name for o in proto.graph.output] == ["logits"]
    dims = [d.dim_param for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "sequence"]  # both axes dynamic
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta[TEXT_CONFIG_KEY])["task"] == "classification"
    assert "tokenizer.json" in json.loads(meta[TEXT_TOKENIZER_KEY])

    check = check_text_onnx(blob, model, tokenizer, texts, max_length=32)
    assert check["ok"] and check["examples"] == len(texts)
    assert check["top1_agreement"] == 1.0 and check["max_abs_logit_diff"] < 1e-4
    assert check["runtime"].startswith("onnxruntime")

    # One unpadded text, batch 1, longer than the example the exporter traced with.
    session = onnxruntime.InferenceSession(blob, providers=["CPUExecutionProvider"])
    ids, mask = tokenize(tokenizer, [texts[-1]], 32).batch([0])
    assert ids.shape == (1, 32)
    out = session.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
    with torch.no_grad():
        assert np.abs(out - model(ids, mask).numpy()).max() < 1e-4


def test_embedding_onnx_and_torchscript_check_cosine(tokenizer: Any, texts: list[str]) -> None:
    model = _encoder(tokenizer, projection=24)  # a projection into a wider teacher's space
    blob = text_to_onnx(model, tokenizer, max_length=32)
    assert [o.name for o in onnx.load_from_string(blob).graph.output] == ["sentence_embedding"]
    check = check_text_onnx(blob, model, tokenizer, texts, max_length=32)
    assert check["ok"] and check["min_cosine"] > 0.9999 and check["max_abs_diff"] < 1e-4
    assert "top1_agreement" not in check

    script = text_to_torchscript(model, tokenizer, max_length=32)
    extra = {TEXT_CONFIG_KEY: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated, still supported
        torch.jit.load(io.BytesIO(script), _extra_files=extra)
    assert json.loads(extra[TEXT_CONFIG_KEY])["projection_dim"] == 24
    check = check_text_torchscript(script, model, tokenizer, texts, max_length=32)
    assert check["ok"] and check["min_cosine"] > 0.9999 and check["runtime"].startswith("torch.jit")


def test_classifier_torchscript_and_the_exporter_table(tokenizer: Any, texts: list[str]) -> None:
    model = _classifier(tokenizer)
    name, export, check = TEXT_EXPORTERS["torchscript"]
    assert name == "model.torchscript.pt" and TEXT_EXPORTERS["onnx"][0] == "model.onnx"
    blob = export(model, tokenizer, max_length=32)
    result = check(blob, model, tokenizer, texts, max_length=32)
    assert result["ok"] and result["top1_agreement"] == 1.0


def test_a_check_catches_an_export_that_differs(tokenizer: Any, texts: list[str]) -> None:
    model = _classifier(tokenizer)
    blob = text_to_onnx(model, tokenizer, max_length=32)
    with torch.no_grad():
        model.head.bias.add_(torch.tensor([5.0, 0.0, -5.0]))
    check = check_text_onnx(blob, model, tokenizer, texts, max_length=32)
    assert not check["ok"] and check["max_abs_logit_diff"] > 1.0


def test_a_student_built_from_minilm_shape_exports(tokenizer: Any, texts: list[str]) -> None:
    """A student as jobs build it (build_text_student of an encoder teacher, random init, narrower)."""
    teacher = _encoder(tokenizer)
    torch.manual_seed(1)
    student = build_text_student(teacher, layers=1, hidden=8, heads=2, init="random").eval()
    blob = text_to_onnx(student, tokenizer, max_length=16)
    assert check_text_onnx(blob, student, tokenizer, texts[:10], max_length=16)["ok"]
