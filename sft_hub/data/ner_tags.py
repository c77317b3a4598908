"""NER tag names: the label list, the tagging scheme check and the unknown-tag check.

Tags are handled as strings (``O``, ``B-PER``, ``I-PER``, ``E-``/``S-`` for IOBES) from the moment
the data is read: ClassLabel ids and recipe-given ids are named first, so that every later step
(scheme check, entity metrics, the model config's ``id2label``) sees the same real names.
Torch-free.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence

from ..errors import DataError

OUTSIDE = "O"
PREFIXES = ("B", "I", "E", "S")  # IOB2 / BIO use B and I; IOBES adds E (end) and S (single)


def split_tag(tag: str) -> tuple[str, Optional[str]]:
    """``"B-PER"`` -> ``("B", "PER")``; ``"O"`` -> ``("O", None)``. Raises ValueError otherwise."""
    if tag == OUTSIDE:
        return OUTSIDE, None
    prefix, sep, entity = tag.partition("-")
    if not sep or prefix not in PREFIXES or not entity:
        raise ValueError(tag)
    return prefix, entity


def entity_types(labels: Iterable[str]) -> list[str]:
    """The entity types the labels mention, sorted (``B-PER``, ``I-PER`` -> ``PER``)."""
    return sorted({split_tag(tag)[1] for tag in labels if tag != OUTSIDE})


def _sort_key(tag: str) -> tuple:
    prefix, entity = split_tag(tag)
    return (entity is not None, entity or "", PREFIXES.index(prefix) if entity else 0)


def derive_labels(tag_sequences: Iterable[Sequence[str]], *, where: str = "train") -> list[str]:
    """The label list of string-tagged data: ``O`` first, then each entity type's B/I/E/S tags.

    Grouping by entity type gives the order Hub NER datasets use (``O, B-loc, I-loc, B-per, ...``),
    so local and Hub copies of a data set get the same label ids.
    """
    seen = {tag for tags in tag_sequences for tag in tags}
    check_tag_names(seen, where=where)
    return sorted(seen, key=_sort_key)


def check_tag_names(tags: Iterable[str], *, where: str) -> None:
    """Every tag is ``O`` or ``B-``/``I-``/``E-``/``S-`` + a type: entity metrics and the inference
    pipeline's entity grouping read those prefixes."""
    bad = []
    for tag in sorted(set(tags)):
        try:
            split_tag(tag)
        except ValueError:
            bad.append(tag)
    if bad:
        shown = ", ".join(repr(t) for t in bad[:5]) + (" ..." if len(bad) > 5 else "")
        raise DataError(f"{where}: tag(s) {shown} are not 'O' or B-/I-/E-/S-<type> tags",
                        field="data.tags_column",
                        hint="use IOB2 (B-X, I-X, O) or IOBES tags; check data.tags_column (and "
                        "data.conll_tag_column for CoNLL files) points at the NER tags")


def check_known_tags(split: str, tag_sequences: Sequence[Sequence[str]], labels: Sequence[str],
                     *, field: str = "data.labels") -> None:
    """An unknown tag would get no label id: name it, the split and the first row holding it."""
    known = set(labels)
    unknown: Counter = Counter()
    first_row: dict[str, int] = {}
    for row, tags in enumerate(tag_sequences):
        for tag in tags:
            if tag not in known:
                unknown[tag] += 1
                first_row.setdefault(tag, row)
    if unknown:
        shown = ", ".join(f"{tag!r} ({count}x, first in row {first_row[tag]})"
                          for tag, count in unknown.most_common(5))
        raise DataError(f"{split} split has tag(s) the label list does not know: {shown}",
                        field=field,
                        hint=f"known labels: {', '.join(labels)}. Fix the data, or list every tag "
                        "in data.labels")


def name_tag_ids(split: str, id_sequences: Sequence[Sequence[int]], names: Sequence[str],
                 *, field: str) -> list[list[str]]:
    """Integer tags -> names, with an error naming the first id outside the name list."""
    out = []
    for row, ids in enumerate(id_sequences):
        bad = [i for i in ids if not isinstance(i, int) or not 0 <= i < len(names)]
        if bad:
            raise DataError(f"{split} split row {row}: tag id {bad[0]!r} has no name ({len(names)} "
                            "label names)", field=field,
                            hint="data.labels lists the tag names in id order")
        out.append([names[i] for i in ids])
    return out


@dataclass
class SchemeReport:
    """Result of :func:`check_scheme`: which scheme the tags use and how many break it."""

    scheme: str  # "IOB2" or "IOBES"
    invalid: int = 0  # I-X / E-X tags that follow neither B-X nor I-X
    examples: list[str] = field(default_factory=list)

    def warning(self, split: str) -> Optional[str]:
        if not self.invalid:
            return None
        return (f"{split}: {self.invalid} tag(s) continue an entity that was not opened "
                f"({'; '.join(self.examples)}); the data is not clean {self.scheme}. Entity "
                "metrics (seqeval, conlleval mode) read each such tag as the start of a new entity")


def check_scheme(tag_sequences: Iterable[Sequence[str]], max_examples: int = 3) -> SchemeReport:
    """Count continuation tags (``I-X``, ``E-X``) that follow neither ``B-X`` nor ``I-X``.

    Such tags are typical of IOB1 data (CoNLL-2003's original files) or annotation slips; they are
    reported, not fixed, because fixing would change the gold standard the user measures against.
    """
    sequences = [list(tags) for tags in tag_sequences]
    prefixes = {tag.partition("-")[0] for tags in sequences for tag in tags if tag != OUTSIDE}
    report = SchemeReport(scheme="IOBES" if prefixes & {"E", "S"} else "IOB2")
    for row, tags in enumerate(sequences):
        previous = OUTSIDE
        for position, tag in enumerate(tags):
            prefix, entity = split_tag(tag)
            if prefix in ("I", "E"):
                prev_prefix, prev_entity = split_tag(previous)
                if prev_prefix not in ("B", "I") or prev_entity != entity:
                    report.invalid += 1
                    if len(report.examples) < max_examples:
                        report.examples.append(
                            f"row {row} token {position}: {tag!r} after {previous!r}")
            previous = tag
    return report


def continuation_labels(labels: Sequence[str]) -> list[int]:
    """For each label id, the id to give a word's later subwords in label-all-subwords mode:
    ``B-X`` -> ``I-X`` (when the label list has it), every other tag unchanged."""
    index = {tag: i for i, tag in enumerate(labels)}
    out = []
    for i, tag in enumerate(labels):
        prefix, entity = split_tag(tag)
        out.append(index.get(f"I-{entity}", i) if prefix == "B" else i)
    return out
