"""`sft-hub schema`: the recipe JSON Schema from the pydantic models. Every shipped recipe carries
the yaml-language-server comment and validates against the schema with a standard validator
(jsonschema); the committed recipes/recipe.schema.json is what `sft-hub schema` writes."""
from __future__ import annotations

import json

import jsonschema
import pytest

from sft_hub.cli import main
from sft_hub.json_schema import recipe_schema, schema_text
from sft_hub.recipe.yaml_io import parse_yaml
from sft_hub.shipped import MODELINE, SCHEMA_FILE, catalog
from sft_hub.strategies import STRATEGIES
from sft_hub.tasks import TASKS

from .conftest import REPO

RECIPES = [s for s in catalog() if s.kind == "recipe"]


@pytest.fixture(scope="module")
def validator():
    schema = recipe_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _errors(validator, recipe: dict) -> list[str]:
    return [e.message for e in validator.iter_errors(recipe)]


@pytest.mark.parametrize("item", RECIPES, ids=lambda s: s.name)
def test_shipped_recipe_has_the_modeline_and_validates(item, validator):
    text = item.path.read_text(encoding="utf-8")
    first = text.splitlines()[0]
    match = MODELINE.match(first)
    assert match, f"{item.path}: first line must be '# yaml-language-server: $schema=...'"
    assert (item.path.parent / match.group(1)).resolve() == REPO / "recipes" / SCHEMA_FILE
    recipe = parse_yaml(text, source=str(item.path))
    assert _errors(validator, recipe) == []


def test_committed_schema_is_current():
    committed = REPO / "recipes" / SCHEMA_FILE
    assert json.loads(committed.read_text()) == json.loads(schema_text()), (
        "recipes/recipe.schema.json is out of date: run `sft-hub schema -o "
        "recipes/recipe.schema.json`")


def test_every_task_and_strategy_is_in_the_schema(validator):
    schema = recipe_schema()
    tasks = {schema["$defs"][ref["$ref"].rsplit("/", 1)[-1]]["properties"]["task"]["const"]
             for ref in schema["else"]["oneOf"]}
    assert tasks == set(TASKS.all())
    text = json.dumps(schema)
    for name in STRATEGIES.all():
        assert f'"const": "{name}"' in text
    model = schema["$defs"]["ModelSpec"]["properties"]
    assert "pip package" in model["path"]["description"]  # descriptions come along
    assert model["trust_remote_code"]["hub"] == "refused"  # and the hub marks


def _text_recipe(**data):
    return {"task": "text-classification", "model": {"name": "org/m"},
            "data": {"files": {"train": "t.csv"}, "text_column": "text", **data}}


def test_schema_rejects_what_the_loader_rejects(validator):
    assert _errors(validator, _text_recipe()) == []
    assert _errors(validator, _text_recipe(text_colum="x"))  # typo
    assert _errors(validator, _text_recipe(tokens_column="x"))  # another task's data key
    assert _errors(validator, {**_text_recipe(), "strategy": {"name": "lorra"}})
    assert _errors(validator, {**_text_recipe(), "strategy": {"name": "lora", "r": "8"}})
    assert _errors(validator, {**_text_recipe(), "task": "translation"})
    assert _errors(validator, {**_text_recipe(), "output": {"keep_checkpoints": "yes"}})
    assert _errors(validator, {**_text_recipe(), "training": {"num_train_epochs": 2,
                                                              "layer_decay": 2.0}})
    assert _errors(validator, {**_text_recipe(), "training": {"num_train_epochs": 2}}) == []


def test_partial_recipe_with_extends(validator):
    assert _errors(validator, {"extends": "base.yaml", "strategy": {"name": "bitfit"},
                               "training": {"learning_rate": 5e-3}}) == []
    assert _errors(validator, {"extends": "base.yaml", "strategy": {"name": "bitfit",
                                                                   "rr": 3}})
    assert _errors(validator, {"extends": "base.yaml", "modle": {}})


def test_cli_schema_writes_the_file(tmp_path, capsys):
    out = tmp_path / "recipe.schema.json"
    assert main(["schema", "-o", str(out)]) == 0
    assert json.loads(out.read_text())["title"] == "sft-hub recipe"
    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out)["$schema"].startswith("https://json-schema.org/")
