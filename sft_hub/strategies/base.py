"""The strategy interface: how a built model is prepared for training and how it is saved.

A strategy module defines a spec (a :class:`StrategySpec` subclass with ``name: Literal[...]``) and a
:class:`Strategy` subclass registered with ``@STRATEGIES.register``. The spec classes feed the
recipe schema's ``strategy:`` tagged union, so module import must stay torch-free.

The training loop calls, in order: :meth:`Strategy.prepare` (returns the model to train),
:meth:`Strategy.callbacks` and :meth:`Strategy.optimizer_param_groups` (for the Trainer), then
:meth:`Strategy.save`. Subclasses override :meth:`Strategy.setup` rather than ``prepare``, so that
the checks every strategy shares (layer-wise learning rates) run once, here.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Optional

from pydantic import Field

from ..errors import RecipeError
from ..recipe.schema import Strict

if TYPE_CHECKING:  # pragma: no cover
    from ..tasks.base import Task
    from .layers import ModelLayout


class StrategySpec(Strict):
    name: str
    layers_module: Optional[str] = Field(
        None, description="dotted path of the model's list of layers (e.g. encoder.layer), only "
        "for architectures whose layers sft-hub cannot find by itself")


class Strategy:
    name: ClassVar[str]
    spec_class: ClassVar[type[StrategySpec]]

    def __init__(self, spec: StrategySpec, task: "Task"):
        self.spec = spec
        self.task = task
        self._layout: Optional["ModelLayout"] = None

    # -- the interface the training loop calls -------------------------------------------------
    def prepare(self, model: Any) -> Any:
        """Freeze, wrap or otherwise set up ``model`` for training; return the model to train."""
        self._layout = None
        extras = self.task.recipe.training_extras
        if extras.layer_decay is not None or extras.head_learning_rate is not None:
            self.layout(model)  # unknown architectures fail now, not when the optimizer is built
        model = self.setup(model)
        if extras.layer_decay is not None:
            layout = self.layout(model)
            if all(layout.is_head(n) for n, _ in self.optimizable_parameters(model)):
                raise RecipeError(
                    f"layer_decay has no effect: strategy {self.name!r} trains no backbone layer",
                    field="training.layer_decay",
                    hint="remove training.layer_decay, or train some layers (e.g. "
                         "strategy.train_last_n_layers)")
        return model

    def callbacks(self) -> list:
        """Trainer callbacks the strategy needs (e.g. gradual unfreezing)."""
        return []

    def optimizer_param_groups(self, model: Any, args: Any) -> Optional[list[dict]]:
        """Optimizer parameter groups, or None for the Trainer's default.

        Groups are built when the recipe sets ``training.layer_decay`` or
        ``training.head_learning_rate``, or when the strategy will unfreeze parameters later
        (they must be in the optimizer from the start).
        """
        from .layers import unwrap
        from .param_groups import build_param_groups

        extras = self.task.recipe.training_extras
        if (extras.layer_decay is None and extras.head_learning_rate is None
                and not self.unfreezes_later):
            return None
        return build_param_groups(
            unwrap(model), self.layout(model), self.optimizable_parameters(model),
            lr=args.learning_rate, weight_decay=args.weight_decay,
            layer_decay=extras.layer_decay, head_lr=extras.head_learning_rate)

    def save(self, model: Any, out_dir: Path) -> None:
        """Write the final model to ``out_dir`` (weights + config; the task saves the processor)."""
        model.save_pretrained(out_dir, safe_serialization=True)

    # -- hooks and helpers for subclasses ----------------------------------------------------------
    def setup(self, model: Any) -> Any:
        """The strategy's own preparation (freeze, wrap...); returns the model to train."""
        return model

    @property
    def unfreezes_later(self) -> bool:
        """True when parameters frozen at the start become trainable during training."""
        return False

    def optimizable_parameters(self, model: Any) -> list[tuple[str, Any]]:
        """(name, parameter) pairs, relative to the unwrapped model, the optimizer must hold:
        the trainable ones (strategies that unfreeze later add those too)."""
        from .layers import unwrap

        return [(n, p) for n, p in unwrap(model).named_parameters() if p.requires_grad]

    def layout(self, model: Any) -> "ModelLayout":
        """Head and layers of ``model`` (cached; valid before and after peft wrapping)."""
        if self._layout is None:
            from .layers import discover_layout

            self._layout = discover_layout(model, self.spec.layers_module)
        return self._layout

    def describe(self, model: Any) -> dict[str, Any]:
        """Facts about the prepared model for ``sft-hub plan`` and run_info."""
        return {}
