"""worker.engine.report: the evaluation report and the flat result the API shows."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from distill.datasets import ArrayDataset
from distill.nets import build_model
from distill.spec import MLPConfig, StoredModelConfig
from worker.engine.evaluate import summarize
from worker.engine.export import check_onnx, model_to_onnx, model_to_safetensors
from worker.engine.report import BASELINE_DESCRIPTION, build_report, describe_export, render_summary

CPU = torch.device("cpu")

OLD_KEYS = {
    "test_accuracy",
    "parameters",
    "cpu_latency_ms",
    "cpu_throughput",
    "teacher_test_accuracy",
    "teacher_parameters",
    "agreement_with_teacher",
    "teacher_cpu_latency_ms",
    "teacher_cpu_throughput",
}


# What a digits job with a [256, 256] teacher, a [32] student and baseline: true measures (rounded).
STUDENT = {
    "test_accuracy": 0.9555555555555556,
    "ece": 0.031,
    "parameters": 2410,
    "bytes_on_disk": 10_152,
    "cpu_latency_ms": 0.025,
    "cpu_throughput": 1_200_000.0,
    "teacher_test_accuracy": 0.9777777777777777,
    "teacher_ece": 0.012,
    "teacher_parameters": 85_002,
    "teacher_bytes_on_disk": 340_488,
    "agreement_with_teacher": 0.9611111111111111,
    "teacher_cpu_latency_ms": 0.1,
    "teacher_cpu_throughput": 150_000.0,
    "compression_ratio": 85_002 / 2410,
    "speedup": 4.0,
}
BASELINE = {
    "test_accuracy": 0.9333333333333333,
    "ece": np.float32(0.052),  # NumPy scalars are converted
    "parameters": 2410,
    "bytes_on_disk": 10_152,
    "cpu_latency_ms": 0.025,
    "cpu_throughput": 1_190_000.0,
    "agreement_with_teacher": 0.94,
    "teacher_test_accuracy": 0.9777777777777777,  # a baseline summarized with the teacher: dropped
}
ONNX_BLOB = b"\x08\x09onnx bytes"
EXPORTS = {
    "safetensors": describe_export("model.safetensors", b"s" * 10_152),
    "onnx": describe_export(
        "model.onnx",
        ONNX_BLOB,
        {"examples": 360, "top1_agreement": 1.0, "max_abs_logit_diff": 1.2e-7, "ok": True},
    ),
    "torchscript": {"file": "model.pt", "error": "cannot export the mlp model to TorchScript: ..."},
}
CACHE = {"hit": True, "key": "sha256:ab12", "examples": 1797}
CHOSEN = {
    "temperature": 4.0,
    "alpha": 0.7,
    "auto": ["alpha"],
    "trials": [{"alpha": 0.5, "val_accuracy": 0.94}, {"alpha": 0.7, "val_accuracy": 0.96}],
}


def test_realistic_report() -> None:
    report = build_report(
        student=STUDENT,
        teacher={"source": {"job": "job_123"}},
        baseline=BASELINE,
        exports=EXPORTS,
        cache=CACHE,
        chosen=CHOSEN,
    )
    text = json.dumps(report, allow_nan=False)  # plain JSON
    assert json.loads(text) == report

    assert report["version"] == 1
    assert all(report["student"][k] == STUDENT[k] for k in report["student"])
    assert set(report["student"]) == {
        "test_accuracy",
        "ece",
        "parameters",
        "bytes_on_disk",
        "cpu_latency_ms",
        "cpu_throughput",
        "agreement_with_teacher",
    }
    assert report["teacher"] == {
        "test_accuracy": 0.9777777777777777,
        "ece": 0.012,
        "parameters": 85_002,
        "bytes_on_disk": 340_488,
        "cpu_latency_ms": 0.1,
        "cpu_throughput": 150_000.0,
        "source": {"job": "job_123"},
    }
    baseline = report["baseline"]
    assert baseline["test_accuracy"] == pytest.approx(0.9333333) and baseline["ece"] == pytest.approx(0.052)
    assert "teacher_test_accuracy" not in baseline and baseline["description"] == BASELINE_DESCRIPTION

    cmp = report["comparison"]
    assert cmp["gain_over_baseline_points"] == pytest.approx(2.2222222)  # 95.56 % vs 93.33 %
    assert cmp["teacher_baseline_gap_points"] == pytest.approx(4.4444444)
    assert cmp["gap_recovered"] == pytest.approx(0.5)  # half the teacher's lead over the baseline
    assert cmp["accuracy_drop_vs_teacher_points"] == pytest.approx(2.2222222)
    assert cmp["ece_change_vs_baseline"] == pytest.approx(0.031 - 0.052)
    assert cmp["compression_ratio"] == pytest.approx(35.27, abs=0.01)
    assert cmp["size_ratio"] == pytest.approx(340_488 / 10_152)
    assert cmp["speedup"] == pytest.approx(4.0) and cmp["throughput_ratio"] == pytest.approx(8.0)
    assert cmp["agreement_with_teacher"] == pytest.approx(0.9611111)
    assert cmp["baseline_agreement_with_teacher"] == pytest.approx(0.94)

    assert report["exports"]["onnx"] == {
        "file": "model.onnx",
        "bytes": len(ONNX_BLOB),
        "sha256": hashlib.sha256(ONNX_BLOB).hexdigest(),
        "check": {"examples": 360, "top1_agreement": 1.0, "max_abs_logit_diff": 1.2e-7, "ok": True},
        "format": "onnx",
    }
    assert report["exports"]["safetensors"]["bytes"] == 10_152
    assert "error" in report["exports"]["torchscript"]
    assert report["teacher_cache"] == CACHE
    assert report["hyperparameters"]["alpha"] == 0.7
    assert report["hyperparameters"]["why"] == "best of 2 trial runs on the validation split"

    flat = render_summary(report)
    json.dumps(flat, allow_nan=False)
    assert set(flat) >= OLD_KEYS
    assert {k: flat[k] for k in OLD_KEYS} == {k: STUDENT[k] for k in OLD_KEYS}
    assert flat["baseline_test_accuracy"] == pytest.approx(0.9333333)
    assert flat["gain_over_baseline"] == pytest.approx(2.2222222)
    assert flat["gap_recovered"] == pytest.approx(0.5)
    assert flat["ece"] == 0.031 and flat["teacher_ece"] == 0.012
    assert flat["compression_ratio"] == pytest.approx(35.27, abs=0.01) and flat["speedup"] == 4.0
    assert flat["teacher_cache_hit"] is True
    assert flat["chosen_temperature"] == 4.0 and flat["chosen_alpha"] == 0.7
    assert all(isinstance(v, bool | int | float | str) for v in flat.values())  # flat: no sections


def test_student_only_report() -> None:
    """No teacher, no baseline, no exports besides safetensors: the comparison is all None."""
    student = {
        k: STUDENT[k] for k in ("test_accuracy", "ece", "parameters", "cpu_latency_ms", "cpu_throughput")
    }
    student["ece"] = float("nan")  # non-finite floats become null
    report = build_report(
        student=student,
        teacher=None,
        baseline=None,
        exports={"safetensors": {"file": "model.safetensors", "data": b"abc"}},
        cache=None,
        chosen={"temperature": 4.0, "alpha": 0.9},
    )
    json.dumps(report, allow_nan=False)
    assert report["teacher"] is None and report["baseline"] is None and report["teacher_cache"] is None
    assert report["student"]["ece"] is None
    assert all(v is None for v in report["comparison"].values())
    assert report["exports"]["safetensors"]["bytes"] == 3
    assert report["exports"]["safetensors"]["sha256"] == hashlib.sha256(b"abc").hexdigest()
    assert report["hyperparameters"]["why"] == "as set in the job spec"

    flat = render_summary(report)
    assert set(flat) == {
        "test_accuracy",
        "parameters",
        "cpu_latency_ms",
        "cpu_throughput",
        "chosen_temperature",
        "chosen_alpha",
    }


def test_gap_recovered_needs_a_teacher_ahead_of_the_baseline() -> None:
    report = build_report(
        student={"test_accuracy": 0.9, "teacher_test_accuracy": 0.88},
        teacher=None,
        baseline={"test_accuracy": 0.89},
        exports={},
        cache={"hit": False, "key": "k"},
        chosen=None,
    )
    assert report["comparison"]["gap_recovered"] is None
    assert report["comparison"]["gain_over_baseline_points"] == pytest.approx(1.0)
    flat = render_summary(report)
    assert flat["teacher_cache_hit"] is False and "gap_recovered" not in flat


def test_report_from_real_measurements() -> None:
    """summarize, the exports and their checks feed build_report as the runner would."""
    rng = np.random.default_rng(0)
    val = ArrayDataset(rng.standard_normal((64, 12)).astype(np.float32), rng.integers(0, 3, 64))
    cfg = StoredModelConfig(model=MLPConfig(hidden=[8]), input_shape=[12], num_classes=3)
    teacher_cfg = StoredModelConfig(model=MLPConfig(hidden=[64, 64]), input_shape=[12], num_classes=3)
    torch.manual_seed(0)
    student, teacher, scratch = build_model(cfg), build_model(teacher_cfg), build_model(cfg)
    onnx_blob = model_to_onnx(student, cfg)
    report = build_report(
        student=summarize(student, val, CPU, teacher, cfg=cfg, teacher_cfg=teacher_cfg),
        teacher={"source": {"file": "file_1"}},
        baseline=summarize(scratch, val, CPU, cfg=cfg),
        exports={
            "safetensors": describe_export("model.safetensors", model_to_safetensors(student, cfg)),
            "onnx": describe_export("model.onnx", onnx_blob, check_onnx(onnx_blob, student, val.x)),
        },
        cache={"hit": False, "key": "abc"},
        chosen=None,
    )
    json.dumps(report, allow_nan=False)
    assert report["student"]["bytes_on_disk"] == report["exports"]["safetensors"]["bytes"]
    assert report["comparison"]["compression_ratio"] > 10
    assert report["exports"]["onnx"]["check"]["ok"] and report["exports"]["onnx"]["check"]["examples"] == 64
    flat = render_summary(report)
    assert set(flat) >= OLD_KEYS | {"ece", "baseline_test_accuracy", "gain_over_baseline", "speedup"}
