"""Model card (issue 16): reproduce commands that work, dataset metadata, timm base_model, the
training data's licence and attribution, intended use and limitations, results per epoch."""
from __future__ import annotations

import json

from sft_hub import card_sections
from sft_hub.card import build_card

from .test_card import split_card, write_run

LOG_HISTORY = [
    {"loss": 0.69, "learning_rate": 1e-4, "epoch": 0.5, "step": 10},
    {"loss": 0.40, "learning_rate": 8e-5, "epoch": 1.0, "step": 20},
    {"eval_loss": 0.35, "eval_accuracy": 0.81, "eval_f1_macro": 0.78, "epoch": 1.0, "step": 20},
    {"loss": 0.21, "learning_rate": 2e-5, "epoch": 2.0, "step": 40},
    {"eval_loss": 0.28, "eval_accuracy": 0.88, "eval_f1_macro": 0.86, "epoch": 2.0, "step": 40},
]


def _local_run(tmp_path, **data):
    recipe = {"task": "text-classification", "model": {"name": "org/tiny"},
              "data": {"files": {"train": "data/sms_spam/train.csv", "test": "data/sms_spam/test.csv"},
                       "text_column": "text", **data},
              "strategy": {"name": "full"}, "hub": {"license": "apache-2.0"}}
    run = write_run(tmp_path / "spam", recipe,
                    {"validation": {"accuracy": 0.88, "loss": 0.28},
                     "test": {"accuracy": 0.87, "loss": 0.3}},
                    task="text-classification", strategy="full", labels=["ham", "spam"])
    (run / "trainer_state.json").write_text(json.dumps({"log_history": LOG_HISTORY,
                                                        "global_step": 40, "epoch": 2.0}))
    return run


def _card(run, repo="acme/spam"):
    return split_card(build_card(run, repo_id=repo, files=["config.json", "model.safetensors"]))


def test_local_data_has_no_dataset_type_and_names_the_files(tmp_path):
    meta, body = _card(_local_run(tmp_path))
    assert "model-index" not in meta and "datasets" not in meta
    assert "local" not in json.dumps(meta)
    assert "`sms_spam/train.csv`" in body and "`sms_spam/test.csv`" in body


def test_reproduce_installs_from_the_repository(tmp_path, monkeypatch):
    meta, body = _card(_local_run(tmp_path))
    reproduce = body[body.index("## Reproduce"):]
    assert "pip install sft-hub\n" not in reproduce  # not published on PyPI
    assert "sft-hub && cd sft-hub" in reproduce and "\npip install .\n" in reproduce
    assert "sft-hub train --from hf://acme/spam   # trains in runs/spam" in reproduce
    monkeypatch.setattr(card_sections, "source_url", lambda: "https://example.org/acme/sft-hub")
    _, body = _card(_local_run(tmp_path))
    assert "git clone https://example.org/acme/sft-hub sft-hub && cd sft-hub" in body


def test_licence_and_attribution_of_the_training_data(tmp_path):
    run = _local_run(tmp_path, license="cc-by-4.0",
                     citation="T. Almeida and J. M. Gómez Hidalgo, SMS Spam Collection, DocEng 2011")
    _, body = _card(run)
    section = body[body.index("## Training data"):]
    assert "- Licence of the training data: cc-by-4.0" in section
    assert "Please credit the data as: T. Almeida and J. M. Gómez Hidalgo" in section
    _, plain = _card(_local_run(tmp_path / "other"))
    assert "## Training data" not in plain


def test_intended_use_and_limitations(tmp_path):
    _, body = _card(_local_run(tmp_path))
    use = body[body.index("## Intended use"):body.index("## Limitations")]
    assert "text-classification" in use and "`ham`, `spam`" in use
    assert "held-out test split" in body[body.index("## Limitations"):]
    run = _local_run(tmp_path / "described")
    recipe = (run / "recipe.yaml").read_text().replace(
        "hub:\n", "hub:\n  description: Flags spam in English SMS messages.\n")
    (run / "recipe.yaml").write_text(recipe)
    _, body = _card(run)
    assert "## Intended use\n\nFlags spam in English SMS messages." in body


def test_results_per_epoch(tmp_path):
    _, body = _card(_local_run(tmp_path))
    section = body[body.index("Results per epoch"):]
    assert "| epoch | step | training loss | validation loss | Accuracy | F1 (macro) |" in section
    assert "| 1 | 20 | 0.4000 | 0.3500 | 0.8100 | 0.7800 |" in section
    assert "| 2 | 40 | 0.2100 | 0.2800 | 0.8800 | 0.8600 |" in section
    assert body.index("## Evaluation") < body.index("Results per epoch") < body.index("## Reproduce")


def test_timm_base_model_is_the_hub_id_of_its_weights(tmp_path):
    recipe = {"task": "image-classification",
              "model": {"name": "efficientnet_lite0", "backend": "timm",
                        "path": "models/efficientnet_lite0/model.safetensors"},
              "data": {"files": {"train": "data/digits/train"}}, "strategy": {"name": "full"}}
    run = write_run(tmp_path / "img", recipe, {"validation": {"accuracy": 0.96}},
                    task="image-classification", strategy="full", base_model="efficientnet_lite0",
                    labels=[str(i) for i in range(10)])
    meta, _ = _card(run, "acme/digits")
    assert meta["base_model"] == "timm/efficientnet_lite0.ra_in1k"
    assert card_sections.timm_hub_id("hf-hub:timm/resnet50.a1_in1k") == "timm/resnet50.a1_in1k"
    assert card_sections.timm_hub_id("no_such_model_xyz") is None
