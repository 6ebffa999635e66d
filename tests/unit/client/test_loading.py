"""``distill.load_model``: a file written the way the worker writes students loads as a ready module."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import safetensors.torch
import torch

import distill
from distill.loading import CLASS_NAMES_KEY, LoadedModel
from distill.modelfile import FORMAT_KEY, TEXT_FORMAT_VERSION
from distill.nets import build_model
from distill.spec import StoredModelConfig
from worker.engine.export import model_to_safetensors

CONFIGS = [
    {"model": {"arch": "mlp", "hidden": [16, 8]}, "input_shape": [8, 8], "num_classes": 10},
    {"model": {"arch": "cnn", "channels": [4, 8], "kernel_size": 3}, "input_shape": [40], "num_classes": 3},
    {"model": {"arch": "cnn", "channels": [4]}, "input_shape": [2, 6, 6], "num_classes": 2},
]


def student(
    tmp_path: Path, raw: dict[str, object], metadata: dict[str, str] | None = None
) -> tuple[Path, torch.nn.Module]:
    cfg = StoredModelConfig.model_validate(raw)
    torch.manual_seed(0)
    net = build_model(cfg).eval()
    path = tmp_path / "model.safetensors"
    path.write_bytes(model_to_safetensors(net, cfg))
    if metadata:
        tensors = safetensors.torch.load_file(str(path))
        with safetensors.safe_open(str(path), framework="pt") as f:
            meta = {**(f.metadata() or {}), **metadata}
        safetensors.torch.save_file(tensors, str(path), metadata=meta)
    return path, net


@pytest.mark.parametrize("raw", CONFIGS)
def test_a_student_loads_with_its_shape_classes_and_outputs(tmp_path: Path, raw: dict[str, object]) -> None:
    path, net = student(tmp_path, raw)
    model = distill.load_model(path)
    assert isinstance(model, LoadedModel) and isinstance(model, torch.nn.Module)
    assert not model.training
    assert model.input_shape == tuple(raw["input_shape"])  # type: ignore[arg-type]
    assert model.class_names == [str(i) for i in range(model.num_classes)]
    x = torch.randn(5, *model.input_shape)
    with torch.no_grad():
        assert torch.allclose(model(x), net(x), atol=1e-6)
    assert model.predict(x) == [str(int(i)) for i in net(x).argmax(dim=1)]
    assert torch.allclose(model.predict_proba(x).sum(dim=1), torch.ones(5))


def test_recorded_class_names_are_used(tmp_path: Path) -> None:
    names = ["cat", "dog", "eel"]
    path, _ = student(tmp_path, CONFIGS[1], {CLASS_NAMES_KEY: json.dumps(names)})
    model = distill.load_model(path)
    assert model.class_names == names
    assert set(model.predict(model.example_input(4))) <= set(names)


def test_inputs_of_the_wrong_shape_say_what_is_expected(tmp_path: Path) -> None:
    path, _ = student(tmp_path, CONFIGS[0])
    with pytest.raises(ValueError, match=r"expected inputs of shape \[n, 8, 8\]"):
        distill.load_model(path)(torch.zeros(2, 64))


def test_weights_that_contradict_the_metadata_are_refused(tmp_path: Path) -> None:
    path, net = student(tmp_path, CONFIGS[0])
    other = StoredModelConfig.model_validate({**CONFIGS[0], "model": {"arch": "mlp", "hidden": [4]}})
    tensors = {k: v.contiguous() for k, v in net.state_dict().items()}
    safetensors.torch.save_file(
        tensors, str(path), metadata={FORMAT_KEY: "1", "distill.config": other.model_dump_json()}
    )
    with pytest.raises(ValueError, match="do not match"):
        distill.load_model(path)


def test_a_text_model_says_what_it_needs(tmp_path: Path) -> None:
    path = tmp_path / "text.safetensors"
    safetensors.torch.save_file({"w": torch.zeros(2)}, str(path), metadata={FORMAT_KEY: TEXT_FORMAT_VERSION})
    with pytest.raises(ValueError, match="transformers"):
        distill.load_model(path)


def test_a_file_that_is_not_a_distill_model(tmp_path: Path) -> None:
    path = tmp_path / "plain.safetensors"
    safetensors.torch.save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(ValueError, match="not a Distill model"):
        distill.load_model(path)


def test_the_loaded_model_exports_to_onnx_and_agrees(tmp_path: Path) -> None:
    onnxruntime = pytest.importorskip("onnxruntime")
    path, _ = student(tmp_path, CONFIGS[1])
    model = distill.load_model(path)
    onnx_path = tmp_path / "model.onnx"
    torch.onnx.export(
        model,
        (model.example_input(),),
        str(onnx_path),
        input_names=["x"],
        output_names=["logits"],
        dynamic_axes={"x": {0: "batch"}},
        dynamo=False,
    )
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    x = torch.randn(7, *model.input_shape)
    (logits,) = session.run(None, {"x": x.numpy()})
    with torch.no_grad():
        assert torch.allclose(torch.from_numpy(logits), model(x), atol=1e-5)
