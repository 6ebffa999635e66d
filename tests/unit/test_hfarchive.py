"""Hugging Face model archives: strict extraction, inspection (no torch), packing and the model card."""

from __future__ import annotations

import gzip
import io
import json
import os
import stat
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest
from lm_support import archive, char_tokenizer, save_pretrained, tiny_causal_lm, tiny_classifier

from distill.hfarchive import (
    HF_ARCHIVE_ARTIFACT,
    ArchiveError,
    HFModelInfo,
    extract_archive,
    inspect_model_dir,
    is_archive_name,
    model_card,
    pack_folder,
)

LIMIT = 64 * 1024 * 1024


@pytest.fixture(scope="module")
def tok() -> Any:
    return char_tokenizer()


@pytest.fixture(scope="module")
def gpt2(tok: Any) -> Any:
    return tiny_causal_lm(tok, arch="gpt2")


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory: pytest.TempPathFactory, gpt2: Any, tok: Any) -> Path:
    return save_pretrained(gpt2, tok, tmp_path_factory.mktemp("gpt2") / "model")


def _write(tmp_path: Path, blob: bytes, name: str = "upload") -> Path:
    path = tmp_path / name
    path.write_bytes(blob)
    return path


def _extract(tmp_path: Path, blob: bytes, **limits: int) -> Path:
    source = _write(tmp_path, blob)
    return extract_archive(source, tmp_path / "out", max_bytes=limits.get("max_bytes", LIMIT),
                           max_files=limits.get("max_files", 64))  # fmt: skip


def _zip(files: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return buffer.getvalue()


def _tar(members: list[tarfile.TarInfo], data: dict[str, bytes], gz: bool = False) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz" if gz else "w") as tf:
        for member in members:
            payload = data.get(member.name)
            tf.addfile(member, io.BytesIO(payload) if payload is not None else None)
    return buffer.getvalue()


def _reg(name: str, data: bytes) -> tuple[tarfile.TarInfo, dict[str, bytes]]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, {name: data}


def _folder_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_archive_names() -> None:
    assert all(is_archive_name(n) for n in ("m.zip", "M.ZIP", "m.tar", "m.tar.gz", "m.tgz"))
    assert not any(is_archive_name(n) for n in ("m.safetensors", "m.gz", "m.tar.bz2", "zip"))
    assert HF_ARCHIVE_ARTIFACT == "model.hf.zip"


@pytest.mark.parametrize("fmt", ["zip", "tar", "tar.gz"])
@pytest.mark.parametrize("prefix", ["", "my-model/"])
def test_extracts_what_save_pretrained_wrote(
    tmp_path: Path, gpt2: Any, tok: Any, fmt: Any, prefix: str
) -> None:
    folder = _extract(tmp_path, archive(gpt2, tok, fmt=fmt, prefix=prefix))
    assert folder == tmp_path / "out" / "model"
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
    info = inspect_model_dir(folder)
    assert info.kind == "causal_lm" and info.architecture == "GPT2LMHeadModel" and info.model_type == "gpt2"
    assert info.parameters == sum(p.numel() for p in gpt2.parameters())
    assert info.vocab_size == len(tok) and info.context_length == 128
    assert info.num_labels is None and info.labels is None


def test_llama_and_gpt2_with_one_tokenizer_share_its_fingerprint(
    tmp_path: Path, gpt2_folder: Path, tok: Any
) -> None:
    llama = tiny_causal_lm(tok, arch="llama")
    info = inspect_model_dir(save_pretrained(llama, tok, tmp_path / "llama"))
    assert info.kind == "causal_lm" and info.architecture == "LlamaForCausalLM"
    assert info.parameters == sum(p.numel() for p in llama.parameters())
    assert info.tokenizer_sha256 == inspect_model_dir(gpt2_folder).tokenizer_sha256
    other = char_tokenizer("abcdefghij ")
    other_info = inspect_model_dir(save_pretrained(tiny_causal_lm(other), other, tmp_path / "other"))
    assert other_info.tokenizer_sha256 != info.tokenizer_sha256


def test_a_bert_classifier_with_its_labels(tmp_path: Path, tok: Any) -> None:
    model = tiny_classifier(tok, num_labels=3)
    model.config.id2label = {0: "neg", 1: "neutral", 2: "pos"}
    model.config.label2id = {v: k for k, v in model.config.id2label.items()}
    info = inspect_model_dir(_extract(tmp_path, archive(model, tok, fmt="tar.gz")))
    assert info.kind == "sequence_classification" and info.architecture == "BertForSequenceClassification"
    assert info.num_labels == 3 and info.labels == ["neg", "neutral", "pos"]
    assert info.parameters == sum(p.numel() for p in model.parameters())
    meta = info.to_meta()
    assert meta["format"] == "hf" and json.loads(json.dumps(meta)) == meta
    assert HFModelInfo.from_meta(meta) == info


def test_inspection_never_imports_torch(gpt2_folder: Path) -> None:
    code = (
        "import sys; from pathlib import Path; from distill.hfarchive import inspect_model_dir; "
        f"info = inspect_model_dir(Path({str(gpt2_folder)!r})); "
        "assert 'torch' not in sys.modules, 'torch imported'; print(info.architecture)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "GPT2LMHeadModel"


# -- refusals ---------------------------------------------------------------------------------------------

CONFIG = b'{"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}'


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"../config.json": CONFIG}, "'..'"),
        ({"a/../../config.json": CONFIG}, "'..'"),
        ({"/etc/config.json": CONFIG}, "absolute path"),
        ({"C:/config.json": CONFIG}, "absolute path"),
        ({"config.json": CONFIG, "pytorch_model.bin": b"\x80\x04"}, "pickled weights"),
        ({"config.json": CONFIG, "model.pt": b"\x80\x04"}, "pickled weights"),
        ({"config.json": CONFIG, "modeling_evil.py": b"import os"}, "is code"),
        ({"config.json": CONFIG, "notes.exe": b"MZ"}, "not a file a model archive may hold"),
        ({"a/config.json": CONFIG, "b/tokenizer.json": b"{}"}, "more than one folder"),
        ({"config.json": CONFIG, "a/tokenizer.json": b"{}"}, "more than one folder"),
        ({"a/b/config.json": CONFIG}, "nested too deep"),
        ({"config.json": CONFIG, "a/config.json": CONFIG}, "more than one folder"),
        ({}, "empty"),
    ],
)
def test_refuses_bad_zip_entries(tmp_path: Path, files: dict[str, bytes], message: str) -> None:
    with pytest.raises(ArchiveError, match=message.replace("(", r"\(").replace(".", r"\.")):
        _extract(tmp_path, _zip(files))
    assert not any((tmp_path / "out" / "model").iterdir())


def test_refuses_a_zip_symlink(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match="is a link"):
        _extract(tmp_path, _zip({"config.json": CONFIG}, links={"tokenizer.json": "/etc/passwd"}))


def test_refuses_tar_links_and_devices(tmp_path: Path) -> None:
    config, data = _reg("config.json", CONFIG)
    for kind, target in ((tarfile.SYMTYPE, "/etc/passwd"), (tarfile.LNKTYPE, "config.json"),
                         (tarfile.CHRTYPE, ""), (tarfile.FIFOTYPE, "")):  # fmt: skip
        link = tarfile.TarInfo("tokenizer.json")
        link.type, link.linkname = kind, target
        with pytest.raises(ArchiveError, match=r"is a link|a device"):
            extract_archive(_write(tmp_path, _tar([config, link], data), f"t{kind!r}"),
                            tmp_path / f"out{kind!r}", max_bytes=LIMIT)  # fmt: skip


def test_refuses_a_tar_escape(tmp_path: Path) -> None:
    member, data = _reg("../../config.json", CONFIG)
    with pytest.raises(ArchiveError, match=r"\.\."):
        _extract(tmp_path, _tar([member], data, gz=True))
    assert not (tmp_path / "config.json").exists()


def test_limits_on_files_and_bytes_before_writing(tmp_path: Path) -> None:
    many = {f"shard-{i}.safetensors": b"x" for i in range(5)}
    with pytest.raises(ArchiveError, match="5 files, more than the limit of 4"):
        _extract(tmp_path, _zip(many), max_files=4)
    big = {"config.json": CONFIG, "model.safetensors": b"\0" * 5000}
    with pytest.raises(ArchiveError, match="more than the limit of 4096"):
        extract_archive(_write(tmp_path, _zip(big), "big"), tmp_path / "out2", max_bytes=4096)
    assert list((tmp_path / "out2" / "model").iterdir()) == []


def test_a_zip_whose_headers_lie_is_stopped_while_writing(tmp_path: Path) -> None:
    blob = bytearray(_zip({"config.json": CONFIG, "model.safetensors": b"\0" * 100_000}))
    # shrink the declared uncompressed size of model.safetensors in the central directory to 10 bytes
    at = blob.rfind(b"PK\x01\x02", 0, blob.rfind(b"model.safetensors"))
    blob[at + 24 : at + 28] = (10).to_bytes(4, "little")
    with pytest.raises(ArchiveError):
        _extract(tmp_path, bytes(blob), max_bytes=1000)
    written = tmp_path / "out" / "model" / "model.safetensors"
    assert not written.exists() or written.stat().st_size <= 1000 + (1 << 20)


def test_a_tar_gz_bomb_stops_at_the_limit(tmp_path: Path) -> None:
    # a gzip of 50 MB of tar records that are not the end of the archive: a regular file whose header
    # declares a small size, followed by junk that is never a valid header
    header, data = _reg("config.json", CONFIG)
    raw = _tar([header], data)[:-1024]  # drop the end-of-archive blocks
    payload = raw + b"\1" * (50 * 1024 * 1024)
    bomb = gzip.compress(payload, compresslevel=9)
    assert len(bomb) < 1_000_000
    with pytest.raises(ArchiveError):
        _extract(tmp_path, bomb, max_bytes=4096)


def test_not_an_archive(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match="not a readable"):
        _extract(tmp_path, b"just some text, not an archive")


def _folder_with(tmp_path: Path, src: Path, **config_changes: Any) -> Path:
    folder = tmp_path / "edited"
    folder.mkdir()
    for name, data in _folder_files(src).items():
        (folder / name).write_bytes(data)
    config = json.loads((folder / "config.json").read_text())
    for key, value in config_changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"auto_map": {"AutoModelForCausalLM": "modeling_evil.Evil"}}, "remote code"),
        ({"architectures": ["GPT2Model"]}, "not a transformers causal LM"),
        ({"architectures": ["EvilForCausalLM"]}, "not a transformers causal LM"),
        ({"architectures": None}, "exactly one class"),
        ({"model_type": None}, "model_type"),
    ],
)
def test_refuses_configs(tmp_path: Path, gpt2_folder: Path, changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ArchiveError, match=message):
        inspect_model_dir(_folder_with(tmp_path, gpt2_folder, **changes))


def test_refuses_missing_weights_or_tokenizer(tmp_path: Path, gpt2_folder: Path) -> None:
    folder = _folder_with(tmp_path, gpt2_folder)
    (folder / "tokenizer.json").unlink()
    with pytest.raises(ArchiveError, match=r"no tokenizer\.json"):
        inspect_model_dir(folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(ArchiveError, match=r"no \*\.safetensors weights"):
        inspect_model_dir(folder)
    (folder / "model.safetensors").write_bytes(b"\x80\x04 a pickle")
    with pytest.raises(ArchiveError, match="pickle"):
        inspect_model_dir(folder)
    (folder / "config.json").unlink()
    with pytest.raises(ArchiveError, match=r"no config\.json"):
        inspect_model_dir(folder)


def test_tokenizer_config_with_remote_code(tmp_path: Path, gpt2_folder: Path) -> None:
    folder = _folder_with(tmp_path, gpt2_folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["auto_map"] = {"AutoTokenizer": ["tok.Evil", None]}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(ArchiveError, match=r"tokenizer_config\.json asks for the model's own code"):
        inspect_model_dir(folder)


# -- packing and the card ---------------------------------------------------------------------------------


def test_pack_folder_round_trips_and_is_deterministic(tmp_path: Path, gpt2_folder: Path) -> None:
    blob = pack_folder(gpt2_folder)
    os.utime(gpt2_folder / "config.json", (0, 0))
    assert pack_folder(gpt2_folder) == blob
    folder = _extract(tmp_path, blob)
    assert _folder_files(folder) == _folder_files(gpt2_folder)
    assert inspect_model_dir(folder) == inspect_model_dir(gpt2_folder)


def test_model_card_names_teacher_data_method_and_figures() -> None:
    card = model_card(
        title="Sentiment student",
        base={
            "pipeline_tag": "text-classification",
            "job": "job_123",
            "teacher": {"file": "file_abc", "architecture": "BertForSequenceClassification"},
            "data": {"train": "file_data", "train_examples": 1200},
            "method": "soft targets at temperature 2",
            "figures": {"test_accuracy": 0.91234, "parameters": 1234567},
            "labels": ["neg", "pos"],
        },
    )
    assert card.startswith("---\nlibrary_name: transformers\npipeline_tag: text-classification\n")
    needles = ("# Sentiment student", "job_123", "## Teacher", "file_abc", "## Data", "1,200", "## Method")
    needles += ("temperature 2", "| test_accuracy | 0.9123 |", "1,234,567", "| 1 | pos |")
    for needle in needles:
        assert needle in card
