"""Shared base for tasks with one label per example (text and image classification)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..data.labels import derive_labels, encode_labels, label_names, name_integer_labels
from ..data.sources import check_local_columns, finalize_splits, load_raw_splits
from ..data.value_checks import check_local_values
from ..errors import DataError
from ..metrics import classification_metrics, Metric, PerClass
from .base import Breakdown, Task, softmax

if TYPE_CHECKING:  # pragma: no cover
    from datasets import DatasetDict

CLASSIFICATION_METRICS = (
    Metric("accuracy", "Accuracy", "accuracy"),
    Metric("f1_macro", "F1 (macro)", "f1", "macro"),
    Metric("precision_macro", "Precision (macro)", "precision", "macro", headline=False),
    Metric("recall_macro", "Recall (macro)", "recall", "macro", headline=False),
    Metric("top5_accuracy", "Top-5 accuracy", "top_5_accuracy"),  # more than 5 classes only
)


class SingleLabelTask(Task):
    """Loads splits, fixes the label list, encodes labels, carves validation, scores predictions.

    Subclasses' ``data_spec`` must define ``label_column``.
    """

    metrics = CLASSIFICATION_METRICS
    best_metric = "accuracy"
    per_class = PerClass("{field}_{name}", ("f1",))

    def check_data(self) -> None:
        spec = self.recipe.data
        check_local_columns(spec, self.recipe_dir, self.required_columns())
        check_local_values(spec, self.recipe_dir, label_column=spec.label_column,
                           names=label_names(spec, self.recipe_dir),
                           text_columns=self.text_columns())

    def text_columns(self) -> list[str]:
        """Columns whose cells must not be empty (none here; text tasks name theirs)."""
        return []

    def load_data(self) -> "DatasetDict":
        spec = self.recipe.data
        raw = load_raw_splits(spec, self.recipe_dir)
        self._check_columns(raw)
        names = label_names(spec, self.recipe_dir)  # data.labels or data.label_names
        raw = name_integer_labels(self.prepare_raw(raw), spec.label_column, names)
        self.labels = derive_labels(raw, spec.label_column, names)
        if names is None and all(label.lstrip("-").isdigit() for label in self.labels):
            self.notes.append(f"the labels are integer ids without names, so the model's labels "
                              f"are {', '.join(self.labels[:4])}...; name them in id order with "
                              "data.labels (or data.label_names)")
        encoded = encode_labels(raw, spec.label_column, self.labels)
        return finalize_splits(encoded, spec, self.seed, stratify_column=spec.label_column)

    def load_eval_data(self, raw: "DatasetDict") -> "DatasetDict":
        self._check_columns(raw)
        column = self.recipe.data.label_column
        named = name_integer_labels(self.prepare_raw(raw), column, self.labels)
        return encode_labels(named, column, self.labels)

    def _check_columns(self, raw: "DatasetDict") -> None:
        for split, ds in raw.items():
            for column in self.required_columns():
                if column not in ds.column_names:
                    raise DataError(f"the {split} split has no column {column!r} "
                                    f"(columns: {', '.join(ds.column_names)})",
                                    field=f"data.{self._field_for(column)}",
                                    hint="set the recipe's column names to the data's columns")

    def prepare_raw(self, raw: "DatasetDict") -> "DatasetDict":
        """Hook: adjust the splits as read (e.g. resolve image paths) before labels are encoded."""
        return raw

    def _field_for(self, column: str) -> str:
        for name, value in self.recipe.data.model_dump().items():
            if name.endswith("_column") and value == column:
                return name
        return "label_column"

    def task_metrics(self, eval_pred) -> dict[str, float]:
        return classification_metrics(eval_pred.predictions, eval_pred.label_ids, self.labels)

    def evaluate_inputs(self, eval_pred) -> tuple[Any, Any]:
        """Predicted and gold class ids (what evaluate's accuracy, f1, matthews_correlation take)."""
        import numpy as np

        logits = eval_pred.predictions
        if isinstance(logits, tuple):
            logits = logits[0]
        return np.asarray(logits).argmax(-1).tolist(), np.asarray(eval_pred.label_ids).tolist()

    # -- eval and predict ---------------------------------------------------------------------
    def decode_logits(self, logits, features, *, top_k: int = 1) -> dict[str, Any]:
        """The most probable label and its softmax score (``top_k``: the k best, best first)."""
        import numpy as np

        probs = softmax(logits)
        order = np.argsort(-probs, kind="stable")[:max(1, top_k)]
        out: dict[str, Any] = {"label": self.labels[order[0]], "score": float(probs[order[0]])}
        if top_k > 1:
            out["top_k"] = [{"label": self.labels[i], "score": float(probs[i])} for i in order]
        return out

    def breakdown(self, eval_pred) -> Breakdown:
        """Per example: confusion of gold and predicted labels, per-class P/R/F1/support, the
        predicted label's probability (calibration); accuracy from (correct, 1) per example."""
        import numpy as np
        from sklearn.metrics import precision_recall_fscore_support

        logits = eval_pred.predictions
        if isinstance(logits, tuple):
            logits = logits[0]
        probs = softmax(logits)
        gold = np.asarray(eval_pred.label_ids).astype(int)
        predicted = probs.argmax(-1)
        confidence = probs[np.arange(len(predicted)), predicted]
        n = len(self.labels)
        confusion = np.zeros((n, n), dtype=np.int64)
        np.add.at(confusion, (gold, predicted), 1)
        p, r, f, support = precision_recall_fscore_support(
            gold, predicted, labels=list(range(n)), average=None, zero_division=0)
        per_class = [{"class": name, "precision": float(p[i]), "recall": float(r[i]),
                      "f1": float(f[i]), "support": int(support[i])}
                     for i, name in enumerate(self.labels)]
        correct = (predicted == gold)
        errors = [{"example": int(i), "gold": self.labels[gold[i]],
                   "predicted": self.labels[predicted[i]], "score": float(confidence[i])}
                  for i in np.flatnonzero(~correct)]
        stats = np.stack([correct.astype(np.float64), np.ones(len(gold))], axis=1)
        return Breakdown(classes=list(self.labels), predicted_classes=list(self.labels),
                         confusion=confusion, per_class=per_class, confidence=confidence,
                         correct=correct, stats=stats, headline=_ratio, errors=errors)


def _ratio(summed) -> float:
    """Accuracy from summed (correct, examples)."""
    return float(summed[0] / summed[1]) if summed[1] else 0.0
