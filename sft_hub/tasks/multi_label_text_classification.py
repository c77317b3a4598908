"""``multi-label-text-classification``: any number of labels per text (topics, tags, entity types).

Data: a text column and a labels column holding a list of label names (JSON/JSONL/Parquet, Hub
``Sequence`` features, ``Sequence(ClassLabel)`` included) or a string of names joined by
``data.label_separator`` (CSV: ``"person,location"``; an empty cell is no label). The label list
is ``data.labels`` or the sorted names seen in training; a validation/test label outside it is an
error naming it.

Model: a sequence classifier with one sigmoid output per label (``problem_type:
multi_label_classification`` in its config, so training uses a binary cross-entropy loss and
``pipeline("text-classification", top_k=None)`` returns every label with its sigmoid score). A
label is predicted when its score reaches its threshold: ``data.threshold`` (default 0.5) for
every label, or, with ``data.tune_thresholds: true``, the threshold that maximises that label's F1
on the validation split (a 0.05 grid; the threshold of the checkpoint the run keeps, so test
figures use thresholds that never saw test data; an evaluation is told to be of the validation
split by its gold labels, so a test split with the very same label rows would be tuned on). The
thresholds are saved in the model config as
``label_thresholds`` (label -> threshold) and in ``run_info.json``; the card's usage snippet applies
them.

Metrics: micro and macro F1, micro precision/recall, subset accuracy (every label of a text
right) and per-label F1; the best checkpoint is picked by micro F1.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

import numpy as np
from pydantic import Field
from typing_extensions import Annotated

from ..data.columns import column_values
from ..data.labels import check_known_labels, label_list
from ..data.sources import check_local_columns, finalize_splits, load_raw_splits
from ..data.value_checks import check_local_values
from ..errors import DataError
from ..metrics import Metric, PerClass
from ..recipe.schema import HUB_ANY, Column, Switch, hub
from . import TASKS
from ._text import TextData, TextInputs
from .base import Breakdown, Task

if TYPE_CHECKING:  # pragma: no cover
    from datasets import Dataset, DatasetDict

THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.05), 2)
CONFIG_KEY = "label_thresholds"


class MultiLabelTextData(TextData):
    label_column: Column = Field("labels", description="column holding each text's labels: a list "
                              "of names, or names joined by label_separator")
    label_separator: Annotated[str, Field(json_schema_extra=hub(HUB_ANY))] = Field(
        ",", min_length=1, description="splits a labels string into "
                                 "names (spaces around names are dropped)")
    threshold: float = Field(0.5, gt=0, lt=1, description="a label is predicted when its "
                             "sigmoid score reaches this")
    tune_thresholds: Switch = Field(False, description="pick each label's threshold by its F1 on "
                                  "the validation split (recorded in the model config)")


@TASKS.register
class MultiLabelTextClassification(TextInputs, Task):
    name = "multi-label-text-classification"
    data_spec = MultiLabelTextData
    metrics = (
        Metric("f1_micro", "F1 (micro)", "f1", "micro"),
        Metric("f1_macro", "F1 (macro)", "f1", "macro"),
        Metric("precision_micro", "Precision (micro)", "precision", "micro", headline=False),
        Metric("recall_micro", "Recall (micro)", "recall", "micro", headline=False),
        Metric("subset_accuracy", "Subset accuracy (exact match)", "accuracy", "subset"),
    )
    best_metric = "f1_micro"
    per_class = PerClass("{field}_{name}", ("f1", "threshold"))
    pipeline_kwargs = {"top_k": None}
    usage_input = ('inputs = "Meet me at the Empire State Building with Taylor Swift."\n'
                   "thresholds = classifier.model.config.label_thresholds")
    usage_output = ('[[s["label"] for s in scores if s["score"] >= thresholds[s["label"]]]\n'
                    '       for scores in classifier([inputs])]')

    def __init__(self, recipe, recipe_dir):
        super().__init__(recipe, recipe_dir)
        self.thresholds: dict[str, float] = {}
        self._config: Any = None
        self._validation_labels: Optional[np.ndarray] = None
        self._best: Optional[float] = None

    # -- data -------------------------------------------------------------------------------
    def check_data(self) -> None:
        check_local_columns(self.recipe.data, self.recipe_dir, self.required_columns())
        check_local_values(self.recipe.data, self.recipe_dir, label_column=None, names=None,
                           text_columns=self.text_columns())

    def load_data(self) -> "DatasetDict":
        from datasets import DatasetDict

        spec = self.recipe.data
        raw = self.prepare_raw(load_raw_splits(spec, self.recipe_dir))  # empty texts: error/skip
        names = {}
        for split, ds in raw.items():
            self._check_columns(split, ds)
            names[split] = self._label_names(split, ds)
        self.labels = label_list({n for row in names["train"] for n in row}, spec.labels,
                                 column=spec.label_column)
        self.thresholds = {label: spec.threshold for label in self.labels}
        out = {}
        for split, ds in raw.items():
            check_known_labels(split, {n for row in names[split] for n in row}, self.labels)
            out[split] = self._encoded(ds, names[split])
        return finalize_splits(DatasetDict(out), spec, self.seed)

    def _label_names(self, split: str, ds: "Dataset") -> list[list[str]]:
        """Each row's label names, whatever the column holds (lists, ClassLabel ids, strings)."""
        spec = self.recipe.data
        feature = ds.features[spec.label_column]
        inner = getattr(feature, "feature", None)
        int2str = getattr(inner, "int2str", None)
        rows = []
        for i, value in enumerate(column_values(ds, spec.label_column)):  # one Arrow read
            if value is None:  # an empty CSV cell
                value = []
            if isinstance(value, str):
                parts = [p.strip() for p in value.split(spec.label_separator)]
            elif isinstance(value, (list, tuple)):
                parts = [int2str(v) if int2str is not None else str(v).strip() for v in value]
            else:
                raise DataError(f"{split} split row {i}: labels must be a list of names or a "
                                f"string, got {type(value).__name__} {value!r}",
                                field="data.label_column",
                                hint="for one label per text use task: text-classification")
            rows.append(list(dict.fromkeys(p for p in parts if p)))
        return rows

    def _encoded(self, ds: "Dataset", rows: list[list[str]]) -> "Dataset":
        """The split with its label column replaced by multi-hot float vectors."""
        from datasets import Sequence, Value

        column = self.recipe.data.label_column
        index = {name: i for i, name in enumerate(self.labels)}
        hot = np.zeros((len(rows), len(self.labels)), dtype=np.float32)
        for r, row in enumerate(rows):
            hot[r, [index[n] for n in row]] = 1.0
        ds = ds.remove_columns([column]).add_column(column, hot.tolist())
        return ds.cast_column(column, Sequence(Value("float32")))

    def preprocess(self, raw: "DatasetDict") -> "DatasetDict":
        data = super().preprocess(raw)
        if "validation" in data:  # eval data without a validation split is never tuned on
            self._validation_labels = np.asarray(data["validation"]["labels"], dtype=np.float32)
        return data

    # -- model ------------------------------------------------------------------------------
    def model_config_extras(self) -> dict[str, Any]:
        default = self.recipe.data.threshold
        return {"problem_type": "multi_label_classification",
                CONFIG_KEY: {label: self.thresholds.get(label, default) for label in self.labels}}

    def build_model(self) -> Any:
        model = super().build_model()
        self._config = model.config  # the saved config gets the thresholds the run ends with
        return model

    # -- metrics ----------------------------------------------------------------------------
    def _probabilities(self, eval_pred) -> np.ndarray:
        logits = eval_pred.predictions
        if isinstance(logits, tuple):
            logits = logits[0]
        return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))

    def _is_validation(self, gold: np.ndarray) -> bool:
        known = self._validation_labels
        return known is not None and known.shape == gold.shape and bool((known == gold).all())

    def task_metrics(self, eval_pred) -> dict[str, float]:
        probs = self._probabilities(eval_pred)
        gold = np.asarray(eval_pred.label_ids) >= 0.5
        thresholds = self.thresholds
        tuning = self.recipe.data.tune_thresholds and self._is_validation(gold.astype(np.float32))
        if tuning:
            thresholds = tune_thresholds(probs, gold, self.labels, self.recipe.data.threshold)
        out = multilabel_metrics(probs, gold, self.labels, thresholds)
        if tuning:
            self._keep_if_best(out, thresholds)
        return out

    def _keep_if_best(self, figures: dict[str, float], thresholds: dict[str, float]) -> None:
        """Keep the thresholds of the evaluation whose checkpoint the Trainer keeps: the best one
        by ``metric_for_best_model`` (strictly better, as the Trainer decides) when the run loads
        the best model at the end, else the latest."""
        settings = self.recipe.settings
        key = str(settings.get("metric_for_best_model") or self.best_metric)
        key = key[len("eval_"):] if key.startswith("eval_") else key
        value = figures.get(key)
        if settings.keeps_best_model and value is not None:
            spec = next((m for m in self.metrics if m.key == key), None)
            greater = settings.get("greater_is_better")
            greater = (spec.greater_is_better if spec else True) if greater is None else greater
            if self._best is not None and not (value > self._best if greater
                                               else value < self._best):
                return
            self._best = value
        self.thresholds = dict(thresholds)
        if self._config is not None:
            setattr(self._config, CONFIG_KEY, dict(thresholds))

    def evaluate_inputs(self, eval_pred) -> tuple[Any, Any]:
        """0/1 prediction and reference rows, one column per label (evaluate's ``multilabel``
        configurations of f1/precision/recall)."""
        probs = self._probabilities(eval_pred)
        cut = np.array([self.thresholds.get(n, 0.5) for n in self.labels])
        predicted = (probs >= cut).astype(int)
        return predicted.tolist(), (np.asarray(eval_pred.label_ids) >= 0.5).astype(int).tolist()


    # -- eval and predict -------------------------------------------------------------------
    def adopt_model_config(self, config: Any) -> None:
        """The labels and the per-label thresholds the run saved (``label_thresholds``)."""
        super().adopt_model_config(config)
        saved = getattr(config, CONFIG_KEY, None) or {}
        default = self.recipe.data.threshold
        self.thresholds = {label: float(saved.get(label, default)) for label in self.labels}

    def _check_columns(self, split: str, ds) -> None:
        """The split has every column the recipe names, else a DataError naming the field."""
        spec = self.recipe.data
        for column, field in ((spec.text_column, "text_column"),
                              (spec.text_pair_column, "text_pair_column"),
                              (spec.label_column, "label_column")):
            if column and column not in ds.column_names:
                raise DataError(f"the {split} split has no column {column!r} (columns: "
                                f"{', '.join(ds.column_names)})", field=f"data.{field}",
                                hint="set the recipe's column names to the data's columns")

    def load_eval_data(self, raw: "DatasetDict") -> "DatasetDict":
        from datasets import DatasetDict

        raw = self.prepare_raw(raw)  # empty texts: error or skip, as in training
        out = {}
        for split, ds in raw.items():
            self._check_columns(split, ds)
            names = self._label_names(split, ds)
            check_known_labels(split, {n for row in names for n in row}, self.labels)
            out[split] = self._encoded(ds, names)
        return DatasetDict(out)

    def decode_logits(self, logits, features, *, top_k: int = 1) -> dict[str, Any]:
        """The labels whose sigmoid score reaches their threshold, with their scores (``top_k``
        > 1: also the k best labels, predicted or not)."""
        probs = 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))
        cut = np.array([self.thresholds.get(n, self.recipe.data.threshold) for n in self.labels])
        chosen = np.flatnonzero(probs >= cut)
        chosen = chosen[np.argsort(-probs[chosen], kind="stable")]
        out: dict[str, Any] = {"labels": [self.labels[i] for i in chosen],
                               "scores": [float(probs[i]) for i in chosen]}
        if top_k > 1:
            order = np.argsort(-probs, kind="stable")[:top_k]
            out["top_k"] = [{"label": self.labels[i], "score": float(probs[i])} for i in order]
        return out

    def loss(self, logits, labels) -> np.float32:
        """Binary cross-entropy with logits, the loss of ``problem_type:
        multi_label_classification``."""
        import torch

        value = torch.nn.functional.binary_cross_entropy_with_logits(
            torch.from_numpy(np.ascontiguousarray(logits, dtype=np.float32)),
            torch.from_numpy(np.asarray(labels, dtype=np.float32)))
        return np.float32(value.item())

    def breakdown(self, eval_pred) -> Breakdown:
        """Confusion of gold and predicted labels (each gold label of a text against each
        predicted one; ``(none)`` for a text without gold or predicted labels), per-label
        P/R/F1/support, calibration over every (text, label) decision, micro F1 from
        per-text (found, predicted, gold) counts."""
        from sklearn.metrics import precision_recall_fscore_support

        probs = self._probabilities(eval_pred)
        gold = (np.asarray(eval_pred.label_ids) >= 0.5).astype(int)
        cut = np.array([self.thresholds.get(n, self.recipe.data.threshold) for n in self.labels])
        predicted = (probs >= cut).astype(int)
        names = [*self.labels, NONE]
        none = len(self.labels)
        confusion = np.zeros((len(names), len(names)), dtype=np.int64)
        errors = []
        for i, (g_row, p_row) in enumerate(zip(gold, predicted)):
            g = list(np.flatnonzero(g_row)) or [none]
            p = list(np.flatnonzero(p_row)) or [none]
            for a in g:
                for b in p:
                    confusion[a, b] += 1
            wrong = np.flatnonzero(g_row != p_row)
            if len(wrong):
                sure = np.maximum(probs[i, wrong], 1 - probs[i, wrong])
                errors.append({"example": i, "gold": [self.labels[j] for j in np.flatnonzero(g_row)],
                               "predicted": [self.labels[j] for j in np.flatnonzero(p_row)],
                               "score": float(sure.max())})
        p, r, f, support = precision_recall_fscore_support(gold, predicted, average=None,
                                                           zero_division=0)
        per_class = [{"class": n, "precision": float(p[j]), "recall": float(r[j]),
                      "f1": float(f[j]), "support": int(support[j])}
                     for j, n in enumerate(self.labels)]
        stats = np.stack([(gold & predicted).sum(1), predicted.sum(1), gold.sum(1)], axis=1)
        return Breakdown(classes=names, predicted_classes=names, confusion=confusion,
                         per_class=per_class,
                         confidence=np.maximum(probs, 1 - probs).reshape(-1),
                         correct=(gold == predicted).reshape(-1), stats=stats.astype(np.float64),
                         headline=_micro_f1, errors=errors)


NONE = "(none)"


def _micro_f1(summed) -> float:
    """Micro F1 from summed (found, predicted, gold) label counts."""
    found, predicted, gold = summed
    return float(2 * found / (predicted + gold)) if predicted + gold else 0.0


def tune_thresholds(probs: np.ndarray, gold: np.ndarray, labels: list[str],
                    default: float) -> dict[str, float]:
    """Per label, the grid threshold with the best F1 (ties: the one nearest ``default``); a
    label without positive examples keeps ``default``."""
    out = {}
    order = np.argsort(np.abs(THRESHOLD_GRID - default), kind="stable")
    for j, label in enumerate(labels):
        positives = gold[:, j].sum()
        if positives == 0:
            out[label] = default
            continue
        best_t, best_f1 = default, -1.0
        for t in THRESHOLD_GRID[order]:
            predicted = probs[:, j] >= t
            tp = float(np.sum(predicted & (gold[:, j] > 0)))
            f1 = 2 * tp / (predicted.sum() + positives)
            if f1 > best_f1:
                best_t, best_f1 = float(t), f1
        out[label] = best_t
    return out


def multilabel_metrics(probs: np.ndarray, gold: np.ndarray, labels: list[str],
                       thresholds: dict[str, float]) -> dict[str, float]:
    """Micro/macro F1, micro precision/recall, subset accuracy, per-label F1 and threshold."""
    from sklearn.metrics import f1_score, precision_recall_fscore_support

    cut = np.array([thresholds.get(n, 0.5) for n in labels])
    predicted = (probs >= cut).astype(int)
    gold = np.asarray(gold).astype(int)
    precision, recall, f1_micro, _ = precision_recall_fscore_support(
        gold, predicted, average="micro", zero_division=0)
    per_label = f1_score(gold, predicted, average=None, zero_division=0)
    out = {"f1_micro": float(f1_micro),
           "f1_macro": float(f1_score(gold, predicted, average="macro", zero_division=0)),
           "precision_micro": float(precision), "recall_micro": float(recall),
           "subset_accuracy": float(np.mean((predicted == gold).all(axis=1)))}
    for name, value, t in zip(labels, per_label, cut):
        out[f"f1_{name}"] = float(value)
        out[f"threshold_{name}"] = float(t)
    return out
