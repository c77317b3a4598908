"""Metrics: how tasks declare them, the built-in classification figures (scikit-learn, offline)
and ``training.extra_metrics``.

A task declares its figures as :class:`Metric` (metrics.json key, display name, Hub model-index
type and config, direction) and its per-class figures as :class:`PerClass`; the card and the
Trainer read those declarations, never a table of metric names.

Built-in metrics never need the network. ``training.extra_metrics`` lists modules of the
``evaluate`` library, the extension point for any other measure: a local module (a folder holding
``<folder name>.py``, or the ``.py`` file itself; relative to the recipe) always works; a Hub id
(``matthews_correlation``, ``org/metric``) is fetched by ``evaluate`` and so needs the network. Each
module's scalar results land in metrics.json and the card as ``<module>`` (a result named like the
module) or ``<module>_<result>``; the task decides what they are computed on
(:meth:`sft_hub.tasks.base.Task.evaluate_inputs`).
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .errors import RecipeError

FIELD = "training.extra_metrics"
_TRUE = {"1", "on", "yes", "true"}


@dataclass(frozen=True)
class Metric:
    """One figure a task reports, as ``metrics.json`` keys it (without the split prefix)."""

    key: str                         # e.g. "f1_macro"
    name: str                        # display name, e.g. "F1 (macro)"
    type: str                        # Hub model-index metric type, e.g. "f1"
    config: Optional[str] = None     # model-index metric config, e.g. "macro"
    greater_is_better: bool = True
    headline: bool = True            # printed in the end-of-run summary

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


LOSS = Metric("loss", "Loss", "loss", greater_is_better=False, headline=False)


@dataclass(frozen=True)
class PerClass:
    """How per-class figures are keyed: ``key.format(name=<class>, field=<field>)``."""

    key: str = "{field}_{name}"      # e.g. f1_spam; NER: "{name}_{field}" (person_f1)
    fields: tuple[str, ...] = ("f1",)

    def keys(self, names: list[str]) -> set[str]:
        return {self.key.format(name=n, field=f) for n in names for f in self.fields}


def classification_metrics(logits: np.ndarray, labels: np.ndarray,
                           label_names: Optional[list[str]] = None) -> dict[str, float]:
    """Accuracy, macro F1/precision/recall; top-5 accuracy when there are more than 5 classes;
    per-class F1 when label names are given (flat keys, e.g. ``f1_spam``)."""
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    if isinstance(logits, tuple):
        logits = logits[0]
    preds = logits.argmax(-1)
    n_classes = logits.shape[-1]
    ids = list(range(n_classes))
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, preds, labels=ids, average="macro", zero_division=0)
    out = {"accuracy": float(accuracy_score(labels, preds)), "f1_macro": float(f1),
           "precision_macro": float(precision), "recall_macro": float(recall)}
    if n_classes > 5:
        top5 = np.argsort(-logits, axis=-1)[:, :5]
        out["top5_accuracy"] = float(np.mean([lab in row for lab, row in zip(labels, top5)]))
    if label_names:
        _, _, per_f1, support = precision_recall_fscore_support(
            labels, preds, labels=ids, average=None, zero_division=0)
        for name, value, n in zip(label_names, per_f1, support):
            out[f"f1_{name}"] = float(value)
    return out


# -- training.extra_metrics: evaluate modules -----------------------------------------------------

@dataclass(frozen=True)
class ExtraMetricRef:
    """One ``training.extra_metrics`` entry, resolved without importing ``evaluate``."""

    ref: str                 # as written in the recipe
    path: str                # what evaluate.load gets (a local path or the Hub id)
    local: bool

    @property
    def name(self) -> str:
        return Path(self.path).stem if self.local else self.ref.rsplit("/", 1)[-1]


@dataclass
class ExtraMetric:
    ref: ExtraMetricRef
    module: Any
    keys: dict[str, str] = field(default_factory=dict)  # metrics.json key -> result name


def _offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in _TRUE
               for v in ("HF_HUB_OFFLINE", "HF_EVALUATE_OFFLINE"))


def check_extra_metrics(refs: list[str], base_dir: Path) -> list[ExtraMetricRef]:
    """Resolve the entries: local module paths must exist; a Hub id offline is an error.

    Cheap (no ``evaluate`` import): run by ``sft-hub validate`` and before training.
    """
    out = []
    for i, ref in enumerate(refs):
        where = f"{FIELD}[{i}]"
        candidate = Path(ref).expanduser()
        if not candidate.is_absolute():
            candidate = base_dir / candidate
        if candidate.is_dir() and (candidate / f"{candidate.name}.py").is_file():
            out.append(ExtraMetricRef(ref, str(candidate / f"{candidate.name}.py"), True))
            continue
        if candidate.is_file() and candidate.suffix == ".py":
            out.append(ExtraMetricRef(ref, str(candidate), True))
            continue
        looks_local = (ref.endswith(".py") or ref.startswith((".", "/", "~"))
                       or ref.count("/") > 1 or candidate.exists())
        if looks_local:
            raise RecipeError(f"no evaluate module at {candidate} (a folder holding "
                              f"{candidate.name}.py, or a .py file)", field=where,
                              hint="paths are relative to the recipe; a local module folder holds "
                              "a script named like the folder")
        if _offline():
            raise RecipeError(f"evaluate module {ref!r} would be fetched from the Hugging Face "
                              "Hub, but the Hub is offline (HF_HUB_OFFLINE / HF_EVALUATE_OFFLINE)",
                              field=where, hint="go online, or copy the module folder (e.g. git "
                              f"clone https://huggingface.co/spaces/evaluate-metric/{ref}) next to "
                              "the recipe and list its path instead")
        out.append(ExtraMetricRef(ref, ref, False))
    return out


def load_extra_metrics(refs: list[ExtraMetricRef]) -> list[ExtraMetric]:
    """``evaluate.load`` every module; a failure is a RecipeError naming the entry."""
    if not refs:
        return []
    import evaluate

    out = []
    for i, ref in enumerate(refs):
        try:
            module = evaluate.load(ref.path)
        except Exception as e:  # evaluate raises FileNotFoundError, ImportError, ConnectionError...
            raise RecipeError(f"cannot load evaluate module {ref.ref!r}: {type(e).__name__}: {e}",
                              field=f"{FIELD}[{i}]", hint="check the Hub id or the module script"
                              ) from None
        out.append(ExtraMetric(ref, module))
    return out


def _scalar(value: Any) -> Optional[float]:
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.item()
    if isinstance(value, (bool, np.bool_)):
        return float(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    return None


def compute_extra_metrics(metrics: list[ExtraMetric], predictions: Any, references: Any, *,
                          taken: set[str], notes: list[str]) -> dict[str, float]:
    """Each module's scalar results, keyed ``<module>`` or ``<module>_<result>`` (``evaluate_``
    in front when that would clash with a built-in figure). Non-scalar results are left out and
    noted once."""
    out: dict[str, float] = {}
    for metric in metrics:
        name = metric.ref.name
        try:
            result = metric.module.compute(predictions=predictions, references=references) or {}
        except Exception as e:
            raise RecipeError(f"evaluate module {metric.ref.ref!r} failed on this task's "
                              f"predictions: {type(e).__name__}: {e}", field=FIELD,
                              hint="check what the module expects (predictions/references "
                              "features) against the task") from None
        for result_name, value in result.items():
            number = _scalar(value)
            key = name if result_name == name else f"{name}_{result_name}"
            if key in taken or key in out:
                key = f"evaluate_{key}"
            if number is None:
                note = (f"{FIELD}: {metric.ref.ref!r} result {result_name!r} is not a single "
                        "number and is not recorded")
                if note not in notes:
                    notes.append(note)
                continue
            out[key] = number
            metric.keys[key] = result_name
    return out


def extra_metric_specs(metrics: list[ExtraMetric]) -> list:
    """:class:`~sft_hub.tasks.base.Metric` declarations of the recorded extra figures."""
    return [Metric(key, f"{result} ({m.ref.name}, evaluate)", m.ref.name, headline=True)
            for m in metrics for key, result in m.keys.items()]
