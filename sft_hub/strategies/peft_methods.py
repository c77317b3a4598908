"""Adapter strategies through peft: ``lora`` (with DoRA / rsLoRA switches) and ``ia3``.

Shared behaviour (:class:`AdapterStrategy`):

* the task head found by :mod:`.layers` is trained fully and saved with the adapter (peft
  ``modules_to_save``) and kept out of the adapter's targets;
* ``target_modules`` entries are checked against the model when it is built: an entry that matches
  no module is an error listing the module names there are; when omitted, LoRA adapts every
  linear layer outside the head (peft's ``all-linear``), or every ordinary 2-d convolution for
  convolutional networks; IA3 uses peft's per-architecture default, or the same layers where peft
  has none. These defaults, each method's rank and its default learning rate come from
  ``benchmarks/defaults.py`` (README "Strategy defaults"): on small budgets LoRA on peft's BERT
  default (query, value) trails full fine-tuning by points that every linear layer closes;
* the adapter records the base model as ``model.name`` (its Hub id), not the local path it was
  loaded from, so ``AutoPeftModelFor<Task>.from_pretrained(run_dir)`` fetches the right base;
* ``save: adapter | merged | both``: merged writes a plain model (loadable by
  ``AutoModelFor<Task>`` and ``pipeline``); both writes the merged model at the root and the
  adapter in ``adapter/``.
"""
from __future__ import annotations

import copy
import dataclasses
import re
from pathlib import Path
from typing import Any, Literal, Optional, Union

from pydantic import Field, PositiveFloat, PositiveInt, ValidationInfo, field_validator

from ..errors import RecipeError
from ..recipe.schema import ModuleNames, Switch
from . import STRATEGIES
from .base import Strategy, StrategySpec
from .layers import ModelLayout, under, unwrap

Targets = Optional[Union[str, list[str]]]
TARGETS_HELP = ("module names (a name matches itself and any module path ending in .<name>), a "
                "regular expression matched against full module paths, or all-linear")


DEFAULT_TARGETS = ("every linear layer outside the head (all-linear); in convolutional networks "
                   "every 2-d convolution")


class AdapterSpec(StrategySpec):
    target_modules: ModuleNames = Field(
        None, description=f"modules to adapt: {TARGETS_HELP}; default (lora): "
        f"{DEFAULT_TARGETS}; (ia3): peft's choice for the architecture, else the same")
    save: Literal["adapter", "merged", "both"] = Field(
        "adapter", description="adapter: adapter weights + head; merged: a plain model; both: "
        "merged at the root and the adapter in adapter/")


class LoraSpec(AdapterSpec):
    name: Literal["lora"] = "lora"
    r: PositiveInt = Field(8, description="rank of the update matrices")
    alpha: PositiveFloat = Field(16, description="scaling: alpha / r (alpha / sqrt(r) with rsLoRA)")
    dropout: float = Field(0.1, ge=0, lt=1)
    use_dora: Switch = Field(False, description="DoRA: weight-decomposed low-rank adaptation")
    use_rslora: Switch = Field(False, description="rank-stabilised scaling alpha / sqrt(r)")
    bias: Literal["none", "all", "lora_only"] = "none"


class Ia3Spec(AdapterSpec):
    name: Literal["ia3"] = "ia3"
    feedforward_modules: ModuleNames = Field(
        None, description="target modules whose input (not output) is rescaled; default: peft's "
        "choice for the architecture, none when target_modules is set")

    @field_validator("feedforward_modules")
    @classmethod
    def _feedforward_within_targets(cls, ff: Targets, info: ValidationInfo):
        targets = info.data.get("target_modules")
        if ff is not None and targets is None:
            raise ValueError("feedforward_modules needs target_modules too")
        if isinstance(ff, list) and isinstance(targets, list) and not set(ff) <= set(targets):
            raise ValueError(f"feedforward_modules {sorted(set(ff) - set(targets))} must also be "
                             "listed in target_modules")
        return ff


class AdapterStrategy(Strategy):
    """Wraps the model with a peft adapter; subclasses build the peft config."""

    spec: AdapterSpec
    save_forms = ("adapter", "merged", "both")
    weights = {
        "model": "the full model, with the adapter merged into the base weights",
        "adapter": "a PEFT adapter with its task head (the base model is downloaded when loading)",
        "both": "the merged model at the root, the PEFT adapter in `adapter/`"}

    @classmethod
    def saved_form(cls, spec: AdapterSpec) -> str:
        return spec.save

    @classmethod
    def spec_saving(cls, spec: AdapterSpec, form: str) -> AdapterSpec:
        if form not in cls.save_forms:
            raise ValueError(f"strategy {cls.name!r} saves {', '.join(cls.save_forms)}, not {form}")
        return spec.model_copy(update={"save": form})

    def peft_config(self, model: Any, layout: ModelLayout) -> Any:
        raise NotImplementedError

    @classmethod
    def default_settings(cls, spec: AdapterSpec, family: str) -> dict[str, Any]:
        return {"target_modules": spec.target_modules if spec.target_modules is not None
                else cls.default_targets_text}

    def setup(self, model: Any) -> Any:
        from peft import get_peft_model

        layout = self.layout(model)
        config = self.peft_config(model, layout)
        peft_model = get_peft_model(model, config)
        recorded = peft_model.peft_config["default"]
        recorded.base_model_name_or_path = self.task.recipe.model.name
        recorded.revision = self.task.recipe.model.revision
        return peft_model

    def common_config(self, layout: ModelLayout, config_class: type) -> dict[str, Any]:
        """peft config keys the methods share, limited to those ``config_class`` takes: task
        type, the head trained fully and saved with the adapter, and the head kept out of the
        targets (a regex over its module paths; prompt-learning configs have no targets)."""
        shared = {"task_type": self.task.peft_task_type, "modules_to_save": list(layout.head),
                  "exclude_modules": "(?:" + "|".join(map(re.escape, layout.head)) + r")(?:\..*)?"}
        accepted = {f.name for f in dataclasses.fields(config_class)}
        return {k: v for k, v in shared.items() if k in accepted}

    def check_targets(self, model: Any, layout: ModelLayout, targets: Targets, field: str) -> None:
        """Every entry must match a module outside the head; else list the names there are."""
        if targets is None or targets == "all-linear":
            return
        names = [n for n, _ in model.named_modules() if n and not under(n, layout.head)]
        if isinstance(targets, str):
            missing = [] if any(re.fullmatch(targets, n) for n in names) else [targets]
        else:
            missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
        if missing:
            raise RecipeError(
                f"target_modules entry {missing[0]!r} matches no module of "
                f"{self.task.recipe.model.name} outside the task head", field=field,
                hint=f"use {TARGETS_HELP}; module names in this model: "
                     f"{', '.join(adaptable_module_names(model, layout.head))}")

    def save(self, model: Any, out_dir: Path) -> None:
        out_dir = Path(out_dir)
        form = self.contract().saves
        if form in ("merged", "both"):
            merged = copy.deepcopy(model).merge_and_unload()
            merged.save_pretrained(out_dir, safe_serialization=True)
        if form in ("adapter", "both"):
            # The vocabulary is never resized here, so the base embeddings need not be saved (and
            # peft's "auto" would ask the Hub for the base config to find that out).
            model.save_pretrained(out_dir if form == "adapter" else out_dir / "adapter",
                                  safe_serialization=True, save_embedding_layers=False)

    def describe(self, model: Any) -> dict[str, Any]:
        from peft.tuners.tuners_utils import BaseTunerLayer

        adapted = [n for n, m in unwrap(model).named_modules() if isinstance(m, BaseTunerLayer)]
        return {"peft_type": str(getattr(model.peft_config["default"].peft_type, "value", "")),
                "adapted_modules": len(adapted),
                "adapted_names": sorted({n.rsplit(".", 1)[-1] for n in adapted}),
                "head": self.layout(model).head}


def adaptable_module_names(model: Any, head: list[str]) -> list[str]:
    """Distinct last names of the modules with weights outside the head (query, dense, fc1...)."""
    return sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                   if n and not under(n, head) and any(True for _ in m.parameters(recurse=False))})


def default_layers(model: Any, head: list[str]) -> list[tuple[str, Any]]:
    """Layers to adapt when peft has no default for the architecture: every linear layer outside
    the head, or for convolutional networks every ordinary (not depthwise) 2-d convolution."""
    import torch.nn as nn

    outside = [(n, m) for n, m in model.named_modules() if n and not under(n, head)]
    linear = [(n, m) for n, m in outside if isinstance(m, nn.Linear)]
    if linear:
        return linear
    conv = [(n, m) for n, m in outside if isinstance(m, nn.Conv2d) and m.groups == 1]
    if not conv:
        raise RecipeError(f"no linear or convolution layer to adapt in {type(model).__name__}",
                          field="strategy.target_modules",
                          hint=f"set strategy.target_modules ({TARGETS_HELP})")
    return conv


def default_targets(model: Any, head: list[str]) -> Union[str, list[str]]:
    """LoRA's default targets: ``all-linear`` (peft: every linear layer, here outside the head)
    where the model has linear layers outside the head, else every ordinary 2-d convolution."""
    import torch.nn as nn

    layers = default_layers(model, head)
    if isinstance(layers[0][1], nn.Linear):
        return "all-linear"
    return [n for n, _ in layers]


def narrows(module: Any) -> bool:
    """A feed-forward projection back down (fc2, conv_pwl): more inputs than outputs."""
    widths = (getattr(module, "in_features", None) or getattr(module, "in_channels", 0),
              getattr(module, "out_features", None) or getattr(module, "out_channels", 0))
    return widths[0] > widths[1]


def _model_type(model: Any) -> Optional[str]:
    return getattr(getattr(unwrap(model), "config", None), "model_type", None)


@STRATEGIES.register
class Lora(AdapterStrategy):
    name = "lora"
    spec_class = LoraSpec
    spec: LoraSpec
    trains = "low-rank updates of the adapted layers (LoRA) and the task head"
    # benchmarks/defaults.py (README "Strategy defaults"); DoRA (use_dora) measured at the same rate
    learning_rates = {"transformers": 2e-3, "timm": 2e-3}
    default_targets_text = DEFAULT_TARGETS

    @classmethod
    def default_settings(cls, spec: LoraSpec, family: str) -> dict[str, Any]:
        return {**super().default_settings(spec, family), "r": spec.r, "alpha": spec.alpha,
                "dropout": spec.dropout, "use_dora": spec.use_dora}

    def peft_config(self, model: Any, layout: ModelLayout) -> Any:
        from peft import LoraConfig

        s = self.spec
        self.check_targets(model, layout, s.target_modules, "strategy.target_modules")
        targets = s.target_modules or default_targets(unwrap(model), layout.head)
        return LoraConfig(r=s.r, lora_alpha=s.alpha, lora_dropout=s.dropout, bias=s.bias,
                          use_dora=s.use_dora, use_rslora=s.use_rslora,
                          target_modules=copy.copy(targets),
                          **self.common_config(layout, LoraConfig))


@STRATEGIES.register
class Ia3(AdapterStrategy):
    name = "ia3"
    spec_class = Ia3Spec
    spec: Ia3Spec
    trains = "learned rescaling vectors of the adapted layers (IA3) and the task head"
    # benchmarks/defaults.py (README "Strategy defaults"): SST-2 and digits (timm: 3e-2 > 1e-1)
    learning_rates = {"transformers": 3e-2, "timm": 3e-2}
    default_targets_text = "peft's choice for the architecture, else " + DEFAULT_TARGETS

    def peft_config(self, model: Any, layout: ModelLayout) -> Any:
        from peft import IA3Config
        from peft.utils.constants import (
            TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING as FF_MAP,
            TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING as TARGET_MAP)

        s = self.spec
        self.check_targets(model, layout, s.target_modules, "strategy.target_modules")
        self.check_targets(model, layout, s.feedforward_modules, "strategy.feedforward_modules")
        if s.target_modules is not None:
            targets, feedforward = s.target_modules, s.feedforward_modules or []
        elif _model_type(model) in TARGET_MAP:
            targets, feedforward = TARGET_MAP[_model_type(model)], FF_MAP[_model_type(model)]
        else:  # no peft default: rescale the inputs of projections that narrow, others' outputs
            layers = default_layers(unwrap(model), layout.head)
            targets = [n for n, _ in layers]
            feedforward = [n for n, m in layers if narrows(m)]
        return IA3Config(target_modules=copy.copy(targets),
                         feedforward_modules=copy.copy(feedforward),
                         **self.common_config(layout, IA3Config))
