"""Hugging Face model archives: strict extraction, inspection, packing and the model card.

A user uploads a model as ``save_pretrained`` writes it (``config.json``, ``*.safetensors``, tokenizer files),
zipped or tarred. :func:`extract_archive` unpacks it with limits checked from the headers before anything is
written and again while writing: regular files only (no links or devices), no absolute paths or ``..``, names
from :data:`ALLOWED_NAMES`, at most one top-level folder. :func:`inspect_model_dir` then describes the model
from ``config.json`` and the safetensors headers (:class:`HFModelInfo`, the file's ``metadata``) without
loading any weights and without torch: the API imports this module. Remote code (``auto_map``) and pickled
weights (``.bin``, ``.pt``...) are refused; a job's HF-format student is packed by :func:`pack_folder` as
:data:`HF_ARCHIVE_ARTIFACT` with a README from :func:`model_card`.

(Over 500 lines: extraction limits, the allowed names, inspection and packing are one security boundary for
uploaded archives; they are kept and tested together.)
"""

from __future__ import annotations

import ast
import fnmatch
import functools
import hashlib
import importlib.util
import io
import json
import math
import os
import stat
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any, Literal

from distill.modelfile import FLOAT_DTYPES, ModelFileError, read_safetensors_header

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")
HF_ARCHIVE_ARTIFACT = "model.hf.zip"
"""The artifact name of a job's student in Hugging Face format (a zip of a ``save_pretrained`` folder)."""
HF_FORMAT = "hf"
MODEL_FOLDER = "model"
"""The folder :func:`extract_archive` writes the model's files into, under ``dest``."""

ALLOWED_NAMES = (
    "config.json",
    "generation_config.json",
    "*.safetensors",
    "model.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
    "added_tokens.json",
    "preprocessor_config.json",
    "README.md",
    "LICENSE",
    "LICENSE.txt",
    "NOTICE",
    ".gitattributes",
)
"""File names an archive may hold (``fnmatch`` patterns, matched case-sensitively on the base name)."""
IGNORED_NAMES = ("__MACOSX", ".DS_Store")
"""Entries that archivers add on their own; skipped (never written), wherever they are."""
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".h5", ".msgpack", ".joblib", ".npy")

_CHUNK = 1 << 20
_MAX_JSON_BYTES = 64 * 1024 * 1024
_TAR_OVERHEAD_PER_ENTRY = 3 * 512 + 4096  # a header, a long-name/pax header, its padding
_TAR_OVERHEAD = 64 * 1024  # the end-of-archive blocks and the record's padding


class ArchiveError(ValueError):
    """An archive or model folder that cannot be used; the message says what was wrong (for a 422)."""


def is_archive_name(filename: str) -> bool:
    """Whether ``filename`` names a model archive (by its suffix: .zip, .tar, .tar.gz or .tgz)."""
    return filename.lower().endswith(ARCHIVE_SUFFIXES)


# -- extraction -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Entry:
    name: str
    """The path inside the model folder (the top-level folder, if any, removed)."""
    size: int
    member: Any
    """The ``ZipInfo`` or ``TarInfo`` to read it from."""


def _allowed(base: str) -> bool:
    return any(fnmatch.fnmatchcase(base, pattern) for pattern in ALLOWED_NAMES)


def _check_name(raw: str) -> PurePosixPath | None:
    """The entry's path, checked; None for entries skipped (archivers' own files)."""
    if not raw or "\x00" in raw:
        raise ArchiveError("an archive entry has an empty name or a NUL byte")
    name = raw.replace("\\", "/")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise ArchiveError(f"archive entry {raw!r} has an absolute path; entries must be relative")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ArchiveError(f"archive entry {raw!r} leads out of the folder ('..'); entries must stay inside")
    if not parts or any(p in IGNORED_NAMES or p.startswith("._") for p in parts):
        return None
    return PurePosixPath(*parts)


def _check_file_name(path: PurePosixPath, raw: str) -> None:
    base = path.name
    if base.lower().endswith(PICKLE_SUFFIXES):
        raise ArchiveError(
            f"archive entry {raw!r} holds pickled weights, which Distill never loads; save the model with "
            "save_pretrained(folder, safe_serialization=True) so its weights are *.safetensors"
        )
    if base.endswith((".py", ".pyc", ".so")):
        raise ArchiveError(f"archive entry {raw!r} is code; Distill never runs a model's own code")
    if not _allowed(base):
        raise ArchiveError(
            f"archive entry {raw!r} is not a file a model archive may hold; allowed: "
            + ", ".join(ALLOWED_NAMES)
        )
    if len(path.parts) > 2:
        raise ArchiveError(
            f"archive entry {raw!r} is nested too deep; put the model's files at the top of the archive "
            "or in one folder"
        )


def _layout(entries: list[tuple[PurePosixPath, str, int, Any]], dirs: list[PurePosixPath]) -> list[_Entry]:
    """The entries under one optional top-level folder, checked, with that folder removed."""
    tops = {p.parts[0] for p, _, _, _ in entries if len(p.parts) > 1}
    flat = [raw for p, raw, _, _ in entries if len(p.parts) == 1]
    if len(tops) > 1 or (tops and flat):
        raise ArchiveError(
            "the archive holds more than one folder (or files beside a folder); put the model's files at the "
            "top of the archive or in one folder"
        )
    for d in dirs:
        if len(d.parts) > 1 or (tops and d.parts[0] not in tops):
            raise ArchiveError(f"the archive holds a folder {str(d)!r} that a model archive does not need")
    out: list[_Entry] = []
    seen: set[str] = set()
    for path, _, size, member in entries:
        name = path.parts[-1]
        if name in seen:
            raise ArchiveError(f"the archive holds {name!r} twice")
        seen.add(name)
        out.append(_Entry(name, size, member))
    return out


def _check_totals(entries: list[_Entry], *, max_bytes: int, max_files: int) -> None:
    if not entries:
        raise ArchiveError(
            "the archive is empty; it should hold config.json, *.safetensors and tokenizer files"
        )
    if len(entries) > max_files:
        raise ArchiveError(f"the archive holds {len(entries)} files, more than the limit of {max_files}")
    total = sum(e.size for e in entries)
    if total > max_bytes:
        raise ArchiveError(
            f"the archive's files add up to {total} bytes uncompressed, more than the limit of {max_bytes}"
        )


class _Budget:
    """Bytes written so far, against the declared sizes and the limit (a header that lied is caught here)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.total = 0

    def copy(self, source: IO[bytes], dest: Path, declared: int, name: str) -> None:
        written = 0
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        with os.fdopen(fd, "wb") as out:
            while chunk := source.read(_CHUNK):
                written += len(chunk)
                self.total += len(chunk)
                if written > declared:
                    raise ArchiveError(f"archive entry {name!r} holds more bytes than its header declares")
                if self.total > self.max_bytes:
                    raise ArchiveError(f"the archive inflates past the limit of {self.max_bytes} bytes")
                out.write(chunk)
        if written != declared:
            raise ArchiveError(f"archive entry {name!r} is truncated ({written} of {declared} bytes)")


class _BoundedReader(io.RawIOBase):
    """A read-only stream that refuses to give more than ``limit`` bytes (a tar.gz that inflates forever)."""

    def __init__(self, inner: IO[bytes], limit: int) -> None:
        self.inner = inner
        self.left = limit
        self.limit = limit

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.inner.read(min(len(view), self.left + 1))
        if len(data) > self.left:
            raise ArchiveError(f"the archive inflates past the limit of {self.limit} bytes")
        self.left -= len(data)
        view[: len(data)] = data
        return len(data)


def _zip_entries(
    zf: zipfile.ZipFile,
) -> tuple[list[tuple[PurePosixPath, str, int, Any]], list[PurePosixPath]]:
    files, dirs = [], []
    for info in zf.infolist():
        path = _check_name(info.filename)
        if path is None:
            continue
        mode = info.external_attr >> 16
        if info.is_dir():
            dirs.append(path)
            continue
        if stat.S_IFMT(mode) and not stat.S_ISREG(mode):  # no type bits (Windows, writestr): a file
            kind = "a link" if stat.S_ISLNK(mode) else "not a regular file"
            raise ArchiveError(
                f"archive entry {info.filename!r} is {kind}; an archive may hold regular files only"
            )
        if info.flag_bits & 0x1:
            raise ArchiveError(f"archive entry {info.filename!r} is encrypted")
        _check_file_name(path, info.filename)
        files.append((path, info.filename, info.file_size, info))
    return files, dirs


def _tar_members(stream: tarfile.TarFile, max_files: int) -> Iterator[tarfile.TarInfo]:
    for count, member in enumerate(stream, start=1):
        if count > 2 * max_files + 8:
            raise ArchiveError(f"the archive holds more entries than the limit of {max_files} files")
        yield member


def _tar_entries(
    stream: tarfile.TarFile, max_files: int, max_bytes: int
) -> tuple[list[tuple[PurePosixPath, str, int, Any]], list[PurePosixPath]]:
    """The tar's entries from their headers; a header declaring more than ``max_bytes`` in all stops the
    read there (a streamed tar's data is read to reach the next header)."""
    files, dirs = [], []
    declared = 0
    for member in _tar_members(stream, max_files):
        path = _check_name(member.name)
        if path is None:
            continue
        if member.isdir():
            dirs.append(path)
            continue
        if not member.isreg():
            kind = "a link" if member.issym() or member.islnk() else "a device, FIFO or other special file"
            raise ArchiveError(
                f"archive entry {member.name!r} is {kind}; an archive may hold regular files only"
            )
        _check_file_name(path, member.name)
        declared += member.size
        if declared > max_bytes:
            raise ArchiveError(
                f"the archive's files add up to at least {declared} bytes uncompressed ({member.name!r} "
                f"declares {member.size}), more than the limit of {max_bytes}"
            )
        files.append((path, member.name, member.size, member.name))
    return files, dirs


def _open_tar(source: Path, limit: int) -> tuple[tarfile.TarFile, IO[bytes]]:
    """``source`` as a streamed tar (gzip or not), reading at most ``limit`` bytes of it inflated."""
    raw: IO[bytes] = source.open("rb")
    try:
        magic = raw.read(2)
        raw.seek(0)
        inner: IO[bytes] = raw
        if magic == b"\x1f\x8b":
            import gzip

            inner = gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[assignment]
        bounded = io.BufferedReader(_BoundedReader(inner, limit), _CHUNK)
        return tarfile.open(fileobj=bounded, mode="r|"), raw
    except BaseException:
        raw.close()
        raise


def extract_archive(source: Path, dest: Path, *, max_bytes: int, max_files: int = 64) -> Path:
    """Unpack the model archive ``source`` (zip, tar or tar.gz, told apart by content) into ``dest/model``
    and return that folder.

    Strict: regular files only (no links or devices), no absolute paths or ``..``, base names from
    :data:`ALLOWED_NAMES`, at most one top-level folder (removed), at most ``max_files`` files adding up to at
    most ``max_bytes`` uncompressed, checked from the headers before anything is written and again while
    writing. Raises :class:`ArchiveError` saying what was wrong.
    """
    folder = dest / MODEL_FOLDER
    folder.mkdir(parents=True, exist_ok=False)
    budget = _Budget(max_bytes)
    with source.open("rb") as f:
        head = f.read(4)
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(source) as zf:
                entries = _layout(*_zip_entries(zf))
                _check_totals(entries, max_bytes=max_bytes, max_files=max_files)
                for entry in entries:
                    with zf.open(entry.member) as member:
                        budget.copy(member, folder / entry.name, entry.size, entry.member.filename)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError) as exc:
            raise ArchiveError(f"not a readable zip archive ({exc})") from exc
        return folder
    limit = max_bytes + _TAR_OVERHEAD + _TAR_OVERHEAD_PER_ENTRY * (2 * max_files + 8)
    try:
        stream, raw = _open_tar(source, limit)
        with raw, stream:
            entries = _layout(*_tar_entries(stream, max_files, max_bytes))
        _check_totals(entries, max_bytes=max_bytes, max_files=max_files)
        wanted = {str(e.member): e for e in entries}
        stream, raw = _open_tar(source, limit)
        with raw, stream:
            for info in stream:
                found = wanted.pop(info.name, None)
                if found is None:
                    continue
                if not info.isreg() or info.size != found.size:
                    raise ArchiveError(f"archive entry {info.name!r} changed between reads")
                data = stream.extractfile(info)
                assert data is not None
                budget.copy(data, folder / found.name, found.size, info.name)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ArchiveError(f"not a readable zip or tar archive ({exc})") from exc
    if wanted:
        raise ArchiveError(f"archive entries {sorted(wanted)} could not be read again")
    return folder


# -- inspection -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HFModelInfo:
    """What Distill records about a Hugging Face model (a file's ``metadata``, with ``"format": "hf"``)."""

    kind: Literal["causal_lm", "sequence_classification"]
    architecture: str
    """The transformers class in ``config.json``'s ``architectures`` (``GPT2LMHeadModel``...)."""
    model_type: str
    parameters: int
    vocab_size: int
    tokenizer: str
    """The tokenizer's class name (``tokenizer_config.json``'s ``tokenizer_class``)."""
    tokenizer_sha256: str
    """A fingerprint of the vocabulary (token -> id map and special tokens): equal iff the same tokenizer."""
    num_labels: int | None
    labels: list[str] | None
    """A classifier's ``id2label`` in id order."""
    context_length: int | None

    def to_meta(self) -> dict[str, Any]:
        return {"format": HF_FORMAT, **asdict(self)}

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> HFModelInfo:
        if meta.get("format") != HF_FORMAT:
            raise ArchiveError(f"not a Hugging Face model's metadata (format {meta.get('format')!r})")
        labels = meta.get("labels")
        kind = meta["kind"]
        if kind not in ("causal_lm", "sequence_classification"):
            raise ArchiveError(f"unknown Hugging Face model kind {kind!r}")
        return cls(
            kind=kind,
            architecture=str(meta["architecture"]),
            model_type=str(meta["model_type"]),
            parameters=int(meta["parameters"]),
            vocab_size=int(meta["vocab_size"]),
            tokenizer=str(meta["tokenizer"]),
            tokenizer_sha256=str(meta["tokenizer_sha256"]),
            num_labels=None if meta.get("num_labels") is None else int(meta["num_labels"]),
            labels=None if labels is None else [str(x) for x in labels],
            context_length=None if meta.get("context_length") is None else int(meta["context_length"]),
        )


def is_hf_meta(meta: dict[str, Any] | None) -> bool:
    """Whether a file's ``metadata`` describes a Hugging Face model archive."""
    return bool(meta) and isinstance(meta, dict) and meta.get("format") == HF_FORMAT


def _read_json(path: Path, what: str) -> dict[str, Any]:
    if path.stat().st_size > _MAX_JSON_BYTES:
        raise ArchiveError(f"{what} is larger than {_MAX_JSON_BYTES} bytes")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArchiveError(f"{what} is not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ArchiveError(f"{what} is not a JSON object")
    return data


_MAPPINGS = ("MODEL_FOR_CAUSAL_LM_MAPPING_NAMES", "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES")


@functools.lru_cache(maxsize=1)
def _known_classes() -> tuple[frozenset[str], frozenset[str]]:
    """The transformers class names of causal LMs and of sequence classifiers (``AutoModelForCausalLM``'s
    and ``AutoModelForSequenceClassification``'s mappings in the installed transformers).

    Read from the source of ``transformers/models/auto/modeling_auto.py`` (literal tables) rather than by
    importing it: importing any of transformers' auto modules imports torch, which the API never loads."""
    spec = importlib.util.find_spec("transformers")
    if spec is None or not spec.submodule_search_locations:
        raise ArchiveError("transformers is not installed, so Hugging Face models cannot be checked")
    source = Path(next(iter(spec.submodule_search_locations))) / "models" / "auto" / "modeling_auto.py"
    tables: dict[str, frozenset[str]] = {}
    for node in ast.parse(source.read_text(encoding="utf-8")).body:
        if not (
            isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
        ):
            continue
        name = node.targets[0].id
        if name not in _MAPPINGS:
            continue
        value = node.value
        if isinstance(value, ast.Call) and value.args:  # OrderedDict([...])
            value = value.args[0]
        pairs = ast.literal_eval(value)
        items = pairs.items() if isinstance(pairs, dict) else pairs
        found: set[str] = set()
        for _, classes in items:
            found.update([classes] if isinstance(classes, str) else classes)
        tables[name] = frozenset(found)
    if set(tables) != set(_MAPPINGS):
        raise ArchiveError(
            "the installed transformers has no AutoModel tables to check architectures against"
        )
    return tables[_MAPPINGS[0]], tables[_MAPPINGS[1]]


def tokenizer_fingerprint(tokenizer_json: dict[str, Any], special: dict[str, Any]) -> str:
    """The sha256 of a tokenizer's token -> id map (its model's vocabulary and its added tokens) and its
    special tokens: two tokenizers with the same fingerprint give every token the same id."""
    model = tokenizer_json.get("model")
    vocab_raw = model.get("vocab") if isinstance(model, dict) else None
    vocab: list[tuple[str, int]]
    if isinstance(vocab_raw, dict):
        vocab = sorted((str(t), int(i)) for t, i in vocab_raw.items())
    elif isinstance(vocab_raw, list):  # Unigram: [token, score] in id order
        vocab = [(str(item[0]), i) for i, item in enumerate(vocab_raw)]
    else:
        raise ArchiveError("tokenizer.json has no vocabulary (model.vocab)")
    added = sorted(
        (str(t.get("content")), int(t.get("id", -1)), bool(t.get("special")))
        for t in tokenizer_json.get("added_tokens") or []
        if isinstance(t, dict)
    )
    payload = json.dumps(
        {"vocab": vocab, "added": added, "special": sorted(special.items())}, separators=(",", ":")
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def _special_tokens(folder: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        path = folder / name
        if not path.is_file():
            continue
        data = _read_json(path, name)
        for key in (
            "bos_token",
            "eos_token",
            "unk_token",
            "pad_token",
            "sep_token",
            "cls_token",
            "mask_token",
        ):
            value = data.get(key)
            if isinstance(value, dict):
                value = value.get("content")
            if isinstance(value, str) and key not in out:
                out[key] = value
    return out


def _weight_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = _read_json(index, "model.safetensors.index.json").get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ArchiveError("model.safetensors.index.json has no weight_map")
        names = sorted({str(v) for v in weight_map.values()})
        missing = [n for n in names if not (folder / n).is_file() or "/" in n]
        if missing:
            raise ArchiveError(f"model.safetensors.index.json names shards the archive lacks: {missing}")
        return [folder / n for n in names]
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ArchiveError(
            "the archive has no *.safetensors weights; save the model with "
            "save_pretrained(folder, safe_serialization=True)"
        )
    return files


def _count_parameters(files: list[Path]) -> int:
    parameters = 0
    for path in files:
        try:
            header = read_safetensors_header(path)
        except ModelFileError as exc:
            raise ArchiveError(f"{path.name}: {exc}") from exc
        parameters += sum(
            math.prod(shape) for dtype, shape in header.tensors.values() if dtype in FLOAT_DTYPES
        )
    if parameters == 0:
        raise ArchiveError("the model's safetensors files hold no floating-point weights")
    return parameters


def _context_length(config: dict[str, Any]) -> int | None:
    for key in ("max_position_embeddings", "n_positions", "n_ctx", "max_seq_len", "seq_length"):
        value = config.get(key)
        if isinstance(value, int) and value > 0:
            return value
    return None


def inspect_model_dir(folder: Path) -> HFModelInfo:
    """Describe the Hugging Face model in ``folder`` from ``config.json``, its tokenizer files and its
    safetensors headers (no weights loaded, no torch). Raises :class:`ArchiveError` saying what is wrong:
    no config, remote code (``auto_map``), an architecture that is not a transformers causal LM or sequence
    classifier, no safetensors weights, no ``tokenizer.json``..."""
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ArchiveError("the archive has no config.json; upload the folder save_pretrained writes")
    config = _read_json(config_path, "config.json")
    tokenizer_config_path = folder / "tokenizer_config.json"
    tokenizer_config = (
        _read_json(tokenizer_config_path, "tokenizer_config.json") if tokenizer_config_path.is_file() else {}
    )
    for name, data in (("config.json", config), ("tokenizer_config.json", tokenizer_config)):
        if "auto_map" in data or data.get("trust_remote_code"):
            raise ArchiveError(
                f"{name} asks for the model's own code (auto_map); Distill never runs remote code, so only "
                "architectures built into transformers are accepted"
            )
    architectures = config.get("architectures")
    if (
        not isinstance(architectures, list)
        or len(architectures) != 1
        or not isinstance(architectures[0], str)
    ):
        raise ArchiveError(
            "config.json must name exactly one class in 'architectures' (save_pretrained does)"
        )
    architecture = architectures[0]
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise ArchiveError("config.json has no 'model_type'")
    causal, classifiers = _known_classes()
    kind: Literal["causal_lm", "sequence_classification"]
    if architecture in causal:
        kind = "causal_lm"
    elif architecture in classifiers:
        kind = "sequence_classification"
    else:
        raise ArchiveError(
            f"config.json's architecture {architecture!r} is not a transformers causal LM "
            "(AutoModelForCausalLM) or sequence classifier (AutoModelForSequenceClassification)"
        )
    parameters = _count_parameters(_weight_files(folder))
    tokenizer_path = folder / "tokenizer.json"
    if not tokenizer_path.is_file():
        raise ArchiveError(
            "the archive has no tokenizer.json; save a fast tokenizer with tokenizer.save_pretrained(folder)"
        )
    tokenizer_json = _read_json(tokenizer_path, "tokenizer.json")
    fingerprint = tokenizer_fingerprint(tokenizer_json, _special_tokens(folder))
    vocab_size = config.get("vocab_size")
    if not isinstance(vocab_size, int) or vocab_size < 1:
        text_config = config.get("text_config")
        vocab_size = text_config.get("vocab_size") if isinstance(text_config, dict) else None
    if not isinstance(vocab_size, int) or vocab_size < 1:
        raise ArchiveError("config.json has no vocab_size")
    num_labels: int | None = None
    labels: list[str] | None = None
    if kind == "sequence_classification":
        id2label = config.get("id2label")
        if isinstance(id2label, dict) and id2label:
            try:
                ordered = sorted((int(k), str(v)) for k, v in id2label.items())
            except ValueError as exc:
                raise ArchiveError("config.json's id2label keys must be class indices") from exc
            if [i for i, _ in ordered] != list(range(len(ordered))):
                raise ArchiveError("config.json's id2label must number the classes 0, 1, ... without gaps")
            labels = [label for _, label in ordered]
            num_labels = len(labels)
        elif isinstance(config.get("num_labels"), int):
            num_labels = int(config["num_labels"])
        else:
            num_labels = 2  # transformers' default
        if num_labels < 2:
            raise ArchiveError("a sequence classifier needs at least 2 labels (config.json's id2label)")
    tokenizer_class = tokenizer_config.get("tokenizer_class")
    return HFModelInfo(
        kind=kind,
        architecture=architecture,
        model_type=model_type,
        parameters=parameters,
        vocab_size=vocab_size,
        tokenizer=tokenizer_class if isinstance(tokenizer_class, str) else "PreTrainedTokenizerFast",
        tokenizer_sha256=fingerprint,
        num_labels=num_labels,
        labels=labels,
        context_length=_context_length(config),
    )


# -- packing and the model card ---------------------------------------------------------------------------

_ZIP_EPOCH = (2020, 1, 1, 0, 0, 0)


def pack_folder(folder: Path) -> bytes:
    """A zip of ``folder``'s regular files (names relative to it, sorted, fixed timestamps: the same files
    give the same bytes). Links and anything that is not a regular file are left out."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_symlink() or not path.is_file():
                continue
            info = zipfile.ZipInfo(path.relative_to(folder).as_posix(), date_time=_ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            with path.open("rb") as src, zf.open(info, "w", force_zip64=True) as out:
                while chunk := src.read(_CHUNK):
                    out.write(chunk)
    return buffer.getvalue()


def _one_line(value: Any) -> str:
    return " ".join(str(value).split())


def _figure(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return _one_line(value)


def model_card(*, title: str, base: dict[str, Any]) -> str:
    """A README.md model card (markdown with the Hub's YAML front matter) for a student Distill made.

    ``base`` may hold: ``pipeline_tag`` (``text-classification``, ``text-generation``), ``job`` (its id),
    ``student`` (architecture, parameters...), ``teacher``, ``data``, ``method`` (strings or dicts),
    ``figures`` (name -> number: accuracies, losses...), ``labels`` (class names) and ``usage`` (a code
    snippet).
    """
    lines = ["---", "library_name: transformers"]
    if base.get("pipeline_tag"):
        lines.append(f"pipeline_tag: {_one_line(base['pipeline_tag'])}")
    lines += ["tags:", "- distill", "- knowledge-distillation", "---", "", f"# {_one_line(title)}", ""]
    job = base.get("job")
    lines.append(
        "A student model distilled by Distill "
        + (f"(job `{_one_line(job)}`)" if job else "")
        + ". It loads with transformers' `from_pretrained` after unpacking; the tokenizer is included."
    )
    for heading, key in (
        ("Student", "student"),
        ("Teacher", "teacher"),
        ("Data", "data"),
        ("Method", "method"),
    ):
        value = base.get(key)
        if value in (None, "", {}, []):
            continue
        lines += ["", f"## {heading}", ""]
        if isinstance(value, dict):
            lines += [f"- **{_one_line(k)}**: {_figure(v)}" for k, v in value.items() if v is not None]
        elif isinstance(value, list):
            lines += [f"- {_figure(v)}" for v in value]
        else:
            lines.append(_one_line(value))
    labels = base.get("labels")
    if labels:
        lines += ["", "## Labels", "", "| id | label |", "|---|---|"]
        lines += [f"| {i} | {_one_line(label).replace('|', '/')} |" for i, label in enumerate(labels)]
    figures = base.get("figures")
    if isinstance(figures, dict) and figures:
        lines += ["", "## Figures", "", "| measure | value |", "|---|---|"]
        lines += [f"| {_one_line(k)} | {_figure(v)} |" for k, v in figures.items() if v is not None]
    usage = base.get("usage")
    if usage:
        lines += ["", "## Use", "", "```python", str(usage).rstrip(), "```"]
    return "\n".join(lines) + "\n"
