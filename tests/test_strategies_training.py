"""Strategies under training: what changes, what is saved, what reloads, gradual unfreezing."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from .strategies_helpers import (image_batch, logits, make_strategy, snapshot, text_batch,
                                tiny_bert, tiny_timm_wrapper, train_steps, write_tokenizer)

ADAPTERS = {
    "lora": {"name": "lora", "r": 4},
    "dora": {"name": "lora", "r": 4, "use_dora": True},
    "rslora": {"name": "lora", "r": 4, "use_rslora": True},
    "ia3": {"name": "ia3"},
}


@pytest.mark.parametrize("strategy", [
    *ADAPTERS.values(), {"name": "freeze", "train_last_n_layers": 1}, {"name": "full"}],
    ids=[*ADAPTERS, "freeze-1", "full"])
def test_frozen_parameters_unchanged_trainable_ones_changed(strategy):
    model = make_strategy(strategy).prepare(tiny_bert())
    before = snapshot(model)
    train_steps(model, make_strategy(strategy), text_batch())
    frozen = changed = 0
    for name, param in model.named_parameters():
        if param.requires_grad:
            assert not torch.equal(param, before[name]), f"{name} did not train"
            changed += 1
        else:
            assert torch.equal(param, before[name]), f"frozen {name} changed"
            frozen += 1
    assert changed and (frozen or strategy["name"] == "full")


@pytest.fixture
def base_dir(tmp_path):
    """The tiny base model saved locally: stands in for the Hub repo named by model.name."""
    path = tmp_path / "base"
    tiny_bert().save_pretrained(path)
    write_tokenizer(path)
    return path


def _trained_adapter(strategy_spec, base_dir, save):
    from transformers import AutoModelForSequenceClassification

    strategy = make_strategy({**strategy_spec, "save": save}, model_name=str(base_dir))
    model = strategy.prepare(AutoModelForSequenceClassification.from_pretrained(base_dir))
    train_steps(model, strategy, text_batch())
    return strategy, model


@pytest.mark.parametrize("kind", list(ADAPTERS))
def test_adapter_reload_and_merged_model_reproduce_logits(kind, base_dir, tmp_path):
    from peft import AutoPeftModelForSequenceClassification
    from transformers import AutoModelForSequenceClassification, pipeline

    strategy, model = _trained_adapter(ADAPTERS[kind], base_dir, "both")
    batch = text_batch(seed=7)
    expected = logits(model, batch)
    out = tmp_path / "run"
    strategy.save(model, out)

    assert not (out / "adapter_config.json").exists()  # root = merged model, adapter/ = adapter
    with safe_open(str(out / "adapter" / "adapter_model.safetensors"), "pt") as f:
        head = [k for k in f.keys() if ".classifier." in k]
    assert head, "the head is not saved with the adapter"

    reloaded = AutoPeftModelForSequenceClassification.from_pretrained(out / "adapter").eval()
    torch.testing.assert_close(logits(reloaded, batch), expected, atol=1e-5, rtol=0)
    merged = AutoModelForSequenceClassification.from_pretrained(out).eval()
    torch.testing.assert_close(logits(merged, batch), expected, atol=1e-4, rtol=0)

    if kind == "lora":  # a merged model is a plain model: pipeline() loads it
        write_tokenizer(out)
        predictions = pipeline("text-classification", model=str(out), device="cpu")("good movie")
        assert predictions[0]["label"] in {"LABEL_0", "LABEL_1", "LABEL_2"}


def test_adapter_records_hub_id_not_local_path(base_dir, tmp_path):
    from transformers import AutoModelForSequenceClassification

    strategy = make_strategy({"name": "lora", "r": 4}, model_name="org/tiny-bert",
                             model_path=str(base_dir))
    model = strategy.prepare(AutoModelForSequenceClassification.from_pretrained(base_dir))
    strategy.save(model, tmp_path / "run")
    config = json.loads((tmp_path / "run" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "org/tiny-bert"
    assert config["task_type"] == "SEQ_CLS"
    assert not (tmp_path / "run" / "config.json").exists()  # save: adapter writes no full model


def test_merged_only_writes_a_plain_model(base_dir, tmp_path):
    strategy, model = _trained_adapter(ADAPTERS["lora"], base_dir, "merged")
    strategy.save(model, tmp_path / "run")
    files = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"config.json", "model.safetensors"} <= files
    assert not files & {"adapter_config.json", "adapter"}
    with safe_open(str(tmp_path / "run" / "model.safetensors"), "pt") as f:
        assert not any("lora" in k for k in f.keys())


@pytest.mark.parametrize("kind", ["lora", "ia3"])
def test_timm_adapter_roundtrip(kind, tmp_path):
    """Image classification through transformers' timm wrapper: no peft task type, generic class."""
    from peft import AutoPeftModel

    base = tmp_path / "base"
    tiny_timm_wrapper().save_pretrained(base)
    from transformers import AutoModelForImageClassification

    strategy = make_strategy({**ADAPTERS[kind], "save": "both"}, model_name=str(base),
                             peft_task_type=None)
    model = strategy.prepare(AutoModelForImageClassification.from_pretrained(base))
    train_steps(model, strategy, image_batch())
    batch = image_batch(seed=5)
    expected = logits(model, batch)
    strategy.save(model, tmp_path / "run")
    reloaded = AutoPeftModel.from_pretrained(tmp_path / "run" / "adapter").eval()
    torch.testing.assert_close(logits(reloaded, batch), expected, atol=1e-5, rtol=0)
    merged = AutoModelForImageClassification.from_pretrained(tmp_path / "run").eval()
    torch.testing.assert_close(logits(merged, batch), expected, atol=1e-4, rtol=0)


def test_gradual_unfreezing_with_trainer(tmp_path):
    """Layers become trainable at the scheduled epochs and the optimizer then updates them."""
    from transformers import Trainer, TrainerCallback, TrainingArguments

    strategy = make_strategy({"name": "freeze", "train_last_n_layers": 1, "unfreeze_schedule": [
        {"epoch": 1, "train_last_n_layers": 2}, {"epoch": 2, "train_last_n_layers": "all"}]},
        {"num_train_epochs": 3})
    model = strategy.prepare(tiny_bert(layers=3))
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, num_train_epochs=3,
                             per_device_train_batch_size=4, learning_rate=1e-2, weight_decay=0.0,
                             save_strategy="no", report_to="none", disable_tqdm=True,
                             logging_strategy="no")
    optimizer = torch.optim.AdamW(strategy.optimizer_param_groups(model, args), lr=1e-2)
    batch = text_batch(n=8)
    rows = [{k: v[i] for k, v in batch.items()} for i in range(8)]

    states = [snapshot(model)]
    flags = []

    class Record(TrainerCallback):
        def on_epoch_end(self, args, state, control, **kwargs):
            states.append(snapshot(model))
            flags.append({n: p.requires_grad for n, p in model.named_parameters()})

    Trainer(model=model, args=args, train_dataset=rows, optimizers=(optimizer, None),
            callbacks=[*strategy.callbacks(), Record()]).train()

    def moved(prefix, a, b):
        return [n for n in states[a] if n.startswith(prefix) and not torch.equal(states[a][n],
                                                                                   states[b][n])]

    layer = "bert.encoder.layer.{}.".format
    assert moved(layer(2), 0, 1) and moved("classifier", 0, 1)  # epoch 0: top layer + head
    assert not moved(layer(1), 0, 1) and not moved(layer(0), 0, 1)
    assert flags[0][layer(1) + "attention.self.query.weight"] is False
    assert flags[1][layer(1) + "attention.self.query.weight"] is True  # unfrozen at epoch 1
    assert moved(layer(1), 1, 2) and not moved(layer(0), 0, 2)
    assert flags[2][layer(0) + "attention.self.query.weight"] is True  # all layers at epoch 2
    assert moved(layer(0), 2, 3)
    assert not moved("bert.embeddings", 0, 3)  # freeze_embeddings (default) holds throughout
