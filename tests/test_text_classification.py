"""Text classification end to end on a tiny BERT: labels, splits, run directory, reload."""
from __future__ import annotations

import json

import pytest
from datasets import ClassLabel, Dataset, DatasetDict

from sft_hub.data.labels import derive_labels, encode_labels
from sft_hub.data.sources import finalize_splits
from sft_hub.errors import DataError
from sft_hub.catalog import load_recipe
from sft_hub.training import train

from .conftest import make_text_rows


def test_string_labels_map_to_sorted_names_and_ids():
    dsd = DatasetDict({"train": Dataset.from_dict({"label": ["spam", "ham", "spam"]}),
                       "test": Dataset.from_dict({"label": ["ham"]})})
    names = derive_labels(dsd, "label", None)
    assert names == ["ham", "spam"]
    enc = encode_labels(dsd, "label", names)
    assert enc["train"]["label"] == [1, 0, 1] and enc["test"]["label"] == [0]
    assert enc["train"].features["label"] == ClassLabel(names=["ham", "spam"])


def test_explicit_label_order_and_integer_labels():
    dsd = DatasetDict({"train": Dataset.from_dict({"label": [0, 1, 2, 1]})})
    assert derive_labels(dsd, "label", None) == ["0", "1", "2"]
    dsd = DatasetDict({"train": Dataset.from_dict({"label": ["neg", "pos"]})})
    names = derive_labels(dsd, "label", ["pos", "neg"])
    assert names == ["pos", "neg"]
    assert encode_labels(dsd, "label", names)["train"]["label"] == [1, 0]


def test_classlabel_names_are_kept_and_remapped_to_explicit_order():
    feat = ClassLabel(names=["negative", "positive"])
    ds = Dataset.from_dict({"label": [0, 1, 1]}).cast_column("label", feat)
    dsd = DatasetDict({"train": ds})
    assert derive_labels(dsd, "label", None) == ["negative", "positive"]
    enc = encode_labels(dsd, "label", ["positive", "negative"])
    assert enc["train"]["label"] == [1, 0, 0]


def test_label_lists_that_disagree_with_the_data_are_errors():
    dsd = DatasetDict({"train": Dataset.from_dict({"label": ["a", "b"]}),
                       "validation": Dataset.from_dict({"label": ["a", "c"]})})
    with pytest.raises(DataError, match="training data has label\\(s\\) 'b'"):
        derive_labels(dsd, "label", ["a"])
    with pytest.raises(DataError, match="validation split has label\\(s\\) 'c'"):
        encode_labels(dsd, "label", ["a", "b"])


def test_validation_is_carved_stratified_and_seeded(write_recipe):
    labels = ["a"] * 80 + ["b"] * 20
    ds = Dataset.from_dict({"x": list(range(100)), "label": labels}).cast_column(
        "label", ClassLabel(names=["a", "b"]))
    spec = load_recipe(write_recipe({"task": "text-classification", "model": {"name": "m"},
                                     "data": {"dataset": "d", "validation_split": 0.2}})).recipe.data
    one = finalize_splits(DatasetDict({"train": ds}), spec, seed=3, stratify_column="label")
    two = finalize_splits(DatasetDict({"train": ds}), spec, seed=3, stratify_column="label")
    assert len(one["validation"]) == 20 and len(one["train"]) == 80
    assert sorted(one["validation"]["label"]).count(1) == 4  # 20% of each class
    assert one["validation"]["x"] == two["validation"]["x"]
    assert not set(one["validation"]["x"]) & set(one["train"]["x"])


def test_end_to_end_train_writes_the_run_directory_and_reloads_with_label_names(
        write_recipe, text_recipe, tmp_path):
    del text_recipe["data"]["files"]["validation"]  # carved from train
    text_recipe["data"]["max_train_samples"] = 40
    result = train(write_recipe(text_recipe))
    run = result.run_dir
    for name in ("config.json", "model.safetensors", "tokenizer.json", "recipe.yaml",
                 "metrics.json", "run_info.json", "trainer_state.json"):
        assert (run / name).is_file(), name
    assert not (run / ".staging").exists()
    config = json.loads((run / "config.json").read_text())
    assert config["id2label"] == {"0": "ham", "1": "spam"}
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) == {"train", "validation", "test"}
    assert 0.0 <= metrics["test"]["accuracy"] <= 1.0 and "f1_macro" in metrics["validation"]
    info = json.loads((run / "run_info.json").read_text())
    assert info["complete"] is True and info["labels"] == ["ham", "spam"]
    assert info["parameters"]["trainable"] == info["parameters"]["total"]
    # the saved recipe is exactly what ran and validates again
    again = load_recipe(run / "recipe.yaml")
    assert again.recipe.data.max_train_samples == 40
    assert result.metrics["test"] == metrics["test"]

    from transformers import pipeline

    out = pipeline("text-classification", model=str(run))("win a free prize now")
    assert out[0]["label"] in {"ham", "spam"}


def test_tiny_model_learns_the_separable_task(write_recipe, text_recipe):
    text_recipe["training"]["num_train_epochs"] = 6
    result = train(write_recipe(text_recipe))
    assert result.metrics["test"]["accuracy"] >= 0.9


def test_overwrite_replaces_a_finished_run(write_recipe, text_recipe):
    text_recipe["training"]["num_train_epochs"] = 1
    path = write_recipe(text_recipe)
    first = train(path)
    (first.run_dir / "stale.txt").write_text("old")
    second = train(path, overwrite=True)
    assert not (second.run_dir / "stale.txt").exists()
    assert (second.run_dir / "model.safetensors").is_file()


def test_sentence_pairs_and_tsv(write_recipe, tiny_bert_dir, tmp_path):
    rows = [{"premise": r["text"], "hypothesis": r["text"][::-1], "label": r["label"]}
            for r in make_text_rows(30)]
    path = tmp_path / "pairs.tsv"
    with open(path, "w") as f:
        f.write("premise\thypothesis\tlabel\n")
        for r in rows:
            f.write(f"{r['premise']}\t{r['hypothesis']}\t{r['label']}\n")
    recipe = {"task": "text-classification", "model": {"name": "t", "path": str(tiny_bert_dir)},
              "data": {"files": {"train": str(path)}, "text_column": "premise",
                       "text_pair_column": "hypothesis", "validation_split": 0.3},
              "training": {"num_train_epochs": 1, "disable_tqdm": True}}
    result = train(write_recipe(recipe))
    assert "accuracy" in result.metrics["validation"]
    assert "test" not in result.metrics


def test_jsonl_and_parquet_sources(write_recipe, tiny_bert_dir, tmp_path):
    import pandas as pd

    rows = make_text_rows(30)
    pd.DataFrame(rows).to_json(tmp_path / "train.jsonl", orient="records", lines=True)
    pd.DataFrame(rows[:12]).to_parquet(tmp_path / "val.parquet")
    recipe = {"task": "text-classification", "model": {"name": "t", "path": str(tiny_bert_dir)},
              "data": {"files": {"train": "train.jsonl", "validation": "val.parquet"}},
              "training": {"num_train_epochs": 1, "disable_tqdm": True}}
    result = train(write_recipe(recipe))
    assert result.metrics["validation"]["samples_per_second"] > 0

