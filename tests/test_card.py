"""The model card: Hub metadata that huggingface_hub's own tools accept, and a summary that says
what was trained, how, on what, how well, and how to reproduce it.

Run directories are written by hand in the layout training produces (recipe.yaml, metrics.json,
run_info.json), so these tests need no training.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from sft_hub.card import build_card
from tests.hub_server import hub_server  # noqa: F401  (pytest fixture)

INFO = {"complete": True, "recipe": "recipes/text-classification/sst2-minilm-lora.yaml",
        "command": "sft-hub train recipes/text-classification/sst2-minilm-lora.yaml",
        "parameters": {"total": 22_713_986, "trainable": 74_498, "trainable_percent": 0.328},
        "notes": ["312 training texts were truncated to 128 tokens"], "train_seconds": 754.2,
        "hardware": "NVIDIA H100 80GB HBM3",
        "topology": {"num_processes": 2, "distributed_type": "MULTI_GPU", "mixed_precision": "bf16"},
        "versions": {"sft_hub": "0.1.0", "transformers": "5.23.0", "peft": "0.21.2"}}


def write_run(folder: Path, recipe: dict, metrics: dict, **info) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "run_info.json").write_text(json.dumps({**INFO, **info}))
    return folder


@pytest.fixture
def text_run(tmp_path) -> Path:
    recipe = {"task": "text-classification",
              "model": {"name": "sentence-transformers/all-MiniLM-L6-v2", "backend": "transformers"},
              "data": {"dataset": "stanfordnlp/sst2", "splits": {"train": "train", "validation": "validation"},
                       "text_column": "sentence", "max_train_samples": 2000},
              "strategy": {"name": "lora", "r": 16, "alpha": 32.0, "save": "both"},
              "training": {"learning_rate": 3e-4, "num_train_epochs": 2, "per_device_train_batch_size": 32},
              "hub": {"repo_id": "acme/sst2-minilm", "license": "apache-2.0", "tags": ["sentiment"]}}
    split = {"loss": 0.31, "accuracy": 0.8761, "f1_macro": 0.8755, "precision_macro": 0.877,
             "recall_macro": 0.8752, "f1_negative": 0.869, "f1_positive": 0.882, "runtime": 1.2,
             "samples_per_second": 700.0, "steps_per_second": 11.0, "epoch": 2.0}
    metrics = {"train": {"loss": 0.4, "runtime": 700.0}, "validation": split,
               "test": {**split, "accuracy": 0.8702}}
    return write_run(tmp_path / "sst2", recipe, metrics, task="text-classification", strategy="lora",
                     base_model="sentence-transformers/all-MiniLM-L6-v2", labels=["negative", "positive"])


def split_card(text: str) -> tuple[dict, str]:
    _, header, body = text.split("---\n", 2)
    return yaml.safe_load(header), body


def test_metadata_follows_the_hub_conventions(text_run, hub_server):
    from huggingface_hub import ModelCard
    from huggingface_hub.repocard_data import model_index_to_eval_results

    text = build_card(text_run, repo_id="acme/sst2-minilm",
                      files=["adapter_config.json", "adapter_model.safetensors", "tokenizer.json"])
    card = ModelCard(text, ignore_metadata_errors=False)  # raises on malformed metadata
    card.validate()  # the Hub's validate-yaml endpoint (the local server)
    meta = card.data.to_dict()
    assert meta["library_name"] == "peft" and meta["pipeline_tag"] == "text-classification"
    assert meta["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert meta["datasets"] == ["stanfordnlp/sst2"] and meta["license"] == "apache-2.0"
    assert {"sft-hub", "lora", "text-classification", "sentiment", "peft"} <= set(meta["tags"])

    name, results = model_index_to_eval_results(meta["model-index"])
    assert name == "sst2-minilm"
    accuracy = {r.dataset_split: r.metric_value for r in results if r.metric_type == "accuracy"}
    assert accuracy == {"validation": 0.8761, "test": 0.8702}
    assert all(r.dataset_type == "stanfordnlp/sst2" and r.task_type == "text-classification" for r in results)
    assert not any(r.metric_type in ("runtime", "epoch", "samples_per_second") for r in results)
    assert results[0].metric_type == "accuracy"  # the task's main metric leads


def test_summary_says_what_how_and_how_well(text_run):
    meta, body = split_card(build_card(text_run, repo_id="acme/sst2-minilm",
                                       files=["config.json", "model.safetensors", "adapter/adapter_config.json"]))
    assert meta["library_name"] == "transformers"  # merged weights at the root
    assert "# sst2-minilm" in body
    base = "sentence-transformers/all-MiniLM-L6-v2"
    assert f"[{base}](https://huggingface.co/{base})" in body
    assert "`lora` (r=16, alpha=32.0, save=both); 74,498 of 22,713,986 parameters trained (0.33%)" in body
    assert "merged model at the root, the PEFT adapter in `adapter/`" in body
    assert "[stanfordnlp/sst2](https://huggingface.co/datasets/stanfordnlp/sst2)" in body
    assert "max_train_samples=2000" in body and "`negative`, `positive`" in body
    assert "| Accuracy | 0.8761 | 0.8702 |" in body and "| F1 (macro) | 0.8755 | 0.8755 |" in body
    assert "| positive | 0.8820 |" in body  # per-class table
    assert "| `learning_rate` | `0.0003` |" in body
    assert "training time: 12 min 34 s" in body and "NVIDIA H100 80GB HBM3" in body
    assert "processes: 2, mixed precision: bf16" in body and "peft 0.21.2" in body
    assert "sft-hub train --from hf://acme/sst2-minilm " in body
    assert 'pipeline("text-classification", model="acme/sst2-minilm")' in body
    assert 'PeftModel.from_pretrained(base, "acme/sst2-minilm", subfolder="adapter")' in body
    assert "312 training texts were truncated" in body
    assert "runtime" not in body.split("## Evaluation")[1].split("##")[0]


def test_per_entity_table_for_token_classification(tmp_path):
    recipe = {"task": "token-classification", "model": {"name": "org/tiny"},
              "data": {"files": {"train": "data/wnut17/train.jsonl"}}, "strategy": {"name": "full"}}
    test = {"entity_f1": 0.41, "entity_precision": 0.52, "entity_recall": 0.34, "token_accuracy": 0.93,
            "person_precision": 0.6, "person_recall": 0.5, "person_f1": 0.545, "person_support": 429,
            "location_precision": 0.5, "location_recall": 0.4, "location_f1": 0.444, "location_support": 150}
    run = write_run(tmp_path / "ner", recipe, {"test": test}, task="token-classification", strategy="full",
                    labels=["O", "B-location", "I-location", "B-person", "I-person"])
    meta, body = split_card(build_card(run, repo_id="acme/ner", files=["config.json", "model.safetensors"],
                                       revision="experiment"))
    # local files: no model-index (it would need a Hub dataset id), the file names in the body
    assert "model-index" not in meta and "datasets" not in meta
    assert "`wnut17/train.jsonl`" in body
    assert "| person | 0.6000 | 0.5000 | 0.5450 | 429 |" in body
    assert "| class | precision | recall | f1 | support |" in body
    assert "sft-hub train --from hf://acme/ner@experiment" in body
    assert 'revision="experiment"' in body


def test_timm_card_without_pretrained_base(tmp_path):
    recipe = {"task": "image-classification", "model": {"name": "resnet18", "backend": "timm", "pretrained": False},
              "data": {"files": {"train": "digits/train"}}, "strategy": {"name": "full"}}
    run = write_run(tmp_path / "img", recipe, {"validation": {"accuracy": 0.9, "top5_accuracy": 1.0}},
                    task="image-classification", strategy="full", labels=[str(i) for i in range(10)])
    meta, body = split_card(build_card(run, repo_id="acme/digits",
                                       files=["config.json", "model.safetensors", "plots/confusion_matrix.png"]))
    assert meta["library_name"] == "timm" and "base_model" not in meta
    assert {"timm", "sft-hub"} <= set(meta["tags"])
    assert 'timm.create_model("hf-hub:acme/digits", pretrained=True)' in body
    assert "trained from random weights" in body
    assert "![confusion_matrix](plots/confusion_matrix.png)" in body
