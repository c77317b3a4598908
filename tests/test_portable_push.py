"""Pushed runs publish nothing of the author's machine, and their recipe re-runs in a teammate's
clone of the project (issue 15, points 2 and 3), against the local Hub server.

The author's project lives in a directory whose path holds a canary string; every file of the
pushed repository is searched for it (and for the home directory and the token). The teammate's
"fresh clone" is a copy of the project (recipes and data, no runs) somewhere else.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests.conftest import make_text_rows, write_csv
from tests.hub_server import hub_server  # noqa: F401  (pytest fixture)
from tests.test_safety import fake_hub  # noqa: F401  (pytest fixture: hf:// recipes offline)

CANARY = "canary-7f3e9b-author"
RECIPE = """\
# A shipped-style offline recipe: data beside it, weights in the project's models/ folder.
task: text-classification
model:
  name: sft-org/tiny-bert
  path: ../../models/tiny-bert
data:
  files:
    train: data/sms_spam/train.csv
    test: data/sms_spam/test.csv
  max_length: 16
training:
  num_train_epochs: 1
  per_device_train_batch_size: 8
  learning_rate: 5.0e-3
  logging_steps: 2
  disable_tqdm: true
  use_cpu: true
  seed: 0
hub:
  license: apache-2.0
"""


def make_project(root: Path, tiny_bert_dir: Path) -> Path:
    shutil.copytree(tiny_bert_dir, root / "models" / "tiny-bert")
    data = root / "recipes" / "quickstart" / "data" / "sms_spam"
    write_csv(data / "train.csv", make_text_rows(40, seed=1))
    write_csv(data / "test.csv", make_text_rows(12, seed=2))
    (root / "recipes" / "quickstart" / "tiny.yaml").write_text(RECIPE, encoding="utf-8")
    return root


@pytest.fixture
def author_run(hub_server, tiny_bert_dir, tmp_path, monkeypatch):
    """A run trained and resumed inside <tmp>/<canary>/project, pushed public to the local Hub."""
    from sft_hub.cli import main

    project = make_project(tmp_path / CANARY / "project", tiny_bert_dir)
    monkeypatch.chdir(project)
    recipe = str(project / "recipes" / "quickstart" / "tiny.yaml")  # an absolute path, on purpose
    assert main(["train", recipe, "training.save_strategy=steps", "training.save_steps=2",
                 "training.eval_strategy=steps", "training.eval_steps=2"]) == 0
    run_dir = project / "runs" / "tiny"
    repo = f"{hub_server.org}/tiny-spam"
    assert main(["push", str(run_dir), "--repo-id", repo, "--public"]) == 0
    return hub_server, project, run_dir, repo


def test_pushed_files_hold_no_local_path_user_or_token(author_run):
    hub, project, run_dir, repo = author_run
    files = hub.files(repo)
    assert {"run_info.json", "trainer_state.json", "recipe.yaml", "README.md"} <= set(files)
    home = str(Path.home())
    for name, data in files.items():
        assert CANARY.encode() not in data, f"{name} holds the author's directory"
        assert str(project).encode() not in data, name
        assert (home + "/").encode() not in data, f"{name} holds the home directory"
        assert hub.token.encode() not in data, name
    info = json.loads(files["run_info.json"])
    assert not info["recipe"].startswith("/") and info["recipe"].endswith("tiny.yaml")
    assert "/" + CANARY not in info["command"]
    state = json.loads(files["trainer_state.json"])
    assert not str(state.get("best_model_checkpoint") or "").startswith("/")
    # the run directory itself stays fully usable locally
    assert (run_dir / "run_info.json").is_file()


def test_pushed_recipe_is_portable_and_describes_the_repo(author_run):
    hub, project, run_dir, repo = author_run
    pushed = yaml.safe_load(hub.files(repo)["recipe.yaml"])
    assert pushed["data"]["files"] == {"train": "recipes/quickstart/data/sms_spam/train.csv",
                                       "test": "recipes/quickstart/data/sms_spam/test.csv"}
    assert pushed["model"]["path"] == "models/tiny-bert"
    assert "output" not in pushed  # the author's output.dir is not a teammate's
    assert pushed["hub"]["private"] is False and pushed["hub"]["repo_id"] == repo
    assert "push" not in pushed["hub"]  # a Hub recipe may not push; re-running never does
    assert "sft-hub train --from hf://" in hub.files(repo)["recipe.yaml"].decode()


def test_train_from_the_hub_reruns_in_a_fresh_clone(author_run, tmp_path, monkeypatch, capsys):
    """A teammate's clone (recipes and data at the same place, no runs) re-runs the recipe with no
    override; run elsewhere, the error names the expected location and the override."""
    from sft_hub.cli import main

    hub, project, run_dir, repo = author_run
    clone = tmp_path / "teammate" / "sft-hub"
    shutil.copytree(project, clone, ignore=shutil.ignore_patterns("runs"))
    monkeypatch.chdir(clone)
    assert main(["train", "--from", f"hf://{repo}"]) == 0, capsys.readouterr().err
    rerun = clone / "runs" / "tiny-spam"
    assert json.loads((rerun / "run_info.json").read_text())["complete"] is True

    elsewhere = tmp_path / "empty"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    capsys.readouterr()
    assert main(["validate", "-q", f"hf://{repo}/recipe.yaml", "model.path=null"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert "recipes/quickstart/data/sms_spam/train.csv" in err
    assert "relative to the directory you run in" in err and "data.files.train=" in err


def test_a_hub_recipe_saying_public_does_not_make_your_push_public(author_run, tmp_path,
                                                                   monkeypatch):
    """hub.private: false in a pushed recipe describes that repo; a run of it pushes private
    unless the user says --public."""
    from sft_hub.cli import main

    hub, project, run_dir, repo = author_run
    clone = tmp_path / "teammate2"
    shutil.copytree(project, clone, ignore=shutil.ignore_patterns("runs"))
    monkeypatch.chdir(clone)
    assert main(["train", "--from", f"hf://{repo}"]) == 0
    mine = f"{hub.user}/my-copy"
    assert main(["push", str(clone / "runs" / "tiny-spam"), "--repo-id", mine]) == 0
    assert hub.store.repos[("model", mine)].private is True


# -- the pieces, without training -------------------------------------------------------------------

def test_scrub_rewrites_local_paths_and_leaves_urls_and_relative_paths(tmp_path, monkeypatch):
    from sft_hub.portable import scrub_text

    project = tmp_path / CANARY
    run_dir = project / "runs" / "x"
    run_dir.mkdir(parents=True)
    monkeypatch.chdir(project)
    text = (f"sft-hub train {project}/recipes/a.yaml data.files.train={tmp_path}/other/{CANARY}/t.csv "
            f"--resume {run_dir}/checkpoints/checkpoint-4 https://huggingface.co/org/m "
            "hf://org/repo/recipe.yaml data/train.csv 1/2 label /m/01g317")
    out = scrub_text(text, run_dir)
    assert CANARY not in out and str(tmp_path) not in out
    assert "sft-hub train recipes/a.yaml" in out and "data.files.train=t.csv" in out
    assert "--resume checkpoints/checkpoint-4" in out
    assert "https://huggingface.co/org/m hf://org/repo/recipe.yaml data/train.csv 1/2" in out
    assert "label /m/01g317" in out  # not a local path: kept


def test_portable_recipe_outside_the_project(tmp_path, monkeypatch):
    from sft_hub.portable import WORKDIR_KEY, portable_recipe

    project = tmp_path / "project"
    run_dir = project / "runs" / "x"
    run_dir.mkdir(parents=True)
    monkeypatch.chdir(tmp_path)  # pushing from somewhere else: the run records where it started
    recipe = {"model": {"name": "org/base", "path": str(tmp_path / "weights")},
              "data": {"files": {"train": "../../data/train.csv",
                                 "test": str(tmp_path / "outside" / "test.csv")}},
              "output": {"dir": str(run_dir)}, "hub": {"push": "model", "private": True}}
    notes: list[str] = []
    out = portable_recipe(recipe, run_dir, {WORKDIR_KEY: "../.."}, repo_id="org/x",
                          private=False, revision=None, notes=notes)
    assert out["data"]["files"] == {"train": "data/train.csv", "test": "test.csv"}
    assert "path" not in out["model"] and out["model"]["name"] == "org/base"
    assert "output" not in out and out["hub"] == {"repo_id": "org/x", "private": False}
    assert len(notes) == 2 and all("outside the directory" in n for n in notes)


def test_the_last_guard_refuses_a_file_holding_a_local_directory(tmp_path, monkeypatch):
    from sft_hub.errors import HubError
    from sft_hub.portable import check_nothing_private

    monkeypatch.chdir(tmp_path)
    with pytest.raises(HubError, match="notes.txt holds the local path"):
        check_nothing_private({"notes.txt": f"trained in {tmp_path}/x".encode()}, tmp_path)
    check_nothing_private({"notes.txt": b"trained in runs/x"}, tmp_path)


ROOT = Path(__file__).resolve().parents[1]


def test_every_shipped_offline_recipe_reruns_from_the_hub_at_the_project_root(
        fake_hub, monkeypatch, capsys):
    """What a push of each shipped recipe with local data would publish, read back as a recipe
    from the Hub at the root of a clone: it passes the Hub-recipe rules and finds its data."""
    from sft_hub.catalog import load_recipe
    from sft_hub.cli import main
    from sft_hub.hub import recipe_for_repo
    from sft_hub.portable import WORKDIR_KEY

    monkeypatch.chdir(ROOT)
    checked = []
    for path in sorted((ROOT / "recipes").glob("*/*.yaml")):
        loaded = load_recipe(str(path.relative_to(ROOT)))
        if not loaded.recipe.data.files:
            continue
        run_dir = ROOT / "runs" / loaded.name  # where `sft-hub train` would put it (not created)
        pushed = recipe_for_repo(loaded.to_dict(relative_to=run_dir), f"org/{loaded.name}",
                                 "model", None, private=False, run_dir=run_dir,
                                 info={WORKDIR_KEY: "../.."})
        assert "../" not in pushed and str(ROOT) not in pushed, pushed
        fake_hub(f"org/{loaded.name}", {"recipe.yaml": pushed})
        capsys.readouterr()
        code = main(["validate", "-q", f"hf://org/{loaded.name}/recipe.yaml"])
        assert code == 0, (path.name, capsys.readouterr().err)
        checked.append(path.name)
    assert "sms-spam-minilm-full.yaml" in checked and len(checked) >= 4, checked
