"""Issue 15: misleading or missing checks (point 5), labels for integer ids (point 1), late or
silent failures (point 6). Validation cases run ``sft-hub validate`` in-process; the few training
cases use the tiny BERT of conftest.py.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from sft_hub.cli import main
from sft_hub.errors import DataError, RecipeError
from tests.test_safety import fake_hub  # noqa: F401  (pytest fixture: hf:// recipes offline)

NAMES = ["World", "Sports", "Business", "Sci/Tech"]


def write(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False),
                    encoding="utf-8")
    return path


def write_rows(path: Path, header: list[str], rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture
def ids_recipe(tmp_path, tiny_bert_dir) -> dict:
    """AG-News-shaped data: integer labels 0..3, named by data.labels."""
    write_rows(tmp_path / "data" / "train.csv", ["text", "label"],
               [(f"{['world', 'sports', 'money', 'science'][i % 4]} news {i}", i % 4)
                for i in range(48)])
    return {"task": "text-classification",
            "model": {"name": "tiny-bert", "path": str(tiny_bert_dir)},
            "data": {"files": {"train": "data/train.csv"}, "labels": list(NAMES),
                     "max_length": 16, "validation_split": 0.25},
            "training": {"num_train_epochs": 1, "per_device_train_batch_size": 8,
                         "learning_rate": 5e-3, "seed": 0, "logging_steps": 1,
                         "disable_tqdm": True, "use_cpu": True}}


def validate(tmp_path: Path, recipe, *overrides: str, capsys) -> tuple[int, str]:
    path = write(tmp_path / "recipe.yaml", recipe)
    capsys.readouterr()
    code = main(["validate", "-q", str(path), *overrides])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if code == 2:
        assert err.startswith("error: ") and err.count("\nerror:") == 0, err
    return code, err


# -- point 4: hostile recipes from the Hub -----------------------------------------------------------

def test_hostile_recipes_from_the_hub_end_in_one_error_line(fake_hub, capsys):
    lol = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]'] + [
        f"{chr(97 + i)}: &{chr(97 + i)} [" + ",".join([f"*{chr(96 + i)}"] * 9) + "]"
        for i in range(1, 9)]
    files = {"bomb.yaml": "\n".join(lol) + "\ntask: text-classification\n",
             "deep.yaml": "a: " + "[" * 20_000 + "]" * 20_000 + "\n",
             "keys.yaml": "".join(f"k{i}: 1\n" for i in range(50_000)),
             "big.yaml": "x: " + "y" * 10_000_000 + "\n",
             "shape.yaml": "task: text-classification\nmodel: [1, 2]\ndata: abc\n",
             "key.yaml": "? [1, 2]\n: 3\n",
             "climb.yaml": "extends: ../../../etc/passwd.yaml\n",
             **{f"chain/c{i}.yaml": f"extends: c{i + 1}.yaml\n" for i in range(100)}}
    fake_hub("org/hostile", files)
    expected = {"bomb.yaml": "too large", "deep.yaml": "nested deeper", "keys.yaml": "limited to",
                "big.yaml": "limited to", "shape.yaml": "must be a mapping",
                "key.yaml": "mapping key is a list", "climb.yaml": "climbs out of the repository",
                "chain/c0.yaml": "more than 32 recipe files"}
    for name, message in expected.items():
        capsys.readouterr()
        assert main(["validate", "-q", f"hf://org/hostile/{name}"]) == 2, name
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "Traceback" not in err, err
        assert message in err, (name, err)
    assert main(["validate", "hf://org/hostile/../../../etc/passwd.yaml"]) == 2
    assert "'..'" in capsys.readouterr().err


# -- point 5: every misleading or missing check -------------------------------------------------

POINT_5 = [  # (what was written, overrides or a recipe edit, the message that must name it)
    ("misspelt extends", {"exetnds": "base.yaml"}, "exetnds: unknown key; did you mean extends?"),
    ("misspelt task key", {"tsak": "text-classification", "task": None},
     "tsak: unknown key; did you mean task?"),
    ("misspelt task name", ["task=text-clasification"],
     "did you mean 'text-classification'?"),
    ("misspelt strategy name key", {"strategy": {"nmae": "lora"}}, "you wrote 'nmae'"),
    ("misspelt strategy name", ["strategy.name=lroa"], "did you mean 'lora'?"),
    ("true is not an integer", ["data.max_length=true"], "data.max_length: Input should be a "
                                                          "valid integer (got True)"),
    ("'3' is not a number", ["data.max_length='3'"], "data.max_length: Input should be a valid "
                                                     "integer (got '3')"),
    ("true as lora r", ["strategy.name=lora", "strategy.r=true"], "strategy.r"),
    ("negative epochs", ["training.num_train_epochs=-1"], "training.num_train_epochs: must be "
                                                          "above 0"),
    ("eval_strategy value", ["training.eval_strategy=epohc"], "did you mean 'epoch'?"),
    ("optim value", ["training.optim=adamw_torchx"], "did you mean 'adamw_torch'?"),
    ("metric_for_best_model value", ["training.metric_for_best_model=acuracy"],
     "did you mean 'accuracy'?"),
    ("missing model.path folder", ["model.path=no/such/folder"], "model path not found"),
    ("missing pkg: package", ["model.path=pkg:no_such_package_xyz/model"],
     "Python package 'no_such_package_xyz' is not installed"),
    ("empty model.path", ["model.path="], "model.path is empty"),
    ("hub.push without repo_id", ["hub.push=model"], "hub.push is 'model' but hub.repo_id is "
                                                     "not set"),
    ("colliding columns", ["data.text_column=label"], "data.label_column and data.text_column "
                                                      "both name the column 'label'"),
    ("empty data.labels", ["data.labels=[]"], "data.labels: List should have at least 1 item"),
    ("a token in the recipe", ["training.hub_token=hf_" + "Q" * 34],
     "training.hub_token: holds a secret"),
    ("a token anywhere", ["hub.license=hf_" + "Q" * 34], "hub.license: holds a secret"),
    ("unknown report_to", ["training.report_to=tensorbaord"], "did you mean 'tensorboard'?"),
]


@pytest.mark.parametrize("what,change,message", POINT_5, ids=[c[0] for c in POINT_5])
def test_each_point_5_case_names_what_was_written(what, change, message, ids_recipe, tmp_path,
                                                  capsys):
    recipe, overrides = dict(ids_recipe), []
    if isinstance(change, dict):
        recipe.update(change)
        recipe = {k: v for k, v in recipe.items() if v is not None}
        if "exetnds" in change:
            recipe = {"exetnds": "base.yaml"}
    else:
        overrides = change
    code, err = validate(tmp_path, recipe, *overrides, capsys=capsys)
    assert code == 2, err
    assert message in err, err
    assert "Q" * 30 not in err  # a secret is never echoed


def test_merge_keys_and_anchors_work(ids_recipe, tmp_path, capsys):
    text = ("x-fast: &fast\n  num_train_epochs: 2\n  per_device_train_batch_size: 4\n"
            + yaml.safe_dump(ids_recipe, sort_keys=False).replace(
                "training:\n", "training:\n  <<: *fast\n  per_device_train_batch_size: 2\n", 1))
    text = text.replace("  num_train_epochs: 1\n", "", 1).replace(
        "  per_device_train_batch_size: 8\n", "", 1)
    path = write(tmp_path / "merge.yaml", text)
    assert main(["validate", str(path)]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["training"]["num_train_epochs"] == 2  # from the anchor
    assert shown["training"]["per_device_train_batch_size"] == 2  # the section's own key wins
    assert "x-fast" not in shown


def test_missing_report_to_package_is_refused_by_validate_and_before_training(
        ids_recipe, tmp_path, capsys, monkeypatch):
    import sft_hub.recipe_checks as checks
    from sft_hub.training import train

    monkeypatch.setattr(checks, "_installed", lambda module: False)
    code, err = validate(tmp_path, ids_recipe, "training.report_to=tensorboard", capsys=capsys)
    assert code == 2 and "pip install 'sft-hub[tensorboard]'" in err
    code, err = validate(tmp_path, ids_recipe, "training.report_to=[trackio]", capsys=capsys)
    assert code == 2 and "sft-hub[trackio]" in err
    path = write(tmp_path / "r.yaml", {**ids_recipe, "output": {"dir": "runs/tb"}})
    with pytest.raises(RecipeError, match=r"sft-hub\[tensorboard\]"):
        train(path, ["training.report_to=tensorboard"])
    assert not (tmp_path / "runs").exists()  # refused before any run directory exists


def test_the_dataset_readers_real_cause_is_the_message(tmp_path):
    from sft_hub.catalog import load_recipe
    from sft_hub.data.sources import load_raw_splits

    (tmp_path / "bad.csv").write_text('text,label\na,b\nc,d,e,f\n', encoding="utf-8")
    (tmp_path / "model").mkdir()
    loaded = load_recipe(write(tmp_path / "r.yaml", {
        "task": "text-classification", "model": {"name": "m", "path": "model"},
        "data": {"files": {"train": "bad.csv"}}}))
    with pytest.raises(DataError) as caught:
        load_raw_splits(loaded.recipe.data, tmp_path)
    assert "Expected 2 fields in line 3, saw 4" in str(caught.value)
    assert "An error occurred while generating the dataset" not in str(caught.value)


# -- point 1: labels -------------------------------------------------------------------------------

def test_validate_checks_integer_labels_against_data_labels(ids_recipe, tmp_path, capsys):
    assert validate(tmp_path, ids_recipe, capsys=capsys)[0] == 0
    write_rows(tmp_path / "data" / "seven.csv", ["text", "label"], [("a", 0), ("b", 7)])
    code, err = validate(tmp_path, ids_recipe, "data.files.train=data/seven.csv", capsys=capsys)
    assert code == 2 and "label id(s) 7" in err and "ids 0 to 3" in err
    write_rows(tmp_path / "data" / "whole.csv", ["text", "label"], [("a", "0.0"), ("b", "3.0")])
    assert validate(tmp_path, ids_recipe, "data.files.train=data/whole.csv", capsys=capsys)[0] == 0
    write_rows(tmp_path / "data" / "frac.csv", ["text", "label"], [("a", "0.0"), ("b", "0.5")])
    code, err = validate(tmp_path, ids_recipe, "data.files.train=data/frac.csv", capsys=capsys)
    assert code == 2 and "column 'label'" in err and "0.5" in err and "not measurements" in err
    write_rows(tmp_path / "data" / "names.csv", ["text", "label"], [("a", "World"), ("b", "Moon")])
    code, err = validate(tmp_path, ids_recipe, "data.files.train=data/names.csv", capsys=capsys)
    assert code == 2 and "'Moon'" in err


def test_train_refuses_bad_local_data_before_loading_it(ids_recipe, tmp_path):
    """What validate finds in local files, train finds first too: before the data is loaded, a
    model is built or a run directory exists."""
    from sft_hub.training import train

    write_rows(tmp_path / "data" / "seven.csv", ["text", "label"], [("a", 0), ("b", 7)])
    path = write(tmp_path / "r.yaml", {**ids_recipe, "output": {"dir": "runs/bad"}})
    with pytest.raises(DataError, match="label id"):
        train(path, ["data.files.train=data/seven.csv"])
    assert not (tmp_path / "runs").exists()


def test_label_names_mapping_or_json_file(ids_recipe, tmp_path, capsys):
    del ids_recipe["data"]["labels"]
    mapping = "data.label_names={0: World, 1: Sports, 2: Business, 3: Sci/Tech}"
    assert validate(tmp_path, ids_recipe, mapping, capsys=capsys)[0] == 0
    write(tmp_path / "labels.json", json.dumps({"id2label": dict(enumerate(NAMES))}))
    assert validate(tmp_path, ids_recipe, "data.label_names=labels.json", capsys=capsys)[0] == 0
    code, err = validate(tmp_path, ids_recipe, "data.label_names={0: World, 2: Business}",
                         capsys=capsys)
    assert code == 2 and "without gaps" in err
    code, err = validate(tmp_path, ids_recipe, mapping, "data.labels=[a, b]", capsys=capsys)
    assert code == 2 and "not both" in err


def test_token_classification_tag_ids_are_checked_by_validate(tmp_path, tiny_bert_dir, capsys):
    rows = [{"tokens": ["John", "lives", "in", "Paris"], "ner_tags": [1, 0, 0, 3]}]
    write(tmp_path / "ner.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    recipe = {"task": "token-classification", "model": {"name": "m", "path": str(tiny_bert_dir)},
              "data": {"files": {"train": "ner.jsonl"}}}
    code, err = validate(tmp_path, recipe, capsys=capsys)
    assert code == 2 and "integer ids without names" in err
    code, err = validate(tmp_path, recipe, "data.labels=[O, B-PER, I-PER]", capsys=capsys)
    assert code == 2 and "tag id 3 has no name" in err
    assert validate(tmp_path, recipe, "data.labels=[O, B-PER, I-PER, B-LOC, I-LOC]",
                    capsys=capsys)[0] == 0


def test_integer_labels_train_under_their_names_and_empty_texts_are_skipped_and_counted(
        ids_recipe, tmp_path, capsys):
    """The saved model's id2label holds the names data.labels gives the ids; with
    data.skip_empty the empty texts are left out and counted (without it: an error naming rows)."""
    from sft_hub.training import train

    rows = [(f"{['world', 'sports', 'money', 'science'][i % 4]} news {i}", float(i % 4))
            for i in range(48)] + [("", 1.0), ("   ", 2.0)]
    write_rows(tmp_path / "data" / "train.csv", ["text", "label"], rows)
    code, err = validate(tmp_path, ids_recipe, capsys=capsys)
    assert code == 2 and "2 row(s)" in err and "row(s) 49, 50" in err and "skip_empty" in err
    ids_recipe["data"]["skip_empty"] = True
    result = train(write(tmp_path / "r.yaml", ids_recipe))
    config = json.loads((result.run_dir / "config.json").read_text())
    assert config["id2label"] == {str(i): name for i, name in enumerate(NAMES)}
    assert result.run_info["labels"] == NAMES
    assert any("left out 2 train row(s) with an empty text" in n for n in result.run_info["notes"])


# -- point 6: no run directory left by a failure; resumed metrics ---------------------------------

class Boom(Exception):
    pass


def _failing_callback(event: str, at_step: int = 0):
    from transformers import TrainerCallback

    class Fail(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            if event == "begin":
                raise Boom("injected")

        def on_save(self, args, state, control, **kwargs):
            if event == "save" and state.global_step >= at_step:
                raise Boom("injected")

    return Fail()


def test_a_failure_during_training_leaves_no_run_directory(ids_recipe, tmp_path):
    from sft_hub.training import train

    path = write(tmp_path / "r.yaml", {**ids_recipe, "output": {"dir": "runs/fails"}})
    with pytest.raises(Boom):
        train(path, callbacks=[_failing_callback("begin")])
    assert not (tmp_path / "runs" / "fails").exists()


def test_resumed_run_reports_the_whole_runs_training_loss_and_time(ids_recipe, tmp_path):
    """Resumed from the last checkpoint (the Trainer itself would report loss 0.0 and a
    runtime of the resumed segment only)."""
    from sft_hub.training import train

    ids_recipe["training"].update(max_steps=4, save_strategy="steps", save_steps=2,
                                  eval_strategy="no", save_total_limit=5)
    path = write(tmp_path / "r.yaml", {**ids_recipe, "output": {"dir": "runs/resumed"}})
    with pytest.raises(Boom):
        train(path, callbacks=[_failing_callback("save", at_step=4)])
    last = tmp_path / "runs" / "resumed" / "checkpoints" / "checkpoint-4"
    state = json.loads((last / "trainer_state.json").read_text())
    losses = [e["loss"] for e in state["log_history"] if "loss" in e]
    assert len(losses) == 4  # logging_steps: 1
    spent = json.loads((last / "sft_hub_time.json").read_text())["train_seconds"]
    assert spent > 0

    result = train(path, resume=True)
    train_metrics = json.loads((result.run_dir / "metrics.json").read_text())["train"]
    final = json.loads((result.run_dir / "trainer_state.json").read_text())
    every_step = [e["loss"] for e in final["log_history"] if "loss" in e]  # before and after
    assert every_step[:4] == losses
    assert train_metrics["loss"] == pytest.approx(sum(every_step) / len(every_step), rel=1e-6)
    assert train_metrics["loss"] > 0
    assert train_metrics["runtime"] >= spent
    assert train_metrics["resumed_at_step"] == 4


def test_label_columns_as_loaded_classlabel_names_kept_ids_named_floats_checked():
    """The training-time half of the label rules, on ``datasets`` columns (Hub data included)."""
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    from sft_hub.data.labels import derive_labels, encode_labels, name_integer_labels

    hub = DatasetDict({"train": Dataset.from_dict(
        {"label": [0, 1, 1]}, features=Features({"label": ClassLabel(names=["neg", "pos"])}))})
    named = name_integer_labels(hub, "label", None)
    assert derive_labels(named, "label", None) == ["neg", "pos"]  # ClassLabel names are kept

    ids = DatasetDict({"train": Dataset.from_dict({"label": [0, 3, 1, 2]}),
                       "test": Dataset.from_dict({"label": [1.0, 2.0]},
                                                 features=Features({"label": Value("float64")}))})
    named = name_integer_labels(ids, "label", NAMES)
    labels = derive_labels(named, "label", NAMES)
    encoded = encode_labels(named, "label", labels)
    assert labels == NAMES and encoded["train"].features["label"].names == NAMES
    assert encoded["train"]["label"] == [0, 3, 1, 2] and encoded["test"]["label"] == [1, 2]

    unnamed = name_integer_labels(DatasetDict({"train": ids["test"]}), "label", None)
    assert derive_labels(unnamed, "label", None) == ["1", "2"]  # 1.0 is the id 1, not "1.0"
    fractional = DatasetDict({"train": Dataset.from_dict({"label": [0.0, 0.5]})})
    with pytest.raises(DataError, match="column 'label' of the train split holds the number 0.5"):
        name_integer_labels(fractional, "label", None)
    with pytest.raises(DataError, match="label id"):
        name_integer_labels(DatasetDict({"train": Dataset.from_dict({"label": [0, 4]})}),
                            "label", NAMES)
