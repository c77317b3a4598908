"""``token-classification``: one tag per word (named-entity recognition, IOB2 / IOBES tags).

Data: a tokens column (list of words) and a tags column (list of tags: ClassLabel ids, strings, or
ids named by ``data.labels``) from a Hub dataset, local JSON/JSONL/Parquet files, or CoNLL text
files. Tags are turned into names first, checked (scheme, unknown tags), then given the ids of the
label list, which the model config stores as ``id2label`` so that
``pipeline("token-classification", aggregation_strategy="simple")`` returns real entity names.

Training labels each word on its first subword (or every subword, ``data.label_all_subwords``);
validation and test data always label first subwords only, so that the entity metrics (seqeval,
micro P/R/F1 plus per-type figures) and the eval loss are about words.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field

from ..data.conll import read_conll
from ..data.labels import label_names
from ..data.ner_align import IGNORE_INDEX, needs_prefix_space, require_word_ids, tokenize_and_align
from ..data.ner_metrics import entity_metrics, word_tag_sequences
from ..data.ner_tags import (check_known_tags, check_scheme, check_tag_names, continuation_labels,
                             derive_labels, entity_types, name_tag_ids)
from ..data.sources import (check_local_columns, file_format, finalize_splits, load_raw_splits,
                            resolve_local)
from ..data.value_checks import check_local_tags, read_columns, whole_tag_ids
from ..errors import DataError
from ..metrics import Metric, PerClass
from ..models.transformers_backend import load_processor
from ..recipe.schema import Column, DataSpec, Switch
from . import TASKS
from .base import Breakdown, Task, softmax

if TYPE_CHECKING:  # pragma: no cover
    from datasets import Dataset, DatasetDict

logger = logging.getLogger(__name__)


class TokenClassificationData(DataSpec):
    tokens_column: Column = Field("tokens", description="column holding each sentence's words")
    tags_column: Column = Field("ner_tags", description="column holding one tag per word")
    conll_tag_column: int = Field(
        -1, description="CoNLL files: 0-based column holding the tag; negative counts from the end "
        "(-1: the last column). The token is always the first column")
    label_all_subwords: Switch = Field(
        False, description="train on every subword of a word (later subwords of a B-X word get "
        "I-X) instead of the first subword only; evaluation always reads first subwords")
    max_length: int = Field(
        256, gt=0, description="subwords per sentence; words past the cut are left out of "
        "training and metrics, and counted in the run notes")


@TASKS.register
class TokenClassification(Task):
    name = "token-classification"
    data_spec = TokenClassificationData
    metrics = (
        Metric("entity_precision", "Entity precision (seqeval, micro)", "precision", "micro"),
        Metric("entity_recall", "Entity recall (seqeval, micro)", "recall", "micro"),
        Metric("entity_f1", "Entity F1 (seqeval, micro)", "f1", "micro"),
        Metric("token_accuracy", "Token accuracy", "accuracy"),
    )
    best_metric = "entity_f1"
    per_class = PerClass("{name}_{field}", ("precision", "recall", "f1", "support"))
    pipeline_task = "token-classification"
    pipeline_kwargs = {"aggregation_strategy": "simple"}
    peft_task_type = "TOKEN_CLS"
    usage_input = 'inputs = "Ada Lovelace was born in London."'
    length_feature = "input_ids"  # evaluation sorted by length (speed.py)
    labels_per_token = True
    # WNUT17 (benchmarks/defaults.py, 1,000 sentences, 1 epoch): full fine-tuning at the text
    # default of 1e-4 finds no entity (F1 0.000), 5x that reaches 0.381 (README "Strategy
    # defaults"; layer freezing is best at its own rate, so it does not follow the scale)
    learning_rate_scale = 5.0

    @classmethod
    def auto_model_class(cls):
        from transformers import AutoModelForTokenClassification

        return AutoModelForTokenClassification

    @classmethod
    def peft_model_class(cls):
        from peft import AutoPeftModelForTokenClassification

        return AutoPeftModelForTokenClassification

    @classmethod
    def per_class_names(cls, labels: list[str]) -> list[str]:
        return entity_types(labels)

    # -- validation (no torch) ------------------------------------------------------------
    def required_columns(self) -> list[str]:
        return [self.recipe.data.tokens_column, self.recipe.data.tags_column]

    def check_data(self) -> None:
        """Column check for tables; CoNLL files are parsed whole (pure Python, fast), so that a
        malformed line is reported with its line number before any model is loaded."""
        spec = self.recipe.data
        check_local_columns(spec, self.recipe_dir, self.required_columns())
        for split, value in (spec.files or {}).items():
            paths = resolve_local(value, self.recipe_dir, split=split)
            fmt = file_format(paths, spec, split=split)
            if fmt == "conll":
                for path in paths:
                    read_conll(path, tag_column=spec.conll_tag_column)
                continue
            for path in paths:  # integer tag ids need names; named tags must be listed
                columns = read_columns(path, fmt, [spec.tags_column]) if path.is_file() else None
                if columns is not None:
                    check_local_tags(split, str(path), columns[spec.tags_column],
                                     label_names(spec, self.recipe_dir))

    # -- data -------------------------------------------------------------------------------
    def load_data(self) -> "DatasetDict":
        from datasets import ClassLabel, DatasetDict

        spec = self.recipe.data
        raw = load_raw_splits(spec, self.recipe_dir)
        tags = {split: self._tag_names(split, ds) for split, ds in raw.items()}

        class_label = getattr(raw["train"].features[spec.tags_column], "feature", None)
        if label_names(spec, self.recipe_dir):
            self.labels = label_names(spec, self.recipe_dir)
        elif isinstance(class_label, ClassLabel):
            self.labels = list(class_label.names)
        else:
            self.labels = derive_labels(tags["train"])
        if len(set(self.labels)) != len(self.labels):
            raise DataError("data.labels lists a tag twice", field="data.labels")
        check_tag_names(self.labels, where="label list")
        for split, sequences in tags.items():
            check_known_tags(split, sequences, self.labels)
            warning = check_scheme(sequences).warning(split)
            if warning:
                self._note(warning)

        out = {split: self._named_dataset(split, raw[split], tags[split]) for split in raw}
        return finalize_splits(DatasetDict(out), spec, self.seed)

    def load_eval_data(self, raw: "DatasetDict") -> "DatasetDict":
        from datasets import DatasetDict

        out = {}
        for split, ds in raw.items():
            tags = self._tag_names(split, ds)
            check_known_tags(split, tags, self.labels)
            out[split] = self._named_dataset(split, ds, tags)
        return DatasetDict(out)

    def _tag_names(self, split: str, ds: "Dataset") -> list[list[str]]:
        """The split's tags as names, whatever the column holds (ClassLabel ids, strings, ids)."""
        from datasets import ClassLabel

        spec = self.recipe.data
        for column, field in ((spec.tokens_column, "tokens_column"),
                              (spec.tags_column, "tags_column")):
            if column not in ds.column_names:
                raise DataError(f"the {split} split has no column {column!r} (columns: "
                                f"{', '.join(ds.column_names)})", field=f"data.{field}",
                                hint="set data.tokens_column / data.tags_column to the data's "
                                "columns")
        tokens, tags = list(ds[spec.tokens_column]), list(ds[spec.tags_column])
        for row, (words, word_tags) in enumerate(zip(tokens, tags)):
            if not isinstance(words, list) or not isinstance(word_tags, list):
                raise DataError(f"{split} split row {row}: tokens and tags must be lists (one "
                                f"entry per word), got {type(words).__name__} and "
                                f"{type(word_tags).__name__}", field="data.tokens_column",
                                hint="token classification needs pre-split words; check the "
                                "column names")
            if len(words) != len(word_tags):
                raise DataError(f"{split} split row {row}: {len(words)} words but "
                                f"{len(word_tags)} tags", field="data.tags_column",
                                hint="every word needs exactly one tag")
        class_label = getattr(ds.features[spec.tags_column], "feature", None)
        if isinstance(class_label, ClassLabel):
            return name_tag_ids(split, tags, class_label.names, field="data.tags_column")
        if any(isinstance(t, str) for row in tags for t in row):
            return [[str(t) for t in row] for row in tags]
        if not any(row for row in tags):
            return tags
        names = label_names(spec, self.recipe_dir)
        if not names:
            raise DataError(f"the {split} split's tags are integer ids without names",
                            field="data.labels",
                            hint="list the tag names in id order in data.labels (e.g. [O, B-PER, "
                            "I-PER, ...]), or point data.tags_column at a column of string tags")
        return name_tag_ids(split, whole_tag_ids(tags), names, field="data.labels")

    def _named_dataset(self, split: str, ds: "Dataset", tag_names: list[list[str]]) -> "Dataset":
        """Tokens plus tag ids of the final label list, typed ``List(ClassLabel(labels))``.

        Empty sentences are dropped (and counted): they carry no label to learn or score.
        """
        from datasets import ClassLabel, Dataset, Features, List, Value

        spec = self.recipe.data
        index = {tag: i for i, tag in enumerate(self.labels)}
        rows = [(words, tags) for words, tags in zip(ds[spec.tokens_column], tag_names) if words]
        if len(rows) < len(tag_names):
            self._note(f"{split}: {len(tag_names) - len(rows)} empty sentence(s) dropped")
        features = Features({spec.tokens_column: List(Value("string")),
                             spec.tags_column: List(ClassLabel(names=self.labels))})
        return Dataset.from_dict(
            {spec.tokens_column: [[str(w) for w in words] for words, _ in rows],
             spec.tags_column: [[index[t] for t in tags] for _, tags in rows]},
            features=features)

    def _note(self, message: str) -> None:
        self.notes.append(message)
        logger.warning(message)

    # -- model ------------------------------------------------------------------------------
    def build_processor(self) -> Any:
        self.processor = load_processor(self.recipe.model, self.recipe_dir)
        if needs_prefix_space(self.processor):
            self.processor = load_processor(self.recipe.model, self.recipe_dir,
                                            add_prefix_space=True)
        require_word_ids(self.processor, self.recipe.model.processor or self.recipe.model.name)
        return self.processor

    def preprocess(self, raw: "DatasetDict") -> "DatasetDict":
        from datasets import Dataset, DatasetDict

        spec = self.recipe.data
        continuation = continuation_labels(self.labels) if spec.label_all_subwords else None
        out = {}
        for split, ds in raw.items():
            features, stats = tokenize_and_align(
                self.processor, list(ds[spec.tokens_column]), list(ds[spec.tags_column]),
                max_length=spec.max_length, continuation=continuation if split == "train" else None)
            out[split] = Dataset.from_dict(features)
            for message in stats.notes(split, spec.max_length):
                self._note(message)
        return DatasetDict(out)

    def data_collator(self):
        from transformers import DataCollatorForTokenClassification

        return DataCollatorForTokenClassification(self.processor)

    # -- metrics ----------------------------------------------------------------------------
    def _tag_sequences(self, eval_pred) -> tuple[list[list[str]], list[list[str]]]:
        predictions = eval_pred.predictions
        if isinstance(predictions, tuple):
            predictions = predictions[0]
        return word_tag_sequences(predictions, eval_pred.label_ids, self.labels)

    def task_metrics(self, eval_pred) -> dict[str, float]:
        gold, predicted = self._tag_sequences(eval_pred)
        return entity_metrics(gold, predicted, self.labels)

    def evaluate_inputs(self, eval_pred) -> tuple[Any, Any]:
        """Predicted and gold tag names per word, one list per sentence (evaluate's seqeval)."""
        gold, predicted = self._tag_sequences(eval_pred)
        return predicted, gold

    # -- eval and predict -------------------------------------------------------------------
    #: ``sft-hub predict`` reads running text (not pre-split words) from this input column.
    text_input_column = "text"

    def input_columns(self) -> list[str]:
        return [self.text_input_column]

    def example_text(self, row: dict) -> str:
        words = row.get(self.recipe.data.tokens_column)
        return " ".join(map(str, words)) if isinstance(words, list) else str(row.get(
            self.text_input_column, ""))

    def encode_inputs(self, rows: dict) -> list[dict]:
        """Running text -> subwords with character offsets (as the token-classification pipeline
        tokenizes it), cut at ``data.max_length``."""
        texts = [str(t) for t in rows[self.text_input_column]]
        enc = self.processor(texts, truncation=True, max_length=self.recipe.data.max_length,
                             return_offsets_mapping=True, return_special_tokens_mask=True)
        model_keys = [k for k in enc if k not in ("offset_mapping", "special_tokens_mask")]
        return [{**{k: enc[k][i] for k in model_keys}, "_offsets": enc["offset_mapping"][i],
                 "_special": enc["special_tokens_mask"][i], "_text": texts[i]}
                for i in range(len(texts))]

    def decode_logits(self, logits, features, *, top_k: int = 1) -> dict[str, Any]:
        """Entities as character spans: each subword gets its most probable tag, and neighbours
        are grouped as ``pipeline(aggregation_strategy="simple")`` groups them (a ``B-`` tag or a
        change of type starts a new entity; the score is the mean over its subwords)."""
        scores = softmax(logits)
        text, groups = features["_text"], []
        for i, (start, end) in enumerate(features["_offsets"]):
            if features["_special"][i]:
                continue
            best = int(scores[i].argmax())
            tag = self.labels[best]
            bi, kind = (tag[:1], tag[2:]) if tag[:2] in ("B-", "I-") else ("I", tag)
            token = {"type": kind, "score": float(scores[i][best]), "start": int(start),
                     "end": int(end)}
            if groups and groups[-1]["type"] == kind and bi != "B":
                groups[-1]["tokens"].append(token)
            else:
                groups.append({"type": kind, "tokens": [token]})
        entities = []
        for g in groups:
            if g["type"] == "O":
                continue
            first, last = g["tokens"][0], g["tokens"][-1]
            entities.append({"type": g["type"],
                             "score": float(np.mean([t["score"] for t in g["tokens"]])),
                             "start": first["start"], "end": last["end"],
                             "word": text[first["start"]:last["end"]]})
        return {"entities": entities}

    def breakdown(self, eval_pred) -> Breakdown:
        """Words (first subwords): confusion of gold and predicted entity types (``O`` included)
        and calibration; entities (seqeval): per-type P/R/F1/support, per-sentence (found, predicted,
        gold) counts for the micro F1, and each span error as wrong type, wrong boundary, missed
        or spurious."""
        from seqeval.metrics.sequence_labeling import get_entities

        logits = eval_pred.predictions
        if isinstance(logits, tuple):
            logits = logits[0]
        types = ["O", *entity_types(self.labels)]
        type_index = {t: i for i, t in enumerate(types)}

        def type_of(tag: str) -> str:
            return tag.split("-", 1)[1] if "-" in tag else tag

        confusion = np.zeros((len(types), len(types)), dtype=np.int64)
        confidence, correct, stats, errors = [], [], [], []
        gold_all, pred_all = [], []
        span_table = {t: dict.fromkeys(SPAN_OUTCOMES, 0) for t in types[1:]}
        for n, (row_logits, row_labels) in enumerate(zip(logits, eval_pred.label_ids)):
            keep = np.asarray(row_labels) != IGNORE_INDEX
            probs = softmax(np.asarray(row_logits)[keep])
            pred_ids = probs.argmax(-1)
            gold_ids = np.asarray(row_labels)[keep].astype(int)
            word_conf = probs[np.arange(len(pred_ids)), pred_ids]
            gold = [self.labels[i] for i in gold_ids]
            pred = [self.labels[i] for i in pred_ids]
            gold_all.append(gold)
            pred_all.append(pred)
            for g, p in zip(gold, pred):
                confusion[type_index[type_of(g)], type_index[type_of(p)]] += 1
            confidence.extend(word_conf.tolist())
            correct.extend((gold_ids == pred_ids).tolist())
            gold_spans = {(t, s, e) for t, s, e in get_entities(gold)}
            pred_spans = {(t, s, e) for t, s, e in get_entities(pred)}
            stats.append((len(gold_spans & pred_spans), len(pred_spans), len(gold_spans)))
            for error in span_errors(gold_spans, pred_spans):
                kind = error["kind"]
                span_table.setdefault(error["entity_type"], dict.fromkeys(SPAN_OUTCOMES, 0))
                span_table[error["entity_type"]][kind] += 1
                if kind == "correct":
                    continue
                s, e = error["span"]
                errors.append({"example": n, "kind": kind, "gold": error["gold"],
                               "predicted": error["predicted"],
                               "score": float(word_conf[s:e + 1].mean()), "words": [s, e]})
        figures = entity_metrics(gold_all, pred_all, self.labels)
        per_class = [{"class": t, **{f: figures.get(f"{t}_{f}", 0.0)
                                     for f in ("precision", "recall", "f1")},
                      "support": int(figures.get(f"{t}_support", 0))} for t in types[1:]]
        tables = {"span_errors": [{"entity_type": t, **counts}
                                  for t, counts in sorted(span_table.items())]}
        return Breakdown(classes=types, predicted_classes=types, confusion=confusion,
                         per_class=per_class, confidence=np.asarray(confidence, dtype=np.float64),
                         correct=np.asarray(correct, dtype=bool),
                         stats=np.asarray(stats, dtype=np.float64).reshape(-1, 3),
                         headline=_micro_f1, errors=errors, tables=tables)


SPAN_OUTCOMES = ("correct", "wrong_type", "wrong_boundary", "missed", "spurious")


def span_errors(gold: set, predicted: set) -> list[dict[str, Any]]:
    """Each gold and predicted entity ``(type, first word, last word)`` of one sentence as one
    outcome: ``correct`` (same type and span), ``wrong_type`` (a prediction overlapping it with
    another type), ``wrong_boundary`` (same type, overlapping, other span), ``missed`` (no
    prediction overlaps it) or ``spurious`` (a prediction overlapping no gold entity). Outcomes
    are counted under the gold entity's type (spurious: the predicted type)."""
    def overlaps(a, b) -> bool:
        return a[1] <= b[2] and b[1] <= a[2]

    def name(span) -> str:
        return f"{span[0]} [{span[1]}-{span[2]}]"

    out = []
    for g in sorted(gold, key=lambda x: (x[1], x[2])):
        if g in predicted:
            out.append({"kind": "correct", "entity_type": g[0], "gold": name(g),
                        "predicted": name(g), "span": (g[1], g[2])})
            continue
        near = sorted((p for p in predicted if overlaps(g, p)), key=lambda p: (p[1], p[2]))
        same = [p for p in near if p[0] == g[0]]
        if same:
            kind, p = "wrong_boundary", same[0]
        elif near:
            kind, p = "wrong_type", near[0]
        else:
            out.append({"kind": "missed", "entity_type": g[0], "gold": name(g),
                        "predicted": None, "span": (g[1], g[2])})
            continue
        out.append({"kind": kind, "entity_type": g[0], "gold": name(g), "predicted": name(p),
                    "span": (p[1], p[2])})
    for p in sorted(predicted, key=lambda x: (x[1], x[2])):
        if not any(overlaps(g, p) for g in gold):
            out.append({"kind": "spurious", "entity_type": p[0], "gold": None,
                        "predicted": name(p), "span": (p[1], p[2])})
    return out


def _micro_f1(summed) -> float:
    """Entity micro F1 from summed (found, predicted, gold): 2 found / (predicted + gold)."""
    found, predicted, gold = summed
    return float(2 * found / (predicted + gold)) if predicted + gold else 0.0
