"""Where data comes from: a Hub dataset id or local files per split, read into a ``DatasetDict``.

Local formats are dispatched by :data:`FORMATS` (file extension -> format) and :data:`READERS`
(format -> reader); a task with its own format (CoNLL, image folders) registers a reader here.
:func:`peek_columns` reads column names of local files without loading them (for ``validate``).
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

from ..errors import DataError
from .columns import stratified_split
from .conll import CONLL_EXTENSIONS, conll_dataset

if TYPE_CHECKING:  # pragma: no cover
    from datasets import Dataset, DatasetDict

    from ..recipe.schema import DataSpec

FORMATS = {".csv": "csv", ".tsv": "tsv", ".json": "json", ".jsonl": "json", ".parquet": "parquet",
           ".pq": "parquet", **dict.fromkeys(CONLL_EXTENSIONS, "conll")}


def _read_builtin(builder: str, **kwargs) -> Callable[[list[str], "DataSpec"], "Dataset"]:
    def read(files: list[str], spec: "DataSpec") -> "Dataset":
        from datasets import load_dataset

        return load_dataset(builder, data_files=files, split="train", **kwargs)
    return read


READERS: dict[str, Callable[[list[str], "DataSpec"], "Dataset"]] = {
    "csv": _read_builtin("csv"),
    "tsv": _read_builtin("csv", delimiter="\t"),
    "json": _read_builtin("json"),
    "parquet": _read_builtin("parquet"),
    "conll": conll_dataset,
}


def resolve_local(value: str | list[str], base_dir: Path, *, split: str) -> list[Path]:
    """Absolute paths of one split's files; each must exist."""
    items = value if isinstance(value, list) else [value]
    paths = []
    for item in items:
        p = Path(item) if Path(item).is_absolute() else base_dir / item
        if not p.exists():
            raise DataError(f"file not found: {p}", field=f"data.files.{split}",
                            hint="paths are relative to the recipe file that sets them")
        paths.append(p)
    return paths


def file_format(paths: list[Path], spec: "DataSpec", *, split: str) -> str:
    if spec.format:
        fmt = spec.format
    else:
        p = paths[0]
        fmt = "imagefolder" if p.is_dir() else FORMATS.get(p.suffix.lower(), "")
        if not fmt:
            raise DataError(f"cannot tell the format of {p.name}", field=f"data.files.{split}",
                            hint=f"set data.format (one of: {', '.join(sorted(READERS))})")
    if fmt not in READERS:
        raise DataError(f"unsupported format {fmt!r}", field="data.format",
                        hint=f"use one of: {', '.join(sorted(READERS))}")
    return fmt


def peek_columns(path: Path, fmt: str) -> Optional[list[str]]:
    """Column names of a local file, read cheaply; None when the format has no fixed columns."""
    try:
        if fmt in ("csv", "tsv"):
            with open(path, newline="", encoding="utf-8") as f:
                return next(csv.reader(f, delimiter="\t" if fmt == "tsv" else ","), [])
        if fmt == "json":
            with open(path, encoding="utf-8") as f:
                head = f.read(1)
                f.seek(0)
                if head == "[":
                    rows = json.load(f)
                    return list(rows[0]) if rows else []
                for line in f:
                    if line.strip():
                        return list(json.loads(line))
                return []
        if fmt == "parquet":
            import pyarrow.parquet as pq

            return list(pq.read_schema(path).names)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, StopIteration) as e:
        raise DataError(f"cannot read {path}: {e}", hint="check the file is valid "
                        f"{fmt.upper()}") from None
    return None


def check_local_columns(spec: "DataSpec", base_dir: Path, required: list[str]) -> None:
    """Every local data file exists and has the required columns (no torch, no datasets)."""
    if not spec.files:
        return
    for split, value in spec.files.items():
        paths = resolve_local(value, base_dir, split=split)
        fmt = file_format(paths, spec, split=split)
        for p in paths:
            cols = peek_columns(p, fmt)
            if cols is None:
                continue
            missing = [c for c in required if c not in cols]
            if missing:
                raise DataError(f"{p} has no column {missing[0]!r} (columns: {', '.join(cols)})",
                                field=_column_field(spec, missing[0]),
                                hint="set the recipe's column name to one of the file's columns")


def _column_field(spec: "DataSpec", column: str) -> str:
    for name, value in spec.model_dump().items():
        if name.endswith("_column") and value == column:
            return f"data.{name}"
    return "data"


def load_raw_splits(spec: "DataSpec", base_dir: Path) -> "DatasetDict":
    """train (+ validation, test when given) as read, before labels are encoded."""
    from datasets import DatasetDict

    if spec.files:
        out = {}
        for split, value in spec.files.items():
            paths = resolve_local(value, base_dir, split=split)
            fmt = file_format(paths, spec, split=split)
            try:
                out[split] = READERS[fmt]([str(p) for p in paths], spec)
            except DataError:
                raise
            except Exception as e:  # datasets' parse errors are many types
                raise DataError(f"cannot read {', '.join(map(str, paths))}: {real_cause(e)}",
                                field=f"data.files.{split}",
                                hint=f"check the file is valid {fmt.upper()}") from None
        return DatasetDict(out)
    return _load_hub(spec)


def load_hub_split(text: str, split: str, *, field: str, split_flag: str) -> "Dataset":
    """One split of a Hub dataset named on the command line (``hf://datasets/<org>/<name>``):
    ``field`` is the option that named it, ``split_flag`` the option that picks the split."""
    from datasets import load_dataset

    from ..hub_refs import parse_hf_ref

    ref = parse_hf_ref(text)
    if ref.repo_type != "dataset":
        raise DataError(f"{text} is not a dataset (write hf://datasets/<org>/<name>)", field=field)
    try:
        return load_dataset(ref.repo_id, ref.path or None, split=split, revision=ref.revision)
    except Exception as e:
        raise DataError(f"cannot load split {split!r} of Hub dataset {ref.repo_id!r}: {e}",
                        field=field, hint=f"check the id and {split_flag}, your network and "
                        "HF_HUB_OFFLINE") from None


def real_cause(error: BaseException) -> str:
    """The innermost cause of a reader error, as one line: ``datasets`` wraps the parser's own
    error ("Error tokenizing data. C error: Expected 2 fields in line 7, saw 3") in a generic
    "An error occurred while generating the dataset"."""
    seen = set()
    inner = error
    while id(inner) not in seen:
        seen.add(id(inner))
        nxt = inner.__cause__ or inner.__context__
        if nxt is None:
            break
        inner = nxt
    text = " ".join(str(inner).split()) or type(inner).__name__
    if len(text) > 300:
        text = text[:297] + "..."
    return text if inner is error else f"{type(inner).__name__}: {text}"


def _load_hub(spec: "DataSpec") -> "DatasetDict":
    from datasets import DatasetDict, load_dataset

    wanted = {"train": spec.splits.train, "validation": spec.splits.validation,
              "test": spec.splits.test}
    try:
        ds = load_dataset(spec.dataset, spec.config)
    except Exception as e:
        raise DataError(f"cannot load Hub dataset {spec.dataset!r}"
                        f"{f' (config {spec.config!r})' if spec.config else ''}: {real_cause(e)}",
                        field="data.dataset",
                        hint="check the id and config name, your network, and HF_HUB_OFFLINE") from None
    if spec.splits.validation is None and "validation" in ds:
        wanted["validation"] = "validation"
    if spec.splits.test is None and "test" in ds:
        wanted["test"] = "test"
    out = {}
    for role, name in wanted.items():
        if name is None:
            continue
        if name not in ds:
            raise DataError(f"dataset {spec.dataset!r} has no split {name!r} "
                            f"(splits: {', '.join(ds)})", field=f"data.splits.{role}",
                            hint="set data.splits to existing split names")
        out[role] = ds[name]
    return DatasetDict(out)


def finalize_splits(dsd: "DatasetDict", spec: "DataSpec", seed: int,
                    stratify_column: Optional[str] = None) -> "DatasetDict":
    """Carve a validation split from train if none exists; apply max_*_samples."""
    from datasets import DatasetDict

    dsd = DatasetDict(dict(dsd))
    if "validation" not in dsd:
        try:
            parts = (stratified_split(dsd["train"], test_size=spec.validation_split, seed=seed,
                                      column=stratify_column) if stratify_column else  # no row pass
                     dsd["train"].train_test_split(test_size=spec.validation_split, seed=seed))
        except ValueError:  # a class too rare to stratify: fall back to a plain seeded split
            parts = dsd["train"].train_test_split(test_size=spec.validation_split, seed=seed)
        dsd["train"], dsd["validation"] = parts["train"], parts["test"]
    if spec.max_train_samples and len(dsd["train"]) > spec.max_train_samples:
        dsd["train"] = dsd["train"].shuffle(seed=seed).select(range(spec.max_train_samples))
    if spec.max_eval_samples:
        for split in ("validation", "test"):
            if split in dsd and len(dsd[split]) > spec.max_eval_samples:
                dsd[split] = dsd[split].shuffle(seed=seed).select(range(spec.max_eval_samples))
    return dsd


def fingerprint(spec: "DataSpec", base_dir: Path) -> dict[str, str]:
    """A content hash per local data file (or the Hub id/config), recorded in run_info.json."""
    import hashlib

    if not spec.files:
        return {"dataset": f"{spec.dataset}{'/' + spec.config if spec.config else ''}"}
    out = {}
    for split, value in spec.files.items():
        for p in resolve_local(value, base_dir, split=split):
            files = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
            h = hashlib.sha256()
            for q in files:
                h.update(str(q.relative_to(p)).encode() if p.is_dir() else b"")
                with open(q, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        h.update(chunk)
            out[str(p)] = h.hexdigest()
    return out
