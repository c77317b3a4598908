"""Training controls reached through the recipe's ``training:`` section, and their checks.

Most controls are ``transformers.TrainingArguments`` fields written straight into the recipe
(``gradient_accumulation_steps``, ``activation_checkpointing`` (alias ``gradient_checkpointing``),
``bf16`` / ``fp16``, ``lr_scheduler_type``, ``warmup_steps``...). This module adds what is
sft-hub's own or spans several keys:

* early stopping: ``early_stopping_patience`` (evaluations in a row without improvement of
  ``metric_for_best_model``, by default the task's metric) and ``early_stopping_threshold``;
  its counter is saved in checkpoints and restored on ``--resume``;
* :func:`check_controls`: checks of keys that only make sense together (run by ``sft-hub
  validate``, so torch-free), e.g. early stopping without evaluation, ``warmup_ratio`` (gone in
  transformers 5: ``warmup_steps`` below 1 is a fraction of the training steps);
* :func:`check_model_supports`: the model can do what the recipe asks (activation checkpointing).
"""
from __future__ import annotations

import ast
import difflib
import functools
import importlib.util
from pathlib import Path
from typing import Any, Iterator, Optional

from .errors import RecipeError

# Keys that older transformers accepted and the installed one does not: what to write instead.
REPLACED_KEYS = {
    "warmup_ratio": "was removed in transformers 5: write warmup_steps: 0.1 instead (a value "
                    "below 1 is a fraction of the training steps, 1 or more a number of steps)",
    "evaluation_strategy": "was renamed: write eval_strategy",
}
CHECKPOINTING_KEYS = ("activation_checkpointing", "gradient_checkpointing")


@functools.lru_cache(maxsize=None)
def enum_values(class_name: str) -> tuple[str, ...]:
    """String values of an enum in the installed transformers' ``trainer_utils`` (``SchedulerType``,
    ``IntervalStrategy``, ``SaveStrategy``...), read from its source: importing transformers' trainer
    utilities pulls in torch."""
    spec = importlib.util.find_spec("transformers")
    if spec is None or not spec.submodule_search_locations:
        return ()
    source = Path(next(iter(spec.submodule_search_locations))) / "trainer_utils.py"
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
             "logging_strategy": "IntervalStrategy", "save_strategy": "SaveStrategy"}


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
        value, known = training.get(key), enum_values(enum)
        if isinstance(value, str) and known and value not in known:
            close = difflib.get_close_matches(value, known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            yield key, f"unknown value {value!r}; {hint}one of: {', '.join(known)}"


def trainer_defaults() -> dict[str, Any]:
    """TrainingArguments defaults these controls need (the recipe may still set them)."""
    # Early stopping's patience counter lives in checkpoints; restore it so a resumed run stops
    # where the uninterrupted run would.
    return {"restore_callback_states_from_checkpoint": True}


def control_callbacks(training: dict[str, Any]) -> list:
    """Trainer callbacks the recipe's controls need."""
    patience = training.get("early_stopping_patience")
    if patience is None:
        return []
    from transformers import EarlyStoppingCallback

    return [EarlyStoppingCallback(early_stopping_patience=int(patience),
                                  early_stopping_threshold=float(
                                      training.get("early_stopping_threshold") or 0.0))]


def _base_model(model: Any) -> Any:
    get_base = getattr(model, "get_base_model", None)  # peft wrappers
    return get_base() if callable(get_base) else model


def check_model_supports(model: Any, training: dict[str, Any], model_name: Optional[str] = None) -> None:
    """Refuse activation checkpointing on a model that cannot do it, before training starts."""
    key = next((k for k in CHECKPOINTING_KEYS if training.get(k)), None)
    if key is None:
        return
    base = _base_model(model)
    if not getattr(base, "supports_gradient_checkpointing", False):
        raise RecipeError(
            f"{model_name or type(base).__name__} ({type(base).__name__}) does not support "
            "activation checkpointing", field=f"training.{key}",
            hint=f"remove training.{key}; lower per_device_train_batch_size and raise "
                 "gradient_accumulation_steps to save memory instead")


def declare_batch_mean_loss(model: Any) -> None:
    """Tell the Trainer that the model's loss is a mean over its own batch.

    The task heads (sequence, token and image classification) average their loss over the batch
    they are given and ignore the Trainer's ``num_items_in_batch``. Their ``forward`` still takes
    ``**kwargs``, from which the Trainer concludes the opposite, and then neither divides the loss
    by ``gradient_accumulation_steps`` nor undoes DDP's averaging: gradients come out
    ``gradient_accumulation_steps`` x ``num_processes`` too large, which changes clipping and the
    logged loss. ``accepts_loss_kwargs = False`` is the switch transformers models use to say so.
    """
    _base_model(model).accepts_loss_kwargs = False
