"""Strategy defaults a run applies, and warnings where a recipe is likely wrong.

**Defaults.** A recipe that does not set ``training.learning_rate`` trains at its strategy's
declared default for the model family (``spec.defaults(model.backend)``, measured in
``benchmarks/defaults.py``; see :mod:`sft_hub.strategies.base`). :func:`default_arguments` is what
:func:`sft_hub.training.training_arguments` adds under the recipe's own keys, and the run records
that it did: ``run_info.json`` ``defaults_applied`` (value, source, family, where it was measured)
and the resolved ``recipe.yaml`` (the rate written out, marked with a comment). Nothing is applied
silently and nothing overrides a value the recipe sets.

**Warnings** (one line each, ``warning: ...`` on stderr, main process only, and recorded in
``run_info.json`` under ``warnings``):

- at the start: a learning rate far from the strategy's default (:data:`LR_FACTOR` times or more
  either way), naming the strategy that rate is typical of (an adapter trained at a full
  fine-tuning rate barely moves in a short run; full fine-tuning at an adapter's rate diverges);
  full fine-tuning (every parameter trainable) on fewer than :data:`SMALL_TRAIN_SET` training
  examples, where an adapter or head-only training usually does as well or better;
- at the end: a final validation metric no better than always predicting the majority class (per
  label for multi-label tasks), computed with the task's own metrics on the validation labels.

Each names the setting and what to try, including ``sft-hub sweep`` where that command exists.
"""
from __future__ import annotations

import importlib.util
import logging
import math
from typing import Any, Optional

from .recipe.schema import RecipeBase
from .recipe.yaml_io import dump_yaml
from .strategies import STRATEGIES
from .strategies.base import StrategyDefaults
from .tasks import get_task_class

# A set learning rate this many times above or below the strategy's default gets a warning. On
# SST-2 (benchmarks/defaults.py) a factor of 2 already costs full fine-tuning 1-6 points; 8x is
# outside every good range measured, and the defaults of full fine-tuning and of the adapters are
# 20x apart, so the warning fires on a rate of the wrong kind, not on a tuned one.
LR_FACTOR = 8.0
# Full fine-tuning on fewer training examples than this gets a warning (measured: SST-2 with 500
# rows, 16 steps, README "Strategy defaults": full fine-tuning 0.513 and LoRA 0.518, barely above
# the majority class's 0.509; the last 2 layers, strategy freeze's default, 0.711).
SMALL_TRAIN_SET = 1000


# -- defaults ------------------------------------------------------------------------------------
def strategy_defaults(recipe: RecipeBase) -> StrategyDefaults:
    """The recipe's strategy's defaults for the recipe's model family and task."""
    STRATEGIES.all()  # every spec class knows its strategy once the registry is loaded
    return recipe.strategy.defaults(recipe.model.backend, get_task_class(recipe.task))


def sets_learning_rate(recipe: RecipeBase) -> bool:
    return "learning_rate" in recipe.settings.recipe


def defaults_applied(recipe: RecipeBase) -> Optional[dict[str, Any]]:
    """What the run takes from the strategy's defaults (None when the recipe sets it all)."""
    if sets_learning_rate(recipe):
        return None
    d = strategy_defaults(recipe)
    return {"learning_rate": d.learning_rate, "source": d.source, "family": d.family,
            "measured": d.measured}


def default_arguments(recipe: RecipeBase) -> dict[str, Any]:
    """TrainingArguments defaults that come from the strategy (under the recipe's own keys)."""
    applied = defaults_applied(recipe)
    return {"learning_rate": applied["learning_rate"]} if applied else {}


def resolved_recipe_yaml(loaded: Any, relative_to: Any = None) -> str:
    """The resolved recipe (``loaded.to_dict``) with the strategy's default learning rate written
    in, where the recipe sets none, and a comment saying it is a default and whose."""
    data = loaded.to_dict(relative_to)
    applied = defaults_applied(loaded.recipe)
    if not applied:
        return dump_yaml(data)
    data["training"] = {"learning_rate": applied["learning_rate"], **data.get("training", {})}
    lines = dump_yaml(data).splitlines()
    at = lines.index("training:") + 1
    lines[at] += (f"  # default of {applied['source']} for {applied['family']} models "
                  f"(measured: {applied['measured']})")
    return "\n".join(lines) + "\n"


def describe_defaults(recipe: RecipeBase) -> dict[str, Any]:
    """The effective settings for ``sft-hub plan``: the learning rate (and whether it is the
    strategy's default or the recipe's) and the strategy's settings that shape what trains,
    each marked ``(default)`` where the recipe leaves it to the strategy."""
    d = strategy_defaults(recipe)
    if sets_learning_rate(recipe):
        lr = f"{recipe.settings.get('learning_rate'):g} (recipe; {d.source} default: " \
             f"{d.learning_rate:g})"
    else:
        lr = f"{d.learning_rate:g} ({d.source} default for {d.family} models, {d.measured})"
    chosen = recipe.strategy.model_fields_set
    return {"learning_rate": lr, **{k: v if k in chosen else f"{v} (default)"
                                    for k, v in d.settings.items()}}


# -- warnings ------------------------------------------------------------------------------------
def _sweep_hint() -> str:
    if importlib.util.find_spec("sft_hub.sweep") is not None:
        return "; or let `sft-hub sweep` search for it"
    return ""


def learning_rate_warnings(recipe: RecipeBase) -> list[str]:
    """A set learning rate :data:`LR_FACTOR` times or more from the strategy's default."""
    if not sets_learning_rate(recipe):
        return []
    try:
        lr = float(recipe.settings.get("learning_rate"))
    except (TypeError, ValueError):
        return []
    own = strategy_defaults(recipe)
    if lr <= 0 or max(lr / own.learning_rate, own.learning_rate / lr) < LR_FACTOR:
        return []
    family, task = recipe.model.backend, get_task_class(recipe.task)
    others = {}
    for name, cls in STRATEGIES.all().items():
        if name != own.strategy and family in cls.learning_rates:
            others[name] = cls.defaults_for(cls.spec_class(), family, task).learning_rate
    typical = min(others, key=lambda n: abs(math.log(lr / others[n])), default=None)
    closer = typical is not None and abs(math.log(lr / others[typical])) < abs(
        math.log(lr / own.learning_rate))
    where = "above" if lr > own.learning_rate else "below"
    factor = max(lr / own.learning_rate, own.learning_rate / lr)
    of = f" (typical of strategy {typical}: {others[typical]:g})" if closer else ""
    return [f"training.learning_rate {lr:g} is {factor:.0f}x {where} the default of strategy "
            f"{own.strategy} for {family} models, {own.learning_rate:g}{of}: remove "
            f"training.learning_rate to use {own.learning_rate:g} (measured: {own.measured})"
            f"{_sweep_hint()}"]


def small_data_warnings(recipe: RecipeBase, params: dict[str, Any], train_examples: int) -> list[str]:
    """Every parameter trainable and fewer than :data:`SMALL_TRAIN_SET` training examples."""
    if params.get("trainable_percent", 0) < 99.0 or train_examples >= SMALL_TRAIN_SET:
        return []
    return [f"strategy {recipe.strategy.name} trains all {params['trainable']:,} parameters on "
            f"{train_examples:,} training examples: below {SMALL_TRAIN_SET:,}, training fewer "
            "parameters often does better: try strategy.name=freeze (the last 2 layers; "
            "train_last_n_layers: 0 for the head only) or strategy.name=lora"
            f"{_sweep_hint()}"]


class RunAdvice:
    """The warnings of one training run: those known at the start are printed when it is made;
    :meth:`compute_metrics` stands in for the task's (and remembers what always predicting the
    majority class scores on the first evaluation set, the validation split); :meth:`finish`
    checks the final validation metric and returns what ``run_info.json`` records."""

    def __init__(self, loaded: Any, task: Any, params: dict[str, Any], train_examples: int, *,
                 main_process: bool = True):
        self.recipe: RecipeBase = loaded.recipe
        self.task = task
        self.main_process = main_process
        self.majority: Optional[dict[str, float]] = None
        self._seen_evaluation = False
        self.warnings: list[str] = []
        self._metrics = task.compute_metrics
        self._say(learning_rate_warnings(self.recipe)
                  + small_data_warnings(self.recipe, params, train_examples))

    def _say(self, messages: list[str]) -> None:
        self.warnings += messages
        if self.main_process:
            for message in messages:
                logging.getLogger(__name__).warning(message)  # "warning: ..." (console.py; not with -q)

    def compute_metrics(self, eval_pred) -> dict[str, float]:
        result = self._metrics(eval_pred)
        if not self._seen_evaluation:
            self._seen_evaluation = True
            self.majority = majority_baseline(self.task, eval_pred)
        return result

    def finish(self, metrics: dict[str, dict[str, float]]) -> dict[str, Any]:
        """End-of-run checks; returns the ``run_info.json`` entries (defaults and warnings)."""
        self._say(majority_warnings(self.recipe, self.task, metrics.get("validation", {}),
                                    self.majority))
        return {"defaults_applied": defaults_applied(self.recipe), "warnings": self.warnings}


def majority_baseline(task: Any, eval_pred) -> Optional[dict[str, float]]:
    """The task's metrics for a constant prediction: the most frequent label everywhere (class
    ids, ``-100`` ignored), or for one score per label (multi-label) each label's majority value."""
    import numpy as np
    from transformers import EvalPrediction

    predictions = eval_pred.predictions
    if isinstance(predictions, tuple):
        predictions = predictions[0]
    predictions, labels = np.asarray(predictions), np.asarray(eval_pred.label_ids)
    if predictions.shape == labels.shape:  # one score per label
        constant = np.broadcast_to(np.where(labels.mean(axis=0) > 0.5, 10.0, -10.0),
                                   labels.shape).astype(np.float32)
    elif predictions.shape[:-1] == labels.shape and np.issubdtype(labels.dtype, np.integer):
        known = labels[labels >= 0]
        if not known.size:
            return None
        constant = np.full(predictions.shape, -10.0, dtype=np.float32)
        constant[..., int(np.bincount(known).argmax())] = 10.0
    else:
        return None
    try:
        return task.task_metrics(EvalPrediction(predictions=constant, label_ids=labels))
    except Exception:  # a task whose metrics need more than logits: no baseline, no warning
        return None


def majority_warnings(recipe: RecipeBase, task: Any, validation: dict[str, float],
                      majority: Optional[dict[str, float]]) -> list[str]:
    metric = task.default_metric
    if not majority or metric not in majority or metric not in validation:
        return []
    final, base = float(validation[metric]), float(majority[metric])
    if (final > base + 1e-9) if task.greater_is_better else (final < base - 1e-9):
        return []
    d = strategy_defaults(recipe)
    lr = float(recipe.settings.get("learning_rate", d.learning_rate))
    lr_hint = (f"the default learning rate of strategy {d.strategy}, {d.learning_rate:g} (remove "
               "training.learning_rate)" if sets_learning_rate(recipe) and lr != d.learning_rate
               else "another training.learning_rate")
    return [f"validation {metric} {final:.4f} is no better than always predicting the majority "
            f"class ({base:.4f}): the model learned nothing usable; try more steps "
            f"(training.num_train_epochs), {lr_hint} or more training data{_sweep_hint()}"]
