"""What a download says it is, and a plot that cannot be drawn does not fail the job."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from distill.spec import JobSpec
from distill.storage import content_disposition, content_type


@pytest.mark.parametrize(
    ("name", "kind", "disposition"),
    [
        ("curves.svg", "image/svg+xml", "inline"),
        ("report.json", "application/json", "attachment"),
        ("model.safetensors", "application/octet-stream", "attachment"),
        ("model.onnx", "application/octet-stream", "attachment"),
        ("model.torchscript.pt", "application/octet-stream", "attachment"),  # not a SNES page table
        ("archive.tar.gz", "application/octet-stream", "attachment"),
        ("no-suffix", "application/octet-stream", "attachment"),
    ],
)
def test_content_type_and_disposition(name: str, kind: str, disposition: str) -> None:
    assert content_type(name) == kind
    assert content_disposition(name) == f'{disposition}; filename="{name}"'


def test_a_plot_that_fails_is_an_event_not_a_failed_job(monkeypatch: pytest.MonkeyPatch) -> None:
    import worker.engine.plots
    from worker.pipeline import BasePipeline

    events: list[tuple[str, dict[str, Any]]] = []
    context = SimpleNamespace(
        job_id="job_x",
        spec=JobSpec.model_validate({"data": {"train": {"builtin": "digits"}}}),
        cache=None,
        device=None,
        progress=None,
        quiet=None,
        event=lambda message, data: events.append((message, data)),
    )
    pipeline = BasePipeline(context)  # type: ignore[arg-type]
    history = [{"epoch": 1.0, "train_loss": 1.0, "val_accuracy": 0.5}]
    drawn = pipeline.curves({"model": history}, teacher=0.9)
    assert set(drawn) == {"curves.svg"} and drawn["curves.svg"].startswith(b"<?xml")
    assert b"job_x" in drawn["curves.svg"]  # the title: the job's name, else its id

    def broken(*args: Any, **kwargs: Any) -> bytes:
        raise RuntimeError("no fonts")

    monkeypatch.setattr(worker.engine.plots, "render_curves", broken)
    assert pipeline.curves({"model": history}) == {}
    assert events == [("curves.svg not drawn: RuntimeError: no fonts", {"artifact": "curves.svg"})]
