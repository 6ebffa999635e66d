"""Text engine: the MiniLM teacher (offline), students, embedding and classifier distillation, model files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from transformers import BertConfig

from distill.spec import AttentionLoss, CELoss, KDLoss
from worker.engine.loop import LoopState
from worker.engine.objective import check_layer_map
from worker.engine.text import (
    MINILM,
    TextClassifier,
    TextEncoder,
    TextModelError,
    attention_maps,
    build_text_student,
    evenly_spaced_layers,
    load_builtin_text_teacher,
    load_text_model,
    new_bert,
    read_text_meta,
    save_text_model,
    tokenize,
)
from worker.engine.text_data import read_text_jsonl, sentiment_examples, template_sentences
from worker.engine.text_inference import (
    encode_texts,
    mean_cosine,
    teacher_attention_maps,
    text_attention_loss,
    text_logits,
)
from worker.engine.text_train import (
    distill_embeddings,
    distill_text_classifier,
    train_text_baseline,
    train_text_classifier,
)

MiniLM = tuple[TextEncoder, Any]


@pytest.fixture(scope="module")
def sentences() -> list[str]:
    return template_sentences(120, seed=3)


def _layer(encoder: TextEncoder, i: int) -> Any:
    """Encoder layer ``i`` (transformers types its submodules loosely)."""
    return encoder.bert.encoder.layer[i]


def _tiny_student(teacher: TextEncoder) -> TextEncoder:
    torch.manual_seed(0)
    student = build_text_student(teacher, layers=1, hidden=32, heads=2, init="random")
    assert isinstance(student, TextEncoder)
    return student


def test_minilm_loads_offline_and_gives_unit_384d_embeddings(
    minilm: MiniLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    teacher, tokenizer = minilm
    assert teacher.config.num_hidden_layers == 6 and teacher.config.hidden_size == 384
    assert teacher.bert.pooler is None and teacher.projection is None
    emb = encode_texts(teacher, tokenizer, ["The cat sat on the mat.", "Stocks fell sharply on Monday."])
    assert emb.shape == (2, 384)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(2))
    # the builtin name resolves to the same model, still without any network (HF_HUB_OFFLINE=1)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    again, _ = load_builtin_text_teacher(MINILM)
    torch.testing.assert_close(encode_texts(again, tokenizer, ["The cat sat on the mat."]), emb[:1])
    with pytest.raises(ValueError, match="unknown builtin text teacher"):
        load_builtin_text_teacher("bert-large")


def test_minilm_embeddings_behave_like_sentence_embeddings(minilm: MiniLM) -> None:
    teacher, tokenizer = minilm
    emb = encode_texts(
        teacher,
        tokenizer,
        [
            "A man is playing a guitar.",
            "A man is playing a guitar.",
            "Someone is strumming a guitar.",
            "The central bank raised interest rates.",
        ],
    )
    assert mean_cosine(emb[0:1], emb[1:2]) == pytest.approx(1.0, abs=1e-5)
    paraphrase, unrelated = mean_cosine(emb[0:1], emb[2:3]), mean_cosine(emb[0:1], emb[3:4])
    assert paraphrase > 0.5 > unrelated
    # padding does not change a sentence's embedding (mean pooling over the attention mask only)
    alone = encode_texts(teacher, tokenizer, ["A man is playing a guitar."])
    torch.testing.assert_close(alone, emb[:1], atol=1e-5, rtol=0)


def test_teacher_layer_init_copies_the_chosen_layers(minilm: MiniLM) -> None:
    teacher, _ = minilm
    assert evenly_spaced_layers(6, 3) == [0, 2, 4]
    assert evenly_spaced_layers(6, 2) == [0, 3]
    student = build_text_student(teacher, layers=3, init="teacher")
    assert isinstance(student, TextEncoder) and student.projection is None
    assert student.config.num_hidden_layers == 3
    for name, value in teacher.bert.embeddings.state_dict().items():
        assert torch.equal(student.bert.embeddings.state_dict()[name], value)
    for i, j in enumerate([0, 2, 4]):
        source = teacher.bert.encoder.layer[j].state_dict()
        target = student.bert.encoder.layer[i].state_dict()
        assert source.keys() == target.keys()
        assert all(torch.equal(source[k], target[k]) for k in source)
    # copies, not shared storage
    assert _layer(student, 0).output.dense.weight.data_ptr() != (
        _layer(teacher, 0).output.dense.weight.data_ptr()
    )
    # a narrower FFN keeps a subset of the teacher's neurons
    pruned = build_text_student(teacher, layers=2, intermediate=512, teacher_layers=[1, 5])
    w = _layer(pruned, 1).intermediate.dense.weight
    assert w.shape == (512, 384)
    rows = {tuple(r.tolist()[:4]) for r in _layer(teacher, 5).intermediate.dense.weight}
    assert all(tuple(r.tolist()[:4]) in rows for r in w)
    with pytest.raises(ValueError, match="hidden size"):
        build_text_student(teacher, layers=2, hidden=256, init="teacher")


def test_narrow_student_projects_into_the_teacher_space(minilm: MiniLM, sentences: list[str]) -> None:
    teacher, tokenizer = minilm
    student = _tiny_student(teacher)
    assert student.config.hidden_size == 32 and student.config.vocab_size == teacher.config.vocab_size
    assert student.projection is not None and student.output_dim == 384
    assert encode_texts(student, tokenizer, sentences[:3]).shape == (3, 384)


def test_training_a_tiny_random_student_raises_its_cosine_to_the_teacher(
    minilm: MiniLM, sentences: list[str]
) -> None:
    teacher, tokenizer = minilm
    student = _tiny_student(teacher)
    train, val = sentences[:96], sentences[96:]
    target = encode_texts(teacher, tokenizer, val)
    before = mean_cosine(encode_texts(student, tokenizer, val), target)
    seen: list[dict[str, float]] = []

    class Callbacks:
        def on_step(self, **_: int) -> None:
            pass

        def on_epoch(self, *, metrics: dict[str, float], **_: int) -> None:
            seen.append(metrics)

        def should_stop(self) -> bool:
            return False

    out = distill_embeddings(
        teacher,
        student,
        tokenizer,
        train,
        val,
        epochs=3,
        batch_size=16,
        lr=3e-3,
        seed=0,
        callbacks=Callbacks(),
    )
    after = mean_cosine(encode_texts(student, tokenizer, val), target)
    assert not out.stopped and len(out.history) == 3 and len(seen) == 3
    assert after > before + 0.2, (before, after)
    assert out.history[-1]["val_cosine"] == pytest.approx(after, abs=1e-4)
    assert out.teacher_train is not None and out.teacher_train.shape == (96, 384)

    # the cached teacher outputs replace the teacher: same seed, same student, same result
    again = _tiny_student(teacher)
    cached = distill_embeddings(
        None,
        again,
        tokenizer,
        train,
        val,
        epochs=1,
        batch_size=16,
        lr=3e-3,
        seed=0,
        teacher_train=out.teacher_train,
        teacher_val=out.teacher_val,
    )
    fresh = distill_embeddings(
        teacher, _tiny_student(teacher), tokenizer, train, val, epochs=1, batch_size=16, lr=3e-3, seed=0
    )
    assert cached.history[-1]["val_cosine"] == pytest.approx(fresh.history[-1]["val_cosine"], abs=1e-6)


def test_should_stop_ends_training_at_once(minilm: MiniLM, sentences: list[str]) -> None:
    teacher, tokenizer = minilm

    class Stop:
        def on_step(self, **_: int) -> None:
            pass

        def on_epoch(self, **_: object) -> None:
            pass

        def should_stop(self) -> bool:
            return True

    out = distill_embeddings(
        teacher, _tiny_student(teacher), tokenizer, sentences[:8], sentences[8:12], epochs=2, callbacks=Stop()
    )
    assert out.stopped and out.history == []


def test_attention_maps_per_layer(minilm: MiniLM) -> None:
    teacher, tokenizer = minilm
    student = build_text_student(teacher, layers=2, init="teacher").eval()  # no attention dropout
    ids, mask = tokenize(tokenizer, ["A short one.", "A slightly longer sentence than that."]).batch([0, 1])
    maps = attention_maps(student, ids, mask)
    assert len(maps) == 2 and maps[0].shape == (2, 12, ids.shape[1], ids.shape[1])
    torch.testing.assert_close(maps[0].sum(-1), torch.ones(2, 12, ids.shape[1]))
    assert maps[0][0, :, :, mask[0] == 0].abs().max() < 1e-6  # padding gets no attention
    maps[1].pow(2).sum().backward()  # differentiable: an attention loss can train the student
    assert _layer(student, 0).attention.self.query.weight.grad is not None
    assert student.bert.config._attn_implementation == "sdpa"  # restored
    teacher_maps = attention_maps(teacher, ids, mask)
    torch.testing.assert_close(teacher_maps[0], maps[0].detach())  # student layer 0 is teacher layer 0


def test_save_load_round_trip_gives_identical_embeddings(
    minilm: MiniLM, sentences: list[str], tmp_path: Path
) -> None:
    teacher, tokenizer = minilm
    student = _tiny_student(teacher)
    data = save_text_model(student, tokenizer, max_length=64, teacher=MINILM)
    path = tmp_path / "student.safetensors"
    path.write_bytes(data)
    model, tok, meta = load_text_model(path)
    assert isinstance(model, TextEncoder) and meta.task == "embedding" and meta.projection_dim == 384
    assert meta.max_length == 64 and meta.teacher == MINILM and meta.bert_config["hidden_size"] == 32
    assert tok(sentences[:5])["input_ids"] == tokenizer(sentences[:5])["input_ids"]
    assert torch.equal(
        encode_texts(model, tok, sentences[:10]), encode_texts(student, tokenizer, sentences[:10])
    )
    from_bytes, _, _ = load_text_model(data)
    assert isinstance(from_bytes, TextEncoder)
    assert torch.equal(
        encode_texts(from_bytes, tok, sentences[:3]), encode_texts(student, tokenizer, sentences[:3])
    )
    with pytest.raises(TextModelError, match="not a Distill text model"):
        import safetensors.torch

        load_text_model(safetensors.torch.save({"w": torch.zeros(2)}))


def test_classifier_distillation_on_a_tiny_two_class_task(minilm: MiniLM, tmp_path: Path) -> None:
    teacher_encoder, tokenizer = minilm
    texts, labels = sentiment_examples(96, seed=0)
    train_x, train_y, val_x, val_y = texts[:64], labels[:64], texts[64:], labels[64:]
    teacher_run = train_text_classifier(
        teacher_encoder, tokenizer, train_x, train_y, val_x, val_y, epochs=30, batch_size=16, lr=3e-2
    )
    teacher = teacher_run.model
    assert isinstance(teacher, TextClassifier) and teacher.num_classes == 2
    assert teacher_run.history[-1]["val_accuracy"] >= 0.8
    assert _layer(teacher_encoder, 0).output.dense.weight.requires_grad  # original untouched

    student = build_text_student(teacher, layers=1, init="teacher")
    assert isinstance(student, TextClassifier)
    assert torch.equal(student.head.weight, teacher.head.weight)
    out = distill_text_classifier(
        teacher,
        student,
        tokenizer,
        train_x,
        val_x,
        val_y,
        train_labels=train_y,
        epochs=2,
        batch_size=16,
        lr=2e-4,
        seed=0,
    )
    assert not out.stopped and out.teacher_train is not None and out.teacher_train.shape == (64, 2)
    last = out.history[-1]
    assert {"train_loss", "kd_loss", "ce_loss", "val_accuracy", "val_agreement"} <= last.keys()
    assert last["val_accuracy"] >= 0.5

    data = save_text_model(student, tokenizer, classes=["negative", "positive"])
    loaded, tok, meta = load_text_model(data)
    assert isinstance(loaded, TextClassifier)
    assert meta.task == "classification" and meta.classes == ["negative", "positive"]
    assert torch.equal(text_logits(loaded, tok, val_x), text_logits(student, tokenizer, val_x))
    assert read_text_meta(data)[0].num_classes == 2


def test_template_sentences_and_jsonl() -> None:
    a = template_sentences(2000, seed=1)
    assert len(set(a)) == 2000 and a == template_sentences(2000, seed=1)
    assert len({s.split(" ")[0] for s in a}) > 20  # many openings, not one frame
    lines = [json.dumps({"text": "good", "label": "pos"}), "", json.dumps({"text": "bad", "label": "neg"})]
    ds = read_text_jsonl(lines)
    assert ds.texts == ["good", "bad"] and ds.classes == ["neg", "pos"] and ds.labels == [1, 0]
    assert read_text_jsonl([json.dumps({"text": "x"})]).labels is None
    with pytest.raises(ValueError, match="line 1"):
        read_text_jsonl(["{not json"])
    with pytest.raises(ValueError, match="not one of the classes"):
        read_text_jsonl([json.dumps({"text": "x", "label": "maybe"})], classes=["neg", "pos"])


def test_attention_transfer_masks_padding_and_trains_with_kd(minilm: MiniLM) -> None:
    teacher_encoder, tokenizer = minilm
    torch.manual_seed(0)
    teacher = TextClassifier(build_text_student(teacher_encoder, layers=2, init="teacher"), 2).eval()
    texts, labels = sentiment_examples(24, seed=3)
    tokens = tokenize(tokenizer, texts, 32)
    maps = teacher_attention_maps(teacher, tokens, [1])
    assert [m.shape[-1] for m in maps] == [len(r) for r in tokens.ids] and maps[0].dtype == torch.float16
    # The teacher against itself: padding (a short and a long text in one batch) gives exactly zero loss.
    idx = [min(range(24), key=lambda i: len(tokens.ids[i])), max(range(24), key=lambda i: len(tokens.ids[i]))]
    ids, mask = tokens.batch(idx)
    own = attention_maps(teacher, ids, mask)
    assert text_attention_loss(own, [maps[i] for i in idx], mask, [(1, 1)], {1: 0}).item() < 1e-6
    assert check_layer_map(None, 1, 2) == [(0, 1)]
    with pytest.raises(ValueError, match="out of range"):
        check_layer_map([(0, 2)], 1, 2)

    student = build_text_student(teacher, layers=1, init="random")
    out = distill_text_classifier(
        teacher,
        student,
        tokenizer,
        texts[:16],
        texts[16:],
        labels[16:],
        train_labels=labels[:16],
        epochs=1,
        batch_size=8,
        max_length=32,
        losses=[
            KDLoss(type="kd", weight=0.7),
            AttentionLoss(type="attention", weight=0.3, layer_map=[(0, 1)]),
        ],
    )
    last = out.history[-1]
    assert {"train_loss", "kd_loss", "attention_loss"} <= last.keys() and "ce_loss" not in last
    assert last["attention_loss"] > 0
    with pytest.raises(ValueError, match="out of range"):
        distill_text_classifier(
            teacher,
            student,
            tokenizer,
            texts[:16],
            texts[16:],
            labels[16:],
            losses=[AttentionLoss(type="attention", layer_map=[(3, 0)])],
        )


def test_baseline_trains_on_labels_alone_without_a_teacher(minilm: MiniLM) -> None:
    teacher_encoder, tokenizer = minilm
    texts, labels = sentiment_examples(48, seed=4)
    torch.manual_seed(0)
    shape = TextClassifier(_tiny_student(teacher_encoder), 2)
    torch.manual_seed(7)
    scratch = build_text_student(shape, layers=1, hidden=32, heads=2, init="random")
    torch.manual_seed(7)
    same = build_text_student(shape, layers=1, hidden=32, heads=2, init="random")
    assert all(torch.equal(a, b) for a, b in zip(scratch.parameters(), same.parameters(), strict=True))
    out = train_text_baseline(
        scratch, tokenizer, texts[:32], labels[:32], texts[32:], labels[32:], epochs=2, batch_size=8, lr=1e-3
    )
    assert not out.stopped and out.teacher_train is None and out.teacher_val is None
    last = out.history[-1]
    assert {"train_loss", "ce_loss", "val_accuracy", "val_loss"} <= last.keys()
    assert "kd_loss" not in last and "val_agreement" not in last
    assert last["train_loss"] == pytest.approx(last["ce_loss"])
    assert not all(torch.equal(a, b) for a, b in zip(scratch.parameters(), same.parameters(), strict=True))
    with pytest.raises(ValueError, match="teacher_logits"):  # kd still needs the teacher's logits
        distill_text_classifier(
            None, same, tokenizer, texts[:32], texts[32:], labels[32:], train_labels=labels[:32]
        )


def test_transfer_texts_get_kd_but_no_cross_entropy(minilm: MiniLM) -> None:
    _, tokenizer = minilm
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    teacher = TextClassifier(TextEncoder(new_bert(cfg)), 2).eval()
    texts, labels = sentiment_examples(40, seed=6)
    train_x, train_y, val_x, val_y = texts[:12], labels[:12], texts[32:], labels[32:]
    transfer = texts[12:32]
    student = build_text_student(teacher, layers=1, init="teacher")
    with torch.no_grad():
        expected_ce = F.cross_entropy(text_logits(student, tokenizer, train_x), torch.tensor(train_y)).item()
    out = distill_text_classifier(
        teacher,
        student,
        tokenizer,
        train_x,
        val_x,
        val_y,
        train_labels=train_y,
        transfer_texts=transfer,
        epochs=1,
        batch_size=32,  # one batch: the loss reported is the one of the untrained student
        lr=1e-9,
    )
    assert out.teacher_train is not None and out.teacher_train.shape == (32, 2)
    assert torch.allclose(out.teacher_train[12:], text_logits(teacher, tokenizer, transfer), atol=1e-5)
    # Cross-entropy over the 12 labeled texts only (the 20 transfer texts have no label).
    assert out.history[-1]["ce_loss"] == pytest.approx(expected_ce, abs=1e-4)
    assert out.history[-1]["kd_loss"] > 0
    # Cached logits must cover the transfer texts too; ce alone cannot use unlabeled texts.
    with pytest.raises(ValueError, match="train then transfer texts: 12 \\+ 20"):
        distill_text_classifier(
            None,
            student,
            tokenizer,
            train_x,
            val_x,
            val_y,
            train_labels=train_y,
            transfer_texts=transfer,
            teacher_logits=out.teacher_train[:12],
        )
    with pytest.raises(ValueError, match="transfer texts have no labels"):
        distill_text_classifier(
            teacher,
            student,
            tokenizer,
            train_x,
            val_x,
            val_y,
            train_labels=train_y,
            transfer_texts=transfer,
            losses=[CELoss(type="ce")],
        )


def test_a_text_run_resumed_from_a_mid_run_state_ends_where_the_whole_run_ends(
    minilm: MiniLM, sentences: list[str]
) -> None:
    """The text loops are the same fit: a checkpoint (with the warm-up/decay scheduler) resumes exactly."""
    teacher, tokenizer = minilm
    train, val = sentences[:48], sentences[48:60]
    targets = distill_embeddings(teacher, _tiny_student(teacher), tokenizer, train, val, epochs=1)
    settings: dict[str, Any] = {
        "epochs": 2,
        "batch_size": 16,
        "lr": 3e-3,
        "seed": 0,
        "teacher_train": targets.teacher_train,
        "teacher_val": targets.teacher_val,
    }
    states: list[LoopState] = []
    torch.manual_seed(1)
    whole_student = _tiny_student(teacher)
    whole = distill_embeddings(
        None, whole_student, tokenizer, train, val, checkpoint=states.append, checkpoint_every=2, **settings
    )
    mid = next(s for s in states if s.epoch == 2 and s.position > 0)
    torch.manual_seed(1)
    resumed_student = _tiny_student(teacher)
    resumed = distill_embeddings(None, resumed_student, tokenizer, train, val, state=mid, **settings)
    for a, b in zip(resumed_student.parameters(), whole_student.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    assert resumed.history[-1]["val_cosine"] == pytest.approx(whole.history[-1]["val_cosine"], abs=1e-5)
