"""distill.nets and worker.engine.device."""

from __future__ import annotations

import pytest
import torch

from distill.nets import build_model, count_parameters
from distill.spec import CNNConfig, MLPConfig, StoredModelConfig
from worker.engine.device import resolve_device


def cfg(model: MLPConfig | CNNConfig, shape: list[int], classes: int = 10) -> StoredModelConfig:
    return StoredModelConfig(model=model, input_shape=shape, num_classes=classes)


@pytest.mark.parametrize(
    ("model", "shape"),
    [
        (MLPConfig(hidden=[100, 100]), [40]),
        (MLPConfig(hidden=[], dropout=0.5), [8, 8]),
        (MLPConfig(hidden=[7]), [3, 4, 5]),
        (CNNConfig(channels=[32, 64, 64]), [40]),
        (CNNConfig(channels=[8, 16]), [8, 8]),
        (CNNConfig(channels=[8, 16, 16]), [8, 8]),
        (CNNConfig(channels=[4, 4, 4, 4, 4], kernel_size=4), [8, 8]),
        (CNNConfig(channels=[4], kernel_size=15), [5]),
        (CNNConfig(channels=[4, 4]), [3, 8, 8]),
        (CNNConfig(channels=[4, 4]), [1, 1]),
        (CNNConfig(channels=[4, 4], kernel_size=2), [7, 3]),
    ],
)
def test_shapes(model: MLPConfig | CNNConfig, shape: list[int]) -> None:
    m = build_model(cfg(model, shape, classes=3))
    out = m(torch.randn(2, *shape))
    assert out.shape == (2, 3)


def test_parameter_count_and_names() -> None:
    mlp = build_model(cfg(MLPConfig(hidden=[100, 100]), [40]))
    assert count_parameters(mlp) == (40 * 100 + 100) + (100 * 100 + 100) + (100 * 10 + 10)
    # Dropout rate never changes parameter names.
    names = list(mlp.state_dict())
    assert names == list(build_model(cfg(MLPConfig(hidden=[100, 100], dropout=0.3), [40])).state_dict())
    cnn = build_model(cfg(CNNConfig(channels=[4, 8], kernel_size=3), [8, 8]))
    assert count_parameters(cnn) == (1 * 4 * 9 + 4) + (4 * 8 * 9 + 8) + (8 * 10 + 10)
    assert isinstance(cnn, torch.nn.Sequential) and isinstance(cnn[1], torch.nn.Conv2d)
    cnn1d = build_model(cfg(CNNConfig(channels=[4]), [40]))
    assert isinstance(cnn1d, torch.nn.Sequential) and isinstance(cnn1d[1], torch.nn.Conv1d)
    cnn3 = build_model(cfg(CNNConfig(channels=[4]), [3, 8, 8]))
    assert isinstance(cnn3, torch.nn.Sequential)
    first = cnn3[0]
    assert isinstance(first, torch.nn.Conv2d) and first.in_channels == 3


def test_same_seed_same_weights() -> None:
    c = cfg(CNNConfig(channels=[4, 8]), [40])
    torch.manual_seed(5)
    a = build_model(c).state_dict()
    torch.manual_seed(5)
    b = build_model(c).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu")
    with pytest.raises(ValueError, match="invalid device"):
        resolve_device("cuda:x")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda:1")
    else:
        assert resolve_device("cuda:0") == torch.device("cuda:0")
        with pytest.raises(ValueError, match="CUDA device"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")


def test_engine_imports_no_service_libraries() -> None:
    import subprocess
    import sys

    mods = "device, ensemble, evaluate, export, loop, losses, objective, signals, train"
    code = (
        f"import sys; from worker.engine import {mods}; import distill.nets, distill.datasets.builtins; "
        "print(sorted(m for m in ('celery', 'sqlalchemy', 'boto3', 'fastapi') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "cfg",
    [
        StoredModelConfig(model=MLPConfig(hidden=[]), input_shape=[5], num_classes=3),
        StoredModelConfig(model=MLPConfig(hidden=[16, 8]), input_shape=[8, 8], num_classes=10),
        StoredModelConfig(model=CNNConfig(channels=[4, 8]), input_shape=[40], num_classes=10),
        StoredModelConfig(model=CNNConfig(channels=[4, 8, 8]), input_shape=[8, 8], num_classes=10),
        StoredModelConfig(model=CNNConfig(channels=[4, 8, 8, 8]), input_shape=[3, 2, 2], num_classes=10),
    ],
)
def test_layer_names_known_without_torch_match_the_built_model(cfg):
    from worker.engine.features import layer_names

    assert cfg.layer_names() == layer_names(build_model(cfg))
