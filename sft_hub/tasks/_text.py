"""Shared pieces of tasks whose input is a text or a text pair and whose head is a sequence
classifier: tokenizer, tokenization (the label column becomes ``labels``), padding collator, the
Auto classes and the usage example."""
from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from ..data.parallel import map_processes
from ..data.value_checks import handle_empty_texts
from ..models.transformers_backend import load_processor
from ..recipe.schema import Column, DataSpec, OptionalColumn, Switch

if TYPE_CHECKING:  # pragma: no cover
    from datasets import DatasetDict


class TextData(DataSpec):
    text_column: Column = "text"
    text_pair_column: OptionalColumn = Field(None, description="second text for sentence-pair tasks")
    label_column: Column = "label"
    max_length: int = Field(256, gt=0, description="tokens per example; longer texts are truncated")
    skip_empty: Switch = Field(False, description="leave out rows whose text is empty (counted in "
                               "the run's notes); by default an empty text is an error naming "
                               "the rows")


class TextInputs:
    """Mixin for :class:`~sft_hub.tasks.base.Task` subclasses whose spec is a ``TextData``."""

    pipeline_task = "text-classification"
    peft_task_type = "SEQ_CLS"
    usage_input = 'inputs = "I would watch this film again tomorrow."'
    length_feature = "input_ids"  # batches grouped and evaluation sorted by length (speed.py)

    @classmethod
    def auto_model_class(cls):
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification

    @classmethod
    def peft_model_class(cls):
        from peft import AutoPeftModelForSequenceClassification

        return AutoPeftModelForSequenceClassification

    def required_columns(self) -> list[str]:
        d = self.recipe.data
        return [c for c in (d.text_column, d.text_pair_column, d.label_column) if c]

    def text_columns(self) -> list[str]:
        """Columns whose cells must not be empty (``data.skip_empty`` leaves such rows out)."""
        d = self.recipe.data
        return [c for c in (d.text_column, d.text_pair_column) if c]

    def prepare_raw(self, raw: "DatasetDict") -> "DatasetDict":
        raw = handle_empty_texts(raw, self.text_columns(), skip=self.recipe.data.skip_empty,
                                 notes=self.notes)
        parent = getattr(super(), "prepare_raw", None)
        return parent(raw) if parent is not None else raw

    def build_processor(self):
        self.processor = load_processor(self.recipe.model, self.recipe_dir)
        return self.processor

    def preprocess(self, raw: "DatasetDict") -> "DatasetDict":
        from datasets import DatasetDict

        d = self.recipe.data
        tokenizer = self.processor

        def tokenize(batch):  # captures the tokenizer and the spec only (hashable: map caching)
            enc = tokenize_texts(tokenizer, d, batch)
            enc["labels"] = batch[d.label_column]
            return enc

        speed = self.recipe.settings.extras.speed_defaults  # several processes for large data
        return DatasetDict({split: ds.map(tokenize, batched=True, remove_columns=ds.column_names,
                                          num_proc=map_processes(len(ds), enabled=speed),
                                          desc=f"tokenizing {split}") for split, ds in raw.items()})

    def input_columns(self) -> list[str]:
        d = self.recipe.data
        return [c for c in (d.text_column, d.text_pair_column) if c]

    def encode_inputs(self, rows: dict) -> list[dict]:
        enc = tokenize_texts(self.processor, self.recipe.data, rows)
        return [{k: enc[k][i] for k in enc} for i in range(len(enc["input_ids"]))]

    def data_collator(self):
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(self.processor)


def tokenize_texts(tokenizer, spec: TextData, batch: dict):
    """The tokenization of training, evaluation and prediction (one implementation)."""
    texts = [str(t) if t is not None else "" for t in batch[spec.text_column]]
    pairs = ([str(t) if t is not None else "" for t in batch[spec.text_pair_column]]
             if spec.text_pair_column else None)
    return tokenizer(texts, pairs, truncation=True, max_length=spec.max_length)
