"""worker.engine.export: model files round-trip and reject mismatched architectures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import safetensors.torch
import torch

from distill.modelfile import FORMAT_KEY, METADATA_KEY, ModelFileError, inspect_model_file
from distill.spec import CNNConfig, MLPConfig, StoredModelConfig
from worker.engine.export import load_model, model_to_safetensors
from worker.engine.models import build_model, count_parameters


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Tiny models run fastest single-threaded; several threads thrash on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
