"""Save a model as a self-describing ``.safetensors`` file, and load one (see :mod:`distill.modelfile`).

Also export it to ONNX (``model.onnx``) and TorchScript (``model.pt``), and check each export against
PyTorch on real inputs (onnxruntime / ``torch.jit.load``).
"""

from __future__ import annotations

import copy
import io
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import safetensors.torch
import torch
from torch import nn

from distill.modelfile import FORMAT_KEY, FORMAT_VERSION, METADATA_KEY, ModelFileError, inspect_model_file
from distill.nets import build_model
from distill.spec import StoredModelConfig


def model_to_safetensors(model: nn.Module, cfg: StoredModelConfig) -> bytes:
    """The model file's bytes: the ``state_dict`` (contiguous CPU tensors) with the config as metadata."""
    tensors = {name: t.detach().to("cpu").contiguous() for name, t in model.state_dict().items()}
    metadata = {FORMAT_KEY: FORMAT_VERSION, METADATA_KEY: cfg.model_dump_json()}
    return safetensors.torch.save(tensors, metadata=metadata)


def load_model(path: Path) -> tuple[nn.Module, StoredModelConfig]:
    """Build the model a file describes and load its weights (float32, CPU, eval mode).

    Raises :class:`ModelFileError` when the file is not a Distill model or its tensors do not match the
    architecture its metadata declares.
    """
    cfg, _ = inspect_model_file(path)
    model = build_model(cfg)
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    try:
        state = safetensors.torch.load_file(str(path), device="cpu")
    except Exception as exc:  # inspect_model_file has checked the header; this is a damaged payload
        raise ModelFileError(f"cannot read the model's tensors: {exc}") from exc

    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ModelFileError(
            f"the tensors do not match the model config in the metadata ({cfg.model.arch}, "
            f"input_shape {cfg.input_shape}, {cfg.num_classes} classes): "
            f"missing {missing or 'none'}, unexpected {unexpected or 'none'}"
        )
    for name, shape in expected.items():
        actual = tuple(state[name].shape)
        if actual != shape:
            raise ModelFileError(
                f"tensor {name!r} has shape {list(actual)} but the model config in the metadata needs "
                f"{list(shape)}"
            )
    model.load_state_dict({name: t.to(torch.float32) for name, t in state.items()}, strict=True)
    model.eval()
    return model, cfg


# -- ONNX and TorchScript ---------------------------------------------------------------------------------

ONNX_OPSET = 18
"""ONNX opset of ``model.onnx`` (onnxruntime 1.18+ runs it; the dynamo exporter's lowest)."""
ONNX_INPUT = "input"
ONNX_OUTPUT = "logits"
CHECK_BATCH = 1024
"""Examples per onnxruntime / TorchScript call in the checks."""
CHECK_ATOL = 1e-3
"""Largest logit difference a check accepts (float32 kernels differ in summation order, ~1e-6 here)."""

OnnxExporter = Literal["auto", "torchscript", "dynamo"]


class ExportError(RuntimeError):
    """A model could not be exported, or its export could not be loaded and run; the message says why."""


def _cpu_eval_copy(model: nn.Module) -> nn.Module:
    """A float32 CPU copy in eval mode (dropout off), leaving ``model`` (maybe on a GPU) untouched."""
    return copy.deepcopy(model).to("cpu", torch.float32).eval()


def _example(cfg: StoredModelConfig) -> torch.Tensor:
    # batch 2, not 1: tracers may specialise a size-1 dimension instead of keeping it symbolic
    return torch.zeros(2, *cfg.input_shape)


def _onnx_torchscript(model: nn.Module, example: torch.Tensor) -> bytes:
    """The TorchScript-based exporter: fast (tens of ms) and needs nothing beyond torch."""
    with tempfile.TemporaryDirectory(prefix="distill-onnx-") as tmp:
        path = Path(tmp) / "model.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # DeprecationWarning: the dynamo exporter is the new default
            torch.onnx.export(
                model,
                (example,),
                path,
                dynamo=False,
                input_names=[ONNX_INPUT],
                output_names=[ONNX_OUTPUT],
                dynamic_axes={ONNX_INPUT: {0: "batch"}, ONNX_OUTPUT: {0: "batch"}},
                opset_version=ONNX_OPSET,
                do_constant_folding=True,
            )
        return path.read_bytes()


def _onnx_dynamo(model: nn.Module, example: torch.Tensor) -> bytes:
    """The torch.export-based exporter (needs onnxscript): slower (seconds), the one torch develops."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            input_names=[ONNX_INPUT],
            output_names=[ONNX_OUTPUT],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            opset_version=ONNX_OPSET,
            verbose=False,
        )
    if program is None:
        raise ExportError("the dynamo ONNX exporter returned no program")
    return bytes(program.model_proto.SerializeToString())


def model_to_onnx(model: nn.Module, cfg: StoredModelConfig, *, exporter: OnnxExporter = "auto") -> bytes:
    """``model.onnx``: float32 input ``input`` ``[batch, *input_shape]``, output ``logits``.

    ``logits`` is ``[batch, num_classes]``; the batch axis is dynamic. The config JSON is stored in the
    model's metadata (``distill.config``), as in the ``.safetensors`` file. ``exporter="auto"`` uses
    torch's TorchScript-based exporter (tens of ms) and falls back to the dynamo one (torch.export +
    onnxscript, seconds) if that fails or is gone from this torch.
    Raises :class:`ExportError`.
    """
    try:
        import onnx
    except ImportError as exc:
        raise ExportError("ONNX export needs the 'onnx' package (pip install onnx)") from exc

    cpu_model = _cpu_eval_copy(model)
    example = _example(cfg)
    exporters: dict[str, Callable[[nn.Module, torch.Tensor], bytes]] = {
        "torchscript": _onnx_torchscript,
        "dynamo": _onnx_dynamo,
    }
    names = list(exporters) if exporter == "auto" else [exporter]
    errors: list[str] = []
    raw: bytes | None = None
    for name in names:
        try:
            raw = exporters[name](cpu_model, example)
            break
        except Exception as exc:  # each exporter fails in its own ways (tracing, lowering, missing package)
            errors.append(f"{name} exporter: {type(exc).__name__}: {exc}")
    if raw is None:
        raise ExportError(f"cannot export the {cfg.model.arch} model to ONNX: " + "; ".join(errors))

    try:
        proto = onnx.load_from_string(raw)
        onnx.checker.check_model(proto)
    except Exception as exc:
        raise ExportError(f"the exported ONNX model is invalid: {exc}") from exc
    for key, value in ((FORMAT_KEY, FORMAT_VERSION), (METADATA_KEY, cfg.model_dump_json())):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "distill"
    return bytes(proto.SerializeToString())


def model_to_torchscript(model: nn.Module, cfg: StoredModelConfig) -> bytes:
    """``model.pt``: a scripted (else traced) CPU float32 module, with ``distill.config`` in ``_extra_files``.

    Load it with ``torch.jit.load(path, _extra_files={"distill.config": ""})``; no Distill code is needed.
    Raises :class:`ExportError`.
    """
    cpu_model = _cpu_eval_copy(model)
    extra = {FORMAT_KEY: FORMAT_VERSION, METADATA_KEY: cfg.model_dump_json()}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated in favour of torch.export, still supported
        try:
            module: torch.jit.ScriptModule = torch.jit.script(cpu_model)
        except Exception as script_error:
            try:  # models are fixed stacks with no data-dependent control flow: a trace is exact
                module = torch.jit.trace(cpu_model, _example(cfg), check_trace=False)
            except Exception as exc:
                raise ExportError(
                    f"cannot export the {cfg.model.arch} model to TorchScript: script failed "
                    f"({script_error}); trace failed ({exc})"
                ) from exc
        try:
            torch.jit.save(module, buffer, _extra_files=extra)
        except Exception as exc:
            raise ExportError(f"cannot save the TorchScript model: {exc}") from exc
    return buffer.getvalue()


def _reference_logits(model: nn.Module, x: np.ndarray) -> np.ndarray:
    cpu_model = _cpu_eval_copy(model)
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(x), CHECK_BATCH):
            outputs.append(cpu_model(torch.from_numpy(x[start : start + CHECK_BATCH])).numpy())
    return np.concatenate(outputs)


def compare_logits(
    runtime: str, reference: np.ndarray, exported: np.ndarray, *, atol: float = CHECK_ATOL
) -> dict[str, Any]:
    """Agreement of the exported model's logits with PyTorch's.

    ``ok`` when logits are within ``atol`` and every top-class disagreement is a near tie in PyTorch's
    logits (top-two margin within the largest difference seen), which rounding can legitimately flip.
    """
    if exported.shape != reference.shape:
        raise ExportError(
            f"{runtime} returned logits of shape {list(exported.shape)}, PyTorch {list(reference.shape)}"
        )
    ref_top = reference.argmax(axis=1)
    exp_top = exported.argmax(axis=1)
    differ = ref_top != exp_top
    max_diff = float(np.abs(reference.astype(np.float64) - exported).max())
    top2 = np.sort(reference, axis=1)[:, -2:]  # [second, first]; models have at least two classes
    near_tie = (top2[:, 1] - top2[:, 0]) <= 2 * max_diff
    return {
        "runtime": runtime,
        "examples": len(reference),
        "top1_agreement": float(1.0 - differ.mean()),
        "top1_mismatches": int(differ.sum()),
        "max_abs_logit_diff": max_diff,
        "tolerance": atol,
        "ok": bool(max_diff <= atol and not bool((differ & ~near_tie).any())),
    }


def _check_inputs(x: np.ndarray) -> np.ndarray:
    if x.ndim < 2 or len(x) == 0:
        raise ExportError(f"the check needs a batch of examples, got an array of shape {list(x.shape)}")
    return np.ascontiguousarray(x, dtype=np.float32)


def check_onnx(onnx_bytes: bytes, model: nn.Module, x: np.ndarray) -> dict[str, Any]:
    """Run ``model.onnx`` with onnxruntime (CPU) on ``x`` and compare with ``model`` in PyTorch.

    Returns ``runtime``, ``examples``, ``top1_agreement`` (share of examples whose top class is the same),
    ``top1_mismatches``, ``max_abs_logit_diff``, ``tolerance`` and ``ok``. Raises :class:`ExportError`
    when onnxruntime cannot load or run the model.
    """
    session, runtime = onnx_session(onnx_bytes)
    x = _check_inputs(x)
    try:
        input_name = session.get_inputs()[0].name
        outputs = [
            np.asarray(session.run(None, {input_name: x[start : start + CHECK_BATCH]})[0])
            for start in range(0, len(x), CHECK_BATCH)
        ]
    except Exception as exc:
        raise ExportError(f"onnxruntime cannot run the ONNX model: {exc}") from exc
    return compare_logits(runtime, _reference_logits(model, x), np.concatenate(outputs))


def onnx_session(onnx_bytes: bytes) -> tuple[Any, str]:
    """An onnxruntime CPU session for ``onnx_bytes`` (as many threads as torch uses) and the runtime's name
    for reports. Raises :class:`ExportError` when onnxruntime is missing or cannot load the model."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise ExportError("checking ONNX needs the 'onnxruntime' package (pip install onnxruntime)") from exc
    try:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = max(1, torch.get_num_threads())
        options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(
            onnx_bytes, sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:
        raise ExportError(f"onnxruntime cannot run the ONNX model: {exc}") from exc
    return session, f"onnxruntime {onnxruntime.__version__}"


def check_torchscript(ts_bytes: bytes, model: nn.Module, x: np.ndarray) -> dict[str, Any]:
    """Load the TorchScript export with ``torch.jit.load`` and compare with ``model`` on ``x``.

    Same keys as :func:`check_onnx`. Raises :class:`ExportError` when it cannot be loaded or run, or when
    its ``distill.config`` extra file is missing.
    """
    x = _check_inputs(x)
    extra = {METADATA_KEY: ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loaded = torch.jit.load(io.BytesIO(ts_bytes), map_location="cpu", _extra_files=extra)
        loaded.eval()
        with torch.inference_mode():
            outputs = [
                loaded(torch.from_numpy(x[start : start + CHECK_BATCH])).numpy()
                for start in range(0, len(x), CHECK_BATCH)
            ]
    except Exception as exc:
        raise ExportError(f"torch.jit cannot load or run the TorchScript model: {exc}") from exc
    if not extra[METADATA_KEY]:
        raise ExportError(f"the TorchScript model has no {METADATA_KEY!r} extra file")
    return compare_logits(
        f"torch.jit {torch.__version__}", _reference_logits(model, x), np.concatenate(outputs)
    )
