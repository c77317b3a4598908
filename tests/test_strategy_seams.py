"""Seams a new peft method relies on: shared config keys it does not take are left out, and
parameters outside the base model (a prompt encoder) stay in the optimizer under layer_decay."""
from __future__ import annotations

import types

from .strategies_helpers import make_strategy, tiny_bert


def test_prefix_tuning_config_and_prompt_encoder_in_layer_decay_groups():
    from peft import LoraConfig, PrefixTuningConfig, get_peft_model

    from sft_hub.strategies.layers import discover_layout

    strategy = make_strategy({"name": "lora"}, {"layer_decay": 0.5})
    layout = discover_layout(tiny_bert())
    assert "exclude_modules" in strategy.common_config(layout, LoraConfig)
    shared = strategy.common_config(layout, PrefixTuningConfig)  # takes no exclude_modules
    assert shared == {"task_type": "SEQ_CLS", "modules_to_save": ["classifier"]}
    model = get_peft_model(tiny_bert(), PrefixTuningConfig(num_virtual_tokens=4, **shared))

    names = [n for n, _ in strategy.optimizable_parameters(model)]
    assert "prompt_encoder.default.embedding.weight" in names
    groups = strategy.optimizer_param_groups(model, types.SimpleNamespace(
        learning_rate=1e-2, weight_decay=0.01))
    held = {id(p) for g in groups for p in g["params"]}
    assert {id(p) for p in model.parameters() if p.requires_grad} == held
