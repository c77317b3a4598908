"""The strategy interface and its declared contract.

A strategy module defines a spec (a :class:`StrategySpec` subclass with ``name: Literal[...]``) and a
:class:`Strategy` subclass registered with ``@STRATEGIES.register``. The spec classes feed the
recipe schema's ``strategy:`` tagged union, so module import must stay torch-free.

**The contract.** Other modules (validation, the Hub pusher, the distributed checks, ``sft-hub
plan``, the model card) never match a strategy's name or probe its spec's fields: they ask the
contract, :meth:`Strategy.contract_for` (``spec.contract()`` on a recipe's strategy section,
``strategy.contract()`` on a built strategy), a :class:`StrategyContract` of plain data:

- ``save_forms``: the forms the strategy can be configured to save (``model``: a plain model it
  trained itself; ``adapter`` / ``merged`` / ``both``: a peft adapter, the adapter merged into the
  base model, or both), and ``saves``: the one the spec chose (``Strategy.spec_saving`` sets
  another);
- ``push_forms``: the ``hub.push`` values a run of this spec can satisfy (derived from ``saves``);
- ``merges_on_save``: saving needs the whole model in one process (merging an adapter);
- ``engines``: the multi-process engines it trains under (``ddp``, ``fsdp``, ``deepspeed``), and
  for each one it does not, why, which field to change and how (``unsupported_engines``);
- ``backends``: the model backends it can wrap (``transformers``, ``timm``);
- ``trains``: what fine-tuning changes, in words, and ``weights``: how the model card describes
  each layout a push of this run can have (``model``, ``adapter``, ``both``).

Class attributes declare the pieces (``save_forms``, ``backends``, ``trains``, ``weights``);
:func:`check_strategy_class` runs at registration and fails the import of a strategy module that
lacks one (as peft's ``register_peft_method`` does). :meth:`Strategy.card_facts` is the contract as
JSON, written into ``run_info.json`` (``strategy_contract``) so that the card is built from the run
directory alone.

**Defaults.** A strategy also declares what a recipe gets where it says nothing:
:meth:`Strategy.defaults_for` (``spec.defaults(family)``) returns :class:`StrategyDefaults`, the
default ``training.learning_rate`` for a model family (the recipe's ``model.backend``:
``transformers`` or ``timm``) and task, and the spec's own defaults that shape what trains
(targets, rank...). A task moves the rate through its ``learning_rate_scale`` (NER wants 5x the
text rate), for the strategies that declare ``task_scaled`` (where that was measured).
Each strategy's rates are a class attribute, ``learning_rates`` (one per backend it supports,
checked at registration), chosen from the measurement in ``benchmarks/defaults.py``; the training
loop applies the rate only when the recipe sets none, and records that it did
(``run_info.json``: ``defaults_applied``).

The run-time side of the contract is the interface the training loop calls, in order:
:meth:`Strategy.prepare` (returns the model to train), :meth:`Strategy.callbacks` and
:meth:`Strategy.optimizer_param_groups` (for the Trainer), then :meth:`Strategy.save`.
:meth:`Strategy.optimizable_parameters` is the parameter set the optimizer holds, including
parameters that live outside the base model (a peft prompt encoder). Subclasses override
:meth:`Strategy.setup` rather than ``prepare``, so that the checks every strategy shares
(layer-wise learning rates) run once, here.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Optional

from pydantic import Field

from ..errors import RecipeError
from ..recipe.schema import OptionalModuleName, Strict
from .layers import named_parameters
from .param_groups import build_param_groups

if TYPE_CHECKING:  # pragma: no cover
    from ..tasks.base import Task
    from .layers import ModelLayout

SAVE_FORMS = ("model", "adapter", "merged", "both")
ENGINES = ("ddp", "fsdp", "deepspeed")
BACKENDS = ("transformers", "timm")
# Layouts of a pushed repository (what the card describes): a plain model at the root, an adapter
# at the root, or a merged model at the root with the adapter in adapter/.
CARD_LAYOUTS = ("model", "adapter", "both")
# hub.push values a run can satisfy, by what it saved. A plain model is pushed as ``model`` or,
# being a plain transformers/timm model like a merged one, as ``merged``.
PUSHABLE = {"model": ("model", "merged"), "adapter": ("model", "adapter"),
            "merged": ("model", "merged"), "both": ("model", "adapter", "merged", "both")}
# Card layouts a push can produce from what was saved.
LAYOUTS_OF = {"model": ("model",), "adapter": ("adapter",), "merged": ("model",),
              "both": ("model", "adapter", "both")}


@dataclass(frozen=True)
class EngineLimit:
    """Why a strategy (as its spec is set) cannot train under an engine, and the fix."""

    reason: str
    field: str
    hint: str

    def error(self) -> RecipeError:
        return RecipeError(self.reason, field=self.field, hint=self.hint)


@dataclass(frozen=True)
class StrategyContract:
    """What a strategy, with its spec, declares about itself (see the module docstring)."""

    name: str
    saves: str
    save_forms: tuple[str, ...]
    push_forms: tuple[str, ...]
    merges_on_save: bool
    engines: tuple[str, ...]
    unsupported_engines: dict[str, EngineLimit] = field(default_factory=dict)
    backends: tuple[str, ...] = BACKENDS
    trains: str = ""
    weights: dict[str, str] = field(default_factory=dict)

    def check_engine(self, engine: Optional[str]) -> None:
        """RecipeError when the strategy cannot train under ``engine`` (None: one process)."""
        if engine in self.unsupported_engines:
            raise self.unsupported_engines[engine].error()

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types (lists, not tuples): what ``run_info.json`` reads back."""
        return json.loads(json.dumps(asdict(self)))


@dataclass(frozen=True)
class StrategyDefaults:
    """What a strategy, with its spec, uses where the recipe says nothing (see the module
    docstring): the default learning rate for the model family, where that figure comes from, and
    the spec's defaults that shape what trains (for ``sft-hub plan``)."""

    strategy: str
    family: str
    learning_rate: float
    measured: str
    settings: dict[str, Any] = field(default_factory=dict)
    task: Optional[str] = None       # the task whose learning_rate_scale was applied, if any
    task_scale: float = 1.0

    @property
    def source(self) -> str:
        if self.task_scale != 1.0:
            return f"strategy {self.strategy} x{self.task_scale:g} for {self.task}"
        return f"strategy {self.strategy}"

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self), default=str))


MEASURED = "benchmarks/defaults.py"


class StrategySpec(Strict):
    name: str
    layers_module: OptionalModuleName = Field(
        None, description="dotted path of the model's list of layers (e.g. encoder.layer), only "
        "for architectures whose layers sft-hub cannot find by itself")
    # Set at registration: the strategy this spec configures (Ludwig-style: ask the config object).
    strategy_class: ClassVar[Optional[type["Strategy"]]] = None

    def contract(self) -> StrategyContract:
        """The contract of the strategy this spec configures (no model, no task needed)."""
        if self.strategy_class is None:
            raise TypeError(f"{type(self).__name__} belongs to no registered strategy")
        return self.strategy_class.contract_for(self)

    def card_facts(self) -> dict[str, Any]:
        """The contract as JSON: what ``run_info.json`` records under ``strategy_contract``."""
        return self.contract().to_dict()

    def defaults(self, family: str, task: Optional[type["Task"]] = None) -> StrategyDefaults:
        """The defaults of the strategy this spec configures for models of ``family`` (the
        recipe's ``model.backend``) on ``task`` (a task class); no model, no torch needed."""
        if self.strategy_class is None:
            raise TypeError(f"{type(self).__name__} belongs to no registered strategy")
        return self.strategy_class.defaults_for(self, family, task)


class Strategy:
    name: ClassVar[str]
    spec_class: ClassVar[type[StrategySpec]]
    # -- the declared contract (checked at registration by check_strategy_class) -----------------
    save_forms: ClassVar[tuple[str, ...]] = ("model",)  # forms it can be configured to save
    backends: ClassVar[tuple[str, ...]] = BACKENDS      # model backends it can wrap
    trains: ClassVar[str]                               # what fine-tuning changes, in words
    weights: ClassVar[dict[str, str]]                   # card text per layout (CARD_LAYOUTS)
    # default training.learning_rate per model family (backend), measured (benchmarks/defaults.py)
    learning_rates: ClassVar[dict[str, float]]
    measured: ClassVar[str] = MEASURED                  # where the learning rates come from
    # whether the default rate follows the task's learning_rate_scale (True only where that was
    # measured to help: benchmarks/defaults.py)
    task_scaled: ClassVar[bool] = False

    @classmethod
    def saved_form(cls, spec: StrategySpec) -> str:
        """The form ``spec`` chose among :attr:`save_forms` (strategies with one form: that one)."""
        if len(cls.save_forms) != 1:
            raise NotImplementedError(f"{cls.__qualname__} saves one of {cls.save_forms}: "
                                      "override saved_form to say which one the spec chose")
        return cls.save_forms[0]

    @classmethod
    def spec_saving(cls, spec: StrategySpec, form: str) -> StrategySpec:
        """``spec`` set to save ``form`` (one of :attr:`save_forms`): how a caller asks a
        strategy for another of its forms without knowing its spec's fields."""
        if form not in cls.save_forms:
            raise ValueError(f"strategy {cls.name!r} saves {', '.join(cls.save_forms)}, not {form}")
        if form != cls.saved_form(spec):
            raise NotImplementedError(f"{cls.__qualname__} saves several forms: override "
                                      "spec_saving to set the one asked for")
        return spec

    @classmethod
    def engine_limits(cls, spec: StrategySpec) -> dict[str, EngineLimit]:
        """Engines ``spec`` cannot train under, with the reason. Merging an adapter at save time
        needs the whole model in one process, which FSDP and DeepSpeed never hold."""
        saves = cls.saved_form(spec)
        if saves not in ("merged", "both"):
            return {}
        limit = EngineLimit(
            f"strategy.save: {saves} merges the adapter into the model, which needs the whole "
            "model in one process; FSDP and DeepSpeed keep it in pieces", field="strategy.save",
            hint="use save: adapter with FSDP / DeepSpeed and merge afterwards, or train with DDP")
        return {"fsdp": limit, "deepspeed": limit}

    @classmethod
    def contract_for(cls, spec: StrategySpec) -> StrategyContract:
        saves = cls.saved_form(spec)
        limits = cls.engine_limits(spec)
        layouts = {layout for form in cls.save_forms for layout in LAYOUTS_OF[form]}
        return StrategyContract(
            name=cls.name, saves=saves, save_forms=tuple(cls.save_forms),
            push_forms=PUSHABLE[saves], merges_on_save=saves in ("merged", "both"),
            engines=tuple(e for e in ENGINES if e not in limits), unsupported_engines=limits,
            backends=tuple(cls.backends), trains=cls.trains,
            weights={k: v for k, v in cls.weights.items() if k in layouts})

    def contract(self) -> StrategyContract:
        return self.contract_for(self.spec)

    @classmethod
    def default_learning_rate(cls, spec: StrategySpec, family: str) -> float:
        """The learning rate a recipe of ``spec`` gets when it sets none (strategies whose best
        rate depends on the spec, e.g. how much of the model trains, override this)."""
        if family not in cls.learning_rates:
            raise RecipeError(f"strategy {cls.name!r} has no default learning rate for "
                              f"{family} models", field="training.learning_rate",
                              hint="set training.learning_rate")
        return cls.learning_rates[family]

    @classmethod
    def default_settings(cls, spec: StrategySpec, family: str) -> dict[str, Any]:
        """The spec's defaults that shape what trains, as ``sft-hub plan`` shows them (targets,
        rank...): values, or words where the value is decided with the model in hand."""
        return {}

    @classmethod
    def defaults_for(cls, spec: StrategySpec, family: str,
                     task: Optional[type["Task"]] = None) -> StrategyDefaults:
        scale = task.learning_rate_scale if task is not None and cls.task_scaled else 1.0
        rate = float(f"{cls.default_learning_rate(spec, family) * scale:.10g}")  # 5e-4, not 5.0000001e-4
        return StrategyDefaults(strategy=cls.name, family=family, learning_rate=rate,
                                measured=cls.measured, settings=cls.default_settings(spec, family),
                                task=task.name if scale != 1.0 else None, task_scale=scale)

    def defaults(self) -> StrategyDefaults:
        return self.defaults_for(self.spec, self.task.recipe.model.backend, type(self.task))

    def card_facts(self) -> dict[str, Any]:
        """The contract as JSON, for ``run_info.json`` (``strategy_contract``): what the model
        card and later commands need to know about the strategy without importing it."""
        return self.spec.card_facts()

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
        extras = self.task.recipe.training_extras
        if (extras.layer_decay is None and extras.head_learning_rate is None
                and not self.unfreezes_later):
            return None
        return build_param_groups(
            model, self.layout(model), self.optimizable_parameters(model),
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
        """(name, parameter) pairs the optimizer must hold: the trainable ones (strategies that
        unfreeze later add those too). Names are relative to the unwrapped model; parameters that
        live outside it (a peft prompt encoder) keep their name in the wrapper, so none is lost."""
        return [(n, p) for n, p in named_parameters(model) if p.requires_grad]

    def layout(self, model: Any) -> "ModelLayout":
        """Head and layers of ``model`` (cached; valid before and after peft wrapping)."""
        if self._layout is None:
            from .layers import discover_layout

            self._layout = discover_layout(model, self.spec.layers_module)
        return self._layout

    def describe(self, model: Any) -> dict[str, Any]:
        """Facts about the prepared model for ``sft-hub plan`` and run_info."""
        return {}


def check_strategy_class(cls: type) -> None:
    """Fail loudly, at registration, when a strategy lacks a declared piece of its contract."""
    where = f"strategy {getattr(cls, 'name', cls.__qualname__)!r} ({cls.__module__}.{cls.__qualname__})"

    def fail(problem: str) -> None:
        raise TypeError(f"{where}: {problem}")

    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        fail("is not a subclass of sft_hub.strategies.base.Strategy")
    spec = getattr(cls, "spec_class", None)
    if not (isinstance(spec, type) and issubclass(spec, StrategySpec)):
        fail("spec_class must be a StrategySpec subclass")
    if spec.model_fields["name"].default != cls.name:
        fail(f"spec_class {spec.__name__}.name must default to {cls.name!r} "
             f"(name: Literal[{cls.name!r}] = {cls.name!r})")
    forms = tuple(cls.save_forms)
    if not forms or not set(forms) <= set(SAVE_FORMS):
        fail(f"save_forms {forms!r} must be a non-empty subset of {SAVE_FORMS}")
    if not cls.backends or not set(cls.backends) <= set(BACKENDS):
        fail(f"backends {tuple(cls.backends)!r} must be a non-empty subset of {BACKENDS}")
    trains = getattr(cls, "trains", None)
    if not isinstance(trains, str) or not trains.strip():
        fail("declares no `trains` (what fine-tuning changes, in words, for the model card)")
    weights = getattr(cls, "weights", None)
    layouts = {layout for form in forms for layout in LAYOUTS_OF[form]}
    missing = sorted(layouts - set(weights or {}))
    if not isinstance(weights, dict) or missing:
        fail(f"`weights` must describe every layout its saved forms can be pushed as "
             f"(missing: {', '.join(missing) or 'weights'})")
    rates = getattr(cls, "learning_rates", None)
    if not isinstance(rates, dict) or set(cls.backends) - set(rates) or not all(
            isinstance(v, float) and v > 0 for v in rates.values()):
        fail(f"`learning_rates` must give a positive default learning rate (a float) for every "
             f"backend it supports ({', '.join(cls.backends)}), measured (benchmarks/defaults.py)")
    for hook in ("saved_form", "spec_saving"):
        if len(forms) > 1 and getattr(cls, hook).__func__ is getattr(Strategy, hook).__func__:
            fail(f"saves one of {forms}: override {hook} (which form a spec chose / set one)")
    owner = spec.__dict__.get("strategy_class")  # its own, not one inherited from a parent spec
    if owner not in (None, cls):
        fail(f"spec_class {spec.__name__} already configures {owner.__qualname__}")
    spec.strategy_class = cls
