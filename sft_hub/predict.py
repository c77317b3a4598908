"""``sft-hub predict``: label new inputs with a trained model, streaming to a CSV or JSONL file.

Inputs (:func:`read_inputs`): CSV/TSV/JSON/JSONL/Parquet tables, plain text (one example a line,
column ``text``), an image folder (every image below it, column ``image``), a table of image
paths (relative to the table's folder), or a Hub dataset split (``hf://datasets/<id>[/<config>]``
with ``split``). Inputs are read as Arrow (memory-mapped), taken in chunks, encoded by the task's
own preprocessing, sorted by length into batches (:func:`sft_hub.inference.run_batches`) and
written back in input order, so a file of a million rows never sits in memory.

The output holds the input columns plus the prediction: ``label`` and ``score`` (``--top-k``:
``top_k`` in JSONL, ``top<i>_label`` / ``top<i>_score`` in CSV), or NER's ``entities`` (type,
score, character offsets, text). It is written to a temporary file beside the target and renamed
at the end: on any error nothing is left behind, and an existing file is replaced only with
``overwrite``. An empty or missing input cell is a DataError naming the row, an unreadable image
one naming the file; with ``skip_bad`` those rows are left out, counted and reported.
"""
from __future__ import annotations

import csv
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Optional, Union

from .data.images import image_files, resolve_image_path
from .data.sources import FORMATS, READERS, load_hub_split
from .errors import DataError, RunDirError, SftHubError
from .hub_refs import is_hub_ref
from .inference import LoadedModel, load_model, run_batches

if TYPE_CHECKING:  # pragma: no cover
    from datasets import Dataset

OUTPUT_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl"}
CHUNK_ROWS = 4096
IMAGE_COLUMN = "image"
TEXT_COLUMN = "text"


@dataclass
class PredictResult:
    output: Path
    rows: int
    skipped: list[int] = field(default_factory=list)  # 0-based input rows left out (skip_bad)
    seconds: float = 0.0

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


# -- inputs ---------------------------------------------------------------------------------------

def read_inputs(ref: Union[str, Path], *, split: str = "test", image_column: str = IMAGE_COLUMN,
                text_column: str = TEXT_COLUMN, paths: bool = True) -> "Dataset":
    """The input rows as a (memory-mapped) dataset; see the module docstring for the formats.
    ``paths``: the ``image_column`` of a table holds file paths (made absolute)."""
    from datasets import Dataset, load_dataset

    text = str(ref)
    if is_hub_ref(text):
        return load_hub_split(text, split, field="--input", split_flag="the split (--split)")
    path = Path(text)
    if not path.exists():
        raise DataError(f"input not found: {path}", field="--input")
    if path.is_dir():
        images = image_files(path.resolve())
        if not images:
            raise DataError(f"{path} holds no image files", field="--input",
                            hint="give an image folder, a table or a text file")
        return Dataset.from_dict({image_column: images})
    suffix = path.suffix.lower()
    try:
        if suffix in (".txt", ".text", ""):
            ds = load_dataset("text", data_files=[str(path)], split="train")
            if text_column != "text":
                ds = ds.rename_column("text", text_column)
            return ds
        fmt = FORMATS.get(suffix)
        if fmt not in ("csv", "tsv", "json", "parquet"):
            raise DataError(f"cannot tell the format of {path.name}", field="--input",
                            hint="use .csv, .tsv, .json, .jsonl, .parquet or .txt (one example "
                            "a line), or an image folder")
        ds = READERS[fmt]([str(path)], None)
    except SftHubError:
        raise
    except Exception as e:
        raise DataError(f"cannot read {path}: {e}", field="--input") from None
    if paths and image_column in ds.column_names and _holds_paths(ds, image_column):
        base = path.parent
        ds = ds.map(lambda b: {image_column: [resolve_image_path(v, base) if v else v
                                              for v in b[image_column]]},
                    batched=True, desc="image paths")
    return ds


def _holds_paths(ds: "Dataset", column: str) -> bool:
    from datasets import Value

    feature = ds.features[column]
    return isinstance(feature, Value) and feature.dtype in ("string", "large_string")


# -- output ---------------------------------------------------------------------------------------

class AtomicOutput:
    """Rows written to ``.<name>.tmp`` beside ``path``, renamed over it by :meth:`commit`;
    :meth:`discard` removes the temporary file (nothing half-written is ever left)."""

    def __init__(self, path: Union[str, Path], *, overwrite: bool):
        self.path = Path(path)
        self.format = OUTPUT_FORMATS.get(self.path.suffix.lower())
        if self.format is None:
            raise DataError(f"cannot write {self.path.name}: the output must end in "
                            f"{', '.join(OUTPUT_FORMATS)}", field="--output")
        if self.path.is_dir():
            raise RunDirError(f"{self.path} is a directory", field="--output",
                              hint="give a file name, e.g. predictions.csv")
        if self.path.exists() and not overwrite:
            raise RunDirError(f"{self.path} already exists; refusing to overwrite it",
                              field="--output", hint="pass --overwrite, or choose another --output")
        if not self.path.parent.is_dir():
            raise RunDirError(f"the folder of {self.path} does not exist", field="--output")
        self.tmp = self.path.parent / f".{self.path.name}.{os.getpid()}.tmp"
        self._file = open(self.tmp, "w", encoding="utf-8", newline="")
        self._writer: Optional[csv.DictWriter] = None

    def write(self, row: dict[str, Any]) -> None:
        if self.format == "jsonl":
            self._file.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
            return
        flat = {k: json.dumps(v, ensure_ascii=False) if isinstance(v, (list, dict)) else v
                for k, v in row.items()}
        if self._writer is None:
            self._writer = csv.DictWriter(self._file, fieldnames=list(flat), extrasaction="ignore",
                                          delimiter="\t" if self.format == "tsv" else ",")
            self._writer.writeheader()
        self._writer.writerow(flat)

    def commit(self) -> None:
        self._file.close()
        os.replace(self.tmp, self.path)

    def discard(self) -> None:
        self._file.close()
        self.tmp.unlink(missing_ok=True)


def _output_row(row: dict[str, Any], prediction: dict[str, Any], fmt: str) -> dict[str, Any]:
    out = {k: _plain(v) for k, v in row.items()}
    top = prediction.get("top_k")
    for k, v in prediction.items():
        if k == "top_k" and fmt != "jsonl":
            continue
        out[k] = v
    if top and fmt != "jsonl":
        for i, item in enumerate(top, 1):
            out[f"top{i}_label"], out[f"top{i}_score"] = item["label"], item["score"]
    return out


def _plain(value: Any) -> Any:
    """An input value as the output shows it (an image: its path)."""
    if isinstance(value, dict) and "path" in value:
        return value.get("path")
    if hasattr(value, "filename") and hasattr(value, "size"):  # a PIL image
        return getattr(value, "filename", "") or "<image>"
    return value


# -- predict --------------------------------------------------------------------------------------

def _bad_cell(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _encode_chunk(model: LoadedModel, rows: dict[str, list], first_row: int, *,
                  skip_bad: bool, skipped: list[int]) -> tuple[list[int], list[dict]]:
    """(kept positions in the chunk, encoded features). Bad rows raise or are skipped."""
    task = model.task
    columns = task.input_columns()
    n = len(next(iter(rows.values()))) if rows else 0
    keep = []
    for i in range(n):
        bad = next((c for c in columns if _bad_cell(rows[c][i])), None)
        if bad is None:
            keep.append(i)
        elif skip_bad:
            skipped.append(first_row + i)
        else:
            raise DataError(f"row {first_row + i + 1}: the {bad!r} cell is empty",
                            field="--input", hint="fill or remove the row, or pass --skip-bad")
    subset = {c: [rows[c][i] for i in keep] for c in columns}
    try:
        return keep, task.encode_inputs(subset)
    except DataError:
        if not skip_bad:
            raise
    kept, features = [], []  # find the bad ones, one row at a time
    for i in keep:
        try:
            features += task.encode_inputs({c: [rows[c][i]] for c in columns})
            kept.append(i)
        except DataError:
            skipped.append(first_row + i)
    return kept, features


def predict(model: Union[str, Path, LoadedModel], inputs: Union[str, Path], output: Union[str, Path],
            *, top_k: int = 1, batch_size: int = 32, device: Optional[str] = None,
            overwrite: bool = False, skip_bad: bool = False, split: str = "test",
            columns: Optional[dict[str, str]] = None, progress: bool = True) -> PredictResult:
    """Predict every input row and write the results (see the module docstring).

    ``columns``: recipe column fields to override (``{"text_column": "body"}``); a field the
    task's data has not (NER's ``text_column``) renames that input column to the task's.
    """
    if batch_size < 1:
        raise DataError("--batch-size must be at least 1", field="--batch-size")
    if top_k < 1:
        raise DataError("--top-k must be at least 1", field="--top-k")
    columns = dict(columns or {})
    out = AtomicOutput(output, overwrite=overwrite)  # before the model: fail in a second
    try:
        if not isinstance(model, LoadedModel):
            model = load_model(model, device=device, overrides=spec_overrides(model, columns))
        task = model.task
        wanted = task.input_columns()
        ds = read_inputs(inputs, split=split, image_column=wanted[0], text_column=wanted[0],
                         paths=task.input_files)
        ds = _rename_inputs(ds, task, columns)
        missing = [c for c in wanted if c not in ds.column_names]
        if missing:
            raise DataError(f"the input has no column {missing[0]!r} (columns: "
                            f"{', '.join(ds.column_names)})", field="--input",
                            hint="name the input's column with --text-column / --image-column")
        result = _predict_rows(model, ds, out, top_k=top_k, batch_size=batch_size,
                               skip_bad=skip_bad, progress=progress)
        out.commit()
    except BaseException:
        out.discard()
        raise
    return result


def spec_overrides(model_ref: Any, columns: dict[str, str]) -> list[str]:
    """``data.<field>=<column>`` recipe overrides for the column fields the recipe has."""
    from .inference import resolve_source
    from .recipe.yaml_io import parse_yaml

    if not columns:
        return []
    source = resolve_source(model_ref)
    path = source.folder / "recipe.yaml"
    recipe = parse_yaml(path.read_text(encoding="utf-8"), source=str(path)) or {}
    fields = set((recipe.get("data") or {}))
    return [f"data.{k}={v}" for k, v in columns.items() if k in fields]


def _rename_inputs(ds: "Dataset", task, columns: dict[str, str]) -> "Dataset":
    """Input columns named by a flag the recipe has no field for (NER's --text-column)."""
    fields = set(type(task.recipe.data).model_fields)
    for field_name, column in columns.items():
        if field_name in fields:
            continue
        target = field_name[:-len("_column")] if field_name.endswith("_column") else field_name
        if target not in task.input_columns():
            raise DataError(f"{task.name} predictions read no {target} column",
                            field=f"--{field_name.replace('_', '-')}",
                            hint=f"the task reads: {', '.join(task.input_columns())}")
        if column != target and column in ds.column_names:
            if target in ds.column_names:
                ds = ds.remove_columns([target])
            ds = ds.rename_column(column, target)
    return ds


def _predict_rows(model: LoadedModel, ds: "Dataset", out: AtomicOutput, *, top_k: int,
                  batch_size: int, skip_bad: bool, progress: bool) -> PredictResult:
    from tqdm.auto import tqdm

    task = model.task
    started = time.perf_counter()
    skipped: list[int] = []
    written = 0
    bar = tqdm(total=len(ds), unit="rows", desc="predicting", disable=not progress or None,
               file=sys.stderr)
    try:
        for first, rows in _chunks(ds):
            keep, features = _encode_chunk(model, rows, first, skip_bad=skip_bad, skipped=skipped)
            logits = run_batches(model, features, batch_size=batch_size, on_batch=bar.update)
            bar.update(len(next(iter(rows.values()))) - len(keep))
            for i, feats, row_logits in zip(keep, features, logits):
                prediction = task.decode_logits(row_logits, feats, top_k=top_k)
                row = {c: rows[c][i] for c in rows}
                out.write(_output_row(row, prediction, out.format))
                written += 1
    finally:
        bar.close()
    if written == 0:
        raise DataError("no row could be predicted" + (f" ({len(skipped)} skipped as bad)"
                                                       if skipped else " (the input is empty)"),
                        field="--input")
    return PredictResult(out.path, written, skipped, time.perf_counter() - started)


def _chunks(ds: "Dataset") -> Iterator[tuple[int, dict[str, list]]]:
    first = 0
    for rows in ds.iter(batch_size=CHUNK_ROWS):
        yield first, rows
        first += len(next(iter(rows.values()))) if rows else 0


def summary(result: PredictResult) -> str:
    text = (f"wrote {result.rows} predictions to {result.output} in {result.seconds:.1f} s "
            f"({result.rows_per_second:.0f} rows/s)")
    if result.skipped:
        shown = ", ".join(str(r + 1) for r in result.skipped[:10])
        more = ", ..." if len(result.skipped) > 10 else ""
        text += f"; skipped {len(result.skipped)} bad row(s): {shown}{more}"
    return text
