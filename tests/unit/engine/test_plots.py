"""``curves.svg``: training curves as a small, deterministic SVG."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

from worker.engine.plots import render_curves, validation_metric

SVG = "{http://www.w3.org/2000/svg}"


def history(epochs: int, *, start: float = 0.4, terms: bool = True) -> list[dict[str, float]]:
    rows = []
    for e in range(1, epochs + 1):
        row = {"epoch": float(e), "train_loss": 2.0 / e, "val_accuracy": start + 0.4 * (1 - 1 / e)}
        row["val_loss"] = 1.0 / e
        if terms:
            row |= {"kd_loss": 1.5 / e, "ce_loss": 0.5 / e}
        rows.append(row)
    return rows


def texts(svg: bytes) -> list[str]:
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    return ["".join(node.itertext()) for node in root.iter(f"{SVG}text")]


def test_student_baseline_and_teacher_are_named_in_a_small_svg():
    runs = {"distilled student": history(12), "baseline (from scratch)": history(12, start=0.3, terms=False)}
    svg = render_curves(runs, teacher=0.95, title="digits-student")
    assert svg.startswith(b"<?xml")
    labels = texts(svg)
    assert "distilled student" in labels
    assert "baseline (from scratch)" in labels
    assert "distilled student: kd_loss" in labels and "distilled student: ce_loss" in labels
    assert "teacher (0.950)" in labels
    assert "distilled student (0.767)" in labels  # the final value: did it converge?
    assert "digits-student" in labels and "validation accuracy" in labels
    assert 5_000 < len(svg) < 100_000


def test_the_same_history_gives_the_same_bytes():
    runs = {"distilled student": history(30), "baseline (from scratch)": history(30, terms=False)}
    first = render_curves(runs, teacher=0.9)
    second = render_curves({k: [dict(row) for row in v] for k, v in runs.items()}, teacher=0.9)
    assert first == second
    assert b"<dc:date>" not in first


def test_one_epoch():
    svg = render_curves({"model": history(1)})
    assert "model (0.400)" in texts(svg)


def test_missing_metrics_leave_the_panel_saying_so():
    svg = render_curves({"model": [{"epoch": 1.0}, {"epoch": 2.0}]}, teacher=None)
    labels = texts(svg)
    assert "no training loss in the history" in labels
    assert "no validation metric in the history" in labels
    assert texts(render_curves({}))  # nothing at all still draws


def test_nan_values_are_gaps_not_errors():
    rows = history(5)
    rows[2]["val_accuracy"] = math.nan
    rows[3]["train_loss"] = math.inf
    rows[4]["val_accuracy"] = None  # type: ignore[assignment]
    svg = render_curves({"student": rows, "all nan": [{"epoch": 1.0, "val_accuracy": math.nan}]})
    labels = texts(svg)
    assert "student (0.700)" in labels  # the last finite value
    assert not any(label.startswith("all nan") for label in labels)
    assert b"nan" not in svg.lower()  # no NaN coordinates


def test_embedding_jobs_plot_cosine():
    rows = [{"epoch": 1.0, "train_loss": 0.5, "val_cosine": 0.8}, {"epoch": 2.0, "train_loss": 0.3}]
    assert validation_metric({"s": rows}) == "val_cosine"
    labels = texts(render_curves({"distilled student": rows}))
    assert "validation cosine to the teacher" in labels and "distilled student (0.800)" in labels
