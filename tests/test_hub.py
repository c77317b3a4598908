"""Pushing runs to the Hub and training recipes from it, against the local Hub server.

Runs are trained once per module with the real training API (tiny BERT, toy spam data); each test
gets a fresh Hub holding the base model under its Hub id (``sft-org/tiny-bert``), pushes, then loads
the result back with the ecosystem's own one-liners and compares predictions with the local run.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import make_text_rows, write_csv
from tests.hub_server import hub_server  # noqa: F401  (pytest fixture)
from sft_hub.errors import HubError, RunDirError, SftHubError

BASE_ID = "sft-org/tiny-bert"
TEXTS = ["win free cash prize now", "see you at lunch later", "urgent claim your prize txt",
         "thanks love see you tonight"]


def text_recipe(model_dir: Path, data_dir: Path, out: Path, **sections) -> dict:
    return {"task": "text-classification",
            "model": {"name": BASE_ID, "path": str(model_dir)},
            "data": {"files": {split: str(data_dir / f"{split}.csv") for split in ("train", "validation", "test")},
                     "max_length": 16},
            "training": {"num_train_epochs": 2, "per_device_train_batch_size": 8, "learning_rate": 5e-3,
                         "seed": 0, "logging_steps": 50, "disable_tqdm": True, "use_cpu": True},
            "output": {"dir": str(out)}, **sections}


def local_paths(model_dir: Path, data_dir: Path, out) -> list[str]:
    """Command-line overrides for the local paths a recipe from the Hub may not set itself."""
    files = ", ".join(f"{split}: {data_dir / f'{split}.csv'}" for split in ("train", "validation", "test"))
    return [f"model.path={model_dir}", f"data.files={{{files}}}"] + ([f"output.dir={out}"] if out else [])


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def spam_data(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("spam")
    for split, n, seed in (("train", 60, 1), ("validation", 21, 2), ("test", 21, 3)):
        write_csv(d / f"{split}.csv", make_text_rows(n, seed=seed))
    return d


@pytest.fixture(scope="module")
def runs(tiny_bert_dir, spam_data, tmp_path_factory) -> dict[str, Path]:
    """Finished run directories: ``full`` (full fine-tuning), ``lora`` (save: both), and
    ``adapter`` (the lora run as ``save: adapter`` lays it out: the adapter at the root)."""
    from sft_hub.training import train

    root = tmp_path_factory.mktemp("runs")
    out = {}
    for name, strategy in (("full", {"name": "full"}), ("lora", {"name": "lora", "r": 4, "save": "both"})):
        recipe = write_yaml(root / f"{name}.yaml",
                            text_recipe(tiny_bert_dir, spam_data, root / name, strategy=strategy))
        out[name] = train(recipe).run_dir
    adapter = root / "adapter"
    shutil.copytree(out["lora"], adapter, ignore=shutil.ignore_patterns("checkpoints", "adapter", "config.json",
                                                                        "model.safetensors"))
    for f in (out["lora"] / "adapter").iterdir():
        shutil.copy(f, adapter / f.name)
    out["adapter"] = adapter
    return out


@pytest.fixture
def hub(hub_server, tiny_bert_dir):
    """The local Hub with the base model published under the id the runs record."""
    from huggingface_hub import HfApi

    HfApi().create_repo(BASE_ID)
    HfApi().upload_folder(folder_path=tiny_bert_dir, repo_id=BASE_ID)
    return hub_server


def predictions(model: str, **kwargs) -> list[tuple[str, float]]:
    from transformers import pipeline

    classify = pipeline("text-classification", model=model, **kwargs)
    return [(p["label"], round(p["score"], 5)) for p in classify(TEXTS)]


def logits(model, tokenizer_source: str):
    import torch
    from transformers import AutoTokenizer

    inputs = AutoTokenizer.from_pretrained(tokenizer_source)(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model.eval()(**inputs).logits


def card_metadata(files: dict[str, bytes]) -> dict:
    from huggingface_hub import ModelCard

    return ModelCard(files["README.md"].decode()).data.to_dict()


def snapshot(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_no_token(hub, *folders: Path, repos: tuple[str, ...]) -> None:
    secrets = [hub.token.encode(), hub.read_token.encode()]
    for repo in repos:
        for path, data in hub.files(repo).items():
            assert not any(s in data for s in secrets), f"token in pushed file {repo}/{path}"
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file():
                assert not any(s in path.read_bytes() for s in secrets), f"token in {path}"


# -- pushing each form ----------------------------------------------------------------------------

def test_full_model_push_loads_with_pipeline(hub, runs):
    from sft_hub.hub import push_run

    result = push_run(runs["full"], repo_id="sft-tester/spam-full")
    files = hub.files("sft-tester/spam-full")
    assert {"config.json", "model.safetensors", "tokenizer.json", "recipe.yaml", "README.md",
            "metrics.json"} <= set(files) and "checkpoints" not in " ".join(files)
    assert files["model.safetensors"] == (runs["full"] / "model.safetensors").read_bytes()
    local = predictions(str(runs["full"]))
    assert predictions("sft-tester/spam-full") == local
    assert {label for label, _ in local} <= {"ham", "spam"}  # real label names in the config
    recipe = yaml.safe_load(files["recipe.yaml"])
    assert recipe["hub"]["repo_id"] == "sft-tester/spam-full" and recipe["strategy"]["name"] == "full"
    meta = card_metadata(files)
    assert meta["library_name"] == "transformers" and meta["base_model"] == BASE_ID
    assert meta["pipeline_tag"] == "text-classification" and {"sft-hub", "full"} <= set(meta["tags"])
    assert result.commit_url.startswith(hub.url)
    assert_no_token(hub, runs["full"], repos=("sft-tester/spam-full",))


def test_adapter_push_loads_with_auto_peft_model(hub, runs):
    from peft import AutoPeftModelForSequenceClassification
    from transformers import AutoModelForSequenceClassification

    from sft_hub.hub import push_run

    push_run(runs["lora"], repo_id="sft-tester/spam-lora", form="adapter")
    files = hub.files("sft-tester/spam-lora")
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "README.md"} <= set(files)
    assert "model.safetensors" not in files and "config.json" not in files
    meta = card_metadata(files)
    assert meta["library_name"] == "peft" and meta["base_model"] == BASE_ID

    model = AutoPeftModelForSequenceClassification.from_pretrained("sft-tester/spam-lora")  # the one-liner
    merged = AutoModelForSequenceClassification.from_pretrained(runs["lora"])  # the local run
    import torch

    torch.testing.assert_close(logits(model, "sft-tester/spam-lora"), logits(merged, str(runs["lora"])),
                               atol=1e-4, rtol=1e-4)
    # the card's snippet gives the real label names too
    labels = json.loads(files["run_info.json"])["labels"]
    named = AutoPeftModelForSequenceClassification.from_pretrained(
        "sft-tester/spam-lora", id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)})
    assert named.config.id2label == merged.config.id2label
    assert "AutoPeftModelForSequenceClassification.from_pretrained" in files["README.md"].decode()


def test_merged_and_both_pushes(hub, runs):
    from peft import PeftConfig, PeftModel
    from transformers import AutoModelForSequenceClassification

    from sft_hub.hub import push_run

    local = predictions(str(runs["lora"]))
    push_run(runs["lora"], repo_id="sft-tester/spam-merged", form="merged")
    merged_files = hub.files("sft-tester/spam-merged")
    assert "model.safetensors" in merged_files and not any("adapter" in p for p in merged_files)
    assert predictions("sft-tester/spam-merged") == local

    push_run(runs["lora"], repo_id="sft-tester/spam-both", form="both")
    files = hub.files("sft-tester/spam-both")
    assert {"model.safetensors", "adapter/adapter_config.json", "adapter/adapter_model.safetensors"} <= set(files)
    assert predictions("sft-tester/spam-both") == local
    config = PeftConfig.from_pretrained("sft-tester/spam-both", subfolder="adapter")
    base = AutoModelForSequenceClassification.from_pretrained(config.base_model_name_or_path)
    adapter = PeftModel.from_pretrained(base, "sft-tester/spam-both", subfolder="adapter")
    import torch

    torch.testing.assert_close(logits(adapter, "sft-tester/spam-both"),
                               logits(AutoModelForSequenceClassification.from_pretrained(runs["lora"]),
                                      str(runs["lora"])), atol=1e-4, rtol=1e-4)
    assert 'subfolder="adapter"' in files["README.md"].decode()


def test_model_form_pushes_what_the_run_saved_and_missing_forms_are_refused(hub, runs):
    from sft_hub.hub import push_run

    with pytest.raises(RunDirError, match="no adapter"):
        push_run(runs["full"], repo_id="sft-tester/x", form="adapter")
    with pytest.raises(RunDirError, match="no merged model"):
        push_run(runs["adapter"], repo_id="sft-tester/x", form="merged")
    push_run(runs["adapter"], repo_id="sft-tester/spam-adapter-root")  # an adapter run: a peft repo
    assert card_metadata(hub.files("sft-tester/spam-adapter-root"))["library_name"] == "peft"
    push_run(runs["lora"], repo_id="sft-tester/spam-as-saved")  # save: both -> both, as in the run
    assert {"model.safetensors", "adapter/adapter_model.safetensors"} <= set(hub.files("sft-tester/spam-as-saved"))


def test_repush_replaces_the_previous_form(hub, runs):
    """A branch holds exactly one run: an adapter left next to merged weights would make
    transformers load the adapter instead."""
    from sft_hub.hub import push_run

    push_run(runs["lora"], repo_id="sft-tester/spam", form="adapter")
    push_run(runs["lora"], repo_id="sft-tester/spam", form="merged", revision="main")
    files = hub.files("sft-tester/spam")
    assert "adapter_config.json" not in files and "model.safetensors" in files


def test_push_to_a_branch(hub, runs):
    from huggingface_hub import hf_hub_download

    from sft_hub.hub import push_run

    push_run(runs["full"], repo_id="sft-tester/spam-branch", revision="experiment")
    assert "model.safetensors" not in hub.files("sft-tester/spam-branch")
    assert "model.safetensors" in hub.files("sft-tester/spam-branch", "experiment")
    recipe = yaml.safe_load(Path(hf_hub_download("sft-tester/spam-branch", "recipe.yaml", revision="experiment"))
                            .read_text())
    assert recipe["hub"]["revision"] == "experiment"
    assert predictions("sft-tester/spam-branch", revision="experiment") == predictions(str(runs["full"]))


# -- failures -------------------------------------------------------------------------------------

def test_push_failure_keeps_the_run_and_gives_the_retry_command(hub, runs, monkeypatch, capsys):
    from sft_hub.cli import main
    from sft_hub.hub import push_run

    before = snapshot(runs["full"])
    monkeypatch.setenv("HF_TOKEN", hub.read_token)
    with pytest.raises(HubError) as err:
        push_run(runs["full"], repo_id="sft-tester/denied")
    retry = f"sft-hub push {runs['full']} --repo-id sft-tester/denied --form model"
    assert retry in str(err.value) and "403" in str(err.value)
    assert hub.read_token not in str(err.value)

    assert main(["push", str(runs["full"]), "--repo-id", "sft-tester/denied"]) == 2
    assert retry in capsys.readouterr().err

    hub.server.stop()  # the Hub goes away mid-way
    monkeypatch.setenv("HF_TOKEN", hub.token)
    with pytest.raises(HubError, match="cannot reach") as err:
        push_run(runs["full"], repo_id="sft-tester/unreachable", form="model")
    assert "sft-hub push" in str(err.value)
    assert snapshot(runs["full"]) == before


def test_push_refuses_a_file_holding_the_token(hub, runs, tmp_path):
    from sft_hub.hub import push_run

    run = tmp_path / "run"
    shutil.copytree(runs["full"], run, ignore=shutil.ignore_patterns("checkpoints"))
    (run / "notes.txt").write_text(f"my token is {hub.token}\n")
    with pytest.raises(HubError, match="notes.txt contains the Hugging Face token") as err:
        push_run(run, repo_id="sft-tester/leak")
    assert hub.token not in str(err.value)
    assert not hub.store.repos.get(("model", "sft-tester/leak")) or \
        set(hub.files("sft-tester/leak")) == {".gitattributes"}  # nothing was uploaded


# -- preflight ------------------------------------------------------------------------------------

def hub_spec(**values):
    from sft_hub.recipe.schema import HubSpec

    return HubSpec(**{"push": "model", **values})


def test_preflight_accepts_a_writable_repo_and_prepares_it(hub):
    from huggingface_hub import HfApi

    from sft_hub.hub import preflight

    assert preflight(hub_spec(repo_id=f"{hub.org}/team-model", revision="exp")) == hub.user
    info = HfApi().model_info(f"{hub.org}/team-model")
    assert info.private is True
    assert {b.name for b in HfApi().list_repo_refs(f"{hub.org}/team-model").branches} == {"main", "exp"}


@pytest.mark.parametrize("case, match", [
    ("no token", "no Hugging Face token"),
    ("bad token", "rejected"),
    ("read-only token", "read-only"),
    ("other namespace", "cannot write to someone-else/model"),
    ("read member of org", "cannot write to readers/model"),
    ("no repo id", "hub.repo_id is not"),
    ("offline", "HF_HUB_OFFLINE"),
])
def test_preflight_fails_fast_with_the_fix(hub, monkeypatch, case, match):
    from huggingface_hub import constants

    from sft_hub.hub import preflight

    repo_id = {"other namespace": "someone-else/model", "read member of org": "readers/model",
               "no repo id": None}.get(case, "sft-tester/model")
    if case == "no token":
        monkeypatch.delenv("HF_TOKEN")
    elif case == "bad token":
        monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    elif case == "read-only token":
        monkeypatch.setenv("HF_TOKEN", hub.read_token)
    elif case == "read member of org":
        hub.store.add_org("readers", {hub.user: "read"})
        hub.store.create_repo("model", "readers/model", private=False)
    elif case == "offline":
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    started = time.monotonic()
    with pytest.raises(HubError, match=match) as err:
        preflight(hub_spec(repo_id=repo_id))
    assert time.monotonic() - started < 5
    assert err.value.hint and err.value.field in ("hub.push", "hub.repo_id")


def test_training_with_push_checks_first_then_pushes(hub, tiny_bert_dir, spam_data, tmp_path, monkeypatch):
    from sft_hub.training import train

    recipe = text_recipe(tiny_bert_dir, spam_data, tmp_path / "run",
                         hub={"repo_id": "sft-tester/spam-e2e", "push": "model", "license": "mit"})
    recipe["training"]["num_train_epochs"] = 1
    path = write_yaml(tmp_path / "spam.yaml", recipe)

    monkeypatch.setenv("HF_TOKEN", hub.read_token)
    with pytest.raises(HubError, match="read-only"):
        train(path)
    assert not (tmp_path / "run").exists()  # refused before any training

    monkeypatch.setenv("HF_TOKEN", hub.token)
    result = train(path)
    files = hub.files("sft-tester/spam-e2e")
    assert card_metadata(files)["license"] == "mit"
    assert yaml.safe_load(files["recipe.yaml"])["hub"]["repo_id"] == "sft-tester/spam-e2e"
    assert predictions("sft-tester/spam-e2e") == predictions(str(result.run_dir))
    assert_no_token(hub, result.run_dir, repos=("sft-tester/spam-e2e",))


# -- recipes from the Hub -------------------------------------------------------------------------

def test_recipes_load_from_the_hub_with_extends_and_revision(hub, tiny_bert_dir, spam_data, tmp_path):
    from huggingface_hub import HfApi

    from sft_hub.catalog import load_recipe

    api = HfApi()
    repo = f"{hub.org}/recipes"
    api.create_repo(repo, repo_type="dataset")
    base = text_recipe(tiny_bert_dir, spam_data, tmp_path / "run")
    child = {"extends": "base.yaml", "training": {"learning_rate": 1e-3}}
    for name, data in (("team/base.yaml", base), ("team/child.yaml", child)):
        api.upload_file(path_or_fileobj=yaml.safe_dump(data).encode(), path_in_repo=name, repo_id=repo,
                        repo_type="dataset")
    api.create_branch(repo, branch="v2", repo_type="dataset")
    api.upload_file(path_or_fileobj=yaml.safe_dump({**child, "training": {"learning_rate": 2e-3}}).encode(),
                    path_in_repo="team/child.yaml", repo_id=repo, repo_type="dataset", revision="v2")

    # paths outside the current directory and output.dir are the user's to give, not the Hub's
    with pytest.raises(SftHubError, match="model.path: .* outside the current directory"):
        load_recipe(f"hf://datasets/{repo}/team/child.yaml")
    local = local_paths(tiny_bert_dir, spam_data, tmp_path / "run")
    loaded = load_recipe(f"hf://datasets/{repo}/team/child.yaml", local)
    assert loaded.recipe.training["learning_rate"] == 1e-3
    assert loaded.recipe.training["num_train_epochs"] == 2  # from base.yaml, fetched beside it
    assert load_recipe(f"hf://datasets/{repo}/team/child.yaml@v2",
                       local).recipe.training["learning_rate"] == 2e-3

    with pytest.raises(HubError, match="missing.yaml is not in"):
        load_recipe(f"hf://datasets/{repo}/team/missing.yaml")
    with pytest.raises(HubError, match="does not exist"):
        load_recipe("hf://sft-org/no-such-repo/recipe.yaml")


def test_a_hub_recipe_is_data_only(hub, tmp_path):
    from huggingface_hub import HfApi

    from sft_hub.errors import SftHubError
    from sft_hub.catalog import load_recipe

    marker = tmp_path / "pwned"
    HfApi().create_repo("sft-tester/evil")
    HfApi().upload_file(path_or_fileobj=f"task: !!python/object/apply:os.system ['touch {marker}']\n".encode(),
                        path_in_repo="recipe.yaml", repo_id="sft-tester/evil")
    with pytest.raises(SftHubError):
        load_recipe("hf://sft-tester/evil/recipe.yaml")
    assert not marker.exists()

    # nor may it switch on running the model repository's code; the user can, on the command line
    HfApi().upload_file(path_or_fileobj=b"task: text-classification\nmodel: {name: m, "
                        b"trust_remote_code: true}\ndata: {dataset: d}\n",
                        path_in_repo="remote.yaml", repo_id="sft-tester/evil")
    with pytest.raises(SftHubError, match="model.trust_remote_code: may not be set by a recipe from "
                                          "the Hub"):
        load_recipe("hf://sft-tester/evil/remote.yaml")
    loaded = load_recipe("hf://sft-tester/evil/remote.yaml", ["model.trust_remote_code=true"])
    assert loaded.recipe.model.trust_remote_code is True


def test_train_from_a_pushed_model_reruns_its_recipe(hub, runs, tiny_bert_dir, spam_data, tmp_path,
                                                    capsys):
    """A teammate re-runs a pushed model's recipe: ``sft-hub train --from hf://org/model``."""
    from sft_hub.cli import main
    from sft_hub.hub import push_run

    push_run(runs["full"], repo_id=f"{hub.org}/spam-shared")
    code = main(["train", "--from", f"hf://{hub.org}/spam-shared", "hub.push=null",
                 "training.num_train_epochs=1", *local_paths(tiny_bert_dir, spam_data, None)])
    assert code == 0, capsys.readouterr().err
    rerun = tmp_path / "runs" / "spam-shared"  # named after the model repo
    info = json.loads((rerun / "run_info.json").read_text())
    assert info["recipe"].startswith(f"hf://{hub.org}/spam-shared/recipe.yaml@")  # pinned to the commit
    original = yaml.safe_load((runs["full"] / "recipe.yaml").read_text())
    rerun_recipe = yaml.safe_load((rerun / "recipe.yaml").read_text())
    assert rerun_recipe["model"] == original["model"] and rerun_recipe["data"] == original["data"]

    assert main(["train", "--from", f"hf://{hub.org}/no-such-model"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_timm_push_loads_with_timm_and_pipeline(hub_server, tmp_path):
    import timm
    import torch
    from PIL import Image
    from transformers import pipeline

    from sft_hub.hub import push_run
    from sft_hub.training import train

    data = tmp_path / "shapes"  # an image folder: one colour per class, with noise
    g = torch.Generator().manual_seed(0)
    for label, colour in (("red", (200, 30, 30)), ("green", (30, 200, 30)), ("blue", (30, 30, 200))):
        (data / label).mkdir(parents=True)
        for i in range(8):
            pixels = (torch.tensor(colour).view(1, 1, 3) + torch.randint(-30, 30, (32, 32, 3), generator=g))
            Image.fromarray(pixels.clamp(0, 255).to(torch.uint8).numpy()).save(data / label / f"{i}.png")
    recipe = write_yaml(tmp_path / "shapes.yaml", {
        "task": "image-classification", "model": {"name": "test_resnet", "backend": "timm", "pretrained": False},
        "data": {"files": {"train": str(data)}, "image_size": 32, "validation_split": 0.25},
        "training": {"num_train_epochs": 1, "per_device_train_batch_size": 8, "use_cpu": True, "seed": 0,
                     "disable_tqdm": True},
        "output": {"dir": str(tmp_path / "run")}})
    run = train(recipe).run_dir
    push_run(run, repo_id="sft-tester/shapes-timm")
    meta = card_metadata(hub_server.files("sft-tester/shapes-timm"))
    assert meta["library_name"] == "timm" and "base_model" not in meta  # random init: no base weights

    model = timm.create_model("hf-hub:sft-tester/shapes-timm", pretrained=True).eval()
    local = timm.create_model(f"local-dir:{run}", pretrained=True).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), local(x))
    batch = [Image.open(p).convert("RGB") for p in sorted((data / "blue").iterdir())[:2]]
    pushed = pipeline("image-classification", model="sft-tester/shapes-timm")(batch)
    assert pushed == pipeline("image-classification", model=str(run))(batch)
    assert {p["label"] for row in pushed for p in row} == {"red", "green", "blue"}  # real label names


def test_only_the_main_process_pushes(hub, runs, monkeypatch):
    from accelerate.state import PartialState

    from sft_hub.hub import push_run

    PartialState()  # initialised, as under `accelerate launch`
    monkeypatch.setattr(PartialState, "is_main_process", property(lambda self: False))
    requests = len(hub.server.log)
    assert push_run(runs["full"], repo_id="sft-tester/other-rank") is None
    assert len(hub.server.log) == requests  # not a single request from a non-main process


@pytest.mark.parametrize("strategy, push, match", [
    ({"name": "full"}, "adapter", "strategy 'full' trains the model itself"),
    ({"name": "lora", "save": "adapter"}, "merged", "needs strategy.save: merged or both"),
    ({"name": "lora", "save": "merged"}, "both", "needs strategy.save: both"),
    ({"name": "lora", "save": "both"}, "adapter", None),
    ({"name": "full"}, "merged", None),
])
def test_preflight_checks_the_strategy_saves_the_pushed_form(hub_server, strategy, push, match):
    from sft_hub.errors import RecipeError
    from sft_hub.hub import preflight
    from sft_hub.catalog import recipe_model

    recipe = recipe_model("text-classification").model_validate({
        "task": "text-classification", "model": {"name": BASE_ID}, "data": {"files": {"train": "x.csv"}},
        "strategy": strategy, "hub": {"repo_id": "sft-tester/form", "push": push}})
    if match is None:
        assert preflight(recipe.hub, strategy=recipe.strategy) == hub_server.user
    else:
        with pytest.raises(RecipeError, match=match):
            preflight(recipe.hub, strategy=recipe.strategy)
        assert not hub_server.server.log  # refused before talking to the Hub
