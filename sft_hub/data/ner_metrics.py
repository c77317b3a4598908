"""Entity-level NER metrics on words: seqeval (conlleval-compatible) plus token accuracy.

An entity counts as found only when its type and its exact word span are predicted, which is the
measure NER results are published with. Predictions are read at the positions that carry a gold
label (the first subword of each word in evaluation data), never at -100 positions, so the figures
are about words, not subwords.
"""
from __future__ import annotations

from typing import Any, Sequence

from .ner_align import IGNORE_INDEX
from .ner_tags import entity_types

# Keys of the micro-averaged figures; per-type keys are "<type>_precision" etc.
OVERALL = ("entity_precision", "entity_recall", "entity_f1", "token_accuracy")


def word_tag_sequences(predictions: Any, label_ids: Any,
                       labels: Sequence[str]) -> tuple[list[list[str]], list[list[str]]]:
    """(gold, predicted) tag sequences, one per sentence, read where ``label_ids != -100``.

    ``predictions`` holds label ids (N, L) or logits (N, L, C); rows may be padded with -100.
    """
    import numpy as np

    predictions = np.asarray(predictions)
    if predictions.ndim == 3:
        predictions = predictions.argmax(-1)
    label_ids = np.asarray(label_ids)
    gold, predicted = [], []
    for pred_row, gold_row in zip(predictions, label_ids):
        keep = gold_row != IGNORE_INDEX
        gold.append([labels[i] for i in gold_row[keep]])
        predicted.append([labels[i] for i in pred_row[keep]])
    return gold, predicted


def entity_metrics(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]],
                   labels: Sequence[str]) -> dict[str, float]:
    """Micro entity precision/recall/F1, token accuracy, and per entity type P/R/F1/support.

    Every entity type of ``labels`` gets its keys (0.0 and support 0 when absent), so that the
    metric names are the same at every evaluation and in every run of a recipe.
    """
    from seqeval.metrics.sequence_labeling import precision_recall_fscore_support

    gold = [list(s) for s in gold]
    predicted = [list(s) for s in predicted]
    precision, recall, f1, _ = precision_recall_fscore_support(
        gold, predicted, average="micro", zero_division=0)
    words = sum(len(s) for s in gold)
    correct = sum(g == p for gs, ps in zip(gold, predicted) for g, p in zip(gs, ps))
    out = {"entity_precision": float(precision), "entity_recall": float(recall),
           "entity_f1": float(f1), "token_accuracy": correct / words if words else 0.0}

    per_type = {name: (0.0, 0.0, 0.0, 0) for name in entity_types(labels)}
    names = _seqeval_type_names(gold, predicted)
    if names:
        p, r, f, s = precision_recall_fscore_support(gold, predicted, average=None,
                                                     zero_division=0)
        per_type.update({name: values for name, *values in zip(names, p, r, f, s)})
    for name, (p, r, f, s) in sorted(per_type.items()):
        out[f"{name}_precision"] = float(p)
        out[f"{name}_recall"] = float(r)
        out[f"{name}_f1"] = float(f)
        out[f"{name}_support"] = int(s)
    return out


def _seqeval_type_names(gold, predicted) -> list[str]:
    """The type order of seqeval's per-class arrays (sorted types found in gold or predictions)."""
    from seqeval.metrics.sequence_labeling import get_entities

    return sorted({entity_type for sequences in (gold, predicted)
                   for entity_type, _, _ in get_entities(sequences)})
