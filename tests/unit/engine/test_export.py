"""worker.engine.export: model files round-trip and reject mismatched architectures; ONNX and TorchScript."""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import safetensors.torch
import torch

from distill.modelfile import FORMAT_KEY, METADATA_KEY, ModelFileError, inspect_model_file
from distill.nets import build_model, count_parameters
from distill.spec import CNNConfig, MLPConfig, StoredModelConfig
from worker.engine.export import (
    CHECK_BATCH,
    ExportError,
    check_onnx,
    check_torchscript,
    load_model,
    model_to_onnx,
    model_to_safetensors,
    model_to_torchscript,
)


@pytest.mark.parametrize(
    "cfg",
    [
        StoredModelConfig(model=MLPConfig(hidden=[16, 8], dropout=0.2), input_shape=[40], num_classes=10),
        StoredModelConfig(model=CNNConfig(channels=[4, 8], kernel_size=5), input_shape=[8, 8], num_classes=3),
    ],
)
def test_round_trip_same_logits(tmp_path: Path, cfg: StoredModelConfig) -> None:
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    path = tmp_path / "model.safetensors"
    path.write_bytes(model_to_safetensors(model, cfg))

    stored, params = inspect_model_file(path)  # the numpy-only view agrees
    assert stored == cfg and params == count_parameters(model)

    loaded, loaded_cfg = load_model(path)
    assert loaded_cfg == cfg and not loaded.training
    x = torch.randn(5, *cfg.input_shape)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def _lying_file(tmp_path: Path, model: torch.nn.Module, claimed: StoredModelConfig) -> Path:
    path = tmp_path / "lie.safetensors"
    path.write_bytes(model_to_safetensors(model, claimed))
    return path


def test_metadata_lying_about_shapes(tmp_path: Path) -> None:
    real = StoredModelConfig(model=MLPConfig(hidden=[16]), input_shape=[40], num_classes=10)
    claimed = StoredModelConfig(model=MLPConfig(hidden=[32]), input_shape=[40], num_classes=10)
    path = _lying_file(tmp_path, build_model(real), claimed)
    with pytest.raises(ModelFileError, match=r"tensor '1.weight' has shape \[16, 40\] .* needs \[32, 40\]"):
        load_model(path)


def test_metadata_lying_about_architecture(tmp_path: Path) -> None:
    real = StoredModelConfig(model=MLPConfig(hidden=[16]), input_shape=[40], num_classes=10)
    claimed = StoredModelConfig(model=CNNConfig(channels=[4]), input_shape=[40], num_classes=10)
    path = _lying_file(tmp_path, build_model(real), claimed)
    with pytest.raises(ModelFileError, match=r"missing .* unexpected"):
        load_model(path)


def test_half_precision_file_loads_as_float32(tmp_path: Path) -> None:
    cfg = StoredModelConfig(model=MLPConfig(hidden=[4]), input_shape=[3], num_classes=2)
    state = {k: v.to(torch.bfloat16) for k, v in build_model(cfg).state_dict().items()}
    path = tmp_path / "bf16.safetensors"
    meta = {FORMAT_KEY: "1", METADATA_KEY: cfg.model_dump_json()}
    safetensors.torch.save_file(state, str(path), metadata=meta)
    model, _ = load_model(path)
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_not_a_model_file(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(2)}, path)
    with pytest.raises(ModelFileError, match="PyTorch"):
        load_model(path)


EXPORT_CFGS = [
    StoredModelConfig(model=MLPConfig(hidden=[32, 16], dropout=0.3), input_shape=[40], num_classes=10),
    StoredModelConfig(model=CNNConfig(channels=[4, 8], kernel_size=4), input_shape=[40], num_classes=10),
    StoredModelConfig(model=CNNConfig(channels=[4, 8], kernel_size=3), input_shape=[8, 8], num_classes=10),
    StoredModelConfig(model=CNNConfig(channels=[3, 3, 3]), input_shape=[2, 5, 3], num_classes=2),
]


def _inputs(cfg: StoredModelConfig, n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *cfg.input_shape)).astype(np.float32)


@pytest.mark.parametrize("cfg", EXPORT_CFGS, ids=lambda c: f"{c.model.arch}{c.input_shape}")
def test_onnx_matches_pytorch(cfg: StoredModelConfig) -> None:
    torch.manual_seed(0)
    model = build_model(cfg).train()  # the export must switch dropout off without touching the model
    blob = model_to_onnx(model, cfg)
    assert model.training

    proto = onnx.load_from_string(blob)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta[FORMAT_KEY] == "1" and StoredModelConfig.model_validate_json(meta[METADATA_KEY]) == cfg
    assert [i.name for i in proto.graph.input] == ["input"] and [o.name for o in proto.graph.output] == [
        "logits"
    ]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"

    n = CHECK_BATCH + 3  # two onnxruntime calls of different batch sizes: the batch axis is dynamic
    check = check_onnx(blob, model, _inputs(cfg, n))
    print(f"{cfg.model.arch} {cfg.input_shape}: {check}")
    assert check["examples"] == n and check["top1_agreement"] == 1.0 and check["top1_mismatches"] == 0
    assert check["max_abs_logit_diff"] < 1e-4 and check["ok"]
    one = check_onnx(blob, model, _inputs(cfg, 1))
    assert one["examples"] == 1 and one["ok"]


def test_onnx_check_catches_a_different_model() -> None:
    cfg = EXPORT_CFGS[0]
    torch.manual_seed(0)
    exported, other = build_model(cfg), build_model(cfg)
    check = check_onnx(model_to_onnx(exported, cfg), other, _inputs(cfg, 200))
    assert check["top1_agreement"] < 0.9 and check["max_abs_logit_diff"] > 1e-2 and not check["ok"]


def test_onnx_falls_back_to_the_dynamo_exporter(monkeypatch: pytest.MonkeyPatch) -> None:
    """When the TorchScript-based exporter fails (or a later torch drops it), the dynamo one is tried."""
    import worker.engine.export as export

    cfg = StoredModelConfig(model=MLPConfig(hidden=[4]), input_shape=[3], num_classes=2)
    model = build_model(cfg)
    real = export._onnx_torchscript(model.eval(), torch.zeros(2, 3))
    calls: list[str] = []

    def gone(model: torch.nn.Module, example: torch.Tensor) -> bytes:
        calls.append("torchscript")
        raise RuntimeError("no TorchScript-based exporter")

    def dynamo(model: torch.nn.Module, example: torch.Tensor) -> bytes:
        calls.append("dynamo")
        return real

    monkeypatch.setattr(export, "_onnx_torchscript", gone)
    monkeypatch.setattr(export, "_onnx_dynamo", dynamo)
    assert check_onnx(model_to_onnx(model, cfg), model, _inputs(cfg, 20))["ok"]
    assert calls == ["torchscript", "dynamo"]

    def broken(model: torch.nn.Module, example: torch.Tensor) -> bytes:
        raise RuntimeError("onnxscript is missing")

    monkeypatch.setattr(export, "_onnx_dynamo", broken)
    with pytest.raises(ExportError, match=r"torchscript exporter: .*; dynamo exporter: .*onnxscript"):
        model_to_onnx(model, cfg)


@pytest.mark.skipif(
    not os.environ.get("DISTILL_SLOW_TESTS"), reason="the dynamo exporter takes 4-12 s; DISTILL_SLOW_TESTS=1"
)
@pytest.mark.parametrize("cfg", [EXPORT_CFGS[0], EXPORT_CFGS[2]], ids=["mlp", "cnn2d"])
def test_onnx_dynamo_exporter(cfg: StoredModelConfig) -> None:
    torch.manual_seed(0)
    model = build_model(cfg)
    check = check_onnx(model_to_onnx(model, cfg, exporter="dynamo"), model, _inputs(cfg, 300))
    assert check["ok"] and check["top1_agreement"] == 1.0 and check["max_abs_logit_diff"] < 1e-4


class _Broken(torch.nn.Module):
    """Neither scriptable (NumPy) nor traceable (raises)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values = np.asarray(x)
        raise RuntimeError(f"forward is broken on {values.shape}")


def test_export_errors() -> None:
    cfg = StoredModelConfig(model=MLPConfig(hidden=[4]), input_shape=[3], num_classes=2)
    with pytest.raises(ExportError, match=r"cannot export the mlp model to ONNX: torchscript exporter"):
        model_to_onnx(_Broken(), cfg, exporter="torchscript")
    with pytest.raises(ExportError, match="TorchScript"):
        model_to_torchscript(_Broken(), cfg)
    model = build_model(cfg)
    with pytest.raises(ExportError, match="onnxruntime cannot run"):
        check_onnx(b"not onnx", model, _inputs(cfg, 3))
    with pytest.raises(ExportError, match=r"torch\.jit cannot load"):
        check_torchscript(b"not torchscript", model, _inputs(cfg, 3))
    with pytest.raises(ExportError, match="batch of examples"):
        check_onnx(model_to_onnx(model, cfg), model, np.zeros((0, 3), dtype=np.float32))
    wrong = build_model(StoredModelConfig(model=MLPConfig(hidden=[4]), input_shape=[3], num_classes=5))
    with pytest.raises(ExportError, match="shape"):
        check_onnx(model_to_onnx(model, cfg), wrong, _inputs(cfg, 3))


@pytest.mark.parametrize("cfg", [EXPORT_CFGS[0], EXPORT_CFGS[2]], ids=["mlp", "cnn2d"])
def test_torchscript_matches_pytorch(cfg: StoredModelConfig) -> None:
    torch.manual_seed(0)
    model = build_model(cfg).train()
    blob = model_to_torchscript(model, cfg)
    assert model.training
    extra = {METADATA_KEY: "", FORMAT_KEY: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated, still supported
        loaded = torch.jit.load(io.BytesIO(blob), _extra_files=extra)
    assert StoredModelConfig.model_validate_json(extra[METADATA_KEY]) == cfg and extra[FORMAT_KEY] == b"1"
    assert not loaded.training
    check = check_torchscript(blob, model, _inputs(cfg, 300))
    assert check["examples"] == 300 and check["top1_agreement"] == 1.0 and check["ok"]
    assert check["max_abs_logit_diff"] < 1e-5
