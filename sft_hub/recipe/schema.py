"""The recipe schema: the one source of truth for every recipe field.

Sections: ``task``, ``model``, ``data`` (common fields here, task-specific columns in the task's own
``DataSpec`` subclass), ``strategy`` (a tagged union built from the strategy registry),
``training`` (our own keys in :class:`TrainingExtras` plus every ``transformers.TrainingArguments``
field, checked by name without importing transformers), ``output`` and ``hub``.

Everything is strict: unknown keys are errors, never dropped. Nothing here imports torch.
"""
from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator
from typing_extensions import Annotated

SPLITS = ("train", "validation", "test")


class Strict(BaseModel):
    """Base for every recipe section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class ModelSpec(Strict):
    name: str = Field(description="Hub id, local directory, or (backend: timm) a timm model name")
    backend: Literal["transformers", "timm"] = "transformers"
    revision: Optional[str] = Field(None, description="Hub branch, tag or commit")
    trust_remote_code: bool = False
    ignore_mismatched_sizes: bool = Field(
        True, description="re-initialise a checkpoint head whose shape differs from the recipe's labels")
    pretrained: bool = Field(True, description="false: build from the config with random weights")
    path: Optional[str] = Field(
        None, description="load the weights from this local directory (transformers) or weights file "
        "(timm) instead of the Hub; `name` stays the identity recorded in adapters and cards. Relative "
        "to the recipe, or `pkg:<python_package>/<subdir>` for weights shipped inside a pip package")
    processor: Optional[str] = Field(
        None, description="tokenizer / image processor to load instead of the model's own")


class SplitNames(Strict):
    train: str = "train"
    validation: Optional[str] = None
    test: Optional[str] = None


class DataSpec(Strict):
    """Where the data comes from and how it is split. Tasks subclass this to add their columns."""

    dataset: Optional[str] = Field(None, description="Hub dataset id")
    config: Optional[str] = Field(None, description="Hub dataset configuration name")
    splits: SplitNames = Field(default_factory=SplitNames,
                               description="Hub split names for train / validation / test")
    files: Optional[dict[Literal["train", "validation", "test"], Union[str, list[str]]]] = Field(
        None, description="local files (or folders) per split, relative to the recipe")
    format: Optional[str] = Field(
        None, description="file format when the extension does not tell (csv, tsv, json, parquet...)")
    labels: Optional[list[str]] = Field(None, description="label names in id order")
    validation_split: float = Field(0.1, gt=0, lt=1,
                                    description="fraction of train held out when no validation split exists")
    max_train_samples: Optional[int] = Field(None, gt=0)
    max_eval_samples: Optional[int] = Field(None, gt=0)

    @model_validator(mode="after")
    def _one_source(self):
        if (self.dataset is None) == (self.files is None):
            raise ValueError("give exactly one of data.dataset (a Hub dataset id) or data.files "
                             "(local files per split)")
        if self.files is not None and "train" not in self.files:
            raise ValueError("data.files needs a 'train' entry")
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


class OutputSpec(Strict):
    dir: Optional[str] = Field(None, description="run directory (default: runs/<recipe name>)")
    overwrite: bool = Field(False, description="replace an existing run directory")


class HubSpec(Strict):
    repo_id: Optional[str] = None
    private: bool = True
    revision: Optional[str] = Field(None, description="branch to push to")
    push: Optional[Literal["model", "adapter", "merged", "both"]] = None
    commit_message: Optional[str] = None
    license: Optional[str] = None
    tags: list[str] = Field(default_factory=list)


class RecipeBase(Strict):
    task: str
    model: ModelSpec
    data: DataSpec
    training: dict[str, Any] = Field(default_factory=dict)
    output: OutputSpec = Field(default_factory=OutputSpec)
    hub: HubSpec = Field(default_factory=HubSpec)

    @property
    def training_extras(self) -> TrainingExtras:
        names = TrainingExtras.model_fields
        return TrainingExtras(**{k: v for k, v in self.training.items() if k in names})

    @property
    def training_arguments(self) -> dict[str, Any]:
        """The ``training:`` keys that go to ``transformers.TrainingArguments``."""
        names = TrainingExtras.model_fields
        return {k: v for k, v in self.training.items() if k not in names}


def strategy_type():
    """The ``strategy:`` field type: a union of every registered strategy spec, tagged by ``name``."""
    from ..strategies import STRATEGY_SPECS

    specs = tuple(STRATEGY_SPECS.values())
    if len(specs) == 1:
        return specs[0]
    return Annotated[Union[specs], Field(discriminator="name")]


def recipe_model(task_name: str) -> type[RecipeBase]:
    """The full recipe model for one task: its data spec plus the registered strategies."""
    from ..strategies import STRATEGY_SPECS
    from ..tasks import get_task_class

    task_cls = get_task_class(task_name)
    default_strategy = STRATEGY_SPECS["full"]()
    return create_model(
        f"{task_cls.__name__}Recipe",
        __base__=RecipeBase,
        data=(task_cls.data_spec, ...),
        strategy=(strategy_type(), default_strategy),
    )
