"""Fine-tuning strategies: one module each, registered by ``name`` (``full``, ...)."""
from __future__ import annotations

from ..registry import Registry
from .base import Strategy, StrategySpec

STRATEGIES: Registry[Strategy] = Registry(__name__, "strategy")


def __getattr__(name):
    if name == "STRATEGY_SPECS":  # name -> spec class, for the recipe schema
        return {n: cls.spec_class for n, cls in STRATEGIES.all().items()}
    raise AttributeError(name)


def get_strategy(spec: StrategySpec, task) -> Strategy:
    return STRATEGIES.get(spec.name, field="strategy.name")(spec, task)
