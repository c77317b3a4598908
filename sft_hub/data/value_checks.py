"""Checks of the values in data columns: labels against the recipe's label names, empty texts.

Two halves share the rules: :func:`check_local_values` reads local CSV/TSV/JSON/Parquet files with
the standard library and pyarrow (``sft-hub validate``: no torch, no ``datasets``), and
:func:`handle_empty_texts` applies the empty-text rule to loaded ``datasets`` splits at training
time (Hub data included). Integer labels are ids into ``data.labels`` (0 is the first name);
whole-number floats are integers; other floats are an error naming the column.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Optional

from ..errors import DataError
from .columns import column_values
from .labels import check_label_ids, whole_number
from .ner_tags import check_known_tags, name_tag_ids
from .sources import file_format, resolve_local

if TYPE_CHECKING:  # pragma: no cover
    from datasets import DatasetDict

# Row numbers named in a message (the rest are counted).
SHOWN_ROWS = 10


def is_empty_text(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip()) or (
        isinstance(value, float) and value != value)  # NaN: pandas' empty CSV cell


def _rows_text(rows: list[int]) -> str:
    shown = ", ".join(map(str, rows[:SHOWN_ROWS]))
    return shown + (f" and {len(rows) - SHOWN_ROWS} more" if len(rows) > SHOWN_ROWS else "")


def empty_text_error(rows: list[int], column: str, where: str, field: str) -> DataError:
    return DataError(f"{len(rows)} row(s) of {where} have an empty {column!r} (row(s) "
                     f"{_rows_text(rows)}, counting the first data row as 1)", field=field,
                     hint="fill or remove those rows, or set data.skip_empty: true to leave them "
                          "out (they are counted in the run's notes)")


def _typed_csv_column(values: list[Optional[str]]) -> list[Any]:
    """A CSV column typed the way the ``datasets`` CSV reader (pandas) types it."""
    present = [v for v in values if v not in (None, "")]
    for cast in (int, float):
        try:
            typed = [cast(v) for v in present]
        except ValueError:
            continue
        it = iter(typed)
        return [next(it) if v not in (None, "") else None for v in values]
    return [v if v != "" else None for v in values]


def read_columns(path: Path, fmt: str, columns: list[str]) -> Optional[dict[str, list[Any]]]:
    """The values of ``columns`` in a local file (None: a format this cannot read cheaply)."""
    try:
        if fmt in ("csv", "tsv"):
            with open(path, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f, delimiter="\t" if fmt == "tsv" else ",")
                raw: dict[str, list] = {c: [] for c in columns}
                for row in reader:
                    for c in columns:
                        raw[c].append(row.get(c))
            return {c: _typed_csv_column(v) for c, v in raw.items()}
        if fmt == "json":
            with open(path, encoding="utf-8") as f:
                head = f.read(1)
                f.seek(0)
                rows = json.load(f) if head == "[" else [json.loads(line) for line in f
                                                           if line.strip()]
            rows = [r for r in rows if isinstance(r, dict)]
            return {c: [r.get(c) for r in rows] for c in columns}
        if fmt == "parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(path, columns=[c for c in columns])
            return {c: table.column(c).to_pylist() for c in columns}
    except (OSError, UnicodeDecodeError, ValueError, KeyError) as e:
        raise DataError(f"cannot read {path}: {e}",
                        hint=f"check the file is valid {fmt.upper()}") from None
    return None


def check_label_values(values: Iterable[Any], names: Optional[list[str]], *, column: str,
                       split: str, where: str) -> None:
    """Labels as read: integer ids within ``names``, whole floats, names ``names`` lists."""
    typed = [whole_number(v, column=column, split=split) for v in values if v is not None]
    if typed and all(isinstance(v, int) and not isinstance(v, bool) for v in typed):
        check_label_ids(typed, names, column=column, split=split)
        return
    if names is not None:
        unknown = sorted({str(v) for v in typed} - set(names))
        if unknown:
            raise DataError(f"{where} has label(s) {', '.join(map(repr, unknown[:5]))} in column "
                            f"{column!r} that data.labels does not list ({', '.join(names)})",
                            field="data.labels",
                            hint="add them to data.labels, or fix those rows")


def check_local_values(spec, base_dir: Path, *, label_column: Optional[str],
                       names: Optional[list[str]], text_columns: list[str]) -> None:
    """Every local data file: labels match the recipe's names, no empty text (unless skipped)."""
    if not spec.files:
        return
    skip_empty = bool(getattr(spec, "skip_empty", False))
    for split, value in spec.files.items():
        paths = resolve_local(value, base_dir, split=split)
        fmt = file_format(paths, spec, split=split)
        for path in paths:
            wanted = [c for c in [label_column, *text_columns] if c]
            columns = read_columns(path, fmt, wanted) if path.is_file() else None
            if columns is None:
                continue
            if label_column:
                check_label_values(columns[label_column], names, column=label_column, split=split,
                                   where=str(path))
            if skip_empty:
                continue
            for column in text_columns:
                rows = [i + 1 for i, v in enumerate(columns[column]) if is_empty_text(v)]
                if rows:
                    raise empty_text_error(rows, column, str(path), f"data.files.{split}")


def handle_empty_texts(dsd: "DatasetDict", columns: list[str], *, skip: bool,
                       notes: list[str]) -> "DatasetDict":
    """Rows with an empty text: an error naming them, or (``skip``) left out and counted."""
    from datasets import DatasetDict

    out = {}
    for split, ds in dsd.items():
        empty = sorted({i for c in columns if c in ds.column_names
                        for i, v in enumerate(column_values(ds, c)) if is_empty_text(v)})
        if not empty:
            out[split] = ds
            continue
        if not skip:
            raise empty_text_error([i + 1 for i in empty], " / ".join(columns),
                                   f"the {split} split", "data.skip_empty")
        drop = set(empty)
        out[split] = ds.select([i for i in range(len(ds)) if i not in drop])
        notes.append(f"left out {len(empty)} {split} row(s) with an empty text (data.skip_empty)")
    return DatasetDict(out)


def whole_tag_ids(rows: list) -> list:
    """Tag id rows with whole-number floats as ints (``1.0`` -> 1; other values unchanged)."""
    return [[int(t) if isinstance(t, float) and t.is_integer() else t for t in row]
            if isinstance(row, list) else row for row in rows]


def check_local_tags(split: str, where: str, rows: list, names: Optional[list[str]]) -> None:
    """Token-classification tags as read from a local table: integer ids need names (in id order)
    and must be within them; string tags must be among the names when the recipe lists them."""
    rows = [r for r in whole_tag_ids(rows) if isinstance(r, list)]
    flat = [t for r in rows for t in r]
    if not flat:
        return
    if all(isinstance(t, int) and not isinstance(t, bool) for t in flat):
        if not names:
            raise DataError(f"{where}: the {split} tags are integer ids without names",
                            field="data.labels",
                            hint="list the tag names in id order in data.labels (e.g. [O, B-PER, "
                                 "I-PER, ...]) or data.label_names")
        name_tag_ids(split, rows, names, field="data.labels")
    elif names and all(isinstance(t, str) for t in flat):
        check_known_tags(split, rows, names)
