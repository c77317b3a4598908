"""Every recipe shipped in recipes/ validates (schema, local files, columns)."""
from __future__ import annotations

import pytest

from sft_hub.validation import validate

from .conftest import REPO

RECIPES = sorted(p for p in (REPO / "recipes").rglob("*.y*ml") if "data" not in p.parts)


def test_there_are_shipped_recipes():
    tasks = {p.parent.name for p in RECIPES}
    assert {"quickstart", "text-classification"} <= tasks


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(REPO / "recipes")))
def test_shipped_recipe_validates(path):
    loaded = validate(path)
    assert loaded.recipe.task
