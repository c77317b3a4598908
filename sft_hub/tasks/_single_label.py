"""Shared base for tasks with one label per example (text and image classification)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..data.labels import derive_labels, encode_labels
from ..data.sources import check_local_columns, finalize_splits, load_raw_splits
from .base import Task

if TYPE_CHECKING:  # pragma: no cover
    from datasets import DatasetDict


class SingleLabelTask(Task):
    """Loads splits, fixes the label list, encodes labels, carves validation, scores predictions.

    Subclasses' ``data_spec`` must define ``label_column``.
    """

    def check_data(self) -> None:
        check_local_columns(self.recipe.data, self.recipe_dir, self.required_columns())

    def load_data(self) -> "DatasetDict":
        spec = self.recipe.data
        raw = load_raw_splits(spec, self.recipe_dir)
        for split, ds in raw.items():
            for column in self.required_columns():
                if column not in ds.column_names:
                    from ..errors import DataError

                    raise DataError(f"the {split} split has no column {column!r} "
                                    f"(columns: {', '.join(ds.column_names)})",
                                    field=f"data.{self._field_for(column)}",
                                    hint="set the recipe's column names to the data's columns")
        raw = self.prepare_raw(raw)
        self.labels = derive_labels(raw, spec.label_column, spec.labels)
        encoded = encode_labels(raw, spec.label_column, self.labels)
        return finalize_splits(encoded, spec, self.seed, stratify_column=spec.label_column)

    def prepare_raw(self, raw: "DatasetDict") -> "DatasetDict":
        """Hook: adjust the splits as read (e.g. resolve image paths) before labels are encoded."""
        return raw

    def _field_for(self, column: str) -> str:
        for name, value in self.recipe.data.model_dump().items():
            if name.endswith("_column") and value == column:
                return name
        return "label_column"

    def compute_metrics(self, eval_pred) -> dict[str, float]:
        from ..metrics import classification_metrics

        return classification_metrics(eval_pred.predictions, eval_pred.label_ids, self.labels)
