"""Training controls reached through the recipe's ``training:`` section, and their checks.

Most controls are ``transformers.TrainingArguments`` fields written straight into the recipe
(``gradient_accumulation_steps``, ``activation_checkpointing`` (alias ``gradient_checkpointing``),
``bf16`` / ``fp16``, ``lr_scheduler_type``, ``warmup_steps``...). This module adds what is
sft-hub's own or spans several keys:

* early stopping: ``early_stopping_patience`` (evaluations in a row without improvement of
  ``metric_for_best_model``, by default the task's metric) and ``early_stopping_threshold``;
  its counter is saved in checkpoints and restored on ``--resume``;
* the torch-free checks ``sft-hub validate`` runs (keys that only make sense together, value
  ranges, enum values) live with the other ``training:`` checks in :mod:`.recipe.training_keys`;
* :func:`check_model_supports`: the model can do what the recipe asks (activation checkpointing).
"""
from __future__ import annotations

from typing import Any, Optional

from .errors import RecipeError

CHECKPOINTING_KEYS = ("activation_checkpointing", "gradient_checkpointing")


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
