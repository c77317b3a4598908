"""Offline metrics shared by the classification tasks (scikit-learn; no Hub download)."""
from __future__ import annotations

from typing import Optional

import numpy as np


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
