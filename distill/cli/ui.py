"""Terminal rendering shared by the user commands and the demo: job progress bars and small formatters."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from distill.client.sdk import UpdateCallback
from distill.schemas import EventRead, JobRead

STATUS_STYLES = {
    "queued": "yellow",
    "running": "cyan",
    "succeeded": "green",
    "failed": "red",
    "cancelled": "magenta",
}
# Keys under which an event's ``data`` (or the job's ``progress``) may carry the validation accuracy.
VAL_ACCURACY_KEYS = ("val_accuracy", "validation_accuracy", "val_acc", "val_token_accuracy")


def styled_status(status: str | None) -> str:
    status = status or "?"
    return f"[{STATUS_STYLES.get(status, 'white')}]{status}[/]"


def val_accuracy(job: JobRead, events: Iterable[EventRead] = ()) -> float | None:
    """The latest validation accuracy in ``events`` (newest last), else in the job's ``progress``."""
    for event in reversed(list(events)):
        for key in VAL_ACCURACY_KEYS:
            if isinstance(event.data.get(key), int | float):
                return float(event.data[key])
    progress = job.progress
    if isinstance(progress, Mapping):
        for key in VAL_ACCURACY_KEYS:
            if isinstance(progress.get(key), int | float):
                return float(progress[key])
    return None


def fmt_bytes(size: Any) -> str:
    if not isinstance(size, int | float):
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def fmt_pct(value: Any) -> str:
    return f"{100 * value:.2f}%" if isinstance(value, int | float) else "-"


def fmt_num(value: Any, digits: int = 2) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "-"
    return f"{value:,}" if isinstance(value, int) else f"{value:,.{digits}f}"


def fmt_progress(job: JobRead) -> str:
    progress = job.progress
    if not isinstance(progress, Mapping) or not progress.get("epochs"):
        return "-"
    return f"epoch {progress.get('epoch') or 0}/{progress.get('epochs')}"


def object_table(obj: Mapping[str, Any], title: str | None = None) -> Table:
    """A two-column table of an object's top-level fields (nested values as compact JSON)."""
    table = Table(show_header=False, title=title, title_justify="left", box=None, padding=(0, 2, 0, 0))
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in obj.items():
        if key == "status":
            text = styled_status(str(value))
        elif isinstance(value, dict | list):
            text = json.dumps(value, separators=(", ", ": "))
        else:
            text = "-" if value is None else str(value)
        table.add_row(key, text)
    return table


def epoch_losses(events: Iterable[EventRead]) -> dict[str, float]:
    """The loss terms (``train_loss``, ``kd_loss``, ``ce_loss``…, ``val_loss``) of the newest event that
    has any, from the per-epoch events."""
    for event in reversed(list(events)):
        losses = {
            str(k): float(v)
            for k, v in event.data.items()
            if str(k).endswith("loss") and isinstance(v, int | float) and not isinstance(v, bool)
        }
        if losses:
            return losses
    return {}


def fmt_losses(losses: Mapping[str, float]) -> str:
    """``loss 0.412 kd 0.31 ce 0.52 val 0.40``: the training loss first, the rest by name."""
    parts = []
    for key in sorted(losses, key=lambda k: (k != "train_loss", k == "val_loss", k)):
        label = {"train_loss": "loss", "val_loss": "val loss"}.get(key, key.removesuffix("_loss"))
        parts.append(f"{label} {losses[key]:.3g}")
    return " ".join(parts)


class JobBars:
    """A rich ``Progress`` with one bar per job, driven by :meth:`distill.Client.wait` updates.

    Each bar shows the epoch, the step, the newest epoch's losses and validation accuracy, the status,
    the time so far and the estimated time left. It follows ``progress.step / progress.steps`` when the
    job reports steps, else epochs.
    """

    def __init__(self, console: Console | None = None) -> None:
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}", style="bold"),
            BarColumn(bar_width=30),
            TextColumn("{task.percentage:>5.1f}%"),
            TextColumn("{task.fields[epoch]}"),
            TextColumn("{task.fields[step]}"),
            TextColumn("{task.fields[losses]}"),
            TextColumn("{task.fields[val]}"),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._val: dict[TaskID, float | None] = {}
        self._losses: dict[TaskID, dict[str, float]] = {}
        self._labels: dict[TaskID, str] = {}

    def __enter__(self) -> JobBars:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    @property
    def console(self) -> Console:
        return self.progress.console

    def add(self, label: str, job: JobRead | None = None) -> TaskID:
        task = self.progress.add_task(
            label, total=None, epoch="", step="", losses="", val="", status=styled_status("queued")
        )
        self._val[task] = None
        self._losses[task] = {}
        self._labels[task] = label
        if job is not None:
            self.update(task, job, [])
        return task

    def update(self, task: TaskID, job: JobRead, events: list[EventRead]) -> None:
        progress: dict[str, Any] = job.progress
        epoch, epochs = progress.get("epoch") or 0, progress.get("epochs") or 0
        step, steps = progress.get("step") or 0, progress.get("steps") or 0
        acc = val_accuracy(job, events)
        if acc is not None:
            self._val[task] = acc
        losses = epoch_losses(events)
        if losses:
            self._losses[task] = losses
        last_acc = self._val[task]
        status = job.status
        if steps:
            completed, total = float(step), float(steps)
        elif epochs:
            completed, total = float(epoch), float(epochs)
        else:
            completed, total = 0.0, 1.0
        if status == "succeeded":
            completed = total
        self.progress.update(
            task,
            completed=completed,
            total=total,
            epoch=f"epoch {epoch}/{epochs}" if epochs else "",
            step=f"step {step}/{steps}" if steps else "",
            losses=fmt_losses(self._losses[task]),
            val=f"val acc {last_acc:.3f}" if last_acc is not None else "",
            status=styled_status(status),
        )
        if status in ("succeeded", "failed", "cancelled"):
            self.progress.stop_task(task)

    def callback(self, task: TaskID, print_events: bool = False, min_level: str = "info") -> UpdateCallback:
        """An ``on_update`` for ``Client.wait``: moves the bar; prints events at ``min_level`` or above."""
        levels = ["debug", "info", "warning", "error"]
        floor = levels.index(min_level) if min_level in levels else 1

        def on_update(job: JobRead, events: list[EventRead]) -> None:
            if print_events:
                for event in events:
                    level = (event.level or "info").lower()
                    if (levels.index(level) if level in levels else 1) < floor:
                        continue
                    style = {"warning": "yellow", "error": "red", "debug": "dim"}.get(level, "dim")
                    message = escape(event.message)
                    self.console.print(
                        f"[{style}]{escape(self._labels[task])} #{event.seq} {level}: {message}[/]",
                        highlight=False,
                    )
            self.update(task, job, events)

        return on_update


# -- curves --------------------------------------------------------------------------------------------------

SPARKS = "▁▂▃▄▅▆▇█"
# report.json's validation metrics, in order of preference (text embedding jobs have val_cosine).
CURVE_METRICS = ("val_accuracy", "val_token_accuracy", "val_cosine")


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        return None
    return float(value) if abs(value) != float("inf") else None


def sparkline(values: list[float | None], low: float | None = None, high: float | None = None) -> str:
    """One character per value on ``▁…█`` between ``low`` and ``high`` (their min and max by default);
    a missing value is a space."""
    known = [v for v in values if v is not None]
    if not known:
        return " " * len(values)
    low = min(known) if low is None else low
    high = max(known) if high is None else high
    span = high - low
    chars = []
    for value in values:
        if value is None:
            chars.append(" ")
        elif span <= 0:
            chars.append(SPARKS[len(SPARKS) // 2])
        else:
            level = round((value - low) / span * (len(SPARKS) - 1))
            chars.append(SPARKS[min(max(level, 0), len(SPARKS) - 1)])
    return "".join(chars)


def curve_lines(report: Mapping[str, Any], width: int = 40) -> list[str]:
    """The validation curve per epoch of the distilled student (and of the baseline) from ``report.json``,
    one sparkline each on a shared scale with first → last values, and the teacher's value; [] when the
    report has no history. Longer runs are thinned to ``width`` evenly spaced epochs."""
    runs = {
        "distilled student" if report.get("teacher") else "model": report.get("history"),
        "baseline (from scratch)": report.get("baseline_history"),
    }
    histories = {label: h for label, h in runs.items() if isinstance(h, list) and h}
    metric = next(
        (
            key
            for key in CURVE_METRICS
            for h in histories.values()
            if any(isinstance(row, Mapping) and _finite(row.get(key)) is not None for row in h)
        ),
        None,
    )
    if metric is None:
        return []
    series: dict[str, list[float | None]] = {}
    for label, history in histories.items():
        values = [_finite(row.get(metric)) if isinstance(row, Mapping) else None for row in history]
        if len(values) > width:
            values = [values[round(i * (len(values) - 1) / (width - 1))] for i in range(width)]
        if any(v is not None for v in values):
            series[label] = values
    known = [v for values in series.values() for v in values if v is not None]
    low, high = min(known), max(known)
    label_width = max(len(label) for label in series)
    epochs = max(len(h) for h in histories.values())
    plural = "epoch" if epochs == 1 else "epochs"
    lines = [f"{metric} per epoch ({epochs} {plural}, scale {low:.3f} to {high:.3f})"]
    for label, values in series.items():
        finite = [v for v in values if v is not None]
        lines.append(
            f"  {label:<{label_width}}  {sparkline(values, low, high)}  {finite[0]:.3f} → {finite[-1]:.3f}"
        )
    teacher = report.get("teacher")
    teacher_value = _finite(teacher.get("test_accuracy")) if isinstance(teacher, Mapping) else None
    if teacher_value is not None and metric == "val_accuracy":
        lines.append(f"  {'teacher':<{label_width}}  {teacher_value:.3f}")
    return lines
