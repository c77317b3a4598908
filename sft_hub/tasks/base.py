"""The task interface and its declared contract.

A task module subclasses :class:`Task`, sets the class attributes and registers itself with
``@TASKS.register``. Other modules (training, the model card, strategies) ask a task what it is
through these declarations; none of them matches a task's name:

- ``metrics``: the figures it reports (:class:`Metric`: metrics.json key, display name, Hub
  model-index type/config, direction) and ``best_metric``, the one that selects the best model;
  ``per_class``: how per-class figures are keyed (:class:`PerClass`);
- ``auto_model_class()`` / ``peft_model_class()``: the transformers and peft Auto classes
  (classmethods that import, so that declaring them costs nothing at ``sft-hub validate``);
  ``peft_task_type``: the ``peft.TaskType`` name;
- ``pipeline_task`` and ``pipeline_kwargs``: how ``transformers.pipeline`` loads the result;
  ``usage_input``/``usage_output``: the example the card's usage snippet runs;
- ``model_config_extras()``: keys written into the model config (e.g. ``problem_type``);
- ``evaluate_inputs()``: the (predictions, references) that ``training.extra_metrics`` modules of
  the ``evaluate`` library are computed on.

After training (``sft-hub eval`` / ``sft-hub predict``, :mod:`sft_hub.evaluation`,
:mod:`sft_hub.inference`), the same task object is rebuilt around a saved model and asked:

- ``adopt_model_config()``: take the label list (and e.g. thresholds) from the saved model's config;
- ``load_eval_data()``: labelled splits read with the recipe's columns, labels matched to the
  model's by name (a label the model does not know is a DataError naming it);
- ``input_columns()`` / ``encode_inputs()`` / ``decode_logits()``: unlabelled rows -> model inputs
  (the tokenization training used), and one example's logits -> its prediction;
- ``loss()``: the model's evaluation loss from logits (as the Trainer reports it per batch);
- ``breakdown()``: the error analysis of labelled predictions (:class:`Breakdown`).

:meth:`Task.card_facts` writes all of it (plus run-time facts such as per-class names) into
``run_info.json`` under ``task_contract``, so that the card is built from the run directory alone.

Class attributes and :meth:`check_data` must not import torch: they are used by
``sft-hub validate``. Everything else runs at training time.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Optional

import numpy as np

from ..metrics import LOSS, Metric, PerClass, check_extra_metrics
from ..models.transformers_backend import label_config, load_model
from ..recipe.schema import DataSpec

if TYPE_CHECKING:  # pragma: no cover
    from datasets import DatasetDict

    from ..recipe.schema import RecipeBase


def _literal(value: Any) -> str:
    """Python source for a snippet value (strings in double quotes, like the rest of the card)."""
    return json.dumps(value) if isinstance(value, str) else repr(value)


@dataclass
class Breakdown:
    """A task's error analysis of labelled predictions, what :mod:`sft_hub.evaluation` reports.

    - ``classes`` x ``predicted_classes``: the confusion matrix (``confusion``, counts; rows gold);
    - ``per_class``: rows of ``{"class", "precision", "recall", "f1", "support"}``;
    - ``confidence`` / ``correct``: one entry per scored unit (an example; NER: a word), the
      predicted class's probability and whether it was right (calibration);
    - ``stats`` (one row per example) and ``headline(summed_stats) -> value``: sufficient
      statistics of the best metric, so that a bootstrap resample is a weighted sum;
    - ``errors``: mistakes ``{"example", "gold", "predicted", "score", ...}`` (any order);
    - ``tables``: extra named tables (NER: span errors per entity type).
    """

    classes: list[str]
    predicted_classes: list[str]
    confusion: np.ndarray
    per_class: list[dict[str, Any]]
    confidence: np.ndarray
    correct: np.ndarray
    stats: np.ndarray
    headline: Callable[[np.ndarray], float]
    errors: list[dict[str, Any]] = field(default_factory=list)
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis (float64, shifted by the maximum like the pipelines do)."""
    logits = np.asarray(logits, dtype=np.float64)
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


class Task:
    name: ClassVar[str]
    data_spec: ClassVar[type[DataSpec]]
    # -- the contract ------------------------------------------------------------------------
    metrics: ClassVar[tuple[Metric, ...]] = ()
    best_metric: ClassVar[str]          # key of the metric that selects the best model
    per_class: ClassVar[Optional[PerClass]] = None
    pipeline_task: ClassVar[str]        # transformers pipeline name, e.g. "text-classification"
    pipeline_kwargs: ClassVar[dict[str, Any]] = {}  # e.g. aggregation_strategy="simple"
    peft_task_type: ClassVar[Optional[str]] = None  # peft.TaskType name, e.g. "SEQ_CLS"
    input_files: ClassVar[bool] = False  # predict's inputs are file paths (images)
    # The usage snippet: Python lines that define ``inputs`` (imports allowed), then the output
    # expression printed; ``classifier`` is the pipeline. Run by the tests against a saved model.
    usage_input: ClassVar[str] = 'inputs = "Hello world"'
    usage_output: ClassVar[str] = "classifier(inputs)"
    # What the speed defaults ask (sft_hub/speed.py): the model input whose length batches are
    # grouped and evaluation sorted by (None: inputs have no length), and whether inputs are images
    # decoded per batch (DataLoader workers, pinned memory, channels_last convolutions help).
    length_feature: ClassVar[Optional[str]] = None
    # Whether length-grouped training batches are a default for this task (speed.py): only where
    # they were measured to keep validation quality (they need a length_feature too). No shipped
    # task has them on: on SST-2 (all-MiniLM-L6-v2, 2,000 rows, 1 epoch, seeds 42-45) they cost
    # 0.7-3.4 points of validation accuracy in every seed for ~2x faster training, and on WNUT17
    # entity F1 fell from 0.22 to 0.00; a recipe turns them on with train_sampling_strategy.
    groups_training_by_length: ClassVar[bool] = False
    # Whether ``labels`` hold one label per token (-100: not scored), cut with the inputs when a
    # training batch is run as length slices (speed.py), and whether the model has an output per
    # token, so that a batch's rows can be packed end to end; otherwise one label (row) per example.
    labels_per_token: ClassVar[bool] = False
    image_inputs: ClassVar[bool] = False
    # How far above (or below) the strategies' default learning rates this task's best rates sit
    # at small budgets (benchmarks/defaults.py): a strategy whose rate was measured to move with
    # the task (``Strategy.task_scaled``) defaults to its rate times this factor.
    learning_rate_scale: ClassVar[float] = 1.0
    # Derived from ``metrics``/``best_metric`` (see __init_subclass__); read by training.py.
    default_metric: ClassVar[str]
    greater_is_better: ClassVar[bool]
    headline_metrics: ClassVar[tuple[str, ...]]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if not cls.metrics or not hasattr(cls, "best_metric"):
            return  # an intermediate base class
        by_key = {m.key: m for m in cls.metrics}
        if cls.best_metric not in by_key:
            raise TypeError(f"{cls.__name__}.best_metric {cls.best_metric!r} is not one of its "
                            f"metrics ({', '.join(by_key)})")
        cls.default_metric = cls.best_metric
        cls.greater_is_better = by_key[cls.best_metric].greater_is_better
        cls.headline_metrics = tuple(m.key for m in cls.metrics if m.headline)

    @classmethod
    def check_contract(cls) -> None:
        """Raise TypeError naming what a task class leaves undeclared (run at registration, so an
        incomplete task module fails when it is imported, not when some command first asks)."""
        missing = [a for a in ("name", "data_spec", "best_metric", "pipeline_task")
                   if not getattr(cls, a, None)]
        if not cls.metrics:
            missing.append("metrics")
        missing += [m for m in ("auto_model_class", "load_data", "build_processor", "preprocess",
                                "task_metrics", "evaluate_inputs")
                    if getattr(cls, m).__qualname__.startswith("Task.")]
        if missing:
            raise TypeError(f"task class {cls.__qualname__} does not declare: {', '.join(missing)}"
                            " (see sft_hub/tasks/base.py)")
        if not issubclass(cls.data_spec, DataSpec):
            raise TypeError(f"{cls.__qualname__}.data_spec must subclass recipe.schema.DataSpec")
        if "$model" not in cls.usage_template():
            raise TypeError(f"{cls.__qualname__}.usage_template() must use $model")

    @classmethod
    def auto_model_class(cls) -> type:
        """The transformers Auto class of the task's model (imports transformers)."""
        raise NotImplementedError

    @classmethod
    def peft_model_class(cls) -> Optional[type]:
        """peft's ``AutoPeftModelFor...`` class for adapters of this task, or None (imports peft)."""
        return None

    @classmethod
    def per_class_names(cls, labels: list[str]) -> list[str]:
        """The classes with their own figures (the labels; NER: the entity types)."""
        return list(labels)

    @classmethod
    def usage_template(cls) -> str:
        """The card's usage snippet; ``$model`` stands for the quoted model id and load options."""
        options = "".join(f", {k}={_literal(v)}" for k, v in cls.pipeline_kwargs.items())
        return ("from transformers import pipeline\n\n"
                f'classifier = pipeline("{cls.pipeline_task}", model=$model{options})\n'
                f"{cls.usage_input}\nprint({cls.usage_output})")

    @classmethod
    def static_facts(cls, labels: list[str]) -> dict[str, Any]:
        """The contract as JSON (what the card needs), for a run with these labels."""
        peft_cls = cls.peft_model_class()
        facts = {
            "pipeline_task": cls.pipeline_task, "pipeline_kwargs": dict(cls.pipeline_kwargs),
            "auto_model_class": cls.auto_model_class().__name__,
            "peft_task_type": cls.peft_task_type,
            "peft_model_class": peft_cls.__name__ if peft_cls is not None else None,
            "metrics": [m.to_dict() for m in (*cls.metrics, LOSS)],
            "best_metric": cls.best_metric, "per_class": None, "model_config": {},
            "usage": cls.usage_template(),
        }
        if cls.per_class is not None:
            facts["per_class"] = {"key": cls.per_class.key, "fields": list(cls.per_class.fields),
                                  "names": cls.per_class_names(labels)}
        return facts

    def __init__(self, recipe: "RecipeBase", recipe_dir: Path):
        self.recipe = recipe
        self.recipe_dir = Path(recipe_dir)
        self.labels: list[str] = []
        self.processor: Any = None
        self.notes: list[str] = []  # facts worth reporting (truncation, skipped images...)
        self._extra_ids = check_extra_metrics(self._extra_metric_refs(), self.recipe_dir)
        self._extra_metrics: Optional[list] = None

    def _extra_metric_refs(self) -> list[str]:
        extras = self.recipe.training_extras
        return list(getattr(extras, "extra_metrics", None) or [])

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
        return self.recipe.settings.seed

    def model_config_extras(self) -> dict[str, Any]:
        """Keys set on the model config after loading (e.g. ``problem_type``); saved with it."""
        return {}

    def build_model(self) -> Any:
        """The model with a head sized for :attr:`labels`, real label names and the task's own
        config keys in its config."""
        model = load_model(self.recipe.model, self.recipe_dir, self.auto_model_class(),
                           **label_config(self.labels))
        model.config.update(self.model_config_extras())
        return model

    def preprocess(self, raw: "DatasetDict") -> "DatasetDict":
        raise NotImplementedError

    def data_collator(self) -> Optional[Callable]:
        return None

    # -- metrics ----------------------------------------------------------------------------
    def task_metrics(self, eval_pred) -> dict[str, float]:
        """The task's own figures (keys of :attr:`metrics` and :attr:`per_class`)."""
        raise NotImplementedError

    def evaluate_inputs(self, eval_pred) -> tuple[Any, Any]:
        """(predictions, references) for ``evaluate`` modules (``training.extra_metrics``)."""
        raise NotImplementedError

    @property
    def compute_metrics(self) -> Callable[[Any], dict[str, float]]:
        """The Trainer's ``compute_metrics``: the task's figures plus ``training.extra_metrics``.

        Reading it loads the ``evaluate`` modules, so a broken one fails before training starts.
        """
        if self._extra_metrics is None:
            from ..metrics import load_extra_metrics

            self._extra_metrics = load_extra_metrics(self._extra_ids)

        def compute(eval_pred) -> dict[str, float]:
            out = self.task_metrics(eval_pred)
            if self._extra_metrics:
                from ..metrics import compute_extra_metrics

                predictions, references = self.evaluate_inputs(eval_pred)
                out.update(compute_extra_metrics(self._extra_metrics, predictions, references,
                                                 taken=set(out), notes=self.notes))
            return out

        return compute

    def card_facts(self) -> dict[str, Any]:
        """What the model card needs about this task, written into ``run_info.json``."""
        facts = self.static_facts(self.labels)
        facts["model_config"] = self.model_config_extras()
        if self._extra_metrics:
            from ..metrics import extra_metric_specs

            facts["metrics"] += [m.to_dict() for m in extra_metric_specs(self._extra_metrics)]
        return facts

    def save_processor(self, out_dir: Path) -> None:
        if self.processor is not None:
            self.processor.save_pretrained(out_dir)

    def trainer_kwargs(self) -> dict[str, Any]:
        """Extra TrainingArguments defaults for this task (e.g. keep image columns)."""
        return {}

    # -- after training: eval and predict ----------------------------------------------------
    def adopt_model_config(self, config: Any) -> None:
        """Take the label list (in id order) and the task's config keys from a saved model."""
        id2label = getattr(config, "id2label", None) or {}
        self.labels = [str(id2label[i]) for i in sorted(id2label, key=int)]

    @classmethod
    def processor_class(cls) -> type:
        """The Auto class that loads the processor saved with a model (imports transformers)."""
        from transformers import AutoTokenizer

        return AutoTokenizer

    def load_eval_data(self, raw: "DatasetDict") -> "DatasetDict":
        """Labelled splits as read (any split names) -> splits ready for :meth:`preprocess`, with
        labels given ids of :attr:`labels` (the model's) by name; an unknown label is a DataError
        naming it. Nothing is carved or sampled."""
        raise NotImplementedError

    def input_columns(self) -> list[str]:
        """The columns :meth:`encode_inputs` reads from unlabelled rows."""
        return []

    def encode_inputs(self, rows: dict[str, list]) -> list[dict[str, Any]]:
        """Unlabelled rows (column -> values) -> one dict of model inputs per row, prepared as in
        training. Keys starting with ``_`` are kept for :meth:`decode_logits`, not fed to the
        model. Raises DataError naming a row that cannot be encoded."""
        raise NotImplementedError

    def example_text(self, row: dict[str, Any]) -> str:
        """How the report shows one raw example (its text; images: the file path)."""
        return " | ".join(str(row.get(c, "")) for c in self.input_columns())

    def input_length(self, features: dict[str, Any]) -> int:
        """The size that sorting into batches of similar size uses (tokens; images: 0)."""
        ids = features.get("input_ids")
        return len(ids) if ids is not None else 0

    def collate_inputs(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        """A padded batch of model inputs (tensors) from :meth:`encode_inputs` dicts."""
        collator = self.data_collator()
        plain = [{k: v for k, v in f.items() if not k.startswith("_")} for f in features]
        return collator(plain) if collator is not None else plain

    def decode_logits(self, logits: np.ndarray, features: dict[str, Any], *,
                      top_k: int = 1) -> dict[str, Any]:
        """One example's logits (padding removed) -> its prediction, e.g. ``{"label", "score"}``."""
        raise NotImplementedError

    def loss(self, logits: np.ndarray, labels: np.ndarray) -> np.float32:
        """The model's loss on one batch, from its logits, computed as the model computes it
        (torch's cross-entropy over the positions not labelled -100, float32)."""
        import sys

        if "torch" not in sys.modules:  # an ONNX export is served without torch: numpy's
            flat = np.asarray(logits, dtype=np.float64).reshape(-1, np.shape(logits)[-1])
            gold = np.asarray(labels, dtype=np.int64).reshape(-1)
            keep = gold != -100
            if not keep.any():
                return np.float32("nan")
            flat, gold = flat[keep], gold[keep]
            top = flat.max(axis=-1)
            log_z = np.log(np.exp(flat - top[:, None]).sum(axis=-1)) + top
            return np.float32(np.mean(log_z - flat[np.arange(len(gold)), gold]))
        import torch

        logits_t = torch.from_numpy(np.ascontiguousarray(logits, dtype=np.float32))
        labels_t = torch.from_numpy(np.asarray(labels, dtype=np.int64))
        value = torch.nn.functional.cross_entropy(logits_t.reshape(-1, logits_t.shape[-1]),
                                                  labels_t.reshape(-1), ignore_index=-100)
        return np.float32(value.item())

    def breakdown(self, eval_pred) -> Breakdown:
        """The error analysis of labelled predictions (see :class:`Breakdown`)."""
        raise NotImplementedError
