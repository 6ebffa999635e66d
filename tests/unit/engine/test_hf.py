"""Loading Hugging Face models from extracted archives, saving students as archives, and HF sequence
classifiers behind the text engine's classifier interface."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch
from lm_support import char_tokenizer, save_pretrained, tiny_causal_lm, tiny_classifier
from transformers import AutoModelForSequenceClassification

from distill.hfarchive import extract_archive, inspect_model_dir
from worker.engine.hf import (
    HFModelError,
    HFTextClassifier,
    build_hf_student,
    load_causal_lm,
    load_sequence_classifier,
    load_tokenizer,
    save_archive,
)
from worker.engine.text_inference import text_logits

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tok() -> Any:
    return char_tokenizer()


@pytest.mark.parametrize("arch", ["gpt2", "llama", "qwen2"])
def test_a_causal_lm_loads_as_it_was_saved(tmp_path: Path, tok: Any, arch: Any) -> None:
    model = tiny_causal_lm(tok, arch=arch).eval()
    folder = save_pretrained(model, tok, tmp_path / arch)
    loaded, tokenizer = load_causal_lm(folder, CPU)
    ids = torch.tensor([tokenizer("12+34=46")["input_ids"]])
    assert ids.tolist() == [tok("12+34=46")["input_ids"]]  # the tokenizer as written, for every arch
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)
    assert not loaded.training
    assert tokenizer.pad_token == "<pad>" and tokenizer.chat_template is not None


def test_the_wrong_kind_or_remote_code_is_refused(tmp_path: Path, tok: Any) -> None:
    folder = save_pretrained(tiny_classifier(tok), tok, tmp_path / "bert")
    with pytest.raises(HFModelError, match="not a causal LM"):
        load_causal_lm(folder, CPU)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModel": "x.Y"}}))
    with pytest.raises(ValueError, match="remote code"):
        load_sequence_classifier(folder, CPU)


def test_a_tokenizer_without_a_pad_token_pads_with_eos(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel(vocab={"<unk>": 0, "</s>": 1, "a": 2}, unk_token="<unk>"))
    PreTrainedTokenizerFast(tokenizer_object=core, eos_token="</s>", unk_token="<unk>").save_pretrained(
        tmp_path
    )
    assert load_tokenizer(tmp_path).pad_token == "</s>"
    with pytest.raises(HFModelError, match=r"no tokenizer\.json"):
        load_tokenizer(tmp_path / "missing")


def test_save_archive_round_trips_through_from_pretrained(tmp_path: Path, tok: Any) -> None:
    model = tiny_classifier(tok, num_labels=3).eval()
    model.config.id2label = {0: "a", 1: "b", 2: "c"}
    blob = save_archive(model, tok, card="# a card\n")
    names = set(zipfile.ZipFile(io.BytesIO(blob)).namelist())
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= names
    assert not any(n.endswith((".bin", ".pt")) for n in names)
    source = tmp_path / "student.zip"
    source.write_bytes(blob)
    folder = extract_archive(source, tmp_path / "x", max_bytes=len(blob) * 10)
    assert (folder / "README.md").read_text() == "# a card\n"
    assert inspect_model_dir(folder).labels == ["a", "b", "c"]
    loaded = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    ids = torch.tensor([tok("a short text")["input_ids"]])
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)


def test_an_hf_classifier_runs_as_a_text_classifier(tmp_path: Path, tok: Any) -> None:
    bert = tiny_classifier(tok, num_labels=2).eval()
    folder = save_pretrained(bert, tok, tmp_path / "bert")
    model, tokenizer = load_sequence_classifier(folder, CPU)
    teacher = HFTextClassifier(model)
    assert teacher.num_classes == 2 and teacher.labels == ["LABEL_0", "LABEL_1"]
    assert teacher.encoder.config.num_hidden_layers == 2
    texts = ["good film", "bad film, really", "fine"]
    logits = text_logits(teacher, tokenizer, texts, max_length=32)
    with torch.no_grad():
        expected = torch.cat([bert(torch.tensor([tok(t)["input_ids"]])).logits for t in texts])
    assert torch.allclose(logits, expected, atol=1e-5)

    # A student with all the teacher's layers, copied, is the teacher; a narrower one is a new BERT.
    same = build_hf_student(teacher, tokenizer, layers=2, init="teacher", max_length=32)
    assert torch.allclose(text_logits(same, tokenizer, texts, max_length=32), logits, atol=1e-5)
    torch.manual_seed(0)
    small = build_hf_student(teacher, tokenizer, layers=1, hidden=32, heads=2, init="random", max_length=32)
    assert small.model.config.hidden_size == 32 and small.num_classes == 2
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in teacher.parameters())
    with pytest.raises(ValueError, match="hidden size"):
        build_hf_student(teacher, tokenizer, layers=1, hidden=32, heads=2, init="teacher")


def test_a_non_bert_classifier_teaches_a_random_bert_student(tok: Any) -> None:
    from transformers import GPT2Config, GPT2ForSequenceClassification

    config = GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=len(tok), num_labels=3)
    config.pad_token_id = tok.pad_token_id
    teacher = HFTextClassifier(GPT2ForSequenceClassification(config).eval())
    with pytest.raises(ValueError, match="use init='random'"):
        build_hf_student(teacher, tok, layers=1, init="teacher")
    student = build_hf_student(teacher, tok, layers=1, init="random", max_length=64)
    cfg = student.model.config
    assert cfg.model_type == "bert" and cfg.hidden_size == 32 and cfg.vocab_size == len(tok)
    assert student.num_classes == 3 and cfg.max_position_embeddings >= 66
    assert text_logits(student, tok, ["abc", "de"], max_length=64).shape == (2, 3)
