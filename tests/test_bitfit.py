"""BitFit: only bias terms and the task head train; a plain model is saved; the card says so."""
from __future__ import annotations

import json

import pytest
import torch

from sft_hub.errors import RecipeError

from .strategies_helpers import (EMBEDDINGS, HEAD, HIDDEN, INTERMEDIATE, LAYER, POOLER, logits,
                                 make_strategy, snapshot, text_batch, tiny_bert,
                                 tiny_timm_wrapper, train_steps)

# tiny_bert: per layer q, k, v, attention output, intermediate, output biases + two LayerNorm biases
LAYER_BIASES = 4 * HIDDEN + HIDDEN + INTERMEDIATE + HIDDEN + HIDDEN
BERT_BIASES = HIDDEN + 2 * LAYER_BIASES + HIDDEN  # embeddings LayerNorm, 2 layers, pooler


def test_trains_every_bias_and_the_head_only():
    model = make_strategy({"name": "bitfit"}).prepare(tiny_bert())
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == BERT_BIASES + HEAD
    assert {"classifier.weight", "classifier.bias", "bert.pooler.dense.bias",
            "bert.encoder.layer.0.attention.self.query.bias",
            "bert.embeddings.LayerNorm.bias"} <= trainable
    assert all(n.endswith(".bias") or n.startswith("classifier.") for n in trainable)
    assert sum(p.numel() for p in model.parameters()) == EMBEDDINGS + 2 * LAYER + POOLER + HEAD


def test_training_changes_biases_and_head_only():
    strategy = make_strategy({"name": "bitfit"})
    model = strategy.prepare(tiny_bert())
    before = snapshot(model)
    train_steps(model, strategy, text_batch())
    for name, param in model.named_parameters():
        if param.requires_grad:
            assert not torch.equal(param, before[name]), f"{name} did not train"
        else:
            assert torch.equal(param, before[name]), f"frozen {name} changed"


def test_timm_model_biases_and_head():
    model = make_strategy({"name": "bitfit"}, peft_task_type=None).prepare(tiny_timm_wrapper())
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert "timm_model.head.weight" in trainable and "timm_model.blocks.0.attn.qkv.bias" in trainable
    assert not any(n.endswith(".weight") for n in trainable if not n.startswith("timm_model.head"))


def test_layer_decay_groups_cover_the_biases():
    strategy = make_strategy({"name": "bitfit"}, {"layer_decay": 0.5})
    model = strategy.prepare(tiny_bert())
    groups = strategy.optimizer_param_groups(model, type("Args", (), {
        "learning_rate": 1e-2, "weight_decay": 0.01})())
    held = {id(p) for g in groups for p in g["params"]}
    assert held == {id(p) for p in model.parameters() if p.requires_grad}
    rates = {g["name"]: g["lr"] for g in groups}
    assert rates["layer_1/no_decay"] == pytest.approx(1e-2 * 0.25)  # biases never decay
    assert rates["head/decay"] == pytest.approx(1e-2)


def test_saves_a_plain_model_that_reloads(tmp_path):
    from transformers import AutoModelForSequenceClassification

    strategy = make_strategy({"name": "bitfit"})
    model = strategy.prepare(tiny_bert())
    train_steps(model, strategy, text_batch())
    strategy.save(model, tmp_path / "run")
    assert (tmp_path / "run" / "model.safetensors").is_file()
    assert not (tmp_path / "run" / "adapter_config.json").exists()
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "run").eval()
    torch.testing.assert_close(logits(reloaded, text_batch()), logits(model, text_batch()))


def test_contract_declares_a_plain_model():
    contract = make_strategy({"name": "bitfit"}).contract()
    assert contract.saves == "model" and contract.save_forms == ("model",)
    assert contract.push_forms == ("model", "merged") and not contract.merges_on_save
    assert contract.engines == ("ddp", "fsdp", "deepspeed")
    assert "bias" in contract.trains and set(contract.weights) == {"model"}


def test_pushing_an_adapter_is_refused_before_training():
    from sft_hub.hub import check_push_form

    spec = make_strategy({"name": "bitfit"}).spec
    check_push_form("model", spec)
    with pytest.raises(RecipeError, match="'bitfit' trains the model itself") as e:
        check_push_form("adapter", spec)
    assert e.value.field == "hub.push"


def test_model_without_biases_is_refused():
    from transformers import BertConfig, BertForSequenceClassification

    from .strategies_helpers import bert_config

    config: BertConfig = bert_config()
    model = BertForSequenceClassification(config)
    for module in model.bert.modules():
        for name, param in list(module.named_parameters(recurse=False)):
            if name == "bias":
                delattr(module, name)
                module.register_parameter(name, None)
    with pytest.raises(RecipeError, match="no bias terms") as e:
        make_strategy({"name": "bitfit"}).prepare(model)
    assert e.value.field == "strategy.name"


def test_card_describes_the_full_model_with_biases_changed(tmp_path):
    from sft_hub.card import build_card

    strategy = make_strategy({"name": "bitfit"})
    run = tmp_path / "run"
    run.mkdir()
    (run / "recipe.yaml").write_text(
        "task: text-classification\nmodel: {name: org/tiny}\nstrategy: {name: bitfit}\n"
        "data: {files: {train: x.csv}}\n", encoding="utf-8")
    (run / "run_info.json").write_text(json.dumps({
        "complete": True, "task": "text-classification", "strategy": "bitfit",
        "parameters": {"total": 1000, "trainable": 50, "trainable_percent": 5.0},
        "strategy_contract": strategy.card_facts()}), encoding="utf-8")
    card = build_card(run, repo_id="acme/tiny-bitfit", files=["model.safetensors", "config.json"])
    assert "changed only its bias terms and the task head" in card
    assert "adapter merged" not in card
    assert "50 of 1,000 parameters trained (5.00%): the bias terms and the task head" in card
    (run / "run_info.json").write_text(json.dumps({"complete": True}), encoding="utf-8")
    old = build_card(run, repo_id="acme/tiny-bitfit", files=["model.safetensors"])
    assert "changed only its bias terms and the task head" in old  # from the registered strategy
