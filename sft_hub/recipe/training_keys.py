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
import math
from pathlib import Path
from typing import Any, Iterator

from .schema import HUB_ANY, HUB_REFUSED, TrainingExtras, field_hub_policy

# Set by sft-hub itself: the run directory decides where checkpoints go.
RESERVED = {"output_dir": "set output.dir instead (checkpoints go to <output.dir>/checkpoints)"}
# ``training:`` keys (TrainingArguments fields) a Hub recipe may not set to anything but their
# default: they push, read configs or checkpoints from paths, or send logs to other services.
# Every other TrainingArguments field that takes a string is listed in TRAINING_HUB_ANY; a field
# in neither list (a newer transformers) is refused from the Hub until it is classified here.
TRAINING_HUB_REFUSED = frozenset({
    "output_dir", "push_to_hub", "hub_token", "hub_private_repo", "hub_model_id", "hub_strategy",
    "hub_always_push", "hub_revision", "resume_from_checkpoint", "deepspeed", "fsdp_config",
    "accelerator_config", "report_to", "trackio_space_id", "trackio_bucket_id",
    "trackio_static_space_id", "logging_dir", "project", "run_name"})
TRAINING_HUB_ANY = frozenset({
    "lr_scheduler_type", "lr_scheduler_kwargs", "optim", "optim_args", "optim_target_modules",
    "activation_checkpointing_kwargs", "gradient_checkpointing_kwargs", "torch_compile_backend",
    "torch_compile_mode", "liger_kernel_config", "logging_strategy", "include_num_input_tokens_seen",
    "log_level", "log_level_replica", "eval_strategy", "include_for_metrics", "save_strategy",
    "metric_for_best_model", "dataloader_multiprocessing_context", "label_names",
    "train_sampling_strategy", "length_column_name", "ddp_backend", "fsdp", "debug"})


def training_hub_policy(key: str) -> str:
    """How a recipe from the Hub may set ``training.<key>`` (see :mod:`.schema`)."""
    if key in TRAINING_HUB_REFUSED:
        return HUB_REFUSED
    if key in TrainingExtras.model_fields:
        return field_hub_policy(TrainingExtras.model_fields[key]) or HUB_ANY
    if key in TRAINING_HUB_ANY:
        return HUB_ANY
    annotation = training_argument_fields().get(key, "")
    takes_text = any(t in annotation for t in ("str", "dict", "Any", "Path", "list"))
    return "unclassified" if takes_text else HUB_ANY  # numbers and switches cannot name code


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
        if not isinstance(key, str):
            continue  # the schema reports it (keys are names)
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
        elif isinstance(value, float) and not math.isfinite(value):
            yield key, f"must be a finite number, got {value!r}"
        elif key in RANGES and not isinstance(value, bool) and not RANGES[key][1](value):
            yield key, f"must be {RANGES[key][0]}, got {value!r}"
    yield from _check_length(training)
    yield from check_controls(training)  # keys that only make sense together


# Value ranges TrainingArguments does not check itself (or checks only after torch is imported).
RANGES = {
    "learning_rate": ("0 or more", lambda v: v >= 0),
    "per_device_train_batch_size": ("1 or more", lambda v: v >= 1),
    "per_device_eval_batch_size": ("1 or more", lambda v: v >= 1),
    "weight_decay": ("0 or more", lambda v: v >= 0),
    "max_grad_norm": ("0 or more", lambda v: v >= 0),
    "warmup_steps": ("0 or more", lambda v: v >= 0),
    "logging_steps": ("above 0", lambda v: v > 0),
    "eval_steps": ("above 0", lambda v: v > 0),
    "save_steps": ("above 0", lambda v: v > 0),
    "save_total_limit": ("1 or more", lambda v: v >= 1),
    "dataloader_num_workers": ("0 or more", lambda v: v >= 0),
    "seed": ("0 or more", lambda v: v >= 0),
    "max_steps": ("-1 (no limit) or 1 or more", lambda v: v == -1 or v >= 1),
}


def _check_length(training: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """A run needs a positive length: epochs above 0, or max_steps."""
    epochs, max_steps = training.get("num_train_epochs"), training.get("max_steps")
    has_steps = isinstance(max_steps, int) and not isinstance(max_steps, bool) and max_steps >= 1
    if (isinstance(epochs, (int, float)) and not isinstance(epochs, bool) and math.isfinite(epochs)
            and epochs <= 0 and not has_steps):
        yield "num_train_epochs", (f"must be above 0 (got {epochs!r}), or set max_steps to the "
                                   "number of optimizer steps")


# Keys that older transformers accepted and the installed one does not: what to write instead.
REPLACED_KEYS = {
    "warmup_ratio": "was removed in transformers 5: write warmup_steps: 0.1 instead (a value "
                    "below 1 is a fraction of the training steps, 1 or more a number of steps)",
    "evaluation_strategy": "was renamed: write eval_strategy",
}


@functools.lru_cache(maxsize=None)
def enum_values(class_name: str, module: str = "trainer_utils") -> tuple[str, ...]:
    """String values of an enum in the installed transformers' ``trainer_utils`` (``SchedulerType``,
    ``IntervalStrategy``, ``SaveStrategy``...), read from its source: importing transformers' trainer
    utilities pulls in torch."""
    spec = importlib.util.find_spec("transformers")
    if spec is None or not spec.submodule_search_locations:
        return ()
    source = Path(next(iter(spec.submodule_search_locations))) / f"{module}.py"
    try:
        tree = ast.parse(source.read_text(encoding="utf-8"))
    except OSError:
        return ()
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            return tuple(stmt.value.value for stmt in node.body
                         if isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Constant)
                         and isinstance(stmt.value.value, str))
    return ()


# training key -> the trainer_utils enum its value must come from
ENUM_KEYS = {"lr_scheduler_type": "SchedulerType", "eval_strategy": "IntervalStrategy",
             "logging_strategy": "IntervalStrategy", "save_strategy": "SaveStrategy",
             "optim": ("OptimizerNames", "training_args")}


def check_controls(training: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """Yield (key, message) for training controls that are set but cannot work as written."""
    patience = training.get("early_stopping_patience")
    if training.get("early_stopping_threshold") is not None and patience is None:
        yield "early_stopping_threshold", "has no effect without early_stopping_patience"
    if patience is not None and str(training.get("eval_strategy", "epoch")).lower() == "no":
        yield "early_stopping_patience", ("needs evaluation, but eval_strategy is 'no'; set "
                                          "eval_strategy: epoch (or steps with eval_steps)")
    if training.get("bf16") is True and training.get("fp16") is True:
        yield "bf16", "bf16 and fp16 are both true; choose one mixed precision"
    warmup = training.get("warmup_steps")
    if isinstance(warmup, float) and warmup >= 1 and not warmup.is_integer():
        yield "warmup_steps", (f"{warmup} is neither a fraction (below 1) nor a whole number of "
                               "steps")
    accumulation = training.get("gradient_accumulation_steps")
    if isinstance(accumulation, int) and not isinstance(accumulation, bool) and accumulation < 1:
        yield "gradient_accumulation_steps", f"must be 1 or more, got {accumulation}"
    for key, enum in ENUM_KEYS.items():
        value, known = training.get(key), enum_values(*((enum,) if isinstance(enum, str) else enum))
        if isinstance(value, str) and known and value not in known:
            close = difflib.get_close_matches(value, known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            yield key, f"unknown value {value!r}; {hint}one of: {', '.join(known)}"
