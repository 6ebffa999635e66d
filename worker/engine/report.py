"""The job report (``report.json``'s evaluation part) and the flat ``result`` the API shows.

:func:`build_report` assembles what the engine measured: the distilled student, its teacher, the same
student trained from scratch (``baseline: true``), how they compare, the exported files and their checks,
the teacher-logit cache and the hyperparameters chosen. :func:`render_summary` flattens it into the job's
``result`` (the keys :func:`worker.engine.evaluate.summarize` has always returned, plus the new ones).

Everything returned is plain JSON (``json.dumps(..., allow_nan=False)`` works): NumPy and torch scalars
become Python numbers, and non-finite floats become ``null``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

import numpy as np
import torch

REPORT_VERSION = 1

TEACHER_PREFIX = "teacher_"
COMPARISON_KEYS = frozenset({"compression_ratio", "speedup"})
"""Keys of a :func:`summarize` dict that compare student and teacher rather than describe the student."""

BASELINE_DESCRIPTION = (
    "the same student architecture trained from scratch on the hard labels only (no teacher), with the "
    "same data, training settings and seed"
)


def _jsonable(value: Any) -> Any:
    """``value`` as plain JSON types; non-finite floats become None, unknown objects their ``str``."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.ndarray | torch.Tensor):
        array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value
        return _jsonable(array.tolist())
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes | bytearray):
        return f"<{len(value)} bytes>"
    if isinstance(value, PurePath):
        return str(value)
    return str(value)


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON types (non-finite floats become None): what ``report.json`` holds."""
    return _jsonable(value)


def _number(section: Mapping[str, Any] | None, key: str) -> float | None:
    """``section[key]`` when it is a finite number (not a bool), else None."""
    if section is None:
        return None
    value = section.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def describe_export(filename: str, blob: bytes, check: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One entry of ``build_report(exports=...)``: file name, size, SHA-256 and the check's results."""
    entry: dict[str, Any] = {
        "file": filename,
        "bytes": len(blob),
        "sha256": hashlib.sha256(blob).hexdigest(),
    }
    if check is not None:
        entry["check"] = dict(check)
    return entry


def _export_entry(fmt: str, entry: Mapping[str, Any]) -> dict[str, Any]:
    """Normalise an export entry: raw bytes under ``"data"`` are replaced by their size and SHA-256."""
    out = {k: v for k, v in entry.items() if k != "data"}
    data = entry.get("data")
    if isinstance(data, bytes | bytearray):
        out["bytes"] = len(data)
        out["sha256"] = hashlib.sha256(data).hexdigest()
    out.setdefault("format", fmt)
    return out


def _student_section(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The model's own metrics: every key of a :func:`summarize` dict that is not about its teacher."""
    return {k: v for k, v in metrics.items() if not k.startswith(TEACHER_PREFIX) and k not in COMPARISON_KEYS}


def _teacher_section(student: Mapping[str, Any], teacher: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The teacher's metrics (``teacher_*`` keys of the student's summary) merged with ``teacher``."""
    section = {k[len(TEACHER_PREFIX) :]: v for k, v in student.items() if k.startswith(TEACHER_PREFIX)}
    if teacher is not None:
        section.update(teacher)
    return section or None


def _comparison(
    student: Mapping[str, Any], teacher: Mapping[str, Any] | None, baseline: Mapping[str, Any] | None
) -> dict[str, Any]:
    s_acc = _number(student, "test_accuracy")
    t_acc = _number(teacher, "test_accuracy")
    b_acc = _number(baseline, "test_accuracy")

    def points(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else 100.0 * (a - b)

    gap = None if t_acc is None or b_acc is None else t_acc - b_acc
    s_ece, b_ece = _number(student, "ece"), _number(baseline, "ece")
    return {
        "gain_over_baseline_points": points(s_acc, b_acc),
        "teacher_baseline_gap_points": None if gap is None else 100.0 * gap,
        "gap_recovered": (
            (s_acc - b_acc) / gap if s_acc is not None and b_acc is not None and gap and gap > 0 else None
        ),
        "accuracy_drop_vs_teacher_points": points(t_acc, s_acc),
        "agreement_with_teacher": _number(student, "agreement_with_teacher"),
        "baseline_agreement_with_teacher": _number(baseline, "agreement_with_teacher"),
        "ece_change_vs_baseline": None if s_ece is None or b_ece is None else s_ece - b_ece,
        "compression_ratio": _ratio(_number(teacher, "parameters"), _number(student, "parameters")),
        "size_ratio": _ratio(_number(teacher, "bytes_on_disk"), _number(student, "bytes_on_disk")),
        "speedup": _ratio(_number(teacher, "cpu_latency_ms"), _number(student, "cpu_latency_ms")),
        "throughput_ratio": _ratio(_number(student, "cpu_throughput"), _number(teacher, "cpu_throughput")),
    }


def _hyperparameters(chosen: Mapping[str, Any]) -> dict[str, Any]:
    section = dict(chosen)
    why = section.pop("why", None) or section.pop("reason", None)
    if not why:
        trials = section.get("trials")
        if isinstance(trials, list | tuple) and trials:
            why = f"best of {len(trials)} trial runs on the validation split"
        else:
            why = "as set in the job spec"
    section["why"] = why
    return section


def build_report(
    *,
    student: dict[str, Any],
    teacher: dict[str, Any] | None,
    baseline: dict[str, Any] | None,
    exports: dict[str, dict[str, Any]],
    cache: dict[str, Any] | None,
    chosen: dict[str, Any] | None,
) -> dict[str, Any]:
    """The evaluation report, as plain JSON.

    ``student``: :func:`~worker.engine.evaluate.summarize` of the distilled student (its ``teacher_*``
    keys fill the teacher section). ``teacher``: more about the teacher (``source``, ...; overrides those
    keys), or None. ``baseline``: ``summarize`` of the same student trained from scratch, or None.
    ``exports``: per format (``"safetensors"``, ``"onnx"``, ``"torchscript"``) an entry from
    :func:`describe_export` (or with raw ``"data"`` bytes, hashed here; an ``"error"`` when it failed).
    ``cache``: the teacher-logit cache's ``{"hit": bool, "key": str, ...}``, or None. ``chosen``: the
    distillation hyperparameters used (``temperature``, ``alpha``, ``trials``, ``why``...), or None.

    Sections: ``version``, ``student``, ``teacher``, ``baseline``, ``comparison`` (every key always
    present, None when it does not apply), ``exports``, ``teacher_cache``, ``hyperparameters``.
    """
    student, teacher, baseline = _jsonable(student), _jsonable(teacher), _jsonable(baseline)
    teacher_section = _teacher_section(student, teacher)
    student_section = _student_section(student)
    baseline_section = None
    if baseline is not None:
        baseline_section = {**_student_section(baseline), "description": BASELINE_DESCRIPTION}
    cache_section = None
    if cache is not None:
        cache_section = {**cache, "hit": bool(cache.get("hit", False))}
    report = {
        "version": REPORT_VERSION,
        "student": student_section,
        "teacher": teacher_section,
        "baseline": baseline_section,
        "comparison": _comparison(student_section, teacher_section, baseline_section),
        "exports": {fmt: _export_entry(fmt, entry) for fmt, entry in exports.items()},
        "teacher_cache": cache_section,
        "hyperparameters": None if chosen is None else _hyperparameters(chosen),
    }
    result: dict[str, Any] = _jsonable(report)
    return result


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, bool | int | float | str)


def render_summary(report: Mapping[str, Any]) -> dict[str, Any]:
    """The flat ``result`` the API shows, from a :func:`build_report` report.

    Every scalar of the student section under its own name (``test_accuracy``, ``ece``, ``parameters``,
    ``bytes_on_disk``, ``cpu_latency_ms``, ``cpu_throughput``, ``agreement_with_teacher``), the teacher's
    as ``teacher_*``, and when they apply: ``baseline_test_accuracy``, ``baseline_ece``,
    ``gain_over_baseline`` (accuracy points: 2.5 means +2.5 points over the baseline), ``gap_recovered``,
    ``compression_ratio``, ``speedup``, ``teacher_cache_hit`` and ``chosen_<name>`` for each chosen
    hyperparameter. Keys that do not apply are left out rather than set to None.
    """
    flat: dict[str, Any] = {}
    for key, value in (report.get("student") or {}).items():
        if _is_scalar(value) and value is not None:
            flat[key] = value
    for key, value in (report.get("teacher") or {}).items():
        if _is_scalar(value) and value is not None:
            flat[TEACHER_PREFIX + key] = value
    baseline = report.get("baseline") or {}
    for key in ("test_accuracy", "ece"):
        if baseline.get(key) is not None:
            flat[f"baseline_{key}"] = baseline[key]
    comparison = report.get("comparison") or {}
    for flat_key, key in (
        ("gain_over_baseline", "gain_over_baseline_points"),
        ("gap_recovered", "gap_recovered"),
        ("compression_ratio", "compression_ratio"),
        ("speedup", "speedup"),
    ):
        if comparison.get(key) is not None:
            flat[flat_key] = comparison[key]
    cache = report.get("teacher_cache")
    if cache is not None:
        flat["teacher_cache_hit"] = bool(cache.get("hit", False))
    for key, value in (report.get("hyperparameters") or {}).items():
        if key != "why" and _is_scalar(value) and value is not None:
            flat[f"chosen_{key}"] = value
    result: dict[str, Any] = _jsonable(flat)
    return result
