"""Hugging Face models on the worker: load an extracted archive (see :mod:`distill.hfarchive`) and save a
student as one.

Every load is local (``local_files_only``), from safetensors only (``use_safetensors``), and never runs a
model's own code (``trust_remote_code=False``); :func:`distill.hfarchive.inspect_model_dir` runs first, so a
folder the API would have refused (``auto_map``, pickled weights, an unknown architecture) fails here too with
the same message. Tokenizers load with ``PreTrainedTokenizerFast.from_pretrained``, which reads
``tokenizer.json`` as written (``AutoTokenizer`` may swap in another class for some model types).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Literal, cast

import torch
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub: every file is local
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    BertConfig,
    BertForSequenceClassification,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)
from transformers import logging as hf_logging

from distill.hfarchive import ArchiveError, HFModelInfo, inspect_model_dir, pack_folder
from worker.engine.text import (
    TextClassifier,
    TextEncoder,
    copy_teacher_layers,
    evenly_spaced_layers,
    student_config,
)

hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()

_LOAD_OPTIONS: dict[str, Any] = {
    "trust_remote_code": False,
    "use_safetensors": True,
    "local_files_only": True,
}


class HFModelError(ArchiveError):
    """A Hugging Face model folder that cannot be loaded; the message says what is wrong."""


def load_tokenizer(folder: Path) -> PreTrainedTokenizerFast:
    """The tokenizer in ``folder`` (its ``tokenizer.json`` as written), with a pad token (the end-of-sequence
    token when it has none of its own)."""
    if not (folder / "tokenizer.json").is_file():
        raise HFModelError("the model folder has no tokenizer.json")
    try:
        tokenizer = PreTrainedTokenizerFast.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise HFModelError(f"the tokenizer cannot be loaded ({exc})") from exc
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        elif tokenizer.unk_token is not None:
            tokenizer.pad_token = tokenizer.unk_token
    return tokenizer


def _load(folder: Path, device: torch.device, kind: str, auto: Any) -> tuple[PreTrainedModel, HFModelInfo]:
    info = inspect_model_dir(folder)
    if info.kind != kind:
        wanted = "a causal LM" if kind == "causal_lm" else "a sequence classifier"
        raise HFModelError(
            f"the model is a {info.kind.replace('_', ' ')} ({info.architecture}), not {wanted}"
        )
    try:
        model = auto.from_pretrained(str(folder), dtype=torch.float32, **_LOAD_OPTIONS)
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as exc:
        raise HFModelError(f"the {info.architecture} model cannot be loaded ({exc})") from exc
    return model.to(device).eval(), info


def load_causal_lm(folder: Path, device: torch.device) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """The causal LM in ``folder`` (``AutoModelForCausalLM``, float32, eval mode, on ``device``) and its
    tokenizer."""
    model, _ = _load(folder, device, "causal_lm", AutoModelForCausalLM)
    return model, load_tokenizer(folder)


def load_sequence_classifier(
    folder: Path, device: torch.device
) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """The sequence classifier in ``folder`` (``AutoModelForSequenceClassification``, float32, eval mode, on
    ``device``) and its tokenizer."""
    model, _ = _load(folder, device, "sequence_classification", AutoModelForSequenceClassification)
    return model, load_tokenizer(folder)


def save_archive(model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, *, card: str) -> bytes:
    """``model`` (safetensors), its tokenizer and ``card`` as README.md, zipped by
    :func:`distill.hfarchive.pack_folder`: what ``from_pretrained`` loads after unpacking."""
    with tempfile.TemporaryDirectory(prefix="distill-hf-save-") as tmp:
        folder = Path(tmp)
        model.save_pretrained(str(folder))
        tokenizer.save_pretrained(str(folder))
        (folder / "README.md").write_text(card, encoding="utf-8")
        inspect_model_dir(folder)  # what Distill writes, Distill accepts back
        return pack_folder(folder)


# -- sequence classifiers as text-job models ----------------------------------------------------------------


class _ConfigView:
    """What the text training loops read of a classifier's encoder: its ``config`` (layers...)."""

    def __init__(self, config: Any) -> None:
        self.config = config


class HFTextClassifier(TextClassifier):
    """A transformers sequence classifier behind the text engine's classifier interface: ``forward(input_ids,
    attention_mask) -> logits [n, classes]`` and ``num_classes``, so the text training loops, inference and
    latency measurements (:mod:`worker.engine.text_train`, :mod:`worker.engine.text_inference`) run it as they
    run a :class:`~worker.engine.text.TextClassifier`. Its weights live in ``model`` (what
    :func:`save_archive` writes); ``encoder`` only describes it (``config``)."""

    def __init__(self, model: PreTrainedModel) -> None:
        nn.Module.__init__(self)  # not TextClassifier's: no TextEncoder and no head of its own
        self.model = model
        self.encoder = cast(TextEncoder, _ConfigView(model.config))

    @property
    def num_classes(self) -> int:
        config: Any = self.model.config
        return int(config.num_labels)

    @property
    def labels(self) -> list[str]:
        config: Any = self.model.config
        return _labels(config, self.num_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.model(input_ids=input_ids, attention_mask=attention_mask).logits
        return logits


def _labels(config: Any, n: int) -> list[str]:
    """A config's class names in id order (``id2label``'s keys may be ints or, from JSON, strings)."""
    id2label = {int(k): str(v) for k, v in (config.id2label or {}).items()}
    return [id2label.get(i, f"LABEL_{i}") for i in range(n)]


def _attr(config: Any, *names: str) -> int | None:
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def hf_student_config(
    teacher: PretrainedConfig,
    tokenizer: PreTrainedTokenizerFast,
    *,
    layers: int,
    hidden: int | None = None,
    heads: int | None = None,
    intermediate: int | None = None,
    max_length: int = 128,
) -> BertConfig:
    """The ``BertForSequenceClassification`` config of a student of ``teacher`` (any sequence classifier):
    its labels (``id2label``), the tokenizer's vocabulary, positions for ``max_length`` tokens. A BERT
    teacher's config is kept but for the sizes (:func:`worker.engine.text.student_config`); another
    architecture's width is the teacher's (``hidden_size``, ``n_embd``, ``d_model``...) unless ``hidden``."""
    if teacher.model_type == "bert":
        cfg = student_config(
            cast(BertConfig, teacher), layers=layers, hidden=hidden, heads=heads, intermediate=intermediate
        )
    else:
        width = hidden or _attr(teacher, "hidden_size", "n_embd", "d_model", "dim") or 256
        if heads is None:
            heads = max(1, width // 64) if width % 64 == 0 else max(d for d in range(1, 13) if width % d == 0)
        if width % heads:
            raise ValueError(
                f"hidden size {width} must be a positive multiple of the number of heads {heads}"
            )
        cfg = BertConfig(
            vocab_size=max(len(tokenizer), _attr(teacher, "vocab_size") or 0),
            hidden_size=width,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=intermediate or 4 * width,
            max_position_embeddings=max(max_length + 2, 128),
            pad_token_id=tokenizer.pad_token_id or 0,
        )
    source: Any = teacher
    labels = _labels(source, int(source.num_labels))
    cfg.architectures = ["BertForSequenceClassification"]
    cfg.num_labels = len(labels)
    cfg.id2label = dict(enumerate(labels))
    cfg.label2id = {label: i for i, label in enumerate(labels)}
    return cfg


def build_hf_student(
    teacher: HFTextClassifier,
    tokenizer: PreTrainedTokenizerFast,
    *,
    layers: int,
    hidden: int | None = None,
    heads: int | None = None,
    intermediate: int | None = None,
    init: Literal["teacher", "random"] = "teacher",
    max_length: int = 128,
) -> HFTextClassifier:
    """A ``BertForSequenceClassification`` student of an HF sequence classifier, with the teacher's tokenizer
    and labels. ``init="teacher"`` (a BERT teacher only) copies the embeddings, evenly spaced layers, pooler
    and classifier (DistilBERT's recipe); ``"random"`` draws every weight afresh (seed torch first)."""
    t_model: Any = teacher.model
    t_cfg = t_model.config
    cfg = hf_student_config(
        t_cfg, tokenizer, layers=layers, hidden=hidden, heads=heads, intermediate=intermediate,
        max_length=max_length,
    )  # fmt: skip
    student: Any = BertForSequenceClassification(cfg)
    if init == "teacher":
        if t_cfg.model_type != "bert":
            raise ValueError(
                f"init='teacher' copies a BERT teacher's layers; this teacher is a {t_cfg.model_type} model, "
                "so use init='random'"
            )
        if cfg.hidden_size != t_cfg.hidden_size or cfg.num_attention_heads != t_cfg.num_attention_heads:
            raise ValueError(
                "init='teacher' copies the teacher's layers, so the student needs the teacher's hidden size "
                f"({t_cfg.hidden_size}) and heads ({t_cfg.num_attention_heads}); use init='random' for a "
                "narrower student"
            )
        copy_teacher_layers(t_model.bert, student.bert, evenly_spaced_layers(t_cfg.num_hidden_layers, layers))
        with torch.no_grad():
            if t_model.bert.pooler is not None and student.bert.pooler is not None:
                student.bert.pooler.load_state_dict(t_model.bert.pooler.state_dict())
            student.classifier.load_state_dict(t_model.classifier.state_dict())
    elif init != "random":
        raise ValueError(f"init must be 'teacher' or 'random', not {init!r}")
    return HFTextClassifier(student)
