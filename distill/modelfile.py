"""The model file format: one ``.safetensors`` file that describes itself.

Its header metadata carries ``"distill.format": "1"`` and ``"distill.config"``: the JSON of
:class:`distill.spec.StoredModelConfig` (architecture, input shape, number of classes). The tensors are the
model's ``state_dict`` (float). Nothing is ever unpickled.

NumPy and safetensors only (no torch): the API imports this module to validate uploaded models.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import safetensors
from pydantic import ValidationError

from distill.spec import StoredModelConfig

FORMAT_KEY = "distill.format"
METADATA_KEY = "distill.config"
FORMAT_VERSION = "1"
FLOAT_DTYPES = frozenset({"F16", "BF16", "F32", "F64"})

_MAX_HEADER_BYTES = 100 * 1024 * 1024  # the safetensors library's own limit
_HOW_TO = (
    "Distill models are .safetensors files written by Distill (download a job's model), or by "
    "safetensors.torch.save_file(model.state_dict(), path, metadata={'distill.format': '1', "
    "'distill.config': StoredModelConfig(...).model_dump_json()})"
)


class ModelFileError(ValueError):
    """A model file that cannot be used; the message says what is wrong and how to fix it."""


def inspect_model_file(path: Path) -> tuple[StoredModelConfig, int]:
    """Validate a model file and return its config and parameter count, without loading any weights."""
    _check_header_bytes(path)
    try:
        with safetensors.safe_open(str(path), framework="numpy") as f:
            metadata = f.metadata()
            shapes: dict[str, tuple[str, list[int]]] = {}
            for name in f.keys():  # noqa: SIM118 (safe_open is not a Mapping)
                tensor = f.get_slice(name)
                shapes[name] = (str(tensor.get_dtype()), [int(d) for d in tensor.get_shape()])
    except ModelFileError:
        raise
    except Exception as exc:  # the library raises SafetensorError and a few others on bad bytes
        raise ModelFileError(f"not a valid .safetensors file ({exc}). {_HOW_TO}") from exc

    config = config_from_metadata(metadata)
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
    return config, parameters


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


def _check_header_bytes(path: Path) -> None:
    """Recognise common wrong formats before the library does, to say what the file is instead."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(9)
    except OSError as exc:
        raise ModelFileError(f"cannot read the model file: {exc}") from exc
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
