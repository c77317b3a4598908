"""Classification labels: the label list (:func:`label_list`, any task) and, for tasks with one
label per example (text and image classification), deriving it from a column and encoding that
column as ClassLabel. Labels may be integers, strings or a ``datasets.ClassLabel``; an explicit
``data.labels`` list fixes the order.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from ..errors import DataError
from .columns import column_values

if TYPE_CHECKING:  # pragma: no cover
    from datasets import DatasetDict


def _names_of(dsd: "DatasetDict", split: str, column: str) -> list[str]:
    from datasets import ClassLabel

    feature = dsd[split].features[column]
    values = column_values(dsd[split], column)  # one Arrow read, not a pass per row
    if isinstance(feature, ClassLabel):
        return [feature.int2str(i) for i in values if i is not None and i >= 0]
    return [str(v) for v in values if v is not None]


# -- names of integer labels ------------------------------------------------------------------

def label_names(spec, base_dir: Path) -> Optional[list[str]]:
    """The label names in id order the recipe gives: ``data.labels``, or ``data.label_names`` (an
    id -> name mapping, or a JSON file holding a list, a mapping or a config's ``id2label``)."""
    if getattr(spec, "labels", None):
        return list(spec.labels)
    given = getattr(spec, "label_names", None)
    if given is None:
        return None
    if isinstance(given, str):
        path = Path(given) if Path(given).is_absolute() else base_dir / given
        try:
            given = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError(f"label names file not found: {path}", field="data.label_names",
                            hint="paths are relative to the recipe file that sets them") from None
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise DataError(f"cannot read {path} as JSON: {e}", field="data.label_names") from None
        if isinstance(given, dict) and isinstance(given.get("id2label"), dict):
            given = given["id2label"]
        if isinstance(given, list):
            given = dict(enumerate(given))
        if not isinstance(given, dict):
            raise DataError(f"{path} holds neither a list of names nor an id -> name mapping",
                            field="data.label_names")
    mapping: dict[int, str] = {}
    for key, name in given.items():
        try:
            mapping[int(key)] = name
        except (TypeError, ValueError):
            raise DataError(f"label id {key!r} is not an integer", field="data.label_names",
                            hint="write ids 0, 1, 2 ... as keys") from None
        if not isinstance(name, str) or not name:
            raise DataError(f"label {key} has no name (got {name!r})", field="data.label_names")
    if sorted(mapping) != list(range(len(mapping))) or not mapping:
        raise DataError(f"label ids must be 0 to {len(mapping) - 1} without gaps (got "
                        f"{', '.join(map(str, sorted(mapping)))})", field="data.label_names",
                        hint="give every id from 0 a name")
    names = [mapping[i] for i in range(len(mapping))]
    if len(set(names)) != len(names):
        raise DataError("data.label_names gives two ids the same name", field="data.label_names")
    return names


def whole_number(value, *, column: str, split: str):
    """An integer label as an int (``1.0`` -> 1); a fractional float is an error naming the column
    (one label per example is classification, not regression)."""
    if isinstance(value, float):
        if not value.is_integer():
            raise DataError(f"column {column!r} of the {split} split holds the number {value!r}; "
                            "labels are classes (names or integer ids), not measurements",
                            field="data.label_column",
                            hint="use integer ids or names; a regression target is not what this "
                                 "task trains")
        return int(value)
    return value


def check_label_ids(values, names: Optional[list[str]], *, column: str, split: str) -> None:
    """Integer labels are ids into ``names`` (0 is the first name); an id outside is an error."""
    if names is None:
        return
    bad = sorted({v for v in values if isinstance(v, int) and not 0 <= v < len(names)})
    if bad:
        raise DataError(f"the {split} split has label id(s) {', '.join(map(str, bad[:5]))} in column "
                        f"{column!r}, but data.labels names ids 0 to {len(names) - 1} "
                        f"({', '.join(names)})", field="data.labels",
                        hint="data.labels lists one name per integer label, in id order")


def name_integer_labels(dsd: "DatasetDict", column: str,
                        names: Optional[list[str]]) -> "DatasetDict":
    """Integer (or whole-number float) label columns: with ``names``, ids become
    ``ClassLabel(names)`` (so the model's labels are the names, never "0", "1"...); without,
    whole floats become ints. String and ClassLabel columns are returned as they are."""
    from datasets import ClassLabel, DatasetDict, Value

    out = {}
    for split, ds in dsd.items():
        feature = ds.features[column]
        dtype = getattr(feature, "dtype", "")
        if not isinstance(feature, Value) or not (dtype.startswith(("int", "uint", "float"))):
            out[split] = ds
            continue
        values = [whole_number(v, column=column, split=split)
                  for v in column_values(ds, column) if v is not None]  # one Arrow read
        check_label_ids(values, names, column=column, split=split)
        features = ds.features.copy()
        features[column] = ClassLabel(names=names) if names is not None else Value("int64")
        out[split] = ds.map(lambda b: {column: [None if v is None else int(v) for v in b[column]]},
                            batched=True, features=features, desc=f"label ids ({split})")
    return DatasetDict(out)


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
        missing_rows = sum(1 for v in column_values(ds, column) if v is None)  # one Arrow read
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
