"""Classification labels: the label list (:func:`label_list`, any task) and, for tasks with one
label per example (text and image classification), deriving it from a column and encoding that
column as ClassLabel. Labels may be integers, strings or a ``datasets.ClassLabel``; an explicit
``data.labels`` list fixes the order.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from ..errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    from datasets import DatasetDict


def _names_of(dsd: "DatasetDict", split: str, column: str) -> list[str]:
    from datasets import ClassLabel

    feature = dsd[split].features[column]
    if isinstance(feature, ClassLabel):
        return [feature.int2str(i) for i in dsd[split][column] if i is not None and i >= 0]
    return [str(v) for v in dsd[split][column] if v is not None]


def label_list(present: set[str], explicit: Optional[list[str]], *,
               names: Optional[list[str]] = None, column: str = "label") -> list[str]:
    """The label list in id order: ``explicit`` (``data.labels``, which must cover ``present``,
    the training labels), else ``names`` (e.g. ClassLabel names), else the sorted training labels
    (integers in numeric order)."""
    if explicit:
        if len(set(explicit)) != len(explicit):
            raise DataError("data.labels lists a label twice", field="data.labels")
        unknown = sorted(present - set(explicit))
        if unknown:
            raise DataError(f"training data has label(s) {', '.join(map(repr, unknown))} that "
                            "data.labels does not list", field="data.labels",
                            hint="add them to data.labels or remove those rows")
        return list(explicit)
    if names:
        return list(names)
    values = sorted(present, key=lambda v: (0, int(v)) if v.lstrip("-").isdigit() else (1, v))
    if not values:
        raise DataError(f"column {column!r} of the training data has no labels",
                        field="data.label_column")
    return values


def check_known_labels(split: str, present: set[str], names: list[str]) -> None:
    """A validation/test label that the label list lacks is an error naming it."""
    unknown = sorted(present - set(names))
    if unknown:
        where = "the training labels" if split != "train" else "data.labels"
        raise DataError(f"{split} split has label(s) {', '.join(map(repr, unknown[:5]))} "
                        f"missing from {where} ({', '.join(names)})", field="data.label_column",
                        hint="fix those rows, or list every label in data.labels")


def derive_labels(dsd: "DatasetDict", column: str, explicit: Optional[list[str]]) -> list[str]:
    """The label list in id order: explicit, else ClassLabel names, else sorted training values."""
    from datasets import ClassLabel

    feature = dsd["train"].features[column]
    present = set(_names_of(dsd, "train", column))
    return label_list(present, explicit, column=column,
                      names=list(feature.names) if isinstance(feature, ClassLabel) else None)


def encode_labels(dsd: "DatasetDict", column: str, names: list[str]) -> "DatasetDict":
    """Cast ``column`` in every split to ``ClassLabel(names)``; unknown labels are errors."""
    from datasets import ClassLabel, DatasetDict

    index = {n: i for i, n in enumerate(names)}
    out = {}
    for split, ds in dsd.items():
        seen = _names_of(DatasetDict({split: ds}), split, column)
        missing_rows = sum(1 for v in ds[column] if v is None)
        if missing_rows:
            raise DataError(f"{missing_rows} row(s) of the {split} split have no label",
                            field="data.label_column", hint="fill or drop those rows")
        check_known_labels(split, set(seen), names)
        feature = ds.features[column]
        if isinstance(feature, ClassLabel) and list(feature.names) == names:
            out[split] = ds
            continue

        def to_id(batch, _f=feature):
            vals = batch[column]
            if isinstance(_f, ClassLabel):
                vals = [_f.int2str(v) for v in vals]
            return {column: [index[str(v)] for v in vals]}

        features = ds.features.copy()
        features[column] = ClassLabel(names=names)
        out[split] = ds.map(to_id, batched=True, features=features, desc=f"labels ({split})")
    return DatasetDict(out)
