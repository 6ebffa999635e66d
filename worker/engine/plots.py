"""Training curves as a small, deterministic SVG (``curves.svg``): what a user looks at before reading
``report.json``.

Panel 1: the training loss per epoch of each run, and the loss terms of the objective (``kd_loss``,
``ce_loss``...) thinner. Panel 2: the validation metric per epoch (``val_accuracy``, or ``val_cosine`` for
embedding jobs) of each run ("distilled student", "baseline (from scratch)"...), with the teacher's value as
a dashed horizontal line when it is known.

Pure: histories in, bytes out. It uses matplotlib's object API (a ``Figure`` saved as SVG), never pyplot,
so it neither needs nor changes a GUI backend and is safe in a worker process. The same input gives the same
bytes: the SVG ids are salted with a constant (``svg.hashsalt``) and the metadata has no date.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes

VALIDATION_METRICS = {
    "val_accuracy": "validation accuracy",
    "val_cosine": "validation cosine to the teacher",
    "val_token_accuracy": "validation token accuracy (completion tokens)",
}
"""The metrics panel 2 can show, in order of preference, with their axis labels."""

LOSS_KEY = "train_loss"
NOT_TERMS = frozenset({LOSS_KEY, "val_loss"})
COLORS = ("#1f77b4", "#7f7f7f", "#2ca02c", "#d62728", "#9467bd", "#8c564b")
"""One colour per run, in order: the distilled student blue, the baseline grey."""
TERM_STYLES = (":", "-.", "--", (0, (1, 3)))
"""Line styles of a run's loss terms, in order (the run's own colour, thinner)."""
TEACHER_COLOR = "#ff7f0e"
MARKERS_UP_TO = 25
"""Runs with at most this many epochs get a marker per epoch (a one-epoch run is a visible dot)."""

History = Sequence[Mapping[str, Any]]


def _number(value: Any) -> float:
    """``value`` as a float; anything that is not a finite number becomes NaN (a gap in the line)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return math.nan
    number = float(value)
    return number if math.isfinite(number) else math.nan


def _epochs(history: History) -> list[float]:
    """Each entry's ``epoch``, or its position (1, 2, ...) when the entry does not say."""
    epochs = []
    for i, entry in enumerate(history, start=1):
        epoch = _number(entry.get("epoch"))
        epochs.append(float(i) if math.isnan(epoch) else epoch)
    return epochs


def _series(history: History, key: str) -> list[float] | None:
    """The values of ``key`` per epoch (NaN where missing), or None when no epoch has a finite one."""
    values = [_number(entry.get(key)) for entry in history]
    return values if any(not math.isnan(v) for v in values) else None


def _loss_terms(history: History) -> list[str]:
    """The objective's parts in the history (``kd_loss``, ``ce_loss``...), in first-seen order."""
    terms: list[str] = []
    for entry in history:
        for key in entry:
            if key.endswith("_loss") and key not in NOT_TERMS and key not in terms:
                terms.append(key)
    return terms


def validation_metric(runs: Mapping[str, History]) -> str | None:
    """The validation metric panel 2 shows: the first of :data:`VALIDATION_METRICS` some run has."""
    for key in VALIDATION_METRICS:
        if any(_series(history, key) is not None for history in runs.values()):
            return key
    return None


def render_curves(
    runs: Mapping[str, History],
    *,
    teacher: float | None = None,
    title: str | None = None,
) -> bytes:
    """Training curves of ``runs`` (label → per-epoch history, as in ``report.json``) as SVG bytes.

    The first run is drawn first (and in blue); ``teacher`` is the teacher's value of the validation metric
    (a dashed line), or None. Missing or non-finite values leave gaps; a panel with nothing to draw says
    so. Typically 20-40 KB.
    """
    from matplotlib import rc_context
    from matplotlib.figure import Figure

    with rc_context(
        {
            "svg.hashsalt": "distill-curves",
            "svg.fonttype": "none",  # text stays text: small, searchable, selectable
            "font.size": 9,
            "axes.spines.top": False,
            "axes.spines.right": False,
        }
    ):
        fig = Figure(figsize=(9.0, 3.6))
        loss_ax, val_ax = fig.subplots(1, 2)
        _loss_panel(loss_ax, runs)
        _validation_panel(val_ax, runs, teacher)
        if title:
            fig.suptitle(title, fontsize=10)
        fig.tight_layout()
        out = io.BytesIO()
        fig.savefig(out, format="svg", metadata={"Date": None})
    return out.getvalue()


def _style(index: int, n_epochs: int) -> dict[str, Any]:
    style: dict[str, Any] = {"color": COLORS[index % len(COLORS)]}
    if n_epochs <= MARKERS_UP_TO:
        style |= {"marker": "o", "markersize": 3}
    return style


def _empty(ax: Axes, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="#7f7f7f")
    ax.set_xticks([])
    ax.set_yticks([])


def _integer_epochs(ax: Axes) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")


def _loss_panel(ax: Axes, runs: Mapping[str, History]) -> None:
    ax.set_title("training loss", fontsize=9, loc="left")
    drawn = False
    for index, (label, history) in enumerate(runs.items()):
        epochs = _epochs(history)
        style = _style(index, len(epochs))
        loss = _series(history, LOSS_KEY)
        if loss is not None:
            ax.plot(epochs, loss, label=label, linewidth=1.8, **style)
            drawn = True
        for number, term in enumerate(_loss_terms(history)):
            values = _series(history, term)
            if values is not None:
                dashes = TERM_STYLES[number % len(TERM_STYLES)]
                ax.plot(epochs, values, label=f"{label}: {term}", linewidth=0.9, linestyle=dashes, **style)
                drawn = True
    if not drawn:
        _empty(ax, "no training loss in the history")
        return
    _integer_epochs(ax)
    ax.legend(fontsize=7, frameon=False)


def _validation_panel(ax: Axes, runs: Mapping[str, History], teacher: float | None) -> None:
    metric = validation_metric(runs)
    if metric is None:
        ax.set_title("validation", fontsize=9, loc="left")
        _empty(ax, "no validation metric in the history")
        return
    ax.set_title(VALIDATION_METRICS[metric], fontsize=9, loc="left")
    for index, (label, history) in enumerate(runs.items()):
        epochs = _epochs(history)
        values = _series(history, metric)
        if values is None:
            continue
        finals = [v for v in values if not math.isnan(v)]
        ax.plot(
            epochs, values, label=f"{label} ({finals[-1]:.3f})", linewidth=1.8, **_style(index, len(epochs))
        )
    teacher_value = _number(teacher)
    if not math.isnan(teacher_value):
        ax.axhline(
            teacher_value,
            color=TEACHER_COLOR,
            linestyle="--",
            linewidth=1.2,
            label=f"teacher ({teacher_value:.3f})",
        )
    _integer_epochs(ax)
    ax.set_ylabel(metric)
    ax.legend(fontsize=7, frameon=False, loc="lower right")  # curves rise; the teacher line is on top
