"""Recipe loading: strict schema messages, extends, overrides, YAML typing."""
from __future__ import annotations

import pytest
import yaml

from sft_hub.errors import RecipeError
from sft_hub.catalog import load_recipe


def base_recipe(**over):
    r = {"task": "text-classification", "model": {"name": "bert-base-uncased"},
         "data": {"dataset": "glue", "config": "sst2", "text_column": "sentence"}}
    r.update(over)
    return r


def error_of(path, *overrides) -> str:
    with pytest.raises(RecipeError) as e:
        load_recipe(path, overrides)
    return str(e.value)


def test_misspelt_key_names_file_path_and_closest_key(write_recipe):
    r = base_recipe()
    r["data"]["text_colum"] = "sentence"
    del r["data"]["text_column"]
    path = write_recipe(r)
    msg = error_of(path)
    assert str(path) in msg
    assert "data.text_colum: unknown key; did you mean data.text_column?" in msg


def test_misspelt_key_in_nested_section_and_strategy(write_recipe):
    msg = error_of(write_recipe(base_recipe(model={"name": "x", "revison": "main"})))
    assert "model.revison: unknown key; did you mean model.revision?" in msg


def test_unknown_training_key_checked_against_training_arguments(write_recipe):
    msg = error_of(write_recipe(base_recipe(training={"learning_rat": 1e-4})))
    assert "training.learning_rat: unknown key; did you mean training.learning_rate?" in msg


def test_every_training_arguments_field_is_accepted(write_recipe):
    loaded = load_recipe(write_recipe(base_recipe(training={
        "gradient_accumulation_steps": 2, "lr_scheduler_type": "cosine", "max_grad_norm": 0.5,
        "eval_strategy": "steps", "eval_steps": 5, "warmup_steps": 0.1})))
    settings = loaded.recipe.settings
    assert settings.recipe["lr_scheduler_type"] == "cosine"
    assert settings.arguments["save_strategy"] == "steps" and settings.arguments["save_steps"] == 5
    assert settings.seed == 42 and settings.num_train_epochs == 3  # sft-hub's defaults, once


def test_wrong_types_and_missing_fields_read_clearly(write_recipe):
    r = base_recipe(training={"num_train_epochs": "three"})
    r["data"]["max_length"] = "long"
    del r["model"]["name"]
    msg = error_of(write_recipe(r))
    assert "3 problems" in msg
    assert "model.name: required field is missing" in msg
    assert "data.max_length: Input should be a valid integer" in msg and "'long'" in msg
    assert "training.num_train_epochs: expected a number, got 'three'" in msg


def test_output_dir_is_reserved(write_recipe):
    msg = error_of(write_recipe(base_recipe(training={"output_dir": "x"})))
    assert "training.output_dir" in msg and "output.dir" in msg


def test_unknown_task_suggests_closest(write_recipe):
    msg = error_of(write_recipe(base_recipe(task="text-clasification")))
    assert "unknown task 'text-clasification'" in msg and "did you mean 'text-classification'" in msg


def test_unreadable_yaml_names_line(write_recipe):
    path = write_recipe("task: text-classification\nmodel:\n  name: [unclosed\n")
    msg = error_of(path)
    assert str(path) in msg and "not valid YAML" in msg and "line" in msg


def test_duplicate_key_is_an_error(write_recipe):
    msg = error_of(write_recipe("task: text-classification\ntask: text-classification\n"))
    assert "appears twice" in msg


def test_data_needs_exactly_one_source(write_recipe):
    r = base_recipe()
    r["data"]["files"] = {"train": "a.csv"}
    assert "exactly one of data.dataset" in error_of(write_recipe(r))


def test_overrides_use_yaml_typing(write_recipe):
    loaded = load_recipe(write_recipe(base_recipe()), [
        "training.learning_rate=3e-5", "training.num_train_epochs=2", "training.bf16=false",
        "data.max_train_samples=100", "model.revision=v1.0"])
    t = loaded.recipe.training
    assert t["learning_rate"] == pytest.approx(3e-5) and isinstance(t["learning_rate"], float)
    assert t["num_train_epochs"] == 2 and t["bf16"] is False
    assert loaded.recipe.data.max_train_samples == 100
    assert loaded.recipe.model.revision == "v1.0"


def test_exponent_floats_in_yaml_files_are_floats(write_recipe):
    loaded = load_recipe(write_recipe("task: text-classification\nmodel: {name: m}\n"
                                      "data: {dataset: d}\ntraining: {learning_rate: 2e-5}\n"))
    assert loaded.recipe.training["learning_rate"] == pytest.approx(2e-5)


def test_bad_override_errors(write_recipe):
    path = write_recipe(base_recipe())
    assert "key.sub=value" in error_of(path, "training.learning_rate")
    assert "data.text_colum: unknown key" in error_of(path, "data.text_colum=x")


def test_extends_deep_merges_chains_and_rebases_paths(write_recipe, tmp_path):
    write_recipe({"task": "text-classification", "model": {"name": "m", "revision": "r1"},
                  "data": {"files": {"train": "data/train.csv"}, "max_length": 32},
                  "training": {"learning_rate": 1e-4, "seed": 1}}, name="shared/base.yaml")
    write_recipe({"extends": "base.yaml", "training": {"seed": 2}}, name="shared/mid.yaml")
    top = write_recipe({"extends": "shared/mid.yaml", "data": {"max_length": 64},
                        "training": {"num_train_epochs": 1}}, name="top.yaml")
    loaded = load_recipe(top)
    r = loaded.recipe
    assert r.model.revision == "r1"
    assert r.data.max_length == 64
    assert r.training == {"learning_rate": 1e-4, "seed": 2, "num_train_epochs": 1}
    # data path written in shared/base.yaml is relative to that file
    assert r.data.files["train"] == "shared/data/train.csv"
    assert "extends" not in loaded.to_dict()


def test_error_names_the_file_that_holds_the_mistake(write_recipe):
    base = write_recipe({"task": "text-classification", "model": {"name": "m"},
                         "data": {"dataset": "d", "text_colum": "x"}}, name="base.yaml")
    top = write_recipe({"extends": "base.yaml", "model": {"revision": "main"}}, name="top.yaml")
    msg = error_of(top)
    assert msg.startswith(str(base)) and "data.text_colum" in msg


def test_extends_cycle_is_an_error(write_recipe):
    write_recipe({"extends": "b.yaml", "task": "text-classification"}, name="a.yaml")
    write_recipe({"extends": "a.yaml"}, name="b.yaml")
    msg = error_of(write_recipe({"extends": "a.yaml"}, name="top.yaml"))
    assert "cycle" in msg and "a.yaml" in msg and "b.yaml" in msg


def test_missing_recipe_file(tmp_path):
    assert "recipe file not found" in error_of(tmp_path / "nope.yaml")


def test_resolved_recipe_round_trips(write_recipe, tmp_path):
    loaded = load_recipe(write_recipe(base_recipe()), ["training.seed=7"])
    again = write_recipe(loaded.to_yaml(), name="resolved.yaml")
    assert load_recipe(again).to_dict() == loaded.to_dict()
    assert yaml.safe_load(loaded.to_yaml())["strategy"] == {"name": "full"}


def test_null_override_unsets_a_key(write_recipe):
    r = base_recipe(training={"seed": 3, "bf16": True})
    loaded = load_recipe(write_recipe(r), ["training.bf16=null"])
    assert loaded.recipe.training == {"seed": 3}


def test_saved_recipe_paths_stay_valid_from_the_run_directory(write_recipe, tmp_path):
    (tmp_path / "data").mkdir()
    loaded = load_recipe(write_recipe({"task": "text-classification", "model": {"name": "m"},
                                       "data": {"files": {"train": "data/train.csv"}}}))
    saved = loaded.to_dict(relative_to=tmp_path / "runs" / "x")
    assert saved["data"]["files"]["train"] == "../../data/train.csv"
    assert loaded.to_dict()["data"]["files"]["train"] == "data/train.csv"


def test_strategy_errors_name_the_strategy_field(write_recipe):
    msg = error_of(write_recipe(base_recipe(strategy={"name": "lora", "r": 0, "alpah": 3})))
    assert "strategy.r: Input should be greater than 0" in msg
    assert "strategy.alpah: unknown key; did you mean strategy.alpha?" in msg
    msg = error_of(write_recipe(base_recipe(strategy={"name": "lorra"})))
    assert "strategy.name: 'lorra' is not one of" in msg and "did you mean 'lora'?" in msg
    msg = error_of(write_recipe(base_recipe(strategy={"name": "freeze", "train_last_n_layer": 2})))
    assert "did you mean strategy.train_last_n_layers?" in msg


def test_yes_no_stay_strings_and_true_false_are_booleans(write_recipe):
    loaded = load_recipe(write_recipe(
        "task: text-classification\nmodel: {name: m}\ndata: {dataset: d}\n"
        "training: {eval_strategy: no, save_strategy: no, bf16: false, fp16: False}\n"),
        ["training.load_best_model_at_end=false"])
    t = loaded.recipe.training
    assert t["eval_strategy"] == "no" and t["save_strategy"] == "no"
    assert t["bf16"] is False and t["fp16"] is False and t["load_best_model_at_end"] is False
