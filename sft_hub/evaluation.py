"""``sft-hub eval`` and the evaluation report every training run writes.

:func:`evaluate` scores a trained model (see :mod:`sft_hub.inference` for what it loads) on
labelled data: the run's own test (or validation) split exactly as training selected it, or any
file, folder or Hub dataset split in the task's format (column names from the run's recipe,
flags override them). Labels are matched to the model's ``id2label`` by name; one the model does
not know is a DataError naming it. The data is prepared by the task's own ``preprocess`` and
scored by its own ``compute_metrics`` in batches of the recipe's ``per_device_eval_batch_size``,
in order, with the loss the model's own way (``Task.loss``), so that the run's own test split
gives the figures of its ``metrics.json``.

:func:`write_report` (used by eval and, on the Trainer's predictions, at the end of training for
validation and test) writes into ``eval/<data name>/``:

- ``metrics.json``: the metrics, a seeded bootstrap 95% confidence interval of the task's best
  metric (1,000 resamples of the examples), the expected calibration error and its bins;
- ``per_class.csv`` / ``per_class.md``: precision, recall, F1 and support per class (NER: per
  entity type, entity level);
- ``confusion_matrix.csv`` (counts), ``confusion_matrix_normalized.csv`` (rows sum to 1) and
  ``confusion_matrix.png`` (both, label names on the axes); NER: word-level entity types;
- ``reliability_diagram.png``; ``errors.jsonl``: the most confident mistakes (input, gold,
  predicted, score); NER also ``span_errors.csv`` / ``.md`` (wrong type, wrong boundary, missed,
  spurious per entity type).

Every file is written to a temporary name and renamed, so a report is never half-written.
"""
from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

import numpy as np

from . import plots
from .data.sources import load_hub_split, load_raw_splits
from .errors import DataError
from .files import write_text_atomic
from .hub_refs import is_hub_ref, parse_hf_ref
from .inference import LoadedModel, load_model
from .tasks.base import Breakdown

if TYPE_CHECKING:  # pragma: no cover
    from datasets import Dataset

    from .tasks.base import Task

EVAL_DIR = "eval"
RESAMPLES = 1000
CONFIDENCE = 0.95
CALIBRATION_BINS = 10
TOP_ERRORS = 100
NOT_METRICS = ("runtime", "samples_per_second", "steps_per_second", "epoch", "total_flos")


@dataclass
class EvalReport:
    name: str
    folder: Path
    metrics: dict[str, float]
    interval: dict[str, Any]
    calibration: dict[str, Any]
    examples: int
    seconds: float = 0.0
    per_class_keys: tuple[str, ...] = ()


# -- statistics -----------------------------------------------------------------------------------

def bootstrap_interval(stats: np.ndarray, headline: Callable[[np.ndarray], float], *,
                       resamples: int = RESAMPLES, seed: int = 0,
                       level: float = CONFIDENCE) -> dict[str, Any]:
    """Percentile bootstrap of ``headline(sum of resampled rows of stats)``: examples drawn with
    replacement, ``resamples`` times, from ``np.random.default_rng(seed)``."""
    stats = np.asarray(stats, dtype=np.float64)
    n = len(stats)
    value = headline(stats.sum(axis=0)) if n else float("nan")
    if n == 0:
        return {"value": value, "low": value, "high": value, "level": level,
                "resamples": 0, "seed": seed}
    rng = np.random.default_rng(seed)
    chunk = max(1, min(resamples, 4_000_000 // max(n * stats.shape[1], 1)))
    values = []
    done = 0
    while done < resamples:
        c = min(chunk, resamples - done)
        idx = rng.integers(0, n, size=(c, n))
        summed = stats[idx].sum(axis=1)
        values += [headline(row) for row in summed]
        done += c
    alpha = (1 - level) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha])
    return {"value": float(value), "low": float(low), "high": float(high), "level": level,
            "resamples": resamples, "seed": seed}


def calibration(confidence: np.ndarray, correct: np.ndarray,
                bins: int = CALIBRATION_BINS) -> dict[str, Any]:
    """Expected calibration error over equal-width confidence bins, and the bins."""
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    out, ece, n = [], 0.0, max(len(confidence), 1)
    for b in range(bins):
        mask = which == b
        count = int(mask.sum())
        acc = float(correct[mask].mean()) if count else 0.0
        conf = float(confidence[mask].mean()) if count else 0.0
        ece += count / n * abs(acc - conf)
        out.append({"low": float(edges[b]), "high": float(edges[b + 1]), "count": count,
                    "accuracy": acc, "confidence": conf})
    return {"ece": float(ece), "bins": out}


# -- writing --------------------------------------------------------------------------------------

def _csv_text(header: list[str], rows: list[list[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "–" if value is None else str(value)


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _table_files(folder: Path, name: str, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    header = list(rows[0])
    body = [[r.get(h) for h in header] for r in rows]
    write_text_atomic(folder / f"{name}.csv", _csv_text(header, body))
    write_text_atomic(folder / f"{name}.md", markdown_table(header, body))


def plain_metrics(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Metrics without the split prefix and the Trainer's bookkeeping (runtime, speed)."""
    out = {}
    for k, v in metrics.items():
        key = k[len(prefix) + 1:] if prefix and k.startswith(prefix + "_") else k
        if key.startswith(NOT_METRICS) or isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        out[key] = v
    return out


def write_report(task: "Task", eval_pred, metrics: dict[str, float], folder: Path, *,
                 name: str, examples: Optional["Dataset"] = None, seed: int = 0) -> EvalReport:
    """Write the report of labelled predictions ``eval_pred`` (see the module docstring)."""
    started = time.perf_counter()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    breakdown: Breakdown = task.breakdown(eval_pred)
    interval = {"metric": task.best_metric,
                **bootstrap_interval(breakdown.stats, breakdown.headline, seed=seed)}
    calib = calibration(breakdown.confidence, breakdown.correct)

    counts = np.asarray(breakdown.confusion)
    totals = counts.sum(axis=1, keepdims=True)
    normalised = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    rows, cols = breakdown.classes, breakdown.predicted_classes
    write_text_atomic(folder / "confusion_matrix.csv", _csv_text(
        ["gold \\ predicted", *cols], [[r, *map(int, counts[i])] for i, r in enumerate(rows)]))
    write_text_atomic(folder / "confusion_matrix_normalized.csv", _csv_text(
        ["gold \\ predicted", *cols],
        [[r, *(round(float(x), 6) for x in normalised[i])] for i, r in enumerate(rows)]))
    plots.confusion_matrix_png(folder / "confusion_matrix.png", counts, rows, cols,
                               title=f"Confusion matrix, {name}")
    plots.reliability_png(folder / "reliability_diagram.png", calib["bins"], calib["ece"])
    _table_files(folder, "per_class", breakdown.per_class)
    for table, table_rows in breakdown.tables.items():
        _table_files(folder, table, table_rows)
    _write_errors(folder / "errors.jsonl", task, breakdown.errors, examples)

    n = len(np.asarray(breakdown.stats))
    figures = {k: float(v) if isinstance(v, float) else v for k, v in metrics.items()}
    summary = {"data": name, "examples": n, "metrics": figures,
               "confidence_interval": interval,
               "calibration": {"ece": calib["ece"], "bins": calib["bins"]}}
    write_text_atomic(folder / "metrics.json", json.dumps(summary, indent=2))
    per_class = (task.per_class.keys(task.per_class_names(task.labels))
                 if task.per_class is not None else set())
    return EvalReport(name, folder, figures, interval, calib, n,
                      seconds=time.perf_counter() - started, per_class_keys=tuple(per_class))


def _write_errors(path: Path, task: "Task", errors: list[dict[str, Any]],
                  examples: Optional["Dataset"]) -> None:
    ranked = sorted(errors, key=lambda e: -e.get("score", 0.0))[:TOP_ERRORS]
    lines = []
    for error in ranked:
        row = dict(error)
        i = row.pop("example")
        entry = {"example": i}
        if examples is not None and i < len(examples):
            entry["input"] = task.example_text(examples[i])
        entry.update(row)
        lines.append(json.dumps(entry, ensure_ascii=False, default=str))
    write_text_atomic(path, "".join(line + "\n" for line in lines))


def report_name(data: Optional[str], split: Optional[str]) -> str:
    """``eval/<name>``: the run's split name, or the data file/folder/dataset name."""
    if data is None:
        return split or "test"
    if is_hub_ref(data):
        ref = parse_hf_ref(data)
        return "-".join(p for p in (ref.repo_id.replace("/", "--"), ref.path.replace("/", "-"),
                                    split) if p)
    return Path(data).stem if Path(data).is_file() else Path(data).resolve().name


# -- eval -----------------------------------------------------------------------------------------

def _read_labelled(model: LoadedModel, data: str, split: str) -> "Dataset":
    """One labelled split from a local file/folder or a Hub dataset, in the task's format."""
    from datasets import DatasetDict

    spec = model.task.recipe.data
    if is_hub_ref(data):
        ds = load_hub_split(data, split, field="--data", split_flag="--split")
        return DatasetDict({"test": ds})
    path = Path(data)
    if not path.exists():
        raise DataError(f"data not found: {path}", field="--data")
    local = spec.model_copy(update={"files": {"train": str(path.resolve())}, "dataset": None})
    raw = load_raw_splits(local, Path.cwd())
    return DatasetDict({"test": raw["train"]})


def evaluation_data(model: LoadedModel, data: Optional[str], split: str):
    """(raw labelled split, preprocessed split): the run's own split, or ``data``."""
    task = model.task
    if data is None:
        labels = list(task.labels)
        with_splits = task.load_data()  # exactly the splits training built (seed, sampling)
        if split not in with_splits:
            raise DataError(f"the run's recipe has no {split} split", field="--split",
                            hint="pass --data FILE (or --split validation)")
        if list(task.labels) != labels:
            raise DataError(f"the run's data now has the labels {task.labels}, the model "
                            f"{labels}", field="data", hint="pass --data with the model's labels")
        raw = with_splits.__class__({split: with_splits[split]})
    else:
        raw = task.load_eval_data(_read_labelled(model, data, split))
        split = "test"
    processed = task.preprocess(raw)
    return raw[split], processed[split]


def _rows(ds, start: int, stop: int) -> list[dict[str, Any]]:
    batch = ds[start:stop]
    keys = list(batch)
    return [{k: batch[k][j] for k in keys} for j in range(len(batch[keys[0]]))] if keys else []


def _pad(arrays: list[np.ndarray], value: float) -> np.ndarray:
    """Per-example arrays of different lengths (per-token outputs) stacked with padding."""
    if not arrays:
        return np.zeros((0,))
    if arrays[0].ndim == 0 or all(a.shape == arrays[0].shape for a in arrays):
        return np.stack(arrays)
    width = max(a.shape[0] for a in arrays)
    out = np.full((len(arrays), width, *arrays[0].shape[1:]), value, dtype=arrays[0].dtype)
    for i, a in enumerate(arrays):
        out[i, :a.shape[0]] = a
    return out


def predict_labelled(model: LoadedModel, ds, *, batch_size: int):
    """(EvalPrediction, loss): batches in order, as the Trainer's evaluation forms them."""
    from .onnx_predictor import EvalPrediction  # transformers' fields, without torch

    task = model.task
    logits, labels, losses = [], [], []
    for start in range(0, len(ds), batch_size):
        features = _rows(ds, start, start + batch_size)
        batch = model.collate(features)
        batch_labels = np.asarray(batch["labels"].cpu().numpy() if hasattr(batch["labels"], "cpu")
                                  else batch["labels"])
        batch_logits = model.predictor.logits(batch)
        # the Trainer repeats each batch's loss once per example and averages (float32)
        losses.append(np.full(len(features), task.loss(batch_logits, batch_labels), np.float32))
        logits += list(batch_logits)
        labels += list(batch_labels)
    loss = float(np.concatenate(losses).mean().item()) if losses else float("nan")
    return EvalPrediction(predictions=_pad(logits, -100), label_ids=_pad(labels, -100)), loss


def evaluate(model: Union[str, Path, LoadedModel], data: Optional[str] = None, *,
             split: str = "test", out_dir: Optional[Union[str, Path]] = None,
             columns: Optional[dict[str, str]] = None, batch_size: Optional[int] = None,
             device: Optional[str] = None, seed: Optional[int] = None) -> EvalReport:
    """Score a trained model on labelled data and write its report (see the module docstring).

    ``out_dir`` defaults to ``<run>/eval/<data name>`` for a local run, ``./eval/<data name>``
    for a Hub model. ``columns``: recipe column fields to override (``{"label_column": "y"}``).
    """
    started = time.perf_counter()
    if not isinstance(model, LoadedModel):
        overrides = [f"data.{k}={v}" for k, v in (columns or {}).items()]
        model = load_model(model, device=device, overrides=overrides)
    task, recipe = model.task, model.loaded.recipe
    raw, processed = evaluation_data(model, data, split)
    if len(processed) == 0:
        raise DataError("the evaluation data has no rows", field="--data")
    size = batch_size or int(recipe.settings.get("per_device_eval_batch_size"))
    eval_pred, loss = predict_labelled(model, processed, batch_size=size)
    metrics = {"loss": loss, **task.compute_metrics(eval_pred)}
    name = report_name(data, split)
    if out_dir is None:
        base = Path.cwd() if is_hub_ref(model.source.ref) else model.source.folder
        out_dir = base / EVAL_DIR / name
    report = write_report(task, eval_pred, metrics, Path(out_dir), name=name, examples=raw,
                          seed=recipe.settings.seed if seed is None else seed)
    report.seconds = time.perf_counter() - started
    return report


def headline_table(report: EvalReport) -> str:
    """The figures ``sft-hub eval`` prints (per-class figures are in per_class.md)."""
    shown = {k: v for k, v in report.metrics.items() if k not in report.per_class_keys}
    ci = report.interval
    rows = [[k, v] for k, v in shown.items()]
    lines = [f"{report.name}: {report.examples} examples",
             markdown_table(["metric", "value"], rows).rstrip("\n"),
             f"{ci['metric']}: {ci['value']:.4f} (95% CI {ci['low']:.4f}-{ci['high']:.4f}, "
             f"{ci['resamples']} bootstrap resamples)",
             f"expected calibration error: {report.calibration['ece']:.4f}",
             f"report: {report.folder}"]
    return "\n".join(lines)


# -- at the end of training -----------------------------------------------------------------------

class PredictionCapture:
    """The Trainer's ``compute_metrics``, wrapped to keep the predictions of the evaluations the
    run may end with (the latest, and the best checkpoint's), so that the validation report reuses
    them instead of a second pass. ``trainer`` is set once the Trainer exists."""

    def __init__(self, compute: Callable[[Any], dict[str, float]]):
        self.compute = compute
        self.trainer: Any = None
        self.active = True
        self._kept: dict[int, Any] = {}

    def __call__(self, eval_pred) -> dict[str, float]:
        if self.active and self.trainer is not None:
            state = self.trainer.state
            wanted = {state.global_step, _checkpoint_step(state.best_model_checkpoint)}
            self._kept = {s: p for s, p in self._kept.items() if s in wanted}
            self._kept[state.global_step] = eval_pred
        return self.compute(eval_pred)

    def predictions(self, step: int):
        return self._kept.get(step)


def _checkpoint_step(path: Optional[str]) -> Optional[int]:
    if not path:
        return None
    tail = str(path).rstrip("/").rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else None


def write_run_reports(run_dir: Path, task: "Task", splits: dict[str, tuple[Any, Any, dict]], *,
                      log_history: list[dict[str, Any]], seed: int) -> dict[str, EvalReport]:
    """A training run's reports: ``eval/<split>/`` from the Trainer's predictions (``splits``:
    name -> (predictions with ``label_ids``, raw split, metrics)) and ``learning_curves.png``."""
    reports = {}
    for name, (prediction, raw, metrics) in splits.items():
        reports[name] = write_report(task, prediction, plain_metrics(metrics),
                                     Path(run_dir) / EVAL_DIR / name, name=name, examples=raw,
                                     seed=seed)
    plots.learning_curves_png(Path(run_dir) / LEARNING_CURVES, log_history, task.best_metric)
    return reports


LEARNING_CURVES = "learning_curves.png"
