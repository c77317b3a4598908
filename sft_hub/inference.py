"""A trained model, loaded for ``sft-hub eval`` and ``sft-hub predict``, and run in batches.

:func:`load_model` takes a run directory, a pushed model (``hf://org/name[@revision]``, fetched
with ``snapshot_download``) or any folder holding what a run writes (``recipe.yaml`` + a model or
an adapter), and returns a :class:`LoadedModel`:

- ``task``: the recipe's task object rebuilt around the saved model: its processor (the saved
  tokenizer or image processor), its label list and config keys (``Task.adopt_model_config``), so
  that prediction and evaluation prepare inputs and score outputs with the task's own code;
- ``predictor``: what runs the model, behind the small :class:`Predictor` interface
  (``logits(batch) -> np.ndarray``, where ``batch`` is what ``task.collate_inputs`` returns).

**The backend seam.** :func:`_load_predictor` dispatches on what the folder holds: full weights
(``config.json`` + safetensors: full fine-tuning, a merged adapter, a timm model) load with the
task's Auto class; an adapter alone (``adapter_config.json``) loads the base model the recipe
names (or the one the adapter records) plus the adapter. Another backend (ONNX Runtime for an
exported ``model.onnx``) is one more branch there returning an object with ``logits(batch)``;
nothing else in eval or predict changes.

:func:`run_batches` sorts examples by length into batches (dynamic padding: each batch is padded
to its own longest example), runs them and hands results back in input order.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional, Protocol, Union

import numpy as np

from .catalog import load_recipe
from .errors import RecipeError, RunDirError, SftHubError
from .hub_refs import hub_errors, is_hub_ref, parse_hf_ref
from .onnx_predictor import is_export, load_export
from .run_dir import RUN_INFO
from .tasks import get_task_class

if TYPE_CHECKING:  # pragma: no cover
    from .recipe.load import LoadedRecipe
    from .tasks.base import Task

RECIPE_FILE = "recipe.yaml"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
MODEL_HINT = "pass a run directory of `sft-hub train`, or hf://<org>/<model> pushed by sft-hub"


class Predictor(Protocol):
    """Runs a model: a collated batch in, logits out (numpy, float32, batch first)."""

    device: str

    def logits(self, batch: dict[str, Any]) -> np.ndarray: ...


class TorchPredictor:
    """A transformers / peft model in eval mode on one device."""

    def __init__(self, model: Any, device: str):
        import torch

        self.device = device
        self.model = model.to(torch.device(device)).eval()

    def logits(self, batch: dict[str, Any]) -> np.ndarray:
        import torch

        inputs = {k: v.to(self.device) if hasattr(v, "to") else v for k, v in batch.items()
                  if k != "labels"}
        with torch.inference_mode():
            out = self.model(**inputs)
        logits = out.logits if hasattr(out, "logits") else out[0]
        return logits.float().cpu().numpy()


@dataclass
class ModelSource:
    ref: str        # as given
    folder: Path    # local folder with the model (a run directory or a Hub snapshot)
    run_info: dict[str, Any]

    @property
    def name(self) -> str:
        return parse_hf_ref(self.ref).repo_id.split("/")[-1] if is_hub_ref(self.ref) \
            else self.folder.resolve().name


@dataclass
class LoadedModel:
    source: ModelSource
    loaded: "LoadedRecipe"
    task: "Task"
    predictor: Predictor

    @property
    def labels(self) -> list[str]:
        return self.task.labels

    def collate(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        """A batch for the predictor: its own batching when it has one (ONNX Runtime: numpy
        arrays, no torch), else the task's."""
        own = getattr(self.predictor, "collate", None)
        return own(features) if own is not None else self.task.collate_inputs(features)


def resolve_source(ref: Union[str, Path]) -> ModelSource:
    """The local folder of a model reference (a Hub model is downloaded to the cache)."""
    ref = str(ref)
    if is_hub_ref(ref):
        from huggingface_hub import snapshot_download

        hub_ref = parse_hf_ref(ref)
        if hub_ref.repo_type != "model":
            raise RunDirError(f"{ref} is not a model repository", file=ref, hint=MODEL_HINT)
        with hub_errors(f"cannot download {ref}", file=ref, ref=hub_ref):
            folder = Path(snapshot_download(hub_ref.repo_id, revision=hub_ref.revision))
        if hub_ref.path:
            folder = folder / hub_ref.path
    else:
        folder = Path(ref)
    if not folder.is_dir():
        raise RunDirError(f"no model at {folder}: not a directory", file=ref, hint=MODEL_HINT)
    if not (folder / RECIPE_FILE).is_file():
        raise RunDirError(f"{folder} has no {RECIPE_FILE}, so it is not an sft-hub run or model",
                          file=ref, hint=MODEL_HINT)
    if not any((folder / f).is_file() for f in (*WEIGHT_FILES, "adapter_config.json")) \
            and not is_export(folder):
        raise RunDirError(f"{folder} holds no model weights nor adapter (an unfinished run?)",
                          file=ref, hint=MODEL_HINT)
    try:
        info = json.loads((folder / RUN_INFO).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        info = {}
    return ModelSource(ref, folder, info if isinstance(info, dict) else {})


def default_device(device: Optional[str] = None) -> str:
    import torch

    if device:
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise RecipeError(f"--device {device}: no CUDA device is available",
                              field="--device", hint="use --device cpu")
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(ref: Union[str, Path], *, device: Optional[str] = None,
               overrides: Iterable[str] = ()) -> LoadedModel:
    """Load a trained model with its task (``overrides``: ``key=value`` for its recipe, e.g.
    ``data.text_column=body``)."""
    if is_export(ref):  # an `sft-hub export` folder: ONNX Runtime, no torch (onnx_predictor.py)
        export = load_export(ref, overrides=list(overrides))
        return LoadedModel(ModelSource(str(ref), export.folder, {}), export.loaded, export.task,
                           export)
    source = resolve_source(ref)
    recipe_path = source.folder / RECIPE_FILE
    loaded = load_recipe(str(recipe_path), list(overrides))
    task = get_task_class(loaded.recipe.task)(loaded.recipe, loaded.base_dir)
    config = _saved_config(source.folder)
    if config is not None:
        task.adopt_model_config(config)
    else:  # an adapter alone: the labels are the run's
        task.labels = [str(x) for x in (source.run_info.get("labels")
                                        or loaded.recipe.data.labels or [])]
    if not task.labels:
        raise RunDirError(f"{source.folder} does not say which labels the model predicts (no "
                          "id2label in config.json, no labels in run_info.json)", file=str(ref),
                          hint=MODEL_HINT)
    _load_processor(task, source.folder)
    predictor = _load_predictor(source, task, default_device(device))
    return LoadedModel(source, loaded, task, predictor)


def _saved_config(folder: Path):
    if not (folder / "config.json").is_file():
        return None
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(str(folder))
    except (OSError, ValueError) as e:
        raise RunDirError(f"cannot read {folder / 'config.json'}: {e}", file=str(folder)) from None


def _load_processor(task: "Task", folder: Path) -> None:
    """The processor saved with the model (timm models: rebuilt from the saved config; an adapter
    run's processor is saved next to it)."""
    saved = any((folder / f).is_file() for f in ("tokenizer_config.json", "tokenizer.json",
                                                 "preprocessor_config.json", "config.json"))
    if not saved:
        task.build_processor()
        return
    cls = task.processor_class()
    try:
        task.processor = cls.from_pretrained(str(folder))
    except (OSError, ValueError) as e:
        raise RunDirError(f"cannot load the processor saved in {folder}: {e}", file=str(folder)
                          ) from None


def _has_full_weights(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any((folder / f).is_file() for f in WEIGHT_FILES)


def _load_predictor(source: ModelSource, task: "Task", device: str) -> Predictor:
    """The backend seam (see the module docstring): dispatch on what the folder holds."""
    folder = source.folder
    if _has_full_weights(folder):  # full fine-tuning, merged adapter, timm model
        model = task.auto_model_class().from_pretrained(str(folder))
    elif (folder / "adapter_config.json").is_file():
        model = _adapter_model(source, task)
    else:
        raise RunDirError(f"{folder} holds no model weights nor adapter", file=source.ref,
                          hint=MODEL_HINT)
    return TorchPredictor(model, device)


def _adapter_model(source: ModelSource, task: "Task"):
    """Base model + adapter: the base the recipe names (as training built it, head sized for the
    labels), else, when the recipe's weights are not on this machine, the base the adapter
    records."""
    from peft import PeftConfig, PeftModel

    from .models.transformers_backend import label_config

    folder = source.folder
    try:
        base = task.build_model()
    except SftHubError:
        config = PeftConfig.from_pretrained(str(folder))
        base = task.auto_model_class().from_pretrained(config.base_model_name_or_path,
                                                       **label_config(task.labels))
    extras = (source.run_info.get("task_contract") or {}).get("model_config") or {}
    base.config.update(extras)
    task.adopt_model_config(base.config)
    return PeftModel.from_pretrained(base, str(folder)).eval()


# -- batching -------------------------------------------------------------------------------------

def _trim(logits: np.ndarray, features: dict[str, Any]) -> np.ndarray:
    """One example's logits without its batch padding (per-token outputs)."""
    ids = features.get("input_ids")
    if logits.ndim == 2 and ids is not None:
        return logits[:len(ids)]
    return logits


def run_batches(model: LoadedModel, features: list[dict[str, Any]], *, batch_size: int,
                sort: bool = True, on_batch: Optional[Callable[[int], None]] = None
                ) -> list[np.ndarray]:
    """Logits of every example, in input order. With ``sort``, examples go into batches by
    length (longest first, so memory trouble shows at once), each padded to its own longest."""
    task, n = model.task, len(features)
    order = (sorted(range(n), key=lambda i: -task.input_length(features[i])) if sort
             else list(range(n)))
    out: list[Any] = [None] * n
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        logits = model.predictor.logits(model.collate([features[i] for i in idx]))
        for j, i in enumerate(idx):
            out[i] = _trim(logits[j], features[i])
        if on_batch is not None:
            on_batch(len(idx))
    return out
