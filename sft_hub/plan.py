"""``sft-hub plan``: what a recipe's strategy would train, without training.

Builds the task's model (labels from ``data.labels`` or the data itself, so the head has its real
size), lets the strategy prepare it, and reports total and trainable parameters plus the
strategy's declared contract (what it trains, the form it saves, the push forms and engines it
supports) and its own facts about the prepared model (layers found, head, adapter targets,
unfreezing schedule), and the effective defaults: the learning rate the run would train at
(the recipe's, or the strategy's measured default) and the strategy's default settings (targets,
rank...).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Union

from .advice import describe_defaults
from .errors import SftHubError
from .recipe.schema import RecipeBase
from .strategies import get_strategy
from .tasks import get_task_class
from .training import count_parameters


def plan(recipe: Union[RecipeBase, Any], recipe_dir: Optional[Union[str, Path]] = None
         ) -> dict[str, Any]:
    """Parameter counts for ``recipe`` (a Recipe, or a LoadedRecipe from ``load_recipe``)."""

    source = getattr(recipe, "path", None)
    if not isinstance(recipe, RecipeBase):  # a LoadedRecipe
        recipe_dir = recipe_dir or recipe.base_dir
        recipe = recipe.recipe
    try:
        task = get_task_class(recipe.task)(recipe, Path(recipe_dir or "."))
        strategy = get_strategy(recipe.strategy, task)
        if recipe.data.labels:
            task.labels = list(recipe.data.labels)
        else:
            task.load_data()
        base = task.build_model()
        base_params = count_parameters(base)["total"]
        model = strategy.prepare(base)
    except SftHubError as e:
        if e.file is None:
            e.file = source
        raise
    counts = count_parameters(model)
    contract = strategy.contract()
    return {"model": recipe.model.name, "task": recipe.task, "strategy": contract.name,
            "trains": contract.trains, "saves": contract.saves,
            "push_forms": list(contract.push_forms),
            "engines": ["single process", *contract.engines],
            "labels": len(task.labels), "base_params": base_params,
            "total_params": counts["total"], "trainable_params": counts["trainable"],
            "trainable_percent": counts["trainable_percent"],
            **describe_defaults(recipe),  # learning rate, targets, rank (advice.py)
            **strategy.describe(model)}


def format_plan(result: dict[str, Any]) -> str:
    """The plan as aligned ``key: value`` lines (schedules one step a line)."""
    lines = []
    for key, value in result.items():
        if value is None:
            continue
        if key == "schedule":
            lines.append("schedule:")
            lines += [f"  from epoch {s['epoch']}: train_last_n_layers={s['train_last_n_layers']} "
                      f"-> {s['trainable_params']:,} trainable" for s in value]
            continue
        if isinstance(value, int) and not isinstance(value, bool):
            value = f"{value:,}"
        elif isinstance(value, float):
            value = f"{value:.4f}%" if key == "trainable_percent" else f"{value:g}"
        elif isinstance(value, (list, tuple)):
            value = ", ".join(map(str, value))
        lines.append(f"{key}: {value}")
    return "\n".join(lines)
