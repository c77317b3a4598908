"""The task interface: what a task owns (data preparation, head, collator, metrics, decoding).

A task module subclasses :class:`Task`, sets the class attributes and registers itself with
``@TASKS.register``. Class attributes and :meth:`check_data` must not import torch: they are used by
``sft-hub validate``. Everything else runs at training time.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Optional

from ..recipe.schema import DataSpec

if TYPE_CHECKING:  # pragma: no cover
    from datasets import DatasetDict

    from ..recipe.schema import RecipeBase


class Task:
    name: ClassVar[str]
    data_spec: ClassVar[type[DataSpec]]
    pipeline_task: ClassVar[str]  # transformers pipeline name, e.g. "text-classification"
    auto_model_class: ClassVar[str]  # e.g. "AutoModelForSequenceClassification"
    peft_task_type: ClassVar[Optional[str]] = None  # peft.TaskType name, e.g. "SEQ_CLS"
    default_metric: ClassVar[str] = "accuracy"  # metric_for_best_model unless the recipe sets one
    greater_is_better: ClassVar[bool] = True
    # Metrics printed in the end-of-run summary (all of them stay in metrics.json).
    headline_metrics: ClassVar[tuple[str, ...]] = ("accuracy", "f1_macro", "top5_accuracy")

    def __init__(self, recipe: "RecipeBase", recipe_dir: Path):
        self.recipe = recipe
        self.recipe_dir = Path(recipe_dir)
        self.labels: list[str] = []
        self.processor: Any = None
        self.notes: list[str] = []  # facts worth reporting (truncation, skipped images...)

    # -- validation (no torch) ------------------------------------------------------------
    def check_data(self) -> None:
        """Check local data files and columns; raise DataError. Hub data is checked at train time."""

    def required_columns(self) -> list[str]:
        """Columns every local data file must have."""
        return []

    # -- training time ----------------------------------------------------------------------
    def load_data(self) -> "DatasetDict":
        """Raw splits ``train``, ``validation`` and optionally ``test``; sets :attr:`labels`."""
        raise NotImplementedError

    def build_processor(self) -> Any:
        """Tokenizer or image processor (also stored as :attr:`processor`)."""
        raise NotImplementedError

    @property
    def seed(self) -> int:
        return int(self.recipe.training.get("seed", 42))

    def build_model(self) -> Any:
        """The model with a head sized for :attr:`labels` and real label names in its config."""
        from ..models.transformers_backend import label_config, load_model

        return load_model(self.recipe.model, self.recipe_dir, self.auto_model_class,
                          **label_config(self.labels))

    def preprocess(self, raw: "DatasetDict") -> "DatasetDict":
        raise NotImplementedError

    def data_collator(self) -> Optional[Callable]:
        return None

    def compute_metrics(self, eval_pred) -> dict[str, float]:
        raise NotImplementedError

    def save_processor(self, out_dir: Path) -> None:
        if self.processor is not None:
            self.processor.save_pretrained(out_dir)

    def trainer_kwargs(self) -> dict[str, Any]:
        """Extra TrainingArguments defaults for this task (e.g. keep image columns)."""
        return {}
