"""Which format a dataset file is in: the one place that looks at its first bytes.

The file's name picks the format when it has a known extension; the first bytes then only have to agree
(a zip named ``.csv``, a Parquet file named ``.npz``, a pickle anywhere are refused here, saying what the
file really is). Without a known extension the first bytes decide. Readers trust the answer.
"""

from __future__ import annotations

from pathlib import Path

from distill.datasets.types import DatasetError

EXTENSIONS = {
    ".csv": "csv",
    ".npz": "npz",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
NPY_MAGIC = b"\x93NUMPY"
PARQUET_MAGIC = b"PAR1"
SNIFF_BYTES = 64 * 1024
UPLOAD_HINT = "upload a CSV (header row), an NPZ, a Parquet file or a JSONL file"


def detect_format(path: Path, filename: str) -> str:
    """One of :data:`distill.datasets.types.FORMATS`: by the extension of ``filename`` (checked against the
    first bytes), else by sniffing the first bytes."""
    with path.open("rb") as f:
        head = f.read(SNIFF_BYTES)
    if not head:
        raise DatasetError(f"{filename!r}: the file is empty; {UPLOAD_HINT}")
    _reject_known_binary(head, filename)
    suffix = Path(filename).suffix.lower()
    named = EXTENSIONS.get(suffix)
    if named is not None:
        _check_named(head, filename, named, suffix)
        return named
    if head.startswith(ZIP_MAGICS):
        return "npz"
    if head.startswith(PARQUET_MAGIC):
        return "parquet"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        # A multi-byte character cut at the end of the sniffed block is fine.
        try:
            text = head[:-4].decode("utf-8")
        except UnicodeDecodeError:
            text = ""
    start = text.lstrip("\ufeff \t\r\n")
    if start.startswith("{"):
        return "jsonl"
    if start.startswith("["):
        raise DatasetError(
            f"{filename!r} looks like a JSON array; write JSON Lines instead (one JSON object per line, "
            'e.g. {"x": [0.5, 1.0], "label": 2}) and name the file .jsonl'
        )
    if text and "\x00" not in text and ("," in text or "\n" in text):
        return "csv"
    raise DatasetError(
        f"{filename!r}: unknown dataset format; upload a .csv (header row, optional 'label' column), "
        "an .npz made with np.savez(path, x=..., y=...), a .parquet or a .jsonl file"
    )


def _check_named(head: bytes, filename: str, named: str, suffix: str) -> None:
    """The first bytes agree with the format the extension names, or say what the file is instead."""
    is_zip, is_parquet = head.startswith(ZIP_MAGICS), head.startswith(PARQUET_MAGIC)
    if named != "npz" and is_zip:
        raise DatasetError(
            f"{filename!r} is named {suffix} but is a zip archive; if it is an NPZ, upload it with a .npz "
            "name"
        )
    if named != "parquet" and is_parquet:
        raise DatasetError(
            f"{filename!r} is named {suffix} but is a Parquet file; upload it with a .parquet name"
        )
    if named == "npz" and not is_zip:
        raise DatasetError(
            f"{filename!r} is not an NPZ (zip) archive; save it with np.savez(path, x=inputs, y=labels)"
        )
    if named == "parquet" and not is_parquet:
        raise DatasetError(
            f"{filename!r} is not a Parquet file (it does not start with 'PAR1'); write it with "
            "pandas.DataFrame.to_parquet or pyarrow.parquet.write_table"
        )


def _reject_known_binary(head: bytes, filename: str) -> None:
    if head.startswith(NPY_MAGIC):
        raise DatasetError(
            f"{filename!r} is a single .npy array, not an .npz archive; save an .npz with "
            "np.savez(path, x=inputs, y=labels)"
        )
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        raise DatasetError(
            f"{filename!r} is a Python pickle; pickles are never loaded. Save arrays with "
            "np.savez(path, x=inputs, y=labels) or write a CSV"
        )
