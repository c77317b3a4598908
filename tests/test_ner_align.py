"""Subword label alignment on a hand-checked tokenization, both labelling modes, and truncation."""
from __future__ import annotations

import pytest

from sft_hub.data.ner_align import (IGNORE_INDEX, align_labels, needs_prefix_space,
                                    require_word_ids, tokenize_and_align)
from sft_hub.data.ner_tags import continuation_labels
from sft_hub.errors import DataError

LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
WORDS = ["Johns", "lives", "in", "New", "York"]
TAGS = [1, 0, 0, 3, 4]  # B-PER O O B-LOC I-LOC
X = IGNORE_INDEX


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import BertTokenizer

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "john", "##s", "lives", "in", "new",
             "yo", "##rk"]
    return BertTokenizer(vocab={token: i for i, token in enumerate(vocab)})


def test_known_tokenization(tokenizer):
    encoding = tokenizer([WORDS], is_split_into_words=True)
    assert encoding.tokens(0) == ["[CLS]", "john", "##s", "lives", "in", "new", "yo", "##rk",
                                  "[SEP]"]
    assert encoding.word_ids(0) == [None, 0, 0, 1, 2, 3, 4, 4, None]


def test_first_subword_mode_labels_each_word_once(tokenizer):
    features, stats = tokenize_and_align(tokenizer, [WORDS], [TAGS], max_length=32)
    #                            [CLS] john ##s lives in new yo ##rk [SEP]
    assert features["labels"] == [[X, 1, X, 0, 0, 3, 4, X, X]]
    assert len(features["input_ids"][0]) == 9
    assert (stats.sentences, stats.words, stats.truncated_sentences) == (1, 5, 0)


def test_label_all_subwords_mode_continues_entities_with_i_tags(tokenizer):
    features, _ = tokenize_and_align(tokenizer, [WORDS], [TAGS], max_length=32,
                                     continuation=continuation_labels(LABELS))
    #                            [CLS] john ##s   lives in new yo ##rk [SEP]
    assert features["labels"] == [[X, 1, 2, 0, 0, 3, 4, 4, X]]  # ##s: B-PER -> I-PER


def test_truncation_is_counted_and_cut_words_get_no_label(tokenizer):
    features, stats = tokenize_and_align(tokenizer, [WORDS, ["in"]], [TAGS, [0]], max_length=6)
    assert features["labels"][0] == [X, 1, X, 0, 0, X]  # New York cut off: no position at all
    assert (stats.truncated_sentences, stats.words_cut, stats.words) == (1, 2, 6)
    assert "1 of 2 sentences are longer than max_length=6" in stats.notes("test", 6)[0]


def test_words_without_subwords_are_counted(tokenizer):
    features, stats = tokenize_and_align(tokenizer, [["john", "\u200b", "in"]], [[1, 0, 0]],
                                         max_length=32)
    assert features["labels"] == [[X, 1, 0, X]]
    assert (stats.words_without_subwords, stats.truncated_sentences) == (1, 0)
    assert "produce no subword" in stats.notes("train", 32)[0]


def test_byte_level_tokenizers_are_detected_and_fixed_by_add_prefix_space(tmp_path, tokenizer):
    from transformers import AutoTokenizer, RobertaTokenizer

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "\u0120": 4, "h": 5, "i": 6,
             "\u0120h": 7, "\u0120hi": 8, "hi": 9}
    RobertaTokenizer(vocab=vocab, merges=[("\u0120", "h"), ("\u0120h", "i"), ("h", "i")]
                     ).save_pretrained(tmp_path)
    plain = AutoTokenizer.from_pretrained(tmp_path)
    assert needs_prefix_space(plain)
    # Pre-split words lose the word-start marker that running text has ("hi hi" -> hi, Ġhi).
    assert plain([["hi", "hi"]], is_split_into_words=True).tokens(0)[1:3] == ["hi", "hi"]
    fixed = AutoTokenizer.from_pretrained(tmp_path, add_prefix_space=True)
    assert not needs_prefix_space(fixed)
    assert fixed([["hi", "hi"]], is_split_into_words=True).tokens(0)[1:3] == ["\u0120hi"] * 2
    assert not needs_prefix_space(tokenizer)  # WordPiece (BERT) needs nothing


def test_align_labels_resets_at_special_tokens():
    # A pair encoding repeats word 0 after [SEP]: it is a new first subword.
    assert align_labels([None, 0, 0, None, 0, None], [3]) == [X, 3, X, X, 3, X]


def test_slow_tokenizer_gets_a_clear_error():
    class SlowTokenizer:
        is_fast = False

    with pytest.raises(DataError, match="slow tokenizer") as err:
        require_word_ids(SlowTokenizer(), "some/model")
    assert err.value.field == "model.processor" and "tokenizer.json" in err.value.hint
