"""``freeze``: train the head and the last N layers; optionally unfreeze more as training goes on.

``train_last_n_layers: 0`` is linear probing (head only); the default, 2, was chosen by measurement
(``benchmarks/defaults.py``: on SST-2 with all-MiniLM-L6-v2 the last 2 layers at 5e-4 reach full
fine-tuning's accuracy, the head alone stays 24 points behind). Layers are counted from the head down
(see :mod:`.layers` for how they are found). What sits after the layers (final norm, pooler)
trains whenever at least one layer does. The embeddings train only once every layer does and
``freeze_embeddings`` is false.

Gradual unfreezing (``unfreeze_schedule``) flips ``requires_grad`` at the start of the scheduled
epochs (epoch = number of epochs completed, so ``epoch: 1`` is the second epoch). Every parameter
the schedule will ever unfreeze is in the optimizer from the start: AdamW skips parameters whose
gradient is None, so they stay untouched while frozen and are updated, with fresh moments, as soon
as they get gradients. The optimizer keeps its state for everything else.
"""
from __future__ import annotations

import os
from typing import Any, Literal, Union

from pydantic import Field, NonNegativeInt, PositiveInt, ValidationInfo, field_validator

from ..errors import RecipeError
from ..recipe.schema import Strict, Switch
from . import STRATEGIES
from .base import ENGINES, EngineLimit, Strategy, StrategySpec

UNFREEZE_DISTRIBUTED = EngineLimit(
    "gradual unfreezing is not supported with several processes: distributed data parallel fixes "
    "the set of trained parameters when it wraps the model", field="strategy.unfreeze_schedule",
    hint="train on one process, or drop unfreeze_schedule")
LayerCount = Union[NonNegativeInt, Literal["all"]]


def _as_number(n: LayerCount) -> float:
    return float("inf") if n == "all" else n


class UnfreezeStep(Strict):
    epoch: PositiveInt = Field(description="epochs completed before this step applies")
    train_last_n_layers: LayerCount


class FreezeSpec(StrategySpec):
    name: Literal["freeze"] = "freeze"
    train_last_n_layers: LayerCount = Field(
        2, description="layers trained next to the head, counted from the top; 0 = head only "
        "(default 2: measured in benchmarks/defaults.py, far ahead of head only on text)")
    freeze_embeddings: Switch = Field(
        True, description="false: the embeddings train too once every layer trains")
    unfreeze_schedule: list[UnfreezeStep] = Field(
        default_factory=list, description="gradual unfreezing: steps {epoch, train_last_n_layers}")

    @field_validator("unfreeze_schedule")
    @classmethod
    def _schedule_in_order(cls, schedule: list[UnfreezeStep], info: ValidationInfo):
        previous_epoch, previous_n = 0, _as_number(info.data.get("train_last_n_layers", 0))
        for i, step in enumerate(schedule):
            if step.epoch <= previous_epoch:
                raise ValueError(f"step {i + 1}: epoch {step.epoch} is not after the "
                                 f"previous step's epoch {previous_epoch}; list steps in "
                                 "increasing epoch order")
            if _as_number(step.train_last_n_layers) <= previous_n:
                start = (f" (training starts with train_last_n_layers "
                         f"{info.data.get('train_last_n_layers', 2)!r}: set it, e.g. 0 to start "
                         "with the head only)") if i == 0 else ""
                raise ValueError(f"step {i + 1}: train_last_n_layers "
                                 f"{step.train_last_n_layers!r} does not unfreeze more layers than "
                                 f"before{start}; each step must train more layers than the "
                                 "previous one")
            previous_epoch, previous_n = step.epoch, _as_number(step.train_last_n_layers)
        return schedule


@STRATEGIES.register
class Freeze(Strategy):
    name = "freeze"
    spec_class = FreezeSpec
    spec: FreezeSpec
    trains = "the task head and the last layers (strategy.train_last_n_layers)"
    weights = {"model": "the full fine-tuned model"}
    # benchmarks/defaults.py (README "Strategy defaults"): with layers training (the rate every
    # trained layer gets) and head only (a linear probe needs a far larger rate)
    learning_rates = {"transformers": 5e-4, "timm": 2e-3}  # the default: the last 2 layers
    head_only_learning_rates = {"transformers": 1e-2, "timm": 1e-2}

    @classmethod
    def default_learning_rate(cls, spec: FreezeSpec, family: str) -> float:
        trains_layers = spec.train_last_n_layers != 0 or bool(spec.unfreeze_schedule)
        rates = cls.learning_rates if trains_layers else cls.head_only_learning_rates
        return rates[family] if family in rates else super().default_learning_rate(spec, family)

    @classmethod
    def default_settings(cls, spec: FreezeSpec, family: str) -> dict[str, Any]:
        return {"train_last_n_layers": spec.train_last_n_layers}

    @classmethod
    def engine_limits(cls, spec: FreezeSpec) -> dict[str, EngineLimit]:
        limits = super().engine_limits(spec)
        if spec.unfreeze_schedule:
            limits.update({engine: UNFREEZE_DISTRIBUTED for engine in ENGINES})
        return limits

    def setup(self, model: Any) -> Any:
        self.layout(model)
        self._check_layer_count(self.spec.train_last_n_layers, "strategy.train_last_n_layers")
        for i, step in enumerate(self.spec.unfreeze_schedule):
            self._check_layer_count(step.train_last_n_layers,
                                    f"strategy.unfreeze_schedule.{i}.train_last_n_layers")
        final = self.layers_at(float("inf"))
        if not self.spec.freeze_embeddings and final not in ("all", self._layout.num_layers):
            raise RecipeError("freeze_embeddings: false has no effect: the embeddings train only "
                              f"once every layer does, and at most {final} of "
                              f"{self._layout.num_layers} layers train",
                              field="strategy.freeze_embeddings",
                              hint="set train_last_n_layers (or a last unfreeze_schedule step) to "
                                   "all, or remove freeze_embeddings")
        self._check_schedule_fits_training()
        self.check_processes(int(os.environ.get("WORLD_SIZE", "1")))
        self._model = model
        self._applied_layers = None
        self.apply_epoch(0.0)
        return model

    def check_processes(self, world_size: int) -> None:
        """Gradual unfreezing needs one process (also asked by the callback at train start)."""
        if self.spec.unfreeze_schedule and world_size > 1:
            raise UNFREEZE_DISTRIBUTED.error()

    # -- schedule ----------------------------------------------------------------------------
    def layers_at(self, epoch: float) -> LayerCount:
        """``train_last_n_layers`` in force once ``epoch`` epochs are complete."""
        n = self.spec.train_last_n_layers
        for step in self.spec.unfreeze_schedule:
            if step.epoch <= epoch + 1e-6:
                n = step.train_last_n_layers
        return n

    def apply_epoch(self, epoch: float) -> bool:
        """Set ``requires_grad`` for ``epoch``; True if the trainable set changed."""
        n = self.layers_at(epoch)
        if n == self._applied_layers:
            return False
        trainable = self._trainable_groups(n)
        layout = self.layout(self._model)
        for name, param in self._model.named_parameters():
            param.requires_grad_(layout.group_of(name) in trainable)
        self._applied_layers = n
        return True

    def _trainable_groups(self, n: LayerCount) -> set[int]:
        layout = self.layout(self._model)
        layers = layout.num_layers if n == "all" else n
        embeddings = layers == layout.num_layers and not self.spec.freeze_embeddings
        return layout.trainable_groups(layers, embeddings)

    @property
    def unfreezes_later(self) -> bool:
        return bool(self.spec.unfreeze_schedule)

    def optimizable_parameters(self, model: Any) -> list[tuple[str, Any]]:
        final = self._trainable_groups(self.layers_at(float("inf")))
        layout = self.layout(model)
        return [(n, p) for n, p in model.named_parameters() if layout.group_of(n) in final]

    def callbacks(self) -> list:
        if not self.spec.unfreeze_schedule:
            return []
        from ._unfreeze import GradualUnfreezing

        return [GradualUnfreezing(self)]

    def describe(self, model: Any) -> dict[str, Any]:
        layout = self.layout(model)
        steps = [{"epoch": 0, "train_last_n_layers": self.spec.train_last_n_layers}]
        steps += [s.model_dump() for s in self.spec.unfreeze_schedule]
        for step in steps:
            groups = self._trainable_groups(step["train_last_n_layers"])
            step["trainable_params"] = sum(p.numel() for n, p in model.named_parameters()
                                           if layout.group_of(n) in groups)
        return {"layers": layout.num_layers, "layers_found_in": layout.source,
                "head": layout.head, "schedule": steps if len(steps) > 1 else None}

    # -- checks ------------------------------------------------------------------------------
    def _check_layer_count(self, n: LayerCount, field: str) -> None:
        total = self._layout.num_layers
        if n != "all" and n > total:
            raise RecipeError(f"{n} layers asked, but the model has {total} "
                              f"(found in {self._layout.source})", field=field,
                              hint=f"use a number from 0 to {total}, or all")

    def _check_schedule_fits_training(self) -> None:
        settings = self.task.recipe.settings
        if not self.spec.unfreeze_schedule or settings.max_steps > 0:
            return
        epochs = settings.num_train_epochs
        late = [s.epoch for s in self.spec.unfreeze_schedule if s.epoch >= epochs]
        if late:
            raise RecipeError(f"unfreeze_schedule epoch {late[0]} never comes: training runs "
                              f"{epochs:g} epochs", field="strategy.unfreeze_schedule",
                              hint="use epochs below training.num_train_epochs, or train longer")
