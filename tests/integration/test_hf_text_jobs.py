"""A user's own Hugging Face sequence classifier as the teacher of a text classification job, through the REST
API and a real worker; the student comes out as ``model.hf.zip``, which transformers' ``from_pretrained``
loads and which goes back in as the teacher of another job.

The teacher is a tiny BERT over a word-level tokenizer, trained here on the synthetic reviews (a few
seconds), saved with ``save_pretrained`` and zipped as a user would."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from lm_support import archive, unpack

from distill.client.sdk import Client
from worker.engine.text_data import sentiment_examples
from worker.inputs import text_holdout_split

pytestmark = pytest.mark.integration

LABELS = {0: "negative", 1: "positive"}
STUDENT = {"arch": "encoder", "layers": 1, "max_length": 32}


def word_tokenizer(texts: list[str]) -> Any:
    """A BERT-style word-level tokenizer ([CLS] text [SEP]) over the words of ``texts``."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    words = sorted({w for t in texts for w in re.findall(r"\w+|[^\w\s]", t.lower())})
    vocab = {w: i for i, w in enumerate([*specials, *words])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]"
    )


def trained_bert(tokenizer: Any, texts: list[str], labels: list[int]) -> Any:
    """A 2-layer BERT classifier fitted to ``texts`` (full batch, Adam, a few dozen steps)."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=128, max_position_embeddings=64, num_labels=2, id2label=LABELS,
        label2id={v: k for k, v in LABELS.items()}, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    model = BertForSequenceClassification(config)
    batch = tokenizer(texts, padding=True, truncation=True, max_length=32, return_tensors="pt")
    y = torch.tensor(labels)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(40):
        optimizer.zero_grad()
        loss = model(**batch, labels=y).loss
        loss.backward()
        optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def acme(stack) -> Client:
    return stack.client("acme-hf")


def write_jsonl(path: Path, texts: list[str], labels: list[int]) -> Path:
    path.write_text(
        "".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in zip(texts, labels, strict=True))
    )
    return path


def run(client: Client, spec: dict) -> dict:
    job = client.wait(client.create_job(spec)["id"], poll_interval=0.3, timeout=300)
    assert job["status"] == "succeeded", job["error"]
    return job


@pytest.fixture(scope="module")
def reviews(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], list[int], Path]:
    texts, labels = sentiment_examples(200, seed=2)
    return texts, labels, write_jsonl(tmp_path_factory.mktemp("hf") / "reviews.jsonl", texts, labels)


def held_out_accuracy(folder: Path, texts: list[str], labels: list[int]) -> float:
    """Accuracy of the unpacked archive in ``folder``, loaded as any transformers user would, on the seeded
    20% of the reviews a text job holds out (its ``test_accuracy``)."""
    from transformers import AutoModelForSequenceClassification, PreTrainedTokenizerFast

    from distill.datasets import TextDataset

    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = PreTrainedTokenizerFast.from_pretrained(folder)
    _, test = text_holdout_split(TextDataset(texts, np.asarray(labels, dtype=np.int64)))
    batch = tokenizer(test.texts, padding=True, truncation=True, max_length=32, return_tensors="pt")
    with torch.no_grad():
        predicted = model(**batch).logits.argmax(1).numpy()
    return float((predicted == test.y).mean())


def test_an_hf_classifier_teaches_a_student_that_from_pretrained_loads(acme, reviews, tmp_path):
    texts, labels, path = reviews
    tokenizer = word_tokenizer(texts)
    teacher = trained_bert(tokenizer, texts, labels)
    upload = tmp_path / "sentiment-bert.zip"
    upload.write_bytes(archive(teacher, tokenizer))
    teacher_file = acme.upload_file(upload, purpose="model")
    meta = teacher_file["metadata"]
    assert meta["kind"] == "sequence_classification" and meta["labels"] == ["negative", "positive"]
    data = acme.upload_file(path)

    spec = {
        "data": {"train": {"file": data["id"]}},
        "model": STUDENT,
        "teacher": {"file": teacher_file["id"]},
        "training": {"epochs": 4, "batch_size": 16, "learning_rate": 0.001},
    }
    job = run(acme, {**spec, "baseline": True})
    result = job["result"]
    assert result["teacher_test_accuracy"] >= 0.9, result
    assert "baseline_test_accuracy" in result and "gain_over_baseline" in result, result
    assert result["agreement_with_teacher"] >= 0.85, result
    assert result["parameters"] < result["teacher_parameters"]
    student_meta = result["hf_model"]
    assert student_meta["architecture"] == "BertForSequenceClassification"
    assert student_meta["labels"] == ["negative", "positive"]
    assert student_meta["tokenizer_sha256"] == meta["tokenizer_sha256"]
    names = {a["name"] for a in acme.list_artifacts(job["id"])["data"]}
    assert names == {"model.hf.zip", "report.json", "curves.svg"}

    # Unpacked, it is a transformers model: from_pretrained loads it, with its tokenizer and label names,
    # and it scores the job's held-out texts exactly as the job said.
    downloaded = acme.download_artifact(job["id"], "model.hf.zip", tmp_path / "student.zip")
    folder = unpack(downloaded.read_bytes(), tmp_path / "student")
    config = json.loads((folder / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"} and config["num_hidden_layers"] == 1
    accuracy = held_out_accuracy(folder, texts, labels)
    print(
        f"hf teacher -> hf student: teacher {result['teacher_test_accuracy']:.3f}, student "
        f"{result['test_accuracy']:.3f}, agreement {result['agreement_with_teacher']:.3f}, "
        f"parameters {result['parameters']} vs {result['teacher_parameters']}, speedup {result['speedup']}, "
        f"baseline {result['baseline_test_accuracy']:.3f}"
    )
    assert accuracy == pytest.approx(result["test_accuracy"], abs=1e-6)
    card = (folder / "README.md").read_text()
    assert "pipeline_tag: text-classification" in card and job["id"] in card
    assert teacher_file["id"] in card and "| 1 | positive |" in card

    # The same archive goes back in as a teacher, and the job itself names it as well.
    again = acme.upload_file(downloaded, purpose="model")
    assert again["metadata"] == {**student_meta}
    narrow = {**STUDENT, "hidden": 32, "heads": 2, "init": "random"}
    for teacher_ref in ({"file": again["id"]}, {"job": job["id"]}):
        second = run(acme, {**spec, "model": narrow, "teacher": teacher_ref})
        assert second["result"]["teacher_test_accuracy"] == pytest.approx(result["test_accuracy"], abs=1e-6)
        assert second["result"]["parameters"] < result["parameters"]


def test_a_distill_text_classifiers_student_in_hf_format(acme, reviews, tmp_path):
    """``model.format: "hf"``: the student of a Distill text classifier (MiniLM's tokenizer) is a
    ``BertForSequenceClassification`` in ``model.hf.zip``, scored by ``from_pretrained`` as the job said."""
    from transformers import AutoTokenizer, BertConfig

    from worker.engine.text import TextClassifier, TextEncoder, minilm_path, new_bert, save_text_model

    texts, labels, path = reviews
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_path()), local_files_only=True)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                     num_attention_heads=2, intermediate_size=64)  # fmt: skip
    teacher = TextClassifier(TextEncoder(new_bert(cfg)), 2)
    upload = tmp_path / "text-teacher.safetensors"
    upload.write_bytes(save_text_model(teacher, tokenizer, max_length=32))
    teacher_file = acme.upload_file(upload, purpose="model")
    data = acme.upload_file(path)
    job = run(
        acme,
        {
            "data": {"train": {"file": data["id"]}},
            "model": {**STUDENT, "format": "hf"},
            "teacher": {"file": teacher_file["id"]},
            "training": {"epochs": 2, "batch_size": 16, "learning_rate": 0.001},
        },
    )
    result = job["result"]
    assert (
        result["hf_model"]["architecture"] == "BertForSequenceClassification" and "text_model" not in result
    )
    names = {a["name"] for a in acme.list_artifacts(job["id"])["data"]}
    assert names == {"model.hf.zip", "report.json", "curves.svg"}
    blob = acme.download_artifact(job["id"], "model.hf.zip", tmp_path / "student.zip").read_bytes()
    folder = unpack(blob, tmp_path / "student")
    assert held_out_accuracy(folder, texts, labels) == pytest.approx(result["test_accuracy"], abs=1e-6)
