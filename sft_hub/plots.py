"""The report's pictures, drawn with matplotlib's object API (``matplotlib.figure.Figure``, Agg
canvas): no display, no pyplot global state, safe in any process.

- :func:`confusion_matrix_png`: counts on colours for their share of the gold row, label names
  on the axes;
- :func:`reliability_png`: the reliability diagram (accuracy per confidence bin against the
  diagonal, bin sizes below) with the expected calibration error in the title;
- :func:`learning_curves_png`: training loss, evaluation loss and the task metric against step,
  from the Trainer's ``log_history``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from .files import temporary_sibling


def _figure(width: float, height: float, layout: Optional[str] = None):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> Path:
    """Write the PNG through a temporary file, so a reader never sees half a picture. Every figure
    lays itself out (constrained layout or fixed axes), so it is drawn once (``bbox_inches="tight"``
    would draw it twice)."""
    path = Path(path)
    tmp = temporary_sibling(path)
    fig.savefig(tmp, format="png")
    tmp.replace(path)
    return path


def confusion_matrix_png(path: Path, counts: np.ndarray, rows: Sequence[str],
                         columns: Sequence[str], title: str = "Confusion matrix") -> Path:
    """One panel: each cell's count written on a colour for its share of the gold row (so a rare
    class's errors show as clearly as a frequent one's; the exact shares are in the CSV)."""
    counts = np.asarray(counts, dtype=np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    normalised = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    n_rows, n_cols = counts.shape
    side = max(3.5, 0.45 * max(n_rows, n_cols) + 2)
    fig = _figure(side + 1.5, side, layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the gold row")
    ax.set_xticks(range(n_cols), labels=list(columns), rotation=45, ha="right")
    ax.set_yticks(range(n_rows), labels=list(rows))
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title(f"{title} (counts)")
    if n_rows * n_cols <= 400:  # white figures on the dark cells
        for i in range(n_rows):
            for j in range(n_cols):
                ax.text(j, i, f"{counts[i, j]:.0f}", ha="center", va="center", fontsize=8,
                        color="white" if normalised[i, j] > 0.6 else "black")
    return _save(fig, path)


def reliability_png(path: Path, bins: list[dict[str, Any]], ece: float) -> Path:
    """``bins``: ``{"low", "high", "count", "accuracy", "confidence"}`` per confidence bin."""
    fig = _figure(5, 5.5)
    ax = fig.add_axes((0.12, 0.32, 0.83, 0.6))
    hist = fig.add_axes((0.12, 0.08, 0.83, 0.17), sharex=ax)
    ax.plot([0, 1], [0, 1], linestyle="--", color="gray", label="perfect calibration")
    width = [b["high"] - b["low"] for b in bins]
    left = [b["low"] for b in bins]
    accuracy = [b["accuracy"] if b["count"] else 0.0 for b in bins]
    ax.bar(left, accuracy, width=width, align="edge", edgecolor="black", color="#4c72b0",
           alpha=0.8, label="accuracy")
    shown = [b for b in bins if b["count"]]
    ax.plot([b["confidence"] for b in shown], [b["accuracy"] for b in shown], "o-",
            color="#dd8452", label="mean confidence vs accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(f"Reliability diagram (ECE {ece:.4f})")
    ax.legend(loc="upper left", fontsize=8)
    hist.bar(left, [b["count"] for b in bins], width=width, align="edge", edgecolor="black",
             color="#55a868")
    hist.set_xlabel("confidence of the predicted class")
    hist.set_ylabel("count")
    return _save(fig, path)


def learning_curves_png(path: Path, log_history: list[dict[str, Any]],
                        metric: Optional[str] = None) -> Optional[Path]:
    """Training loss, eval loss and ``eval_<metric>`` against step; None when nothing was logged."""
    def series(key: str) -> tuple[list[float], list[float]]:
        points = [(e["step"], e[key]) for e in log_history
                  if key in e and "step" in e and isinstance(e[key], (int, float))]
        return [p[0] for p in points], [p[1] for p in points]

    train, evaluation = series("loss"), series("eval_loss")
    task_metric = series(f"eval_{metric}") if metric else ([], [])
    if not (train[0] or evaluation[0] or task_metric[0]):
        return None
    fig = _figure(10, 4, layout="constrained")
    ax = fig.add_subplot(1, 2, 1)
    if train[0]:
        ax.plot(*train, label="training loss", color="#4c72b0")
    if evaluation[0]:
        ax.plot(*evaluation, "o-", label="evaluation loss", color="#dd8452")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("Loss")
    ax.legend()
    ax2 = fig.add_subplot(1, 2, 2)
    if task_metric[0]:
        ax2.plot(*task_metric, "o-", color="#55a868", label=f"validation {metric}")
        ax2.legend()
    else:
        ax2.text(0.5, 0.5, "no evaluation logged", ha="center", va="center")
    ax2.set_xlabel("step")
    ax2.set_ylabel(metric or "metric")
    ax2.set_title(f"Validation {metric}" if metric else "Validation metric")
    return _save(fig, path)
