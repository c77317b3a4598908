"""Entity-level metrics on a hand-checked example, read at word positions only."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from sft_hub.data.ner_metrics import entity_metrics, word_tag_sequences

LABELS = ["O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
GOLD = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O", "B-LOC", "I-LOC"]]
PRED = [["B-PER", "I-PER", "O", "O"], ["B-ORG", "O", "B-LOC", "O"]]


def test_entity_figures_match_the_hand_count():
    # Gold entities: PER[0:2], LOC[3], ORG[0], LOC[2:4] (4). Predicted: PER[0:2], ORG[0], LOC[2]
    # (3). Exact matches: PER and ORG -> P = 2/3, R = 2/4, F1 = 4/7. Words: 6 of 8 right.
    m = entity_metrics(GOLD, PRED, LABELS)
    assert m["entity_precision"] == pytest.approx(2 / 3)
    assert m["entity_recall"] == pytest.approx(0.5)
    assert m["entity_f1"] == pytest.approx(4 / 7)
    assert m["token_accuracy"] == pytest.approx(0.75)
    assert (m["PER_precision"], m["PER_recall"], m["PER_f1"], m["PER_support"]) == (1, 1, 1, 1)
    assert (m["LOC_precision"], m["LOC_recall"], m["LOC_f1"], m["LOC_support"]) == (0, 0, 0, 2)
    assert m["ORG_support"] == 1
    # A type of the label list that occurs nowhere still has its keys (stable metric names).
    assert (m["MISC_f1"], m["MISC_support"]) == (0, 0)


def test_no_predicted_entities_gives_zero_not_a_warning_or_nan():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # seqeval warns on 0/0 unless told what to return
        m = entity_metrics(GOLD, [["O"] * 4, ["O"] * 4], LABELS)
    assert (m["entity_precision"], m["entity_recall"], m["entity_f1"]) == (0, 0, 0)
    assert m["token_accuracy"] == pytest.approx(2 / 8)  # the two gold "O" words


def test_predictions_are_read_only_where_gold_labels_are_set():
    x = -100
    label_ids = np.array([[x, 7, x, 8, 0, 1, x],      # B-PER (##sub) I-PER O B-LOC
                          [x, 5, 0, 1, 2, x, x]])     # B-ORG O B-LOC I-LOC, padded
    predicted_ids = np.array([[0, 7, 3, 8, 0, 0, 3],  # subword and padding positions hold junk
                              [0, 5, 0, 1, 0, 4, 4]])
    logits = np.eye(len(LABELS))[predicted_ids]      # (N, L, C) as the Trainer hands them over
    gold, predicted = word_tag_sequences(logits, label_ids, LABELS)
    assert gold == GOLD and predicted == PRED
