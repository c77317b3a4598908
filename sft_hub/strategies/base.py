"""The strategy interface: how a built model is prepared for training and how it is saved.

A strategy module defines a spec (a :class:`StrategySpec` subclass with ``name: Literal[...]``) and a
:class:`Strategy` subclass registered with ``@STRATEGIES.register``. The spec classes feed the
recipe schema's ``strategy:`` tagged union, so module import must stay torch-free.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..recipe.schema import Strict

if TYPE_CHECKING:  # pragma: no cover
    from ..tasks.base import Task


class StrategySpec(Strict):
    name: str


class Strategy:
    name: ClassVar[str]
    spec_class: ClassVar[type[StrategySpec]]

    def __init__(self, spec: StrategySpec, task: "Task"):
        self.spec = spec
        self.task = task

    def prepare(self, model: Any) -> Any:
        """Freeze, wrap or otherwise set up ``model`` for training; return the model to train."""
        return model

    def callbacks(self) -> list:
        """Trainer callbacks the strategy needs (e.g. gradual unfreezing)."""
        return []

    def optimizer_param_groups(self, model: Any, args: Any) -> list[dict] | None:
        """Optimizer parameter groups, or None for the Trainer's default."""
        return None

    def save(self, model: Any, out_dir: Path) -> None:
        """Write the final model to ``out_dir`` (weights + config; the task saves the processor)."""
        model.save_pretrained(out_dir, safe_serialization=True)
