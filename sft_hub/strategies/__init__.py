"""Fine-tuning strategies: one module each, registered by ``name`` (``full``, ...).

Registration checks the strategy's declared contract (:func:`.base.check_strategy_class`); other
modules ask it with :func:`strategy_contract` (see :mod:`.base`).
"""
from __future__ import annotations

from typing import Union

from ..registry import Registry
from .base import Strategy, StrategyContract, StrategySpec, check_strategy_class

STRATEGIES: Registry[Strategy] = Registry(__name__, "strategy", check=check_strategy_class)


def get_strategy(spec: StrategySpec, task) -> Strategy:
    return STRATEGIES.get(spec.name, field="strategy.name")(spec, task)


def strategy_contract(strategy: Union[Strategy, StrategySpec]) -> StrategyContract:
    """The contract of a built strategy or of a recipe's ``strategy:`` section."""
    STRATEGIES.all()  # every spec class knows its strategy once the registry is loaded
    return strategy.contract()
