"""The recipe JSON Schema (``sft-hub schema``), generated from the pydantic models.

One schema for every recipe: each registered task is a branch (``task`` is its tag, the branch
holds that task's ``data:`` section), and ``strategy:`` is a tagged union of every registered
strategy (``name``), as in :func:`sft_hub.catalog.recipe_model`. Field descriptions and the
``hub`` marks (what a recipe from the Hub may set, see :mod:`sft_hub.recipe.schema`) come along.

A file with ``extends:`` is only a part of a recipe (its base supplies the rest), so it is
checked against the same sections with nothing required. ``training:`` lists sft-hub's own keys;
every ``transformers.TrainingArguments`` field is allowed too (``sft-hub validate`` checks those
against the installed transformers, which the schema must not depend on).

Editors use it through the comment ``# yaml-language-server: $schema=<path or URL>`` at the top
of a recipe (the shipped recipes carry one pointing at ``recipes/recipe.schema.json``).
"""
from __future__ import annotations

import copy
import json
from typing import Any

from pydantic.json_schema import models_json_schema

from .catalog import recipe_model
from .recipe.schema import TrainingExtras
from .strategies import STRATEGIES
from .tasks import TASKS

DIALECT = "https://json-schema.org/draft/2020-12/schema"
PARTIAL = "Partial"
EXTENDS = {
    "description": "base recipe(s) this file extends (relative to this file, or hf://...); "
                   "their sections are deep-merged under this file's",
    "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1}],
}
TRAINING_NOTE = ("transformers.TrainingArguments fields (checked by `sft-hub validate` against the "
                 "installed transformers) and sft-hub's own keys listed here")


def recipe_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a recipe file, every task and strategy included."""
    ref = "#/$defs/{model}"
    models = [recipe_model(task) for task in sorted(TASKS.all())]
    _, schema = models_json_schema([(m, "validation") for m in models], ref_template=ref,
                                   title="sft-hub recipe")
    defs: dict[str, Any] = schema.get("$defs", {})
    branches = []
    for task, model in zip(sorted(TASKS.all()), models):
        name = model.__name__
        branch = defs[name]
        properties = branch.setdefault("properties", {})
        properties["task"] = {"const": task, "description": f"the task: {task}",
                              **{k: v for k, v in properties.get("task", {}).items()
                                 if k not in ("type", "title")}}
        properties["extends"] = EXTENDS
        _open_training(properties.get("training", {}))
        branch["additionalProperties"] = False
        branches.append(name)
    partial = {PARTIAL + k: _relaxed(v) for k, v in defs.items()}
    defs.update(partial)
    return {
        "$schema": DIALECT,
        "$id": "sft-hub-recipe.schema.json",
        "title": "sft-hub recipe",
        "description": "A YAML recipe for `sft-hub train`: task, model, data, strategy, training, "
                       f"output, hub (tasks: {', '.join(sorted(TASKS.all()))}; strategies: "
                       f"{', '.join(sorted(STRATEGIES.all()))}).",
        "type": "object",
        "if": {"required": ["extends"]},
        "then": {"anyOf": [{"$ref": f"#/$defs/{PARTIAL}{b}"} for b in branches]},
        "else": {"oneOf": [{"$ref": f"#/$defs/{b}"} for b in branches]},
        "$defs": defs,
    }


def _open_training(training: dict[str, Any]) -> None:
    """``training:``: sft-hub's keys typed, any other key allowed (TrainingArguments fields)."""
    extras = TrainingExtras.model_json_schema()
    training.pop("additionalProperties", None)
    training.update({"type": "object", "description": TRAINING_NOTE,
                     "properties": extras.get("properties", {}), "additionalProperties": True})


def _relaxed(node: Any) -> Any:
    """A copy of a schema node with nothing required and unions as anyOf (a partial recipe may
    leave out a union's tag), its references pointing at the relaxed definitions."""
    node = copy.deepcopy(node)

    def walk(n: Any) -> Any:
        if isinstance(n, dict):
            n.pop("required", None)
            n.pop("discriminator", None)
            if "oneOf" in n:
                n["anyOf"] = n.pop("oneOf")
            if isinstance(n.get("$ref"), str) and n["$ref"].startswith("#/$defs/"):
                n["$ref"] = "#/$defs/" + PARTIAL + n["$ref"][len("#/$defs/"):]
            for v in n.values():
                walk(v)
        elif isinstance(n, list):
            for v in n:
                walk(v)
        return n

    return walk(node)


def schema_text() -> str:
    return json.dumps(recipe_schema(), indent=2, sort_keys=True) + "\n"
