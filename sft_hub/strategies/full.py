"""``full``: every parameter is trained."""
from __future__ import annotations

from typing import Literal

from . import STRATEGIES
from .base import Strategy, StrategySpec


class FullSpec(StrategySpec):
    name: Literal["full"] = "full"


@STRATEGIES.register
class Full(Strategy):
    name = "full"
    spec_class = FullSpec
    trains = "every parameter"
    weights = {"model": "the full fine-tuned model"}
    # benchmarks/defaults.py: all-MiniLM-L6-v2 on SST-2 (2,000 rows, 1 epoch) and
    # efficientnet_lite0 on digits (README "Strategy defaults")
    learning_rates = {"transformers": 1e-4, "timm": 2e-3}
    # follows the task's learning_rate_scale: WNUT17 F1 0.000 at 1e-4, 0.381 at 5e-4, 0.000 at
    # 1e-3 (layer freezing and LoRA do not: README "Strategy defaults")
    task_scaled = True
