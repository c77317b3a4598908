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
