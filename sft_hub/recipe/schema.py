"""The recipe schema: the one source of truth for every recipe field.

Sections: ``task``, ``model``, ``data`` (common fields here, task-specific columns in the task's own
``DataSpec`` subclass), ``strategy`` (a tagged union built from the strategy registry),
``training`` (our own keys in :class:`TrainingExtras` plus every ``transformers.TrainingArguments``
field, checked by name without importing transformers), ``output`` and ``hub``.

Everything is strict: unknown keys are errors, never dropped, and values are never coerced (only
YAML ``true``/``false`` are booleans, ``1`` is not a boolean, ``true`` is not an integer, ``'3'`` is
not a number). Nothing here imports torch.

**Recipes from the Hub are data.** A recipe fetched with ``hf://`` (or any file of its ``extends``
chain that is) comes from whoever can write that repository, so it may not run code on this machine
or write outside the run directory. Each field that could is marked here with ``hub=`` in its
``json_schema_extra`` (see :data:`HUB_REFUSED`, :data:`HUB_LOCAL_PATH`); ``training:`` keys are
classified in :mod:`.training_keys`; the check is :func:`hub_policy_problem`. ``tests/test_safety.py``
walks every field of every recipe model so that a new field cannot go unclassified.
"""
from __future__ import annotations

import builtins
import posixpath
from dataclasses import dataclass
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator
from typing_extensions import Annotated

SPLITS = ("train", "validation", "test")

# -- what a recipe from the Hub may set ------------------------------------------------------------
# Every field whose value is a string or a switch says how a recipe from the Hub may set it:
HUB_ANY = "any"  # anything: a name, a column, a number-like choice
HUB_REFUSED = "refused"  # only its default: it runs code, deletes, publishes or writes elsewhere
HUB_LOCAL_PATH = "local-path"  # a Hub id or a path inside the current directory (no /, ~ or ..)
HUB_PER_KEY = "per-key"  # a mapping whose keys are classified one by one (``training:``)
HUB_POLICIES = (HUB_ANY, HUB_REFUSED, HUB_LOCAL_PATH, HUB_PER_KEY)


def hub(policy: str) -> dict[str, str]:
    """``json_schema_extra`` marking how a Hub recipe may set a field (see module docstring)."""
    assert policy in HUB_POLICIES, policy
    return {"hub": policy}


def _escapes(path: str) -> bool:
    """True for a path that is absolute, starts at the home directory or climbs out with ``..``."""
    text = path.replace("\\", "/")
    if text.startswith(("/", "~")) or (len(text) > 1 and text[1] == ":"):
        return True
    return ".." in posixpath.normpath(text).split("/")


def hub_policy_problem(policy: str, value: Any, default: Any) -> Optional[str]:
    """Why a recipe from the Hub may not set a field to ``value`` (None: it may)."""
    if policy == HUB_ANY:
        return None
    if policy == HUB_REFUSED:
        return None if value == default else "may not be set by a recipe from the Hub"
    if policy == HUB_LOCAL_PATH:
        values = value if isinstance(value, list) else [value]
        if isinstance(value, dict):
            values = [x for v in value.values() for x in (v if isinstance(v, list) else [v])]
        bad = [v for v in values if isinstance(v, str) and _escapes(v)]
        if bad:
            return (f"{bad[0]!r} is outside the current directory; a recipe from the Hub may only "
                    "name Hub ids and paths inside the directory you run in")
        return None
    return "is not classified for recipes from the Hub, so a recipe from the Hub may not set it"


def field_hub_policy(info) -> Optional[str]:
    """The ``hub=`` mark of a pydantic ``FieldInfo`` (None when unmarked)."""
    extra = info.json_schema_extra
    return extra.get("hub") if isinstance(extra, dict) else None


# Field types for plugins' spec fields, already classified: a data column, an on/off setting that
# runs nothing, names or patterns of a model's own modules.
Column = Annotated[str, Field(json_schema_extra=hub(HUB_ANY))]
OptionalColumn = Annotated[Optional[str], Field(json_schema_extra=hub(HUB_ANY))]
Switch = Annotated[bool, Field(json_schema_extra=hub(HUB_ANY))]
ModuleNames = Annotated[Optional[Union[str, list[str]]], Field(json_schema_extra=hub(HUB_ANY))]
OptionalModuleName = Annotated[Optional[str], Field(json_schema_extra=hub(HUB_ANY))]


class Strict(BaseModel):
    """Base for every recipe section: unknown keys are errors, values are never coerced."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), strict=True)


class ModelSpec(Strict):
    name: str = Field(description="Hub id, local directory, or (backend: timm) a timm model name",
                      json_schema_extra=hub(HUB_LOCAL_PATH))
    backend: Literal["transformers", "timm"] = "transformers"
    revision: Optional[str] = Field(None, description="Hub branch, tag or commit",
                                    json_schema_extra=hub(HUB_ANY))
    trust_remote_code: bool = Field(
        False, description="run Python code shipped with the model repository (review it first)",
        json_schema_extra=hub(HUB_REFUSED))
    ignore_mismatched_sizes: bool = Field(
        True, description="re-initialise a checkpoint head whose shape differs from the recipe's labels",
        json_schema_extra=hub(HUB_ANY))
    pretrained: bool = Field(True, description="false: build from the config with random weights",
                             json_schema_extra=hub(HUB_ANY))
    path: Optional[str] = Field(
        None, description="load the weights from this local directory (transformers) or weights file "
        "(timm) instead of the Hub; `name` stays the identity recorded in adapters and cards. Relative "
        "to the recipe, or `pkg:<python_package>/<subdir>` for weights shipped inside a pip package",
        json_schema_extra=hub(HUB_LOCAL_PATH))
    processor: Optional[str] = Field(
        None, description="tokenizer / image processor to load instead of the model's own",
        json_schema_extra=hub(HUB_LOCAL_PATH))


class SplitNames(Strict):
    train: str = Field("train", json_schema_extra=hub(HUB_ANY))
    validation: Optional[str] = Field(None, json_schema_extra=hub(HUB_ANY))
    test: Optional[str] = Field(None, json_schema_extra=hub(HUB_ANY))


class DataSpec(Strict):
    """Where the data comes from and how it is split. Tasks subclass this to add their columns."""

    dataset: Optional[str] = Field(None, description="Hub dataset id",
                                   json_schema_extra=hub(HUB_LOCAL_PATH))
    config: Optional[str] = Field(None, description="Hub dataset configuration name",
                                  json_schema_extra=hub(HUB_ANY))
    splits: SplitNames = Field(default_factory=SplitNames,
                               description="Hub split names for train / validation / test")
    files: Optional[dict[Literal["train", "validation", "test"], Union[str, list[str]]]] = Field(
        None, description="local files (or folders) per split, relative to the recipe",
        json_schema_extra=hub(HUB_LOCAL_PATH))
    format: Optional[str] = Field(
        None, description="file format when the extension does not tell (csv, tsv, json, parquet...)",
        json_schema_extra=hub(HUB_ANY))
    labels: Optional[list[str]] = Field(
        None, min_length=1, description="label names in id order: they name integer labels (0 is "
        "the first name) and fix the order of string labels", json_schema_extra=hub(HUB_ANY))
    label_names: Optional[Union[dict[int, str], str]] = Field(
        None, description="names of integer labels as a mapping (`{0: World, 1: Sports}`) or a "
        "JSON file holding one (`{\"0\": \"World\"}`, a list, or a config's `id2label`), relative "
        "to the recipe", json_schema_extra=hub(HUB_LOCAL_PATH))
    validation_split: float = Field(0.1, gt=0, lt=1,
                                    description="fraction of train held out when no validation split exists")
    max_train_samples: Optional[int] = Field(None, gt=0)
    max_eval_samples: Optional[int] = Field(None, gt=0)
    license: Optional[str] = Field(
        None, description="licence of the training data (e.g. cc-by-4.0), stated in the model card",
        json_schema_extra=hub(HUB_ANY))
    citation: Optional[str] = Field(
        None, description="how to credit the training data (authors, title, source, or BibTeX), "
        "quoted in the model card", json_schema_extra=hub(HUB_ANY))

    @model_validator(mode="after")
    def _one_source(self):
        if (self.dataset is None) == (self.files is None):
            raise ValueError("give exactly one of data.dataset (a Hub dataset id) or data.files "
                             "(local files per split)")
        if self.files is not None and "train" not in self.files:
            raise ValueError("data.files needs a 'train' entry")
        if self.labels is not None and self.label_names is not None:
            raise ValueError("give data.labels (names in id order) or data.label_names (an id -> "
                             "name mapping), not both")
        return self


class TrainingExtras(Strict):
    """sft-hub's own training keys. Every other ``training:`` key goes to TrainingArguments."""

    # (Strategy-, distribution- and early-stopping keys are added here by their features.)
    layer_decay: Optional[float] = Field(
        None, gt=0, le=1, description="layer-wise learning-rate decay: layer k of N trains at "
        "learning_rate * layer_decay ** (N + 1 - k), embeddings at layer_decay ** (N + 1)")
    head_learning_rate: Optional[float] = Field(
        None, gt=0, description="learning rate of the task head (default: learning_rate)")
    early_stopping_patience: Optional[int] = Field(
        None, ge=1, description="stop after this many evaluations in a row without improvement of "
        "metric_for_best_model (default: the task's metric); needs evaluation (eval_strategy)")
    early_stopping_threshold: Optional[float] = Field(
        None, ge=0, description="with early_stopping_patience: the least change of the metric "
        "that counts as an improvement (default 0)")
    extra_metrics: list[str] = Field(
        default_factory=list, description="modules of the `evaluate` library computed on every "
        "evaluation besides the task's own metrics: a local module folder (holding <folder>.py) "
        "or .py file, relative to the recipe, or a Hub id (needs the network)",
        json_schema_extra=hub(HUB_REFUSED))  # evaluate modules are Python scripts: they run code
    # Speed defaults (sft_hub/speed.py): each decided per task and device, each switchable.
    speed_defaults: bool = Field(
        True, description="false: none of sft-hub's speed defaults (length-grouped batches, "
        "packed and length-split training steps, length-sorted evaluation, device-sized evaluation batch, "
        "DataLoader workers, channels_last); the plain Trainer settings run", json_schema_extra=hub(HUB_ANY))
    pack_batches: Optional[bool] = Field(
        None, description="lay each training batch's rows end to end in a few rows, each "
        "attending only to itself and numbering its positions from the start: the same loss and "
        "gradient with almost no padding, in one pass (default: on for tasks with a label per "
        "token, on CPU, once the first batch shows the model's outputs unchanged)",
        json_schema_extra=hub(HUB_ANY))
    split_batches_by_length: Optional[bool] = Field(
        None, description="run each training batch as slices of similar length, each padded to "
        "its own longest row: the same gradient with less padding (default: on for tasks whose "
        "inputs have a length, on CPU)", json_schema_extra=hub(HUB_ANY))
    sort_eval_by_length: Optional[bool] = Field(
        None, description="evaluate and predict longest inputs first, predictions restored to "
        "dataset order (default: on for tasks whose inputs have a length)",
        json_schema_extra=hub(HUB_ANY))
    channels_last: Optional[bool] = Field(
        None, description="train a convolutional image model in channels_last memory layout "
        "(default: on for convolutional models on CUDA and CPU)", json_schema_extra=hub(HUB_ANY))


# sft-hub's defaults for TrainingArguments fields: the one place each is written. Evaluate and save
# every epoch and keep the best checkpoint (by the task's metric, which the task supplies).
TRAINING_DEFAULTS: dict[str, Any] = {
    "num_train_epochs": 3, "per_device_train_batch_size": 16, "per_device_eval_batch_size": 64,
    "eval_strategy": "epoch", "save_strategy": "epoch", "logging_steps": 10,
    "load_best_model_at_end": True, "save_total_limit": 2, "report_to": "none",
    "save_only_model": False, "seed": 42, "max_steps": -1,
}


@dataclass(frozen=True)
class TrainingSettings:
    """The recipe's ``training:`` section with every default applied: what every module reads.

    ``arguments`` are the TrainingArguments keys: sft-hub's ``defaults``, then the recipe's own
    (``recipe``, with ``save_strategy`` following ``eval_strategy``); ``extras`` are sft-hub's own
    keys. Task-dependent defaults (the metric that picks the best model) and device settings come
    between the two, where they are known (:func:`sft_hub.training.training_arguments`).
    """

    defaults: dict[str, Any]
    recipe: dict[str, Any]
    extras: TrainingExtras

    @property
    def arguments(self) -> dict[str, Any]:
        return {**self.defaults, **self.recipe}

    @classmethod
    def from_section(cls, training: dict[str, Any]) -> "TrainingSettings":
        names = TrainingExtras.model_fields
        user = {k: v for k, v in training.items() if k not in names}
        if "eval_strategy" in user and "save_strategy" not in user:  # best model needs both
            user["save_strategy"] = user["eval_strategy"]
            if "eval_steps" in user and "save_steps" not in user:
                user["save_steps"] = user["eval_steps"]
        defaults = dict(TRAINING_DEFAULTS)
        if str(user.get("eval_strategy", defaults["eval_strategy"])).lower() == "no":
            defaults["load_best_model_at_end"] = False  # nothing to pick a best model by
        return cls(defaults=defaults, recipe=user,
                   extras=TrainingExtras(**{k: v for k, v in training.items() if k in names}))

    def get(self, key: str, default: Any = None) -> Any:
        return self.arguments.get(key, default)

    @property
    def seed(self) -> int:
        return int(self.arguments["seed"])

    @property
    def num_train_epochs(self) -> float:
        return float(self.arguments["num_train_epochs"])

    @property
    def max_steps(self) -> int:
        return int(self.arguments["max_steps"])

    @property
    def evaluates(self) -> bool:
        return str(self.arguments["eval_strategy"]).lower() != "no"

    @property
    def keeps_best_model(self) -> bool:
        return bool(self.arguments["load_best_model_at_end"]) and self.evaluates


class OutputSpec(Strict):
    dir: Optional[str] = Field(None, description="run directory (default: runs/<recipe name>)",
                               json_schema_extra=hub(HUB_REFUSED))
    overwrite: bool = Field(False, description="replace an existing sft-hub run directory (the "
                            "previous run is kept until the new one is complete)",
                            json_schema_extra=hub(HUB_REFUSED))
    keep_checkpoints: bool = Field(
        False, description="keep the intermediate checkpoints (weights, optimizer and scheduler "
        "states) after the run is complete; by default they are removed then, and only an "
        "unfinished run keeps them for --resume", json_schema_extra=hub(HUB_ANY))


class HubSpec(Strict):
    repo_id: Optional[str] = Field(None, json_schema_extra=hub(HUB_ANY))
    private: bool = Field(True, description="create the repository private; a recipe from the "
                          "Hub may say false (it describes its own repository), but never makes "
                          "your push public: only the command line does (--public, "
                          "hub.private=false)", json_schema_extra=hub(HUB_ANY))
    revision: Optional[str] = Field(None, description="branch to push to",
                                    json_schema_extra=hub(HUB_ANY))
    push: Optional[Literal["model", "adapter", "merged", "both"]] = Field(
        None, description="what to push at the end of training (with your token)",
        json_schema_extra=hub(HUB_REFUSED))
    commit_message: Optional[str] = Field(None, json_schema_extra=hub(HUB_ANY))
    license: Optional[str] = Field(None, json_schema_extra=hub(HUB_ANY))
    tags: list[str] = Field(default_factory=list, json_schema_extra=hub(HUB_ANY))
    description: Optional[str] = Field(
        None, description="what the model is for: the model card's 'Intended use' section (a "
        "neutral default names the task, data and labels)", json_schema_extra=hub(HUB_ANY))


class SpaceDim(Strict):
    """One dimension of a sweep's search space (``sweep.space.<dotted recipe key>``): exactly one
    of ``choice`` (any recipe values, whole sections too), ``uniform`` / ``loguniform`` (float
    bounds) or ``int`` (integer bounds, with ``step``; ``log`` for a log scale)."""

    choice: Optional[list[Any]] = Field(None, min_length=1, description="the values to choose from",
                                        json_schema_extra=hub(HUB_ANY))  # checked key by key
    uniform: Optional[list[float]] = Field(None, min_length=2, max_length=2,
                                           description="[low, high]")
    loguniform: Optional[list[float]] = Field(None, min_length=2, max_length=2,
                                              description="[low, high], both above 0")
    int: Optional[list[builtins.int]] = Field(None, min_length=2, max_length=2,
                                              description="[low, high], both included")
    step: Optional[Union[builtins.int, float]] = Field(None, gt=0, description="with int (or uniform): "
                                              "the spacing of the values")
    log: bool = Field(False, description="with int: sample on a log scale",
                      json_schema_extra=hub(HUB_ANY))

    @model_validator(mode="after")
    def _one_kind(self):
        kinds = [k for k in ("choice", "uniform", "loguniform", "int") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError("give exactly one of choice: [...], uniform: [low, high], "
                             "loguniform: [low, high] or int: [low, high]"
                             + (f" (got {', '.join(kinds)})" if kinds else ""))
        kind = kinds[0]
        if kind != "choice":
            low, high = getattr(self, kind)
            if not low <= high:
                raise ValueError(f"{kind}: low {low} is above high {high}")
            if kind == "loguniform" and low <= 0:
                raise ValueError(f"loguniform: the bounds must be above 0 (got {low})")
        if self.step is not None and kind not in ("int", "uniform"):
            raise ValueError("step goes with int or uniform")
        if kind == "int" and self.step is not None and not isinstance(self.step, builtins.int):
            raise ValueError("int: step must be an integer")
        if self.log and kind != "int":
            raise ValueError("log goes with int (use loguniform for floats)")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("choice", "uniform", "loguniform", "int") if getattr(self, k) is not None)


class SweepSpec(Strict):
    """``sweep:``: tune recipe keys with Optuna on the validation split (``sft-hub sweep``)."""

    space: dict[str, SpaceDim] = Field(
        description="dotted recipe keys (training.learning_rate, strategy, strategy.r, data.*, "
        "model.*) and the values each may take", json_schema_extra=hub(HUB_ANY))
    trials: Optional[int] = Field(None, ge=1, description="finished trials to reach (default: "
                                  "every grid point with sampler: grid, else 20)")
    metric: Optional[str] = Field(None, description="validation metric to optimise (default: the "
                                  "task's metric)", json_schema_extra=hub(HUB_ANY))
    direction: Optional[Literal["maximize", "minimize"]] = Field(
        None, description="default: the metric's own direction", json_schema_extra=hub(HUB_ANY))
    sampler: Literal["tpe", "random", "grid"] = Field("tpe", json_schema_extra=hub(HUB_ANY))
    pruner: Literal["none", "median", "hyperband"] = Field(
        "none", description="stop weak trials early from their evaluations",
        json_schema_extra=hub(HUB_ANY))
    keep: int = Field(1, ge=0, description="trials that keep their weights (the best ones); the "
                      "others keep their records")
    seed: Optional[int] = Field(None, description="sampler seed (default: training.seed)")
    storage: Optional[str] = Field(
        None, description="Optuna storage shared by several workers: a database URL "
        "(sqlite:///..., postgresql://...) or a journal file path (default: study.journal in the "
        "sweep directory)", json_schema_extra=hub(HUB_REFUSED))
    study_name: Optional[str] = Field(None, description="default: the sweep directory's name",
                                      json_schema_extra=hub(HUB_ANY))


class RecipeBase(Strict):
    task: str = Field(json_schema_extra=hub(HUB_ANY))
    model: ModelSpec
    data: DataSpec
    training: dict[str, Any] = Field(default_factory=dict, json_schema_extra=hub(HUB_PER_KEY))
    output: OutputSpec = Field(default_factory=OutputSpec)
    hub: HubSpec = Field(default_factory=HubSpec)
    sweep: Optional[SweepSpec] = Field(None, description="hyperparameter sweep (sft-hub sweep)")

    @property
    def settings(self) -> TrainingSettings:
        """The ``training:`` section with every default applied (see :class:`TrainingSettings`)."""
        return TrainingSettings.from_section(self.training)

    @property
    def training_extras(self) -> TrainingExtras:
        return self.settings.extras
