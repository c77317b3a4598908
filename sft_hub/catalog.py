"""The composition root: the full recipe model, built from the task and strategy registries.

``recipe/`` knows the pieces of a recipe (sections, YAML, ``extends``, overrides) but not which
tasks and strategies exist; the registries know the plugins but not how recipes are read. This
module joins them: :func:`recipe_model` is one task's complete schema (its data spec, every
registered strategy as a tagged union), and :func:`load_recipe` is the recipe loader the rest of
sft-hub (and a Python user) calls.
"""
from __future__ import annotations

import os
from typing import Iterable, Union

from pydantic import Field, create_model
from typing_extensions import Annotated

from .recipe import load as _load
from .recipe.load import LoadedRecipe
from .recipe.schema import RecipeBase
from .strategies import STRATEGIES
from .tasks import get_task_class

DEFAULT_STRATEGY = "full"


def strategy_type():
    """The ``strategy:`` field type: every registered strategy spec, tagged by ``name``."""
    specs = tuple(cls.spec_class for cls in STRATEGIES.all().values())
    if len(specs) == 1:
        return specs[0]
    return Annotated[Union[specs], Field(discriminator="name")]


def recipe_model(task_name: str) -> type[RecipeBase]:
    """The full recipe model for one task: its data spec plus the registered strategies."""
    task_cls = get_task_class(task_name)
    default_strategy = STRATEGIES.get(DEFAULT_STRATEGY, field="strategy.name").spec_class()
    return create_model(
        f"{task_cls.__name__}Recipe",
        __base__=RecipeBase,
        data=(task_cls.data_spec, ...),
        strategy=(strategy_type(), default_strategy),
    )


def load_recipe(ref: Union[str, os.PathLike], overrides: Iterable[str] = ()) -> LoadedRecipe:
    """Read, compose and validate a recipe (see :func:`sft_hub.recipe.load.load_recipe`)."""
    return _load.load_recipe(ref, overrides, recipe_model=recipe_model)


def load_variant(loaded: LoadedRecipe, values: dict, *, source: str,
                 drop: Iterable[str] = ()) -> LoadedRecipe:
    """``loaded`` with values set at dotted keys (see :func:`sft_hub.recipe.load.load_variant`)."""
    return _load.load_variant(loaded, values, source=source, recipe_model=recipe_model, drop=drop)
