"""Multi-label text classification: label lists or separated strings, multi-hot targets, sigmoid
scores, per-label thresholds (tuned on validation), metrics, the saved config and the pipeline."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest

from sft_hub.errors import DataError
from sft_hub.catalog import load_recipe
from sft_hub.tasks import TASKS
from sft_hub.tasks.multi_label_text_classification import multilabel_metrics, tune_thresholds

from .conftest import HAM_WORDS, SPAM_WORDS

NAME = "multi-label-text-classification"


def rows(n: int, seed: int) -> list[dict]:
    """Texts mentioning spam words (label "spam"), ham words ("ham"), both, or neither."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        labels = [["spam"], ["ham"], ["ham", "spam"], []][i % 4]
        words = [w for label in labels for w in rng.sample(
            SPAM_WORDS if label == "spam" else HAM_WORDS, 3)] or ["the", "a", "of"]
        rng.shuffle(words)
        out.append({"text": " ".join(words), "labels": labels})
    return out


def write_jsonl(path, items):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in items), encoding="utf-8")
    return str(path)


@pytest.fixture
def ml_recipe(tiny_bert_dir, tmp_path):
    d = tmp_path / "data"
    return {
        "task": NAME, "model": {"name": "tiny-bert", "path": str(tiny_bert_dir)},
        "data": {"files": {"train": write_jsonl(d / "train.jsonl", rows(80, 1)),
                           "validation": write_jsonl(d / "validation.jsonl", rows(24, 2)),
                           "test": write_jsonl(d / "test.jsonl", rows(30, 3))},
                 "max_length": 16},
        "training": {"num_train_epochs": 6, "per_device_train_batch_size": 8,
                     "learning_rate": 5e-3, "seed": 0, "logging_steps": 50, "disable_tqdm": True},
        "output": {"dir": str(tmp_path / "run")},
    }


def load_task(write_recipe, recipe):
    loaded = load_recipe(write_recipe(recipe))
    task = TASKS.all()[NAME](loaded.recipe, loaded.base_dir)
    return task, task.load_data()


def test_label_lists_and_separated_strings_become_multi_hot(write_recipe, ml_recipe, tmp_path):
    task, data = load_task(write_recipe, ml_recipe)
    assert task.labels == ["ham", "spam"]
    assert data["train"]["labels"][:4] == [[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]]

    csv = tmp_path / "t.csv"
    csv.write_text("text,tags\nhello,b | a\nbye,\nhi,c\n", encoding="utf-8")
    ml_recipe["data"].update(files={"train": str(csv), "validation": str(csv)},
                             label_column="tags", label_separator="|", labels=["c", "b", "a"])
    task, data = load_task(write_recipe, ml_recipe)
    assert task.labels == ["c", "b", "a"]  # data.labels fixes the order
    assert data["train"]["tags"] == [[0.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]


def test_unknown_labels_and_bad_values_are_data_errors(write_recipe, ml_recipe, tmp_path):
    ml_recipe["data"]["files"]["test"] = write_jsonl(tmp_path / "x.jsonl",
                                                     [{"text": "a", "labels": ["eggs"]}])
    with pytest.raises(DataError, match="test split has label\\(s\\) 'eggs'"):
        load_task(write_recipe, ml_recipe)
    ml_recipe["data"]["files"]["test"] = write_jsonl(tmp_path / "y.jsonl",
                                                     [{"text": "a", "labels": 3}])
    with pytest.raises(DataError, match="labels must be a list of names or a string"):
        load_task(write_recipe, ml_recipe)


def test_metrics_and_threshold_tuning():
    gold = np.array([[1, 0], [1, 1], [0, 0], [0, 1]], dtype=bool)
    probs = np.array([[0.9, 0.2], [0.6, 0.3], [0.1, 0.1], [0.2, 0.35]])
    out = multilabel_metrics(probs, gold, ["a", "b"], {"a": 0.5, "b": 0.5})
    assert out["f1_a"] == 1.0 and out["f1_b"] == 0.0 and out["subset_accuracy"] == 0.5
    assert out["f1_micro"] == pytest.approx(2 * 2 / (2 + 4))
    assert out["f1_macro"] == 0.5 and out["threshold_b"] == 0.5
    tuned = tune_thresholds(probs, gold, ["a", "b"], 0.5)
    assert tuned["a"] == 0.5  # already perfect: the default is kept (nearest on ties)
    assert 0.2 < tuned["b"] <= 0.3  # catches both positives (0.3, 0.35), not the 0.2 negative
    best = multilabel_metrics(probs, gold, ["a", "b"], tuned)
    assert best["f1_b"] == 1.0 and best["subset_accuracy"] == 1.0


def test_trains_saves_thresholds_and_pipeline_returns_every_label(write_recipe, ml_recipe):
    from transformers import AutoConfig, pipeline

    from sft_hub.card import build_card
    from sft_hub.training import train

    ml_recipe["data"]["tune_thresholds"] = True
    result = train(write_recipe(ml_recipe))
    run = result.run_dir
    config = AutoConfig.from_pretrained(run)
    assert config.problem_type == "multi_label_classification"
    thresholds = config.label_thresholds
    assert set(thresholds) == {"ham", "spam"} and all(0 < t < 1 for t in thresholds.values())
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("f1_micro", "f1_macro", "subset_accuracy", "f1_ham", "f1_spam"):
        assert 0.0 <= metrics["test"][key] <= 1.0
    assert metrics["test"]["f1_micro"] >= 0.8  # separable words: the tiny model learns them
    # test figures use the thresholds the saved model carries (those of the kept checkpoint)
    assert {k: metrics["test"][f"threshold_{k}"] for k in thresholds} == thresholds
    info = json.loads((run / "run_info.json").read_text())
    assert info["task_contract"]["model_config"]["label_thresholds"] == thresholds

    scores = pipeline("text-classification", model=str(run), top_k=None)(["win free cash now"])[0]
    assert {s["label"] for s in scores} == {"ham", "spam"}
    assert sum(s["score"] for s in scores) != pytest.approx(1.0, abs=1e-3)  # sigmoid, not softmax

    card = build_card(run, repo_id="acme/multi", files=["config.json", "model.safetensors"])
    assert "| F1 (micro) |" in card and "| Subset accuracy (exact match) |" in card
    assert "| class | f1 | threshold |" in card and "top_k=None" in card
