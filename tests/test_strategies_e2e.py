"""Strategies through the real pipeline: recipe -> sft_hub.train -> run directory; sft-hub plan."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from sft_hub.plan import format_plan, plan
from sft_hub.catalog import load_recipe
from .strategies_helpers import BERT_TOTAL, HEAD, LAYER, POOLER, tiny_bert, write_tokenizer

WORDS = {0: ["bad", "awful", "not"], 1: ["good", "great", "fine"]}


@pytest.fixture
def workdir(tmp_path):
    """A tiny BERT + tokenizer (model.path) and a small sentiment CSV per split."""
    model_dir = tmp_path / "tiny-bert"
    tiny_bert().save_pretrained(model_dir)
    write_tokenizer(model_dir)
    for split, n in (("train", 24), ("validation", 8)):
        nouns = ["movie", "film", "plot"]
        rows = [f"{WORDS[i % 2][i % 3]} {nouns[i % 3]},{i % 2}" for i in range(n)]
        (tmp_path / f"{split}.csv").write_text("text,label\n" + "\n".join(rows) + "\n",
                                               encoding="utf-8")
    return tmp_path


def write_recipe(workdir, strategy_yaml: str, epochs: int = 2, training: str = ""):
    path = workdir / "recipe.yaml"
    path.write_text(f"""task: text-classification
model:
  name: org/tiny-bert
  path: tiny-bert
data:
  files: {{train: train.csv, validation: validation.csv}}
  max_length: 16
strategy:
{strategy_yaml}
training:
  num_train_epochs: {epochs}
  per_device_train_batch_size: 8
  learning_rate: 1e-2
  save_total_limit: 1
{training}output:
  dir: run
""", encoding="utf-8")
    return str(path)


def test_lora_recipe_trains_and_saves_reloadable_adapter(workdir):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from sft_hub.training import train

    result = train(write_recipe(workdir, "  name: lora\n  r: 4\n  alpha: 8\n"))
    run = result.run_dir
    config = json.loads((run / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "org/tiny-bert"  # the Hub id, not model.path
    assert not (run / "config.json").exists()

    base = AutoModelForSequenceClassification.from_pretrained(
        workdir / "tiny-bert", num_labels=2, ignore_mismatched_sizes=True)
    model = PeftModel.from_pretrained(base, run).eval()
    tokenizer = AutoTokenizer.from_pretrained(run)
    lines = (workdir / "validation.csv").read_text().splitlines()[1:]
    texts = [ln.rsplit(",", 1)[0] for ln in lines]
    labels = [int(ln.rsplit(",", 1)[1]) for ln in lines]
    with torch.no_grad():
        predicted = model(**tokenizer(texts, return_tensors="pt", padding=True)).logits.argmax(-1)
    accuracy = (predicted == torch.tensor(labels)).float().mean().item()
    assert accuracy == pytest.approx(result.metrics["validation"]["accuracy"])


def test_freeze_recipe_with_gradual_unfreezing(workdir):
    from sft_hub.training import train

    strategy = ("  name: freeze\n  train_last_n_layers: 1\n"
                "  unfreeze_schedule:\n    - {epoch: 1, train_last_n_layers: all}\n")
    keep_last_epoch = "  load_best_model_at_end: false\n"
    result = train(write_recipe(workdir, strategy, training=keep_last_epoch))
    trained = load_file(str(result.run_dir / "model.safetensors"))
    base = load_file(str(workdir / "tiny-bert" / "model.safetensors"))
    for name in ("bert.embeddings.word_embeddings.weight", "bert.embeddings.LayerNorm.weight"):
        assert torch.equal(trained[name], base[name]), f"{name} should stay frozen"
    for name in ("bert.encoder.layer.0.attention.self.query.weight",  # unfrozen at epoch 1
                 "bert.encoder.layer.1.attention.self.query.weight"):
        assert not torch.equal(trained[name], base[name]), f"{name} should have trained"


def test_plan_reports_parameters_without_training(workdir):
    loaded = load_recipe(write_recipe(workdir, "  name: freeze\n  train_last_n_layers: 1\n"
                                      "  unfreeze_schedule:\n"
                                      "    - {epoch: 1, train_last_n_layers: all}\n"))
    result = plan(loaded)
    head = 32 * 2 + 2  # the data has 2 labels; tiny_bert was saved with 3
    assert result["total_params"] == result["base_params"] == BERT_TOTAL - HEAD + head
    assert result["trainable_params"] == LAYER + POOLER + head
    assert result["schedule"][1]["trainable_params"] == 2 * LAYER + POOLER + head
    assert result["layers"] == 2 and result["head"] == ["classifier"]
    text = format_plan(result)
    assert "trainable_params: 7,911" in text and "from epoch 1" in text
    assert not (workdir / "run").exists()


def test_plan_command_prints_counts_and_names_errors(workdir, capsys):
    from sft_hub.cli import main

    recipe = write_recipe(workdir, "  name: lora\n  r: 4\n  target_modules: [query, value]\n")
    assert main(["plan", recipe]) == 0
    out = capsys.readouterr().out
    assert "trainable_params: 1,090" in out  # 2 layers x (query + value) x 4 x 64 + 66 head
    assert "adapted_names: query, value" in out

    recipe = write_recipe(workdir, "  name: freeze\n  train_last_n_layers: 5\n")
    assert main(["validate", "--quiet", "--plan", recipe]) == 2
    err = capsys.readouterr().err
    assert "recipe.yaml: strategy.train_last_n_layers: 5 layers asked" in err
