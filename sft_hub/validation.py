"""``sft-hub validate``: schema and local data checks without importing torch or loading a model."""
from __future__ import annotations

import os
from typing import Iterable, Union

from .errors import attributed_to
from .hub import check_push_form
from .catalog import load_recipe
from .recipe.load import LoadedRecipe
from .recipe_checks import check_recipe
from .strategies import get_strategy
from .sweep_space import check_space
from .tasks import get_task_class


def validate(recipe: Union[str, os.PathLike], overrides: Iterable[str] = ()) -> LoadedRecipe:
    """Load and check a recipe: schema, strategy, local files and their columns, labels column."""
    loaded = load_recipe(recipe, overrides)
    check_recipe(loaded, get_task_class(loaded.recipe.task))
    task = get_task_class(loaded.recipe.task)(loaded.recipe, loaded.base_dir)
    get_strategy(loaded.recipe.strategy, task)
    if loaded.recipe.hub.push:
        with attributed_to(loaded.path):
            check_push_form(loaded.recipe.hub.push, loaded.recipe.strategy)
    with attributed_to(loaded.path):
        task.check_data()
    if loaded.recipe.sweep is not None:  # every corner of the space makes a valid recipe
        check_space(loaded)
    return loaded
