"""Strategies without training: layer/head discovery, exact trainable counts, checks, LR groups."""
from __future__ import annotations

import types

import pytest
import torch

from sft_hub.errors import RecipeError
from sft_hub.catalog import load_recipe
from sft_hub.strategies.layers import discover_layout
from .strategies_helpers import (BERT_TOTAL, HEAD, LAYER, POOLER, make_strategy, tiny_bert,
                                 tiny_timm_wrapper)


def trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# -- discovery ------------------------------------------------------------------------------------
def _text_models():
    import timm
    import transformers as T

    kw = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
              intermediate_size=37, num_labels=3)
    return {
        "bert": (lambda: T.BertForSequenceClassification(T.BertConfig(**kw)), ["classifier"]),
        "roberta": (lambda: T.RobertaForSequenceClassification(T.RobertaConfig(**kw)),
                    ["classifier"]),
        "distilbert": (lambda: T.DistilBertForSequenceClassification(T.DistilBertConfig(
            vocab_size=100, dim=32, n_layers=2, n_heads=2, hidden_dim=37, num_labels=3)),
            ["pre_classifier", "classifier"]),
        "deberta-v2": (lambda: T.DebertaV2ForSequenceClassification(T.DebertaV2Config(**kw)),
                       ["pooler", "classifier"]),
        "bert-token": (lambda: T.BertForTokenClassification(T.BertConfig(**kw)), ["classifier"]),
        "vit": (lambda: T.ViTForImageClassification(T.ViTConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
            image_size=32, patch_size=8, num_labels=3)), ["classifier"]),
        "timm-vit": (lambda: timm.create_model(
            "vit_tiny_patch16_224", pretrained=False, num_classes=3, img_size=32, patch_size=8,
            depth=2, embed_dim=32, num_heads=2), ["head"]),
        "timm-wrapper": (tiny_timm_wrapper, ["timm_model.head"]),
        "timm-resnet18": (lambda: timm.create_model("resnet18", pretrained=False, num_classes=3),
                          ["fc"]),
    }


@pytest.mark.parametrize("arch", list(_text_models()))
def test_layout_finds_head_layers_and_embeddings(arch):
    build, head = _text_models()[arch]
    model = build()
    layout = discover_layout(model)
    assert layout.head == head
    assert layout.num_layers == (4 if arch == "timm-resnet18" else 2)  # resnet: 4 stages
    groups = {layout.group_of(n) for n, _ in model.named_parameters()}
    assert set(range(1, layout.num_layers + 1)) <= groups  # every layer has parameters
    assert 0 in groups and layout.head_id in groups
    first = next(n for n, _ in model.named_parameters())
    assert layout.group_of(first) == 0  # the first parameter (embeddings / stem) is layer 0


def test_unknown_architecture_names_what_to_set():
    class Odd(torch.nn.Module):  # no base_model_prefix, no timm surface
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Linear(4, 4)

    with pytest.raises(RecipeError) as e:
        discover_layout(Odd())
    assert e.value.field == "model.name"

    model = tiny_bert()
    model.config.num_hidden_layers = 7  # no list of 7 blocks: cannot tell the layers
    with pytest.raises(RecipeError) as e:
        discover_layout(model)
    assert e.value.field == "strategy.layers_module"
    assert "bert.encoder.layer (2)" in e.value.hint
    assert discover_layout(model, "bert.encoder.layer").num_layers == 2  # the override works


# -- exact trainable counts ----------------------------------------------------------------------
@pytest.mark.parametrize("strategy,expected", [
    ({"name": "full"}, BERT_TOTAL),
    # default targets (benchmarks/defaults.py): every linear but the head: q k v o, ffn, pooler
    ({"name": "lora", "r": 4}, 2 * (4 * 4 * (32 + 32) + 2 * 4 * (32 + 37)) + 4 * (32 + 32) + HEAD),
    ({"name": "lora", "r": 4, "target_modules": "all-linear"},
     2 * (4 * 4 * (32 + 32) + 2 * 4 * (32 + 37)) + 4 * (32 + 32) + HEAD),
    ({"name": "lora", "r": 4, "target_modules": ["query", "value"]},  # 2 layers + head
     2 * 2 * 4 * (32 + 32) + HEAD),
    ({"name": "lora", "r": 4, "target_modules": ["query", "value"], "use_rslora": True},
     2 * 2 * 4 * (32 + 32) + HEAD),
    ({"name": "lora", "r": 4, "target_modules": ["query", "value"], "use_dora": True},
     2 * 2 * (4 * (32 + 32) + 32) + HEAD),  # + a magnitude vector per adapted module
    ({"name": "ia3"}, 2 * (32 + 32 + 32 + 37) + HEAD),  # key, value out; both output.dense inputs
    ({"name": "ia3", "target_modules": ["query"]}, 2 * 32 + HEAD),
    ({"name": "freeze"}, 2 * LAYER + POOLER + HEAD),  # default: the last 2 layers
    ({"name": "freeze", "train_last_n_layers": 0}, HEAD),
    ({"name": "freeze", "train_last_n_layers": 1}, LAYER + POOLER + HEAD),
    ({"name": "freeze", "train_last_n_layers": "all"}, 2 * LAYER + POOLER + HEAD),
    ({"name": "freeze", "train_last_n_layers": 2, "freeze_embeddings": False}, BERT_TOTAL),
])
def test_trainable_parameter_counts_bert(strategy, expected):
    model = make_strategy(strategy).prepare(tiny_bert())
    assert trainable(model) == expected


@pytest.mark.parametrize("strategy,expected", [
    ({"name": "freeze", "train_last_n_layers": 1},  # block + final norm + head
     (64 + (32 * 96 + 96) + (32 * 32 + 32) + 64 + (32 * 128 + 128) + (128 * 32 + 32)) + 64 + HEAD),
    ({"name": "lora", "r": 4}, 2 * 4 * ((32 + 96) + (32 + 32) + (32 + 128) + (128 + 32)) + HEAD),
    ({"name": "ia3"}, 2 * (96 + 32 + 128 + 128) + HEAD),  # outputs of qkv, proj, fc1; fc2's input
])
def test_trainable_parameter_counts_timm(strategy, expected):
    model = make_strategy(strategy, peft_task_type=None).prepare(tiny_timm_wrapper())
    assert trainable(model) == expected


# -- checks ---------------------------------------------------------------------------------------
@pytest.fixture
def recipe_file(tmp_path):
    (tmp_path / "d.csv").write_text("text,label\na,0\n", encoding="utf-8")

    def write(strategy_yaml: str):
        path = tmp_path / "r.yaml"
        path.write_text("task: text-classification\nmodel: {name: org/tiny}\n"
                        "data: {files: {train: d.csv}}\nstrategy:\n" + strategy_yaml,
                        encoding="utf-8")
        return path
    return write


@pytest.mark.parametrize("strategy_yaml,field,words", [
    ("  name: lora\n  r: 0\n", "strategy.r", "greater than 0"),
    ("  name: freeze\n  train_last_n_layers: 1\n  unfreeze_schedule:\n"
     "    - {epoch: 2, train_last_n_layers: 2}\n    - {epoch: 1, train_last_n_layers: all}\n",
     "strategy.unfreeze_schedule", "increasing epoch order"),
    ("  name: freeze\n  train_last_n_layers: 2\n  unfreeze_schedule:\n"
     "    - {epoch: 1, train_last_n_layers: 1}\n", "strategy.unfreeze_schedule",
     "more layers"),
    ("  name: ia3\n  target_modules: [key]\n  feedforward_modules: [value]\n",
     "strategy.feedforward_modules", "target_modules"),
])
def test_schema_rejects_nonsense(recipe_file, strategy_yaml, field, words):
    with pytest.raises(RecipeError) as e:
        load_recipe(str(recipe_file(strategy_yaml)))
    assert e.value.field == field
    assert words in str(e.value)


def test_target_module_matching_nothing_lists_available_names():
    strategy = make_strategy({"name": "lora", "target_modules": ["query", "q_proj"]})
    with pytest.raises(RecipeError) as e:
        strategy.prepare(tiny_bert())
    assert e.value.field == "strategy.target_modules"
    assert "'q_proj'" in e.value.message
    assert "query" in e.value.hint and "value" in e.value.hint and "dense" in e.value.hint


def test_target_regex_matching_nothing_is_rejected():
    with pytest.raises(RecipeError, match="matches no module"):
        make_strategy({"name": "ia3", "target_modules": r".*\.q_lin"}).prepare(tiny_bert())


@pytest.mark.parametrize("strategy,field", [
    ({"name": "freeze", "train_last_n_layers": 3}, "strategy.train_last_n_layers"),
    ({"name": "freeze", "unfreeze_schedule": [{"epoch": 1, "train_last_n_layers": 5}]},
     "strategy.unfreeze_schedule.0.train_last_n_layers"),
])
def test_more_layers_than_the_model_has(strategy, field):
    with pytest.raises(RecipeError) as e:
        make_strategy(strategy).prepare(tiny_bert())
    assert e.value.field == field
    assert "has 2" in e.value.message


def test_unfreezing_embeddings_needs_every_layer_to_train():
    with pytest.raises(RecipeError) as e:
        make_strategy({"name": "freeze", "train_last_n_layers": 1,
                       "freeze_embeddings": False}).prepare(tiny_bert())
    assert e.value.field == "strategy.freeze_embeddings"


def test_schedule_beyond_training_epochs_is_rejected():
    strategy = make_strategy({"name": "freeze", "train_last_n_layers": 0, "unfreeze_schedule": [
        {"epoch": 3, "train_last_n_layers": 1}]}, {"num_train_epochs": 3})
    with pytest.raises(RecipeError, match="never comes"):
        strategy.prepare(tiny_bert())


def test_layer_decay_needs_trainable_backbone_layers():
    with pytest.raises(RecipeError) as e:
        make_strategy({"name": "freeze", "train_last_n_layers": 0},
                      {"layer_decay": 0.8}).prepare(tiny_bert())
    assert e.value.field == "training.layer_decay"


# -- layer-wise learning rates -------------------------------------------------------------------
def test_layer_decay_and_head_learning_rate_groups():
    strategy = make_strategy({"name": "full"}, {"layer_decay": 0.5, "head_learning_rate": 1e-2})
    model = strategy.prepare(tiny_bert())
    args = types.SimpleNamespace(learning_rate=1e-3, weight_decay=0.01)
    groups = {g["name"]: g for g in strategy.optimizer_param_groups(model, args)}
    expected_lr = {"embeddings": 1e-3 * 0.5 ** 3, "layer_1": 1e-3 * 0.5 ** 2,
                   "layer_2": 1e-3 * 0.5, "after_layers": 1e-3, "head": 1e-2}
    assert set(groups) == {f"{k}/{d}" for k in expected_lr for d in ("decay", "no_decay")}
    for name, group in groups.items():
        assert group["lr"] == pytest.approx(expected_lr[name.split("/")[0]])
        assert group["weight_decay"] == (0.01 if name.endswith("/decay") else 0.0)
    named = dict(model.named_parameters())
    assert any(p is named["classifier.weight"] for p in groups["head/decay"]["params"])
    assert any(p is named["bert.encoder.layer.0.output.LayerNorm.weight"]
               for p in groups["layer_1/no_decay"]["params"])
    assert sum(p.numel() for g in groups.values() for p in g["params"]) == BERT_TOTAL


def test_layer_decay_with_lora_scales_adapter_weights_by_layer():
    strategy = make_strategy({"name": "lora", "r": 4, "target_modules": ["query", "value"]},
                             {"layer_decay": 0.5})
    model = strategy.prepare(tiny_bert())
    groups = strategy.optimizer_param_groups(model, types.SimpleNamespace(
        learning_rate=1.0, weight_decay=0.0))
    lrs = {g["name"].split("/")[0]: g["lr"] for g in groups}
    assert lrs == {"layer_1": 0.25, "layer_2": 0.5, "head": 1.0}
    assert sum(p.numel() for g in groups for p in g["params"]) == trainable(model)


def test_no_groups_without_layer_settings():
    strategy = make_strategy({"name": "lora"})
    model = strategy.prepare(tiny_bert())
    assert strategy.optimizer_param_groups(model, types.SimpleNamespace(
        learning_rate=1e-3, weight_decay=0.0)) is None  # the Trainer's default groups


def test_convnet_default_adapts_ordinary_convolutions():
    import timm

    model = timm.create_model("resnet18", pretrained=False, num_classes=3)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    r = 2
    expected = sum(r * (c.in_channels * c.kernel_size[0] * c.kernel_size[1] + c.out_channels)
                   for c in convs) + 512 * 3 + 3  # + the fc head
    strategy = make_strategy({"name": "lora", "r": r}, peft_task_type=None)
    assert trainable(strategy.prepare(model)) == expected
