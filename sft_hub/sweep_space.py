"""A sweep's search space (``sweep:`` in a recipe), without torch or Optuna at import.

The space maps dotted recipe keys to the values each may take (:class:`~.recipe.schema.SpaceDim`).
:func:`sweep_plan` reads a recipe's ``sweep:`` section into a :class:`SweepPlan` (dimensions,
metric and direction, trial budget, seed); :func:`check_space` builds the recipe at every corner of
the space (every ``choice`` value, both bounds of each range) through the ordinary recipe validator
and raises a :class:`RecipeError` naming the key and the value of the first combination that does
not make a valid recipe. ``sft-hub validate`` calls it, so a broken space fails before a single
trial runs; each trial's recipe is built with :func:`trial_recipe` the same way.

Optuna sees a choice among sections (``strategy: {choice: [{name: full}, {name: lora, r: 8}]}``)
as a choice among their labels (flow YAML, ``{name: lora, r: 8}``); :meth:`Dimension.value` maps a
label back to the recipe value.
"""
from __future__ import annotations

import difflib
import itertools
import json
import math
from dataclasses import dataclass
from typing import Any, Optional

import yaml

from .catalog import load_variant
from .errors import RecipeError, SftHubError, attributed_to
from .hub import check_push_form
from .recipe.load import LoadedRecipe
from .recipe.schema import SpaceDim
from .strategies import get_strategy
from .tasks import get_task_class

DEFAULT_TRIALS = 20  # without a grid, when sweep.trials is not set
# Sections a sweep cannot vary: the task (its metrics define the objective), where trials write
# and what is published (the sweep decides both), and the sweep itself.
FIXED_SECTIONS = ("task", "output", "hub", "sweep")
MAX_CORNER_PRODUCT = 256  # beyond: each key's corners with the others at their first, all low, all high
TRIAL_SECTIONS_DROPPED = ("sweep",)


def label(value: Any) -> Any:
    """What Optuna records for a choice value: scalars as they are, sections as flow YAML."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10_000).strip()


def shown(value: Any) -> str:
    """A parameter value as the leaderboard and messages print it."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(label(value))


@dataclass(frozen=True)
class Dimension:
    key: str  # dotted recipe key
    spec: SpaceDim

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def labels(self) -> list[Any]:
        return [label(v) for v in self.spec.choice or []]

    def value(self, param: Any) -> Any:
        """The recipe value of the parameter Optuna recorded."""
        if self.kind == "choice":
            return self.spec.choice[self.labels.index(param)]
        return param

    def corners(self) -> list[Any]:
        """Every choice, or both ends of a range (the top end a step allows)."""
        if self.kind == "choice":
            return list(self.spec.choice)
        low, high = getattr(self.spec, self.kind)
        if self.spec.step:
            high = low + self.spec.step * math.floor((high - low) / self.spec.step + 1e-9)
            if self.kind == "int":
                high = int(high)
        return [low] if low == high else [low, high]

    def grid(self) -> list[Any]:
        """The values ``sampler: grid`` visits (choices as labels)."""
        if self.kind == "choice":
            return self.labels
        if self.kind == "int":
            low, high = self.spec.int
            return list(range(low, high + 1, self.spec.step or 1))
        if self.kind == "uniform" and self.spec.step:
            low, _ = self.spec.uniform
            top = self.corners()[-1]
            n = int(round((top - low) / self.spec.step))
            return [round(low + i * self.spec.step, 12) for i in range(n + 1)]
        raise ValueError(f"{self.key}: {self.kind} has no grid")

    def suggest(self, trial) -> Any:
        """Ask an Optuna trial for this dimension's value (the recipe value, not the label)."""
        if self.kind == "choice":
            return self.value(trial.suggest_categorical(self.key, self.labels))
        if self.kind == "int":
            low, high = self.spec.int
            return trial.suggest_int(self.key, low, high, step=self.spec.step or 1, log=self.spec.log)
        low, high = getattr(self.spec, self.kind)
        if self.kind == "loguniform":
            return trial.suggest_float(self.key, low, high, log=True)
        return trial.suggest_float(self.key, low, high, step=self.spec.step)


@dataclass(frozen=True)
class SweepPlan:
    """A recipe's ``sweep:`` section with every default settled."""

    dimensions: tuple[Dimension, ...]
    metric: str
    direction: str  # maximize | minimize
    trials: int
    sampler: str
    pruner: str
    keep: int
    seed: int
    storage: Optional[str]
    study_name: Optional[str]
    source: str  # the file that wrote sweep.space (errors name it; its relative paths are its own)

    @property
    def greater_is_better(self) -> bool:
        return self.direction == "maximize"

    def dimension(self, key: str) -> Dimension:
        return next(d for d in self.dimensions if d.key == key)

    def values(self, params: dict[str, Any]) -> dict[str, Any]:
        """{dotted key: recipe value} for the parameters Optuna recorded."""
        return {d.key: d.value(params[d.key]) for d in self.dimensions if d.key in params}

    def grid_space(self) -> dict[str, list[Any]]:
        return {d.key: d.grid() for d in self.dimensions}


def _origin(loaded: LoadedRecipe, prefix: tuple) -> str:
    for leaf, origin in loaded.origins.items():
        if leaf[:len(prefix)] == prefix:
            return origin
    return loaded.path


def sweep_plan(loaded: LoadedRecipe) -> SweepPlan:
    """The recipe's sweep settings with defaults; RecipeError for a sweep that cannot run."""
    sweep = loaded.recipe.sweep
    source = _origin(loaded, ("sweep",))
    if sweep is None:
        raise RecipeError("the recipe has no sweep: section", file=loaded.path, field="sweep",
                          hint="add sweep: {space: {training.learning_rate: {loguniform: "
                               "[1.0e-5, 1.0e-3]}}, trials: 10}")
    if not sweep.space:
        raise RecipeError("the space is empty", file=source, field="sweep.space",
                          hint="name at least one recipe key, e.g. training.learning_rate")
    dims = []
    for key, spec in sweep.space.items():
        parts = key.split(".")
        if not all(parts):
            raise RecipeError(f"{key!r} is not a dotted recipe key", file=source,
                              field=f"sweep.space.{key}", hint="e.g. training.learning_rate")
        if parts[0] in FIXED_SECTIONS:
            raise RecipeError(f"a sweep cannot vary {parts[0]}", file=source,
                              field=f"sweep.space.{key}",
                              hint="vary training.*, strategy, data.* or model.* keys")
        dims.append(Dimension(key, spec))
    keys = [d.key for d in dims]
    for a in keys:
        for b in keys:
            if a != b and b.startswith(a + "."):
                raise RecipeError(f"{b} lies inside {a}, which the space replaces as a whole",
                                  file=source, field=f"sweep.space.{b}",
                                  hint=f"put the values of {b} into the choices of {a}")
    metric, direction = _objective(loaded, sweep.metric, sweep.direction, source)
    if sweep.sampler == "grid":
        no_grid = [d for d in dims if d.kind == "loguniform" or (d.kind == "uniform" and not d.spec.step)]
        if no_grid:
            raise RecipeError(f"sampler: grid needs a finite set of values; {no_grid[0].key} is a "
                              f"continuous {no_grid[0].kind} range", file=source,
                              field=f"sweep.space.{no_grid[0].key}",
                              hint="use choice: [...], int: [low, high] or uniform with step:, or "
                                   "sampler: tpe / random")
        size = math.prod(len(d.grid()) for d in dims)
        trials = sweep.trials or size
        if trials > size:
            raise RecipeError(f"trials: {trials} but the grid has {size} points", file=source,
                              field="sweep.trials", hint=f"set trials: {size} or less")
    else:
        trials = sweep.trials or DEFAULT_TRIALS
    seed = sweep.seed if sweep.seed is not None else loaded.recipe.settings.seed
    return SweepPlan(tuple(dims), metric, direction, trials, sweep.sampler, sweep.pruner,
                     sweep.keep, seed, sweep.storage, sweep.study_name, _origin(loaded, ("sweep", "space")))


def _objective(loaded: LoadedRecipe, metric: Optional[str], direction: Optional[str],
               source: str) -> tuple[str, str]:
    """(validation metric, direction): the task's metric by default, checked against what the
    task reports."""
    from .metrics import LOSS

    task_cls = get_task_class(loaded.recipe.task)
    declared = {m.key: m for m in (*task_cls.metrics, LOSS)}
    metric = metric or task_cls.best_metric
    extra = loaded.recipe.training_extras.extra_metrics
    if metric not in declared and not extra:
        close = difflib.get_close_matches(metric, list(declared), n=1)
        raise RecipeError(f"{metric!r} is not a metric {task_cls.name} reports"
                          + (f"; did you mean {close[0]!r}?" if close else ""), file=source,
                          field="sweep.metric", hint=f"one of {', '.join(declared)}")
    if direction is None:
        better = declared[metric].greater_is_better if metric in declared else True
        direction = "maximize" if better else "minimize"
    return metric, direction


def trial_recipe(loaded: LoadedRecipe, plan: SweepPlan, values: dict[str, Any]) -> LoadedRecipe:
    """The recipe of one trial (no ``sweep:`` section), validated as any recipe. The sweep's
    metric also picks the trial's best checkpoint, unless the recipe says otherwise."""
    training = loaded.resolved.get("training") or {}
    extra = dict(values)
    if (plan.metric != get_task_class(loaded.recipe.task).best_metric
            and "training.metric_for_best_model" not in values
            and "metric_for_best_model" not in training):
        extra["training.metric_for_best_model"] = plan.metric
        extra["training.greater_is_better"] = plan.greater_is_better
    return load_variant(loaded, extra, source=plan.source, drop=TRIAL_SECTIONS_DROPPED)


def combinations(plan: SweepPlan) -> list[dict[str, Any]]:
    """The corners of the space to check: all of them, or (when there are more than
    MAX_CORNER_PRODUCT) each key's corners with the others at their first, all low and all high."""
    corners = [d.corners() for d in plan.dimensions]
    keys = [d.key for d in plan.dimensions]
    if math.prod(len(c) for c in corners) <= MAX_CORNER_PRODUCT:
        return [dict(zip(keys, combo)) for combo in itertools.product(*corners)]
    first = {k: c[0] for k, c in zip(keys, corners)}
    out = [dict(first), {k: c[-1] for k, c in zip(keys, corners)}]
    for k, c in zip(keys, corners):
        out += [{**first, k: v} for v in c[1:]]
    return out


def _blamed_key(plan: SweepPlan, field: Optional[str], combo: dict[str, Any]) -> str:
    """The space key an error's field lies under (or holds), else the first key."""
    if field:
        for key in combo:
            if field == key or field.startswith(key + ".") or key.startswith(field + "."):
                return key
    return next(iter(combo))


def check_space(loaded: LoadedRecipe) -> int:
    """Build and check the recipe at every corner of the space (schema, strategy, push form,
    local data and columns); raises RecipeError naming the key and value of the first invalid
    combination. Returns the number of combinations checked. No torch, no Optuna."""
    plan = sweep_plan(loaded)
    checked_data: set[str] = set()
    combos = combinations(plan)
    for combo in combos:
        try:
            variant = trial_recipe(loaded, plan, combo)
            r = variant.recipe
            task = get_task_class(r.task)(r, variant.base_dir)
            get_strategy(r.strategy, task)
            with attributed_to(variant.path):
                check_push_form(r.hub.push, r.strategy)
                data_key = json.dumps(r.data.model_dump(mode="json"), sort_keys=True)
                if data_key not in checked_data:
                    task.check_data()
                    checked_data.add(data_key)
        except SftHubError as e:
            key = _blamed_key(plan, e.field, combo)
            others = ", ".join(f"{k}={shown(v)}" for k, v in combo.items() if k != key)
            where = ": ".join(str(p) for p in (e.file if e.file != plan.source else None, e.field) if p)
            raise RecipeError(
                f"{key}={shown(combo[key])}" + (f" (with {others})" if others else "")
                + f" makes an invalid recipe: {where + ': ' if where else ''}{e.message}",
                file=plan.source, field=f"sweep.space.{key}",
                hint=e.hint or f"change or remove the value {shown(combo[key])} of {key}") from None
    return len(combos)


def describe(plan: SweepPlan) -> str:
    """One line per dimension, for ``sft-hub validate``."""
    lines = []
    for d in plan.dimensions:
        if d.kind == "choice":
            what = "choice of " + ", ".join(shown(v) for v in d.labels)
        else:
            low, high = getattr(d.spec, d.kind)
            what = f"{d.kind} [{shown(low)}, {shown(high)}]" + (f" step {d.spec.step}" if d.spec.step else "")
        lines.append(f"  {d.key}: {what}")
    return "\n".join(lines)

