"""Serving an export folder (``sft-hub export``) with ONNX Runtime, without PyTorch.

This module imports only ONNX Runtime, numpy, Pillow, the ``tokenizers`` library and sft-hub's
torch-free modules (the recipe, the task plugins). Neither torch nor transformers is imported on
this path: ``tests/test_export.py`` checks ``sys.modules`` in a fresh process.

The task object the run was trained with is rebuilt from the folder's ``recipe.yaml`` and asked
the same questions as for a run directory (``encode_inputs``, ``preprocess``, ``decode_logits``,
``task_metrics``...); what it would normally get from transformers is replaced by torch-free
equivalents recorded at export time (``export_info.json`` -> ``preprocessing``):

- text: :class:`JsonTokenizer`, ``tokenizer.json`` run by the ``tokenizers`` library with the
  calling conventions the tasks use (truncation, pairs, pre-split words, offsets, ``word_ids``);
- images: :class:`ImageSteps`, the processor's resize / center crop / rescale / normalise steps
  done with Pillow and numpy;
- batches: :func:`pad_batch` pads with the tokenizer's pad id (labels with -100) into numpy arrays.

``sft-hub export`` checks both against the run's own preprocessing on validation examples and
records the result in ``export_info.json`` (``parity.preprocessing``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional, Sequence, Union

import numpy as np

from .catalog import load_recipe
from .errors import RunDirError, SftHubError
from .tasks import get_task_class

EXPORT_INFO = "export_info.json"
MODEL_FILE = "model.onnx"
INT8_FILE = "model_int8.onnx"
RECIPE_FILE = "recipe.yaml"
PREPROCESSING_VERSION = 1
EXPORT_EXTRA_HINT = 'pip install "sft-hub[export]"'
IGNORE_INDEX = -100


def require_onnxruntime() -> None:
    import importlib.util

    if importlib.util.find_spec("onnxruntime") is None:
        raise SftHubError("running an ONNX export needs onnxruntime, which is not installed",
                          hint=EXPORT_EXTRA_HINT)


def read_export_info(folder: Union[str, Path]) -> dict[str, Any]:
    folder = Path(folder)
    try:
        return json.loads((folder / EXPORT_INFO).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunDirError(f"{folder} is not an sft-hub export (no {EXPORT_INFO})", field="PATH",
                          hint="pass a folder written by `sft-hub export`") from None
    except ValueError as e:
        raise RunDirError(f"{folder / EXPORT_INFO} is not valid JSON: {e}", field="PATH",
                          hint="export the run again") from None


def is_export(ref: Union[str, Path]) -> bool:
    """An export folder, or one of its ``.onnx`` files (which picks that model)."""
    path = Path(str(ref))
    if path.suffix == ".onnx" and path.is_file():
        path = path.parent
    return (path / EXPORT_INFO).is_file()


# -- text ---------------------------------------------------------------------------------------------

class Encoded(dict):
    """A tokenizer's output: column -> one list per text, plus ``word_ids(i)`` and ``encodings``
    (what transformers' BatchEncoding offers the tasks)."""

    def __init__(self, data: dict[str, list], encodings: list):
        super().__init__(data)
        self.encodings = encodings

    def word_ids(self, index: int = 0) -> list[Optional[int]]:
        return list(self.encodings[index].word_ids)


class JsonTokenizer:
    """``tokenizer.json`` through the ``tokenizers`` library, called like a transformers fast
    tokenizer (the subset sft-hub's tasks use). ``spec``: what export recorded
    (``model_input_names``, ``pad_token_id``, ``padding_side``, ``truncation_side``,
    ``model_max_length``)."""

    is_fast = True

    def __init__(self, path: Union[str, Path], spec: dict[str, Any]):
        from tokenizers import Tokenizer

        self.backend_tokenizer = Tokenizer.from_file(str(path))
        self.backend_tokenizer.no_padding()
        self.backend_tokenizer.no_truncation()
        self.model_input_names = list(spec["model_input_names"])
        self.pad_token_id = int(spec.get("pad_token_id") or 0)
        self.padding_side = spec.get("padding_side", "right")
        self.truncation_side = spec.get("truncation_side", "right")
        self.model_max_length = spec.get("model_max_length")

    def __call__(self, text, text_pair=None, *, truncation: bool = False,
                 max_length: Optional[int] = None, is_split_into_words: bool = False,
                 return_offsets_mapping: bool = False, return_special_tokens_mask: bool = False,
                 add_special_tokens: bool = True, **_ignored) -> Encoded:
        single = isinstance(text, str) or (is_split_into_words and text and isinstance(text[0], str))
        texts = [text] if single else list(text)
        pairs = None if text_pair is None else ([text_pair] if single else list(text_pair))
        tok = self.backend_tokenizer
        limit = max_length or self.model_max_length
        if truncation and limit:
            tok.enable_truncation(int(limit), strategy="longest_first",
                                  direction=self.truncation_side)
        else:
            tok.no_truncation()
        inputs = list(zip(texts, pairs)) if pairs is not None else texts
        encodings = tok.encode_batch(inputs, is_pretokenized=is_split_into_words,
                                     add_special_tokens=add_special_tokens)
        columns = {"input_ids": [e.ids for e in encodings],
                   "token_type_ids": [e.type_ids for e in encodings],
                   "attention_mask": [e.attention_mask for e in encodings]}
        out = {k: columns[k] for k in self.model_input_names if k in columns}
        if return_offsets_mapping:
            out["offset_mapping"] = [[tuple(o) for o in e.offsets] for e in encodings]
        if return_special_tokens_mask:
            out["special_tokens_mask"] = [e.special_tokens_mask for e in encodings]
        return Encoded(out, encodings)


# -- images -------------------------------------------------------------------------------------------

_RESAMPLE = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3, "box": 4, "hamming": 5}


class ImageSteps:
    """An image processor as plain steps, run with Pillow and numpy (channels first, float32).

    Steps: ``resize`` (``size: [h, w]``, or ``shortest_edge`` keeping the aspect ratio, as
    torchvision and transformers compute it), ``center_crop`` (``size``; ``offset``: ``round``
    as torchvision, ``floor`` as transformers), ``rescale`` (``factor``), ``normalize``
    (``mean``, ``std``)."""

    def __init__(self, steps: list[dict[str, Any]]):
        self.steps = steps

    def __call__(self, images=None, return_tensors=None, **_ignored) -> dict[str, Any]:
        batch = images if isinstance(images, (list, tuple)) else [images]
        return {"pixel_values": np.stack([self.one(im) for im in batch])}

    def one(self, image) -> np.ndarray:
        from PIL import Image

        if not isinstance(image, Image.Image):
            image = Image.fromarray(np.asarray(image))
        if image.mode != "RGB":
            image = image.convert("RGB")
        array: Optional[np.ndarray] = None
        for step in self.steps:
            op = step["op"]
            if op == "resize":
                image = image.resize(_resize_size(image.size, step),
                                     _RESAMPLE[step.get("interpolation", "bilinear")])
            elif op == "center_crop":
                image = _center_crop(image, step)
            elif op == "rescale":
                array = np.asarray(image, dtype=np.float32) * np.float32(step["factor"])
            elif op == "divide":
                array = np.asarray(image, dtype=np.float32) / np.float32(step["by"])
            elif op == "normalize":
                if array is None:
                    array = np.asarray(image, dtype=np.float32)
                array = ((array - np.asarray(step["mean"], dtype=np.float32))
                         / np.asarray(step["std"], dtype=np.float32))
            else:
                raise SftHubError(f"unknown image preprocessing step {op!r} in {EXPORT_INFO}",
                                  hint="export the run again with this sft-hub version")
        if array is None:
            array = np.asarray(image, dtype=np.float32)
        return np.ascontiguousarray(array.transpose(2, 0, 1), dtype=np.float32)


def _resize_size(size: tuple[int, int], step: dict[str, Any]) -> tuple[int, int]:
    """(width, height) for PIL."""
    if "size" in step:
        height, width = step["size"]
        return int(width), int(height)
    width, height = size
    short, long = (width, height) if width <= height else (height, width)
    new_short = int(step["shortest_edge"])
    new_long = int(new_short * long / short)
    if step.get("max_size") and new_long > step["max_size"]:
        new_short, new_long = int(step["max_size"] * new_short / new_long), int(step["max_size"])
    return (new_short, new_long) if width <= height else (new_long, new_short)


def _center_crop(image, step: dict[str, Any]):
    from PIL import Image

    crop_h, crop_w = (int(v) for v in step["size"])
    width, height = image.size
    if crop_w > width or crop_h > height:  # pad with black first, as torchvision does
        canvas = Image.new(image.mode, (max(width, crop_w), max(height, crop_h)))
        canvas.paste(image, ((max(width, crop_w) - width) // 2, (max(height, crop_h) - height) // 2))
        image, (width, height) = canvas, canvas.size
    if step.get("offset", "round") == "round":
        top, left = int(round((height - crop_h) / 2.0)), int(round((width - crop_w) / 2.0))
    else:
        top, left = (height - crop_h) // 2, (width - crop_w) // 2
    return image.crop((left, top, left + crop_w, top + crop_h))


def text_encoder(folder: Path, spec: dict[str, Any]) -> JsonTokenizer:
    return JsonTokenizer(folder / spec["file"], spec)


def build_processor(folder: Path, spec: dict[str, Any]) -> Any:
    """The torch-free processor that ``spec`` (``export_info.json`` -> ``preprocessing``) names."""
    if spec["kind"] == "tokenizer":
        return text_encoder(folder, spec)
    if spec["kind"] == "image":
        return ImageSteps(spec["steps"])
    raise SftHubError(f"unknown preprocessing kind {spec['kind']!r} in {EXPORT_INFO}",
                      hint="export the run again with this sft-hub version")


# -- batches ------------------------------------------------------------------------------------------

def pad_batch(features: Sequence[dict[str, Any]], *, pad_token_id: int = 0,
              padding_side: str = "right") -> dict[str, np.ndarray]:
    """Model-input dicts (lists or arrays; keys starting with ``_`` are left out) -> one padded
    numpy batch: ``input_ids`` padded with the pad id, ``labels`` with -100, others with 0."""
    out: dict[str, np.ndarray] = {}
    for key in features[0]:
        if key.startswith("_"):
            continue
        values = [f[key] for f in features]
        first = np.asarray(values[0])
        if first.ndim == 0:
            out[key] = np.asarray(values, dtype=np.int64)
            continue
        if first.dtype.kind == "f" or first.ndim > 1:  # pixel values: same shape already
            out[key] = np.stack([np.asarray(v, dtype=np.float32) for v in values])
            continue
        width = max(len(v) for v in values)
        fill = pad_token_id if key == "input_ids" else IGNORE_INDEX if key == "labels" else 0
        batch = np.full((len(values), width), fill, dtype=np.int64)
        for i, v in enumerate(values):
            if len(v):
                if padding_side == "left":
                    batch[i, width - len(v):] = v
                else:
                    batch[i, :len(v)] = v
        out[key] = batch
    return out


# -- the model ----------------------------------------------------------------------------------------

@dataclass
class OnnxExport:
    """An export folder ready to run: the task (rebuilt from ``recipe.yaml``, with the export's
    labels and torch-free processor), the ONNX Runtime session, and what export recorded."""

    folder: Path
    info: dict[str, Any]
    loaded: Any         # the recipe (LoadedRecipe) the run was trained with
    task: Any
    session: Any
    variant: str
    device: str = "cpu"

    @property
    def labels(self) -> list[str]:
        return list(self.task.labels)

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.session.get_inputs()]

    def collate(self, features: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
        processor = self.task.processor
        return pad_batch(features, pad_token_id=getattr(processor, "pad_token_id", 0),
                         padding_side=getattr(processor, "padding_side", "right"))

    def logits(self, batch: dict[str, Any]) -> np.ndarray:
        """Logits for a batch of model inputs (numpy arrays, or anything ``np.asarray`` takes;
        ``labels`` and keys the graph does not take are ignored)."""
        feeds = {}
        for name in self.input_names:
            if name not in batch:
                raise SftHubError(f"the ONNX model needs the input {name!r}, which the "
                                  "preprocessing did not produce",
                                  hint="export the run again with this sft-hub version")
            value = batch[name]
            value = value.numpy() if hasattr(value, "numpy") else np.asarray(value)
            feeds[name] = value.astype(np.float32 if value.dtype.kind == "f" else np.int64)
        return self.session.run(["logits"], feeds)[0]


def model_config(folder: Path, info: dict[str, Any]) -> SimpleNamespace:
    """The export's ``config.json`` as an object with ``id2label`` (int keys), as tasks read it."""
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    id2label = config.get("id2label") or dict(enumerate(info["labels"]))
    config["id2label"] = {int(k): v for k, v in id2label.items()}
    config["label2id"] = {v: k for k, v in config["id2label"].items()}
    return SimpleNamespace(**config)


def load_export(folder: Union[str, Path], variant: Optional[str] = None, *,
                overrides: Sequence[str] = ()) -> OnnxExport:
    """An export folder as an :class:`OnnxExport`. The model: ``variant`` (``float`` or
    ``int8``), or the ``.onnx`` file ``folder`` names, else the export's default (int8 when it
    quantised). ``overrides``: ``key=value`` for its recipe, e.g. ``data.text_column=body``."""
    require_onnxruntime()
    import onnxruntime as ort

    folder = Path(folder)
    chosen = None
    if folder.suffix == ".onnx" and folder.is_file():  # exports/x/model_int8.onnx: that model
        folder, chosen = folder.parent, folder.name
    info = read_export_info(folder)
    models = info.get("models", {"float": MODEL_FILE})
    if chosen is not None:
        variant = next((v for v, f in models.items() if f == chosen), None)
        if variant is None:
            raise RunDirError(f"{chosen} is not one of the models of {folder} "
                              f"({', '.join(models.values())})", field="MODEL",
                              hint="pass the export folder or one of its models")
    variant = variant or info.get("default_model", "float")
    if variant not in models:
        raise RunDirError(f"{folder} has no {variant} model (it has: {', '.join(models)})",
                          field="MODEL", hint=f"use one of: {', '.join(models)}")
    loaded = load_recipe(str(folder / RECIPE_FILE), list(overrides))
    task = get_task_class(loaded.recipe.task)(loaded.recipe, loaded.base_dir)
    task.labels = list(info["labels"])
    if hasattr(task, "adopt_model_config"):  # the task's own config keys (e.g. thresholds)
        task.adopt_model_config(model_config(folder, info))
    task.processor = build_processor(folder, info["preprocessing"])
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(folder / models[variant]), options,
                                   providers=["CPUExecutionProvider"])
    return OnnxExport(folder, info, loaded, task, session, variant)


@dataclass
class EvalPrediction:
    """What a task's ``compute_metrics`` reads, as ``transformers.EvalPrediction`` holds it,
    without importing transformers (and torch) on the ONNX Runtime path."""

    predictions: Any
    label_ids: Any
    inputs: Any = None

    def __iter__(self):
        return iter((self.predictions, self.label_ids))

    def __getitem__(self, index: int):
        return (self.predictions, self.label_ids)[index]
