"""Check ``training:`` keys against ``transformers.TrainingArguments`` without importing it.

Importing transformers' training_args pulls in torch (seconds); ``sft-hub validate`` must answer
in well under that. The field names and simple types are read from the installed source with
``ast`` instead, so every Trainer option of the installed version is accepted by name.
"""
from __future__ import annotations

import ast
import difflib
import functools
import importlib.util
from pathlib import Path
from typing import Any, Iterator

from ..training_controls import REPLACED_KEYS, check_controls
from .schema import TrainingExtras

# Set by sft-hub itself: the run directory decides where checkpoints go.
RESERVED = {"output_dir": "set output.dir instead (checkpoints go to <output.dir>/checkpoints)"}
_SIMPLE = {"int": int, "float": (int, float), "bool": bool, "str": str}


@functools.lru_cache(maxsize=1)
def training_argument_fields() -> dict[str, str]:
    """Field name -> annotation source of ``TrainingArguments`` in the installed transformers."""
    spec = importlib.util.find_spec("transformers")
    if spec is None or not spec.submodule_search_locations:
        return {}
    source = Path(next(iter(spec.submodule_search_locations))) / "training_args.py"
    tree = ast.parse(source.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "TrainingArguments":
            return {stmt.target.id: ast.unparse(stmt.annotation) for stmt in node.body
                    if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
                    and not stmt.target.id.startswith("_")}
    return {}


def _expected_type(annotation: str):
    optional = annotation.startswith(("Optional[", "Union[")) and "None" in annotation
    inner = annotation
    if annotation.startswith("Optional[") and annotation.endswith("]"):
        inner = annotation[len("Optional["):-1]
    if annotation.endswith("| None"):
        inner, optional = annotation[:-len("| None")].strip(), True
    return _SIMPLE.get(inner), optional


def _type_name(tp) -> str:
    return "a number" if tp == (int, float) else {int: "an integer", bool: "true or false",
                                                  str: "a string"}[tp]


def check_training(training: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """Yield (key, message) for every unknown key or value of the wrong simple type."""
    from pydantic import ValidationError

    fields = training_argument_fields()
    ours = set(TrainingExtras.model_fields)
    try:
        TrainingExtras.model_validate({k: v for k, v in training.items() if k in ours})
    except ValidationError as exc:
        for err in exc.errors():
            yield ".".join(str(p) for p in err["loc"]), f"{err['msg']} (got {err.get('input')!r})"
    valid = sorted(set(fields) | ours)
    for key, value in training.items():
        if key in RESERVED:
            yield key, f"is set by sft-hub; {RESERVED[key]}"
            continue
        if key in ours:
            continue  # checked by the TrainingExtras model
        if key not in fields and key in REPLACED_KEYS:
            yield key, REPLACED_KEYS[key]
            continue
        if key not in fields:
            close = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.6)
            yield key, (f"unknown key; did you mean training.{close[0]}?" if close else
                        "unknown key: not a transformers.TrainingArguments field nor an sft-hub "
                        "training option")
            continue
        expected, optional = _expected_type(fields[key])
        if expected is None or (value is None and optional):
            continue
        ok = isinstance(value, expected) and not (expected != bool and isinstance(value, bool))
        if not ok:
            yield key, f"expected {_type_name(expected)}, got {value!r}"
    yield from check_controls(training)  # keys that only make sense together
