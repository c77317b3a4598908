"""A shared recipe can neither run code nor delete files, and a failed run never destroys a finished
one. Each test first sets up the attack or the loss as a hostile recipe author (or an unlucky user)
would, then checks that it is refused, or that nothing is lost."""
from __future__ import annotations

import hashlib
import json
import typing
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from sft_hub import cli
from sft_hub.catalog import recipe_model
from sft_hub.recipe.schema import HUB_POLICIES, field_hub_policy
from sft_hub.recipe.training_keys import (TRAINING_HUB_ANY, TRAINING_HUB_REFUSED,
                                          training_argument_fields, training_hub_policy)
from sft_hub.run_dir import MARKER, NEW_SUFFIX, OLD_SUFFIX, RunPlace, recover_interrupted_replace
from sft_hub.strategies import STRATEGIES
from sft_hub.tasks import TASKS
from sft_hub.training import train

from .training_probes import kill_at_checkpoint

SHA = "0123456789abcdef0123456789abcdef01234567"


def run_cli(capsys, *argv) -> tuple[int, str]:
    capsys.readouterr()
    code = cli.main(list(argv))
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    return code, out.err


def tree_digest(root: Path) -> dict[str, str]:
    """Every file under ``root`` (relative path -> sha256): equal digests, byte-identical trees."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# -- a fake Hub, served offline from a local HF cache ----------------------------------------------

@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    """publish(repo_id, {path: text}) puts files in a local HF cache as if downloaded from the Hub;
    ``hf://<repo_id>/<path>`` then resolves offline."""
    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)

    def publish(repo_id: str, files: dict[str, str]) -> None:
        repo = cache / f"models--{repo_id.replace('/', '--')}"
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / "main").write_text(SHA)
        for name, text in files.items():
            path = repo / "snapshots" / SHA / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    return publish


@pytest.fixture
def evil_model(tiny_bert_dir, tmp_path) -> Path:
    """A local model folder whose config's ``auto_map`` points at Python that writes a file."""
    import shutil

    folder = tmp_path / "evil-model"
    shutil.copytree(tiny_bert_dir, folder)
    sentinel = tmp_path / "PWNED"
    (folder / "evil.py").write_text(
        f"from pathlib import Path\nPath({str(sentinel)!r}).write_text('code ran')\n"
        "from transformers import BertConfig, BertForSequenceClassification\n"
        "class EvilConfig(BertConfig):\n    pass\n"
        "class EvilModel(BertForSequenceClassification):\n    config_class = EvilConfig\n")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig",
                          "AutoModelForSequenceClassification": "evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def hub_recipe(**sections) -> str:
    recipe = {"task": "text-classification",
              "model": {"name": "org/evil", "path": "evil-model"},
              "data": {"files": {"train": "data/train.csv"}, "labels": ["ham", "spam"]}}
    for key, value in sections.items():
        recipe.setdefault(key, {}).update(value)
    return yaml.safe_dump(recipe, sort_keys=False)


@pytest.mark.parametrize("value", ["1", '"yes"', '"on"', '"true"', "true"])
def test_a_hub_recipe_cannot_turn_on_remote_code(fake_hub, evil_model, text_csv_dir, tmp_path,
                                                 capsys, value):
    fake_hub("org/evil-one", {"recipe.yaml": hub_recipe().replace(
        "path: evil-model", f"path: evil-model\n  trust_remote_code: {value}")})
    code, err = run_cli(capsys, "plan", "hf://org/evil-one/recipe.yaml")
    assert code == 2 and "model.trust_remote_code" in err, err
    assert not (tmp_path / "PWNED").exists()


def test_the_remote_code_attack_is_real_when_the_user_asks_for_it(fake_hub, evil_model,
                                                                   text_csv_dir, tmp_path, capsys):
    """The control: the same model's code does run once the user passes the flag on purpose."""
    fake_hub("org/evil-one", {"recipe.yaml": hub_recipe()})
    cli.main(["plan", "hf://org/evil-one/recipe.yaml", "model.trust_remote_code=true"])
    assert (tmp_path / "PWNED").read_text() == "code ran"


@pytest.mark.parametrize("section, value", [
    ("model", "{trust_remote_code: 1}"), ("model", "{pretrained: 'yes'}"),
    ("output", "{overwrite: 'true'}"), ("output", "{overwrite: 1}"),
    ("training", "{bf16: 1}"), ("training", "{disable_tqdm: 'on'}"),
    ("data", "{max_length: true}"), ("data", "{max_train_samples: '3'}"),
    ("strategy", "{name: lora, r: true}"), ("strategy", "{name: lora, use_dora: 'yes'}")])
def test_only_true_and_false_are_booleans_and_booleans_are_not_numbers(
        write_recipe, text_recipe, capsys, section, value):
    recipe = dict(text_recipe)
    recipe[section] = {**recipe.get(section, {}), **yaml.safe_load(value)}
    code, err = run_cli(capsys, "validate", "-q", str(write_recipe(recipe)))
    assert code == 2, err
    key = next(iter(yaml.safe_load(value).keys() - {"name"}))
    assert f"{section}.{key}" in err, err


@pytest.mark.parametrize("sections, field", [
    ({"output": {"dir": "victim", "overwrite": True}}, "output.dir"),
    ({"output": {"overwrite": True}}, "output.overwrite"),
    ({"data": {"files": {"train": "/etc/passwd"}}}, "data.files.train"),
    ({"data": {"files": {"train": "../../outside.csv"}}}, "data.files.train"),
    ({"model": {"path": "~/.ssh"}}, "model.path"),
    ({"hub": {"push": "model", "repo_id": "victim/model"}}, "hub.push"),
    ({"training": {"resume_from_checkpoint": "/tmp/x"}}, "training.resume_from_checkpoint"),
    ({"training": {"report_to": "wandb"}}, "training.report_to")])
def test_what_a_hub_recipe_may_not_set(fake_hub, evil_model, text_csv_dir, tmp_path, capsys,
                                       sections, field):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "thesis.tex").write_text("years of work")
    fake_hub("org/wipe", {"recipe.yaml": hub_recipe(**sections)})
    for command in ("validate", "train"):
        code, err = run_cli(capsys, command, "hf://org/wipe/recipe.yaml")
        assert code == 2, err
        assert f"{field}: " in err and "command line" in err, err
    assert (victim / "thesis.tex").read_text() == "years of work"


def test_a_local_recipe_extending_a_hub_recipe_is_held_to_the_same_rule(
        fake_hub, evil_model, text_csv_dir, write_recipe, capsys):
    fake_hub("org/base", {"base.yaml": hub_recipe(output={"dir": "victim"})})
    local = write_recipe("extends: hf://org/base/base.yaml\n", name="mine.yaml")
    code, err = run_cli(capsys, "validate", str(local))
    assert code == 2 and "output.dir" in err and "hf://org/base/base.yaml" in err, err
    # the user's own file (or command line) may set it: the user, not the recipe, decides
    write_recipe("extends: hf://org/base/base.yaml\noutput: {dir: runs/mine}\n", name="mine.yaml")
    assert run_cli(capsys, "validate", "-q", str(local))[0] == 0


def test_a_hub_recipe_may_use_hub_ids_and_paths_inside_the_current_directory(
        fake_hub, evil_model, text_csv_dir, capsys):
    fake_hub("org/fine", {"recipe.yaml": hub_recipe(
        data={"files": {"train": "data/train.csv", "test": "data/test.csv"}},
        training={"learning_rate": 1e-3, "eval_strategy": "epoch", "report_to": "none"},
        output={"overwrite": False}, model={"trust_remote_code": False})})
    code, err = run_cli(capsys, "validate", "-q", "hf://org/fine/recipe.yaml")
    assert code == 0, err


def _annotation_takes_text(annotation) -> bool:
    if annotation in (str, bool, typing.Any):
        return True
    return any(_annotation_takes_text(a) for a in typing.get_args(annotation))


def _models_in(annotation) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for a in typing.get_args(annotation) for m in _models_in(a)]


def test_every_schema_field_is_classified_for_hub_recipes():
    """Each field that takes text or a switch, in every task's and strategy's recipe model (and
    every TrainingArguments field that takes text), says what a Hub recipe may do with it: a new
    field cannot slip past unclassified."""
    unmarked, seen = [], set()

    def walk(model: type[BaseModel], prefix: str) -> None:
        if model in seen:
            return
        seen.add(model)
        for name, info in model.model_fields.items():
            policy = field_hub_policy(info)
            if policy is not None:
                assert policy in HUB_POLICIES, f"{prefix}{name}: unknown policy {policy!r}"
            elif _annotation_takes_text(info.annotation) and not _models_in(info.annotation):
                unmarked.append(f"{model.__name__}: {prefix}{name}")
            for sub in _models_in(info.annotation):
                walk(sub, f"{prefix}{name}.")

    for task in TASKS.all():
        walk(recipe_model(task), "")
    for strategy in STRATEGIES.all().values():
        walk(strategy.spec_class, "strategy.")
    assert not unmarked, "fields without a hub= mark:\n" + "\n".join(unmarked)

    unclassified = [k for k in training_argument_fields()
                    if training_hub_policy(k) not in HUB_POLICIES]
    assert not unclassified, ("TrainingArguments fields that take text but are in neither "
                              f"TRAINING_HUB_ANY nor TRAINING_HUB_REFUSED: {unclassified}")
    assert not TRAINING_HUB_ANY & TRAINING_HUB_REFUSED


# -- deleting only our own runs -------------------------------------------------------------------

@pytest.fixture
def finished_run(text_recipe, write_recipe, tmp_path) -> tuple[Path, Path]:
    text_recipe["training"]["num_train_epochs"] = 1
    recipe = write_recipe(text_recipe)
    run = train(recipe).run_dir
    return recipe, run


@pytest.mark.parametrize("target", [".", ".."])
def test_overwrite_never_touches_the_current_directory_or_its_parents(
        write_recipe, text_recipe, tmp_path, capsys, target):
    (tmp_path / "notes.txt").write_text("mine")
    recipe = write_recipe(text_recipe)
    before = tree_digest(tmp_path)
    code, err = run_cli(capsys, "train", str(recipe), f"output.dir={target}", "--overwrite")
    assert code == 2 and "output.dir" in err, err
    assert tree_digest(tmp_path) == before


def test_overwrite_refuses_a_symlinked_run_directory(finished_run, tmp_path, capsys):
    recipe, run = finished_run
    link = tmp_path / "link"
    link.symlink_to(run, target_is_directory=True)
    before = tree_digest(run)
    code, err = run_cli(capsys, "train", str(recipe), f"output.dir={link}", "--overwrite")
    assert code == 2 and "symbolic link" in err, err
    assert tree_digest(run) == before and link.is_symlink()


def test_overwrite_of_a_finished_run_replaces_it_and_leaves_nothing_behind(finished_run, tmp_path):
    recipe, run = finished_run
    result = train(recipe, ["training.seed=3"], overwrite=True)
    assert result.run_dir == run and (run / MARKER).exists()
    assert json.loads((run / "run_info.json").read_text())["seed"] == 3
    assert not list(tmp_path.glob(f".run{NEW_SUFFIX}")) and not list(tmp_path.glob(f".run{OLD_SUFFIX}"))


class Boom(Exception):
    pass


def test_a_failing_overwrite_run_leaves_the_previous_run_byte_identical(finished_run, tmp_path):
    from transformers import TrainerCallback

    class FailMidway(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                raise Boom

    recipe, run = finished_run
    before = tree_digest(run)
    with pytest.raises(Boom):
        train(recipe, overwrite=True, callbacks=[FailMidway()])
    assert tree_digest(run) == before
    assert not (tmp_path / f".run{NEW_SUFFIX}").exists()


@pytest.mark.parametrize("override, field", [
    ("training.learning_rate=.nan", "training.learning_rate"),
    ("training.learning_rate=-1e-3", "training.learning_rate"),
    ("training.per_device_train_batch_size=0", "training.per_device_train_batch_size"),
    ("training.num_train_epochs=0", "training.num_train_epochs"),
    ("training.eval_strategy=sometimes", "training.eval_strategy"),
])
def test_settings_that_cannot_train_are_refused_by_validate(finished_run, capsys, override, field):
    recipe, run = finished_run
    before = tree_digest(run)
    for command in (["validate", "-q"], ["train", "--overwrite"]):
        code, err = run_cli(capsys, *command, str(recipe), override)
        assert code == 2 and field in err, err
    assert tree_digest(run) == before


def test_trainingarguments_rejections_come_before_data_model_or_deletion(finished_run, capsys,
                                                                        monkeypatch):
    """A combination only TrainingArguments knows to refuse fails at the start of train."""
    from sft_hub.tasks.base import Task

    recipe, run = finished_run
    before = tree_digest(run)
    monkeypatch.setattr(Task, "build_model", lambda self: pytest.fail("model loaded"))
    code, err = run_cli(capsys, "train", "--overwrite", str(recipe), "training.eval_strategy=steps",
                        "training.eval_steps=3", "training.save_strategy=steps",
                        "training.save_steps=5")
    assert code == 2 and "TrainingArguments rejected" in err, err
    assert tree_digest(run) == before


def test_kill_9_during_an_overwrite_run_keeps_the_previous_run(finished_run, tmp_path):
    recipe, run = finished_run
    before = tree_digest(run)
    overrides = ["training.save_strategy=steps", "training.save_steps=2",
                 "training.eval_strategy=steps", "training.eval_steps=2"]
    kill_at_checkpoint(recipe, overrides, 2, tmp_path)
    assert (tmp_path / f".run{NEW_SUFFIX}" / "checkpoints").is_dir()  # it trained beside the run
    assert tree_digest(run) == before

    result = train(recipe, overwrite=True)  # the next attempt tidies up and replaces it
    assert result.run_dir == run and not (tmp_path / f".run{NEW_SUFFIX}").exists()


def test_a_replacement_killed_between_its_two_renames_is_finished_or_undone(tmp_path):
    def fake_run(path: Path, label: str) -> None:
        path.mkdir()
        (path / MARKER).write_text("{}")
        (path / "run_info.json").write_text(json.dumps({"complete": True, "label": label}))

    place = RunPlace(tmp_path / "run", tmp_path / f".run{NEW_SUFFIX}")
    fake_run(place.aside, "old")  # killed after `run -> aside`, before `new -> run`
    fake_run(place.work, "new")
    recover_interrupted_replace(place.final)
    assert json.loads((place.final / "run_info.json").read_text())["label"] == "new"
    assert not place.aside.exists() and not place.work.exists()

    fake_run(place.aside, "old")  # killed after `new -> run`, before the old one was removed
    recover_interrupted_replace(place.final)
    assert json.loads((place.final / "run_info.json").read_text())["label"] == "new"
    assert not place.aside.exists()

    import shutil

    shutil.rmtree(place.final)  # killed after `run -> aside`, the new run incomplete: undo
    fake_run(place.aside, "old")
    place.work.mkdir()
    recover_interrupted_replace(place.final)
    assert json.loads((place.final / "run_info.json").read_text())["label"] == "old"


def test_a_last_training_batch_of_one_image_is_avoided_for_batchnorm_models(tmp_path, write_recipe):
    """The digits recipe at 32 px with 33 training images crashed BatchNorm on its last batch."""
    from .test_image_classification import write_image_folder

    write_image_folder(tmp_path / "images" / "train", 17)  # 34 images: 33 after max_train_samples
    write_image_folder(tmp_path / "images" / "validation", 3, seed=1)
    recipe = {"task": "image-classification",
              "model": {"name": "resnet10t", "backend": "timm", "pretrained": False},
              "data": {"files": {"train": "images/train", "validation": "images/validation"},
                       "image_size": 32, "max_train_samples": 33},
              "training": {"num_train_epochs": 1, "per_device_train_batch_size": 32, "seed": 0,
                           "disable_tqdm": True, "save_strategy": "no",
                           "load_best_model_at_end": False}}
    result = train(write_recipe(recipe))
    assert any("single example" in n for n in result.run_info["notes"])
