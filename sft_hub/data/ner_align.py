"""Word labels -> subword labels, through the fast tokenizer's word ids.

A pretrained tokenizer splits a word into several subwords; the word's tag goes on its first subword
and the other positions get -100, the ignore index of the cross-entropy loss (or, in
label-all-subwords mode, a continuation tag: ``B-X`` becomes ``I-X``). Evaluation always reads the
first subword of each word only, so metrics are computed on words whatever the training mode.

A word the encoding lost (cut off by ``max_length``, or one the tokenizer turns into no subword at
all) has no position, so it is left out of the metrics, gold tag included; the counts are reported
so that nobody mistakes a truncated evaluation for a complete one. Torch-free.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

from ..errors import DataError

IGNORE_INDEX = -100  # torch.nn.CrossEntropyLoss's default ignore_index


def align_labels(word_ids: Sequence[Optional[int]], word_labels: Sequence[int], *,
                 continuation: Optional[Sequence[int]] = None) -> list[int]:
    """One label per subword position.

    ``word_ids`` is the tokenizer's position -> word index map (None for special tokens).
    ``continuation`` maps a label id to the id for a word's later subwords (label-all-subwords
    mode); without it later subwords get :data:`IGNORE_INDEX`.
    """
    labels = []
    previous = None
    for word in word_ids:
        if word is None:
            labels.append(IGNORE_INDEX)
        elif word != previous:
            labels.append(word_labels[word])
        elif continuation is not None:
            labels.append(continuation[word_labels[word]])
        else:
            labels.append(IGNORE_INDEX)
        previous = word
    return labels


@dataclass
class AlignmentStats:
    """What the encoding lost; every lost word is excluded from the metrics."""

    sentences: int = 0
    truncated_sentences: int = 0  # sentences longer than max_length subwords
    words: int = 0
    words_cut: int = 0  # words after the max_length cut
    words_without_subwords: int = 0  # words the tokenizer produced no subword for

    def add(self, other: "AlignmentStats") -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def notes(self, split: str, max_length: int) -> list[str]:
        out = []
        if self.truncated_sentences:
            out.append(f"{split}: {self.truncated_sentences} of {self.sentences} sentences are "
                       f"longer than max_length={max_length} subwords; their last "
                       f"{self.words_cut} word(s) are cut off and left out of training and metrics "
                       "(raise data.max_length to keep them)")
        if self.words_without_subwords:
            out.append(f"{split}: {self.words_without_subwords} word(s) produce no subword with "
                       "this tokenizer (e.g. zero-width characters) and are left out of training "
                       "and metrics")
        return out


def require_word_ids(tokenizer: Any, model_name: str) -> None:
    """Alignment needs ``word_ids()``, which only fast (Rust) tokenizers provide."""
    if not getattr(tokenizer, "is_fast", False):
        raise DataError(
            f"the tokenizer of {model_name!r} ({type(tokenizer).__name__}) is a slow tokenizer: it "
            "cannot map subwords back to words (no word_ids()), which token classification needs",
            field="model.processor",
            hint="use a model that ships a fast tokenizer (tokenizer.json), or set model.processor "
            "to one that does")


def needs_prefix_space(tokenizer: Any) -> bool:
    """True for a byte-level BPE tokenizer (GPT-2, RoBERTa...) that adds no space before words.

    Such tokenizers mark a word start with a leading space; running text has it, but pre-split
    words have none unless the tokenizer adds it, so training would see other subwords than
    inference. Load these with ``add_prefix_space=True``.
    """
    import json

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return False

    def byte_level_without_prefix(node: Any) -> bool:
        if isinstance(node, dict):
            if node.get("type") == "ByteLevel" and node.get("add_prefix_space") is False:
                return True
            return any(byte_level_without_prefix(v) for v in node.values())
        if isinstance(node, list):
            return any(byte_level_without_prefix(v) for v in node)
        return False

    return byte_level_without_prefix(json.loads(backend.to_str()).get("pre_tokenizer"))


def tokenize_and_align(tokenizer: Any, words: Sequence[Sequence[str]],
                       word_labels: Sequence[Sequence[int]], *, max_length: int,
                       continuation: Optional[Sequence[int]] = None) -> tuple[dict, AlignmentStats]:
    """Tokenize pre-split sentences and align their labels; returns (features, stats).

    ``features`` holds the tokenizer's columns plus ``labels``; padding is left to the collator.
    """
    encoding = tokenizer(list(words), is_split_into_words=True, truncation=True,
                         max_length=max_length)
    stats = AlignmentStats(sentences=len(words))
    labels = []
    for i, (sentence, tags) in enumerate(zip(words, word_labels)):
        word_ids = encoding.word_ids(i)
        labels.append(align_labels(word_ids, tags, continuation=continuation))
        kept = {w for w in word_ids if w is not None}
        stats.words += len(sentence)
        if encoding.encodings[i].overflowing:
            stats.truncated_sentences += 1
            last = max(kept, default=-1)
            stats.words_cut += len(sentence) - 1 - last
            stats.words_without_subwords += sum(1 for w in range(last + 1) if w not in kept)
        else:
            stats.words_without_subwords += len(sentence) - len(kept)
    features = dict(encoding)
    features["labels"] = labels
    return features, stats
