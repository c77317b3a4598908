"""Training controls reached from the recipe: early stopping, gradient accumulation, LR schedule and
warmup, mixed precision, activation checkpointing; and the checks ``sft-hub validate`` makes."""
from __future__ import annotations

import json

import pytest

from sft_hub import distributed
from sft_hub.errors import RecipeError
from sft_hub.training import train
from sft_hub.training_controls import check_model_supports
from sft_hub.validation import validate

from .training_probes import no_dropout_copy


def _log(run, key: str) -> list:
    state = json.loads((run / "trainer_state.json").read_text())
    return [entry[key] for entry in state["log_history"] if key in entry]


def test_early_stopping_stops_when_the_metric_stops_improving(text_recipe, write_recipe):
    # learning rate 0: accuracy never improves, so patience 1 stops after the second evaluation.
    # bf16 where this CPU has native bf16: mixed precision from the recipe reaches the run.
    bf16 = distributed._cpu_supports("bf16")
    text_recipe["data"]["max_train_samples"] = 16  # 2 steps per epoch
    text_recipe["training"].update(num_train_epochs=10, learning_rate=0.0,
                                   early_stopping_patience=1, early_stopping_threshold=0.01,
                                   bf16=bf16)
    result = train(write_recipe(text_recipe))
    run = result.run_dir
    assert len(_log(run, "eval_accuracy")) == 2
    info = json.loads((run / "run_info.json").read_text())
    assert info["global_step"] == 4  # 2 epochs of 10
    assert info["topology"]["mixed_precision"] == ("bf16" if bf16 else "no")


def test_gradient_accumulation_matches_the_larger_batch_with_warmup_and_schedule(
        text_recipe, write_recipe, tiny_bert_dir, tmp_path):
    """Batch 4 x 2 accumulation steps trains the same weights as batch 8 (dropout off; the same
    examples per step; float32 rounding only, see test_distributed for the tolerance)."""
    from safetensors.torch import load_file

    text_recipe["model"]["path"] = str(no_dropout_copy(tiny_bert_dir, tmp_path / "model"))
    text_recipe["data"]["max_train_samples"] = 48  # 6 optimizer steps per epoch at batch 8
    text_recipe["training"].update(num_train_epochs=1, logging_steps=1, lr_scheduler_type="cosine",
                                   warmup_steps=0.5, load_best_model_at_end=False)
    recipe = write_recipe(text_recipe)
    big = train(recipe, [f"output.dir={tmp_path / 'big'}"]).run_dir
    accumulated = train(recipe, [f"output.dir={tmp_path / 'acc'}", "training.gradient_accumulation_steps=2",
                                 "training.per_device_train_batch_size=4"]).run_dir

    w_big, w_acc = load_file(big / "model.safetensors"), load_file(accumulated / "model.safetensors")
    assert max((w_big[k] - w_acc[k]).abs().max().item() for k in w_big) < 1e-4
    assert _log(big, "loss") == pytest.approx(_log(accumulated, "loss"), abs=1e-5)
    info = json.loads((accumulated / "run_info.json").read_text())
    assert info["global_step"] == 6
    assert (info["topology"]["gradient_accumulation_steps"],
            info["topology"]["global_train_batch_size"]) == (2, 8)

    # warmup_steps 0.5 = half of the 6 steps: the rate climbs from 0 over 3 steps to
    # learning_rate, then decays along the cosine
    rates = _log(accumulated, "learning_rate")
    assert rates[0] == 0.0 and rates.index(max(rates)) == 3
    assert max(rates) == pytest.approx(text_recipe["training"]["learning_rate"])
    assert rates[:4] == sorted(rates[:4]) and rates[3:] == sorted(rates[3:], reverse=True)
    assert rates[-1] < rates[3] / 2


@pytest.mark.parametrize("training, field, message", [
    ({"early_stopping_patience": 2, "eval_strategy": "no"}, "training.early_stopping_patience",
     "needs evaluation"),
    ({"early_stopping_threshold": 0.1}, "training.early_stopping_threshold",
     "no effect without early_stopping_patience"),
    ({"early_stopping_patience": 0}, "training.early_stopping_patience", "greater than or equal"),
    ({"warmup_ratio": 0.1}, "training.warmup_ratio", "write warmup_steps: 0.1"),
    ({"warmup_steps": 2.5}, "training.warmup_steps", "neither a fraction"),
    ({"lr_scheduler_type": "cosin"}, "training.lr_scheduler_type", "unknown value 'cosin'; did you mean 'cosine'?"),
    ({"gradient_accumulation_steps": 0}, "training.gradient_accumulation_steps", "1 or more"),
    ({"bf16": True, "fp16": True}, "training.bf16", "choose one"),
])
def test_validate_rejects_controls_that_cannot_work(text_recipe, write_recipe, training, field,
                                                     message):
    text_recipe["training"] = training
    with pytest.raises(RecipeError, match=message) as e:
        validate(write_recipe(text_recipe))
    assert e.value.field == field


def test_fp16_on_a_cpu_without_fp16_kernels_is_refused_before_training(
        text_recipe, write_recipe, tmp_path, monkeypatch):
    monkeypatch.setattr(distributed, "_cpu_supports", lambda precision: False)
    text_recipe["training"]["fp16"] = True
    with pytest.raises(RecipeError, match="fp16 mixed precision is not supported on this CPU") as e:
        train(write_recipe(text_recipe))
    assert e.value.field == "training.fp16"
    assert not (tmp_path / "run").exists()  # nothing written


def test_activation_checkpointing_needs_a_model_that_supports_it():
    import torch

    class Plain(torch.nn.Module):
        supports_gradient_checkpointing = False

    with pytest.raises(RecipeError, match="does not support activation checkpointing") as e:
        check_model_supports(Plain(), {"gradient_checkpointing": True}, "my/model")
    assert e.value.field == "training.gradient_checkpointing"
    check_model_supports(Plain(), {"gradient_checkpointing": False})
