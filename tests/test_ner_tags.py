"""NER label lists, tag-scheme check and unknown-tag errors."""
from __future__ import annotations

import pytest

from sft_hub.data.ner_tags import (check_known_tags, check_scheme, continuation_labels,
                                   derive_labels, name_tag_ids)
from sft_hub.errors import DataError


def test_derived_labels_put_o_first_and_group_tags_by_entity_type():
    tags = [["I-person", "O", "B-location"], ["B-person", "I-location", "B-corporation"]]
    assert derive_labels(tags) == ["O", "B-corporation", "B-location", "I-location",
                                   "B-person", "I-person"]


def test_iobes_tags_are_ordered_b_i_e_s():
    assert derive_labels([["S-PER", "E-PER", "O", "I-PER", "B-PER"]]) == [
        "O", "B-PER", "I-PER", "E-PER", "S-PER"]


def test_tags_without_a_scheme_prefix_are_an_error():
    with pytest.raises(DataError, match="'PER'") as err:
        derive_labels([["O", "PER", "B-LOC"]])
    assert err.value.field == "data.tags_column"


def test_unknown_tag_in_evaluation_split_names_tag_split_and_row():
    labels = ["O", "B-PER", "I-PER"]
    check_known_tags("validation", [["O", "B-PER"], ["I-PER"]], labels)  # all known: no error
    with pytest.raises(DataError) as err:
        check_known_tags("test", [["O"], ["B-LOC", "O", "B-LOC"]], labels)
    message = str(err.value)
    assert "test split" in message and "'B-LOC' (2x, first in row 1)" in message


def test_integer_tags_are_named_and_out_of_range_ids_are_errors():
    names = ["O", "B-PER", "I-PER"]
    named = name_tag_ids("train", [[0, 1, 2]], names, field="data.labels")
    assert named == [["O", "B-PER", "I-PER"]]
    with pytest.raises(DataError, match="row 1: tag id 3"):
        name_tag_ids("train", [[0], [3]], names, field="data.labels")


def test_scheme_check_counts_continuations_that_open_an_entity():
    report = check_scheme([
        ["B-PER", "I-PER", "O", "I-PER"],   # I-PER after O
        ["B-LOC", "I-PER"],                 # I-PER after another type
        ["I-ORG", "I-ORG"],                 # sentence-initial I-: one violation, then a valid one
    ])
    assert report.scheme == "IOB2" and report.invalid == 3
    assert report.examples[0] == "row 0 token 3: 'I-PER' after 'O'"
    assert "3 tag(s)" in report.warning("train")


def test_scheme_check_accepts_clean_iob2_and_iobes():
    assert check_scheme([["B-PER", "I-PER", "O", "B-LOC"]]).warning("train") is None
    iobes = check_scheme([["S-PER", "O", "B-LOC", "I-LOC", "E-LOC"], ["E-ORG"]])
    assert iobes.scheme == "IOBES" and iobes.invalid == 1


def test_continuation_labels_turn_b_into_i_when_the_label_exists():
    labels = ["O", "B-PER", "I-PER", "B-MISC"]
    assert continuation_labels(labels) == [0, 2, 2, 3]  # no I-MISC: B-MISC stays
