"""``text-classification``: one label per text or text pair (sentiment, spam, NLI...)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from pydantic import Field

from ..recipe.schema import Column, DataSpec, OptionalColumn
from . import TASKS
from ._single_label import SingleLabelTask

if TYPE_CHECKING:  # pragma: no cover
    from datasets import DatasetDict


class TextClassificationData(DataSpec):
    text_column: Column = "text"
    text_pair_column: OptionalColumn = Field(None, description="second text for sentence-pair tasks")
    label_column: Column = "label"
    max_length: int = Field(256, gt=0, description="tokens per example; longer texts are truncated")


@TASKS.register
class TextClassification(SingleLabelTask):
    name = "text-classification"
    data_spec = TextClassificationData
    pipeline_task = "text-classification"
    auto_model_class = "AutoModelForSequenceClassification"
    peft_task_type = "SEQ_CLS"
    default_metric = "accuracy"

    def required_columns(self) -> list[str]:
        d = self.recipe.data
        return [c for c in (d.text_column, d.text_pair_column, d.label_column) if c]

    def build_processor(self):
        from ..models.transformers_backend import load_processor

        self.processor = load_processor(self.recipe.model, self.recipe_dir, "AutoTokenizer")
        return self.processor

    def preprocess(self, raw: "DatasetDict") -> "DatasetDict":
        d = self.recipe.data
        tokenizer = self.processor

        def tokenize(batch):
            texts = [str(t) if t is not None else "" for t in batch[d.text_column]]
            pairs = ([str(t) if t is not None else "" for t in batch[d.text_pair_column]]
                     if d.text_pair_column else None)
            enc = tokenizer(texts, pairs, truncation=True, max_length=d.max_length)
            enc["labels"] = batch[d.label_column]
            return enc

        from datasets import DatasetDict

        return DatasetDict({split: ds.map(tokenize, batched=True, remove_columns=ds.column_names,
                                          desc=f"tokenizing {split}") for split, ds in raw.items()})

    def data_collator(self):
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(self.processor)
