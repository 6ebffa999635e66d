"""distill.results: the typed job result and report keep every key the API and clients read."""

from __future__ import annotations

from distill.results import JobResult, Report


def test_a_result_round_trips_with_its_json_keys_none_values_and_unknown_keys() -> None:
    raw = {
        "test_accuracy": 0.97,
        "parameters": 3274,
        "speedup": None,  # a text job whose student latency could not be measured says so
        "model_config": {"model": {"arch": "mlp"}, "input_shape": [40], "num_classes": 10},
        "teacher_ece": 0.03,  # teacher_* keys follow the student section: not all are named
    }
    result = JobResult.model_validate(raw)
    assert result.stored_model_config is not None and result.parameters == 3274
    assert result.to_json() == raw


def test_a_report_round_trips_and_types_its_sections() -> None:
    raw = {
        "version": 1,
        "student": {"test_accuracy": 0.9, "cpu_latency_ms": 0.02, "bytes_on_disk": 13000},
        "teacher": None,
        "history": [{"epoch": 1.0, "train_loss": 0.5, "val_accuracy": 0.8}],
        "data": {"splits": {"validation": "builtin test split", "test": "builtin test split"}},
        "kind": "text",
    }
    report = Report.model_validate(raw)
    assert report.student is not None and report.student.cpu_latency_ms == 0.02
    assert report.to_json() == raw
