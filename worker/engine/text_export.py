"""Export a text student (:class:`~worker.engine.text.TextEncoder` or
:class:`~worker.engine.text.TextClassifier`) to ONNX and TorchScript, and check each export against
PyTorch on real texts.

Both exports take ``input_ids`` and ``attention_mask`` (int64, ``[batch, sequence]``, both axes dynamic)
as the model's tokenizer makes them, and return ``logits`` ``[batch, classes]`` (a classifier) or
``sentence_embedding`` ``[batch, dim]`` (an embedding model: L2-normalised when the model normalises).
Each file carries the same metadata as the model's ``.safetensors`` (format, config, tokenizer files), so
it is usable with nothing else: ONNX in ``metadata_props``, TorchScript in ``_extra_files``.

The ONNX export uses torch's TorchScript-based exporter, as :func:`worker.engine.export.model_to_onnx`
does (falling back to the dynamo one); a trace needs an example batch, which has padding so that the
traced graph keeps the attention-mask path.
"""

from __future__ import annotations

import copy
import io
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from worker.engine.export import CHECK_ATOL, ONNX_OPSET, ExportError, compare_logits, onnx_session
from worker.engine.text import (
    DEFAULT_MAX_LENGTH,
    TextClassifier,
    TextModel,
    Tokenizer,
    text_model_metadata,
    tokenize,
)

TEXT_ONNX_INPUTS = ("input_ids", "attention_mask")
CHECK_BATCH = 64
"""Texts per onnxruntime / TorchScript call in the checks (batches of similar lengths, padded)."""
MAX_CHECK_TEXTS = 2048
"""The checks run on at most this many held-out texts (the first ones)."""
MIN_COSINE = 0.9999
"""Smallest cosine between an exported embedding and PyTorch's that a check accepts."""

TextOnnxExporter = Literal["auto", "torchscript", "dynamo"]


def text_output_name(model: nn.Module) -> str:
    """``logits`` for a classifier, ``sentence_embedding`` for an embedding model."""
    return "logits" if isinstance(model, TextClassifier) else "sentence_embedding"


def _cpu_eval_copy(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).to("cpu", torch.float32).eval()


def _example(tokenizer: Tokenizer, max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two texts of different lengths: batch 2 (a size-1 axis may be specialised) and real padding."""
    tokens = tokenize(
        tokenizer, ["a short text", "a somewhat longer text, with a few more words in it"], max_length
    )
    ids, mask = tokens.batch([0, 1])
    if bool(mask.all()):  # max_length cut both to one length: pad the first one by hand
        ids, mask = ids.clone(), mask.clone()
        ids[0, -1], mask[0, -1] = tokens.pad_id, 0
    return ids, mask


def _onnx_torchscript(model: nn.Module, example: tuple[torch.Tensor, torch.Tensor], output: str) -> bytes:
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}}
    with tempfile.TemporaryDirectory(prefix="distill-text-onnx-") as tmp:
        path = Path(tmp) / "model.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer and deprecation warnings from torch and transformers
            torch.onnx.export(
                model,
                example,
                path,
                dynamo=False,
                input_names=list(TEXT_ONNX_INPUTS),
                output_names=[output],
                dynamic_axes={**axes, output: {0: "batch"}},
                opset_version=ONNX_OPSET,
                do_constant_folding=True,
            )
        return path.read_bytes()


def _onnx_dynamo(model: nn.Module, example: tuple[torch.Tensor, torch.Tensor], output: str) -> bytes:
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence", max=4096)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model,
            example,
            dynamo=True,
            input_names=list(TEXT_ONNX_INPUTS),
            output_names=[output],
            dynamic_shapes=({0: batch, 1: sequence}, {0: batch, 1: sequence}),
            opset_version=ONNX_OPSET,
            verbose=False,
        )
    if program is None:
        raise ExportError("the dynamo ONNX exporter returned no program")
    return bytes(program.model_proto.SerializeToString())


def text_to_onnx(
    model: TextModel,
    tokenizer: Tokenizer,
    *,
    max_length: int = DEFAULT_MAX_LENGTH,
    metadata: dict[str, str] | None = None,
    exporter: TextOnnxExporter = "auto",
) -> bytes:
    """``model.onnx`` of a text model (see the module docstring). ``metadata``: the file's metadata
    (default: :func:`~worker.engine.text.text_model_metadata`). Raises :class:`ExportError`."""
    try:
        import onnx
    except ImportError as exc:
        raise ExportError("ONNX export needs the 'onnx' package (pip install onnx)") from exc

    cpu_model = _cpu_eval_copy(model)
    example = _example(tokenizer, max_length)
    output = text_output_name(model)
    exporters: dict[str, Callable[[nn.Module, tuple[torch.Tensor, torch.Tensor], str], bytes]] = {
        "torchscript": _onnx_torchscript,
        "dynamo": _onnx_dynamo,
    }
    errors: list[str] = []
    raw: bytes | None = None
    for name in list(exporters) if exporter == "auto" else [exporter]:
        try:
            raw = exporters[name](cpu_model, example, output)
            break
        except Exception as exc:  # each exporter fails in its own ways (tracing, lowering, missing package)
            errors.append(f"{name} exporter: {type(exc).__name__}: {exc}")
    if raw is None:
        raise ExportError("cannot export the text model to ONNX: " + "; ".join(errors))
    try:
        proto = onnx.load_from_string(raw)
        onnx.checker.check_model(proto)
    except Exception as exc:
        raise ExportError(f"the exported ONNX model is invalid: {exc}") from exc
    if metadata is None:
        metadata = text_model_metadata(model, tokenizer, max_length=max_length)
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "distill"
    return bytes(proto.SerializeToString())


def text_to_torchscript(
    model: TextModel,
    tokenizer: Tokenizer,
    *,
    max_length: int = DEFAULT_MAX_LENGTH,
    metadata: dict[str, str] | None = None,
) -> bytes:
    """``model.torchscript.pt``: a traced CPU float32 module ``(input_ids, attention_mask) -> output``, with
    the metadata in ``_extra_files`` (``torch.jit.load(path, _extra_files={"distill.text_config": ""})``).

    Traced (``transformers`` models do not script); the trace has no data-dependent branches left for
    these encoders, which the check confirms on texts of other lengths and batch sizes.
    Raises :class:`ExportError`.
    """
    cpu_model = _cpu_eval_copy(model)
    if metadata is None:
        metadata = text_model_metadata(model, tokenizer, max_length=max_length)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            module = torch.jit.trace(cpu_model, _example(tokenizer, max_length), check_trace=False)
            torch.jit.save(module, buffer, _extra_files=metadata)
        except Exception as exc:
            raise ExportError(f"cannot export the text model to TorchScript: {exc}") from exc
    return buffer.getvalue()


# -- checks ---------------------------------------------------------------------------------------------

Runner = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _batches(
    tokenizer: Tokenizer, texts: Sequence[str], max_length: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    if len(texts) == 0:
        raise ExportError("the check needs at least one text")
    tokens = tokenize(tokenizer, list(texts)[:MAX_CHECK_TEXTS], max_length)
    order = sorted(range(len(tokens)), key=lambda i: len(tokens.ids[i]))
    out = []
    for start in range(0, len(order), CHECK_BATCH):
        ids, mask = tokens.batch(order[start : start + CHECK_BATCH])
        out.append((ids.numpy(), mask.numpy()))
    return out


def _run_both(
    model: nn.Module, run: Runner, batches: list[tuple[np.ndarray, np.ndarray]]
) -> tuple[np.ndarray, np.ndarray]:
    """PyTorch's outputs and the export's, batch by batch (same rows in the same order)."""
    cpu_model = _cpu_eval_copy(model)
    reference, exported = [], []
    with torch.inference_mode():
        for ids, mask in batches:
            reference.append(cpu_model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy())
            exported.append(np.asarray(run(ids, mask), dtype=np.float32))
    return np.concatenate(reference), np.concatenate(exported)


def compare_embeddings(
    runtime: str, reference: np.ndarray, exported: np.ndarray, *, atol: float = CHECK_ATOL
) -> dict[str, Any]:
    """Agreement of exported embeddings with PyTorch's: largest absolute difference and the smallest
    cosine between matching rows; ``ok`` when within ``atol`` and at least :data:`MIN_COSINE`."""
    if exported.shape != reference.shape:
        raise ExportError(
            f"{runtime} returned embeddings of shape {list(exported.shape)}, PyTorch {list(reference.shape)}"
        )
    max_diff = float(np.abs(reference.astype(np.float64) - exported).max())
    cosine = F.cosine_similarity(
        torch.from_numpy(reference).double(), torch.from_numpy(exported).double(), dim=-1
    )
    min_cosine = float(cosine.min())
    return {
        "runtime": runtime,
        "examples": len(reference),
        "max_abs_diff": max_diff,
        "min_cosine": min_cosine,
        "mean_cosine": float(cosine.mean()),
        "tolerance": atol,
        "min_cosine_required": MIN_COSINE,
        "ok": bool(max_diff <= atol and min_cosine >= MIN_COSINE),
    }


def _compare(model: nn.Module, runtime: str, reference: np.ndarray, exported: np.ndarray) -> dict[str, Any]:
    if isinstance(model, TextClassifier):
        return compare_logits(runtime, reference, exported)
    return compare_embeddings(runtime, reference, exported)


def check_text_onnx(
    onnx_bytes: bytes,
    model: TextModel,
    tokenizer: Tokenizer,
    texts: Sequence[str],
    *,
    max_length: int = DEFAULT_MAX_LENGTH,
) -> dict[str, Any]:
    """Run ``model.onnx`` with onnxruntime (CPU) on ``texts`` (tokenized as the job does) and compare with
    ``model`` in PyTorch. A classifier: ``top1_agreement``, ``top1_mismatches``, ``max_abs_logit_diff``
    (:func:`worker.engine.export.compare_logits`); an embedding model: ``max_abs_diff``, ``min_cosine``,
    ``mean_cosine``. Both: ``runtime``, ``examples``, ``tolerance``, ``ok``. Raises :class:`ExportError`
    when onnxruntime cannot load or run the model."""
    session, runtime = onnx_session(onnx_bytes)
    batches = _batches(tokenizer, texts, max_length)

    def run(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return np.asarray(session.run(None, {"input_ids": ids, "attention_mask": mask})[0])

    try:
        reference, exported = _run_both(model, run, batches)
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"onnxruntime cannot run the ONNX model: {exc}") from exc
    return _compare(model, runtime, reference, exported)


def check_text_torchscript(
    ts_bytes: bytes,
    model: TextModel,
    tokenizer: Tokenizer,
    texts: Sequence[str],
    *,
    max_length: int = DEFAULT_MAX_LENGTH,
) -> dict[str, Any]:
    """Load the TorchScript export with ``torch.jit.load`` and compare with ``model`` on ``texts``; the same
    keys as :func:`check_text_onnx`. Raises :class:`ExportError`."""
    batches = _batches(tokenizer, texts, max_length)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loaded = torch.jit.load(io.BytesIO(ts_bytes), map_location="cpu")
        loaded.eval()

        def run(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
            return np.asarray(loaded(torch.from_numpy(ids), torch.from_numpy(mask)).numpy())

        reference, exported = _run_both(model, run, batches)
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"torch.jit cannot load or run the TorchScript model: {exc}") from exc
    return _compare(model, f"torch.jit {torch.__version__}", reference, exported)


TextExporter = Callable[..., bytes]
TextChecker = Callable[..., dict[str, Any]]
TEXT_EXPORTERS: dict[str, tuple[str, TextExporter, TextChecker]] = {
    "onnx": ("model.onnx", text_to_onnx, check_text_onnx),
    "torchscript": ("model.torchscript.pt", text_to_torchscript, check_text_torchscript),
}
"""Per ``export`` format of the spec: the artifact's name, the exporter and its check."""
