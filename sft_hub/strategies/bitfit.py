"""``bitfit``: train every bias term and the task head; every other weight keeps its pretrained value.

BitFit (Ben Zaken, Ravfogel & Goldberg, ACL 2022) fine-tunes only the additive bias terms of a
pretrained network (attention projections, feed-forward layers, norms), here together with the
new task head. No adapter is involved: the run saves a plain model that ``AutoModelFor<Task>``,
``pipeline`` and timm load as they load any fine-tuned checkpoint. Layers are found as for the
other strategies (:mod:`.layers`), so ``training.layer_decay`` and ``head_learning_rate`` apply.
"""
from __future__ import annotations

from typing import Any, Literal

from ..errors import RecipeError
from . import STRATEGIES
from .base import Strategy, StrategySpec


class BitFitSpec(StrategySpec):
    name: Literal["bitfit"] = "bitfit"


def is_bias(name: str) -> bool:
    """A bias term: a parameter named ``bias`` (``encoder.layer.0.output.dense.bias``...)."""
    return name.rsplit(".", 1)[-1] == "bias"


@STRATEGIES.register
class BitFit(Strategy):
    name = "bitfit"
    spec_class = BitFitSpec
    spec: BitFitSpec
    trains = "the bias terms and the task head"
    weights = {"model": "the full model; fine-tuning changed only its bias terms and the task "
                        "head, every other weight is the base model's"}
    # benchmarks/defaults.py (README "Strategy defaults"): SST-2 and digits (timm: 5e-3 > 2e-2)
    learning_rates = {"transformers": 5e-3, "timm": 5e-3}

    def setup(self, model: Any) -> Any:
        layout = self.layout(model)
        biases = 0
        for name, param in model.named_parameters():
            head = layout.is_head(name)
            param.requires_grad_(head or is_bias(name))
            biases += int(is_bias(name) and not head)
        if not biases:
            raise RecipeError(f"{type(model).__name__} has no bias terms outside its head, so "
                              "bitfit would train the head only", field="strategy.name",
                              hint="use strategy freeze (train_last_n_layers: 0 is head only) or "
                                   "an adapter strategy such as lora")
        return model

    def describe(self, model: Any) -> dict[str, Any]:
        layout = self.layout(model)
        return {"head": layout.head,
                "bias_params": sum(p.numel() for n, p in model.named_parameters()
                                   if is_bias(n) and not layout.is_head(n))}
