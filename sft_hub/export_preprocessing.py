"""Export time: the run's preprocessing as torch-free data, and the check that it reproduces it.

:func:`preprocessing_spec` turns the run's processor into what :mod:`sft_hub.onnx_predictor`
runs without transformers: a tokenizer becomes ``tokenizer.json`` plus the few settings the
``tokenizers`` library needs; an image processor (transformers' or timm's evaluation transform)
becomes a list of Pillow/numpy steps. A processor that cannot be described this way is an
ExportError naming what is missing.

:func:`check_preprocessing` runs the task's own preprocessing twice on validation examples, once
with the run's processor and once with the torch-free one, through both paths the served model
uses (``preprocess`` for ``eval``, ``encode_inputs`` for ``predict``). Token ids must be identical;
for images the largest pixel difference is recorded, and for both the end-to-end figure: the
ONNX model on torch-free inputs against PyTorch on the run's inputs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np

from .errors import SftHubError
from .onnx_predictor import build_processor, pad_batch

TOKENIZER_FILE = "tokenizer.json"
_INTERPOLATION = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
PIXEL_TOLERANCE = 1e-4


class ExportPreprocessingError(SftHubError):
    """The run's preprocessing cannot be reproduced without torch."""


def preprocessing_spec(task, folder: Path) -> dict[str, Any]:
    """The torch-free description of ``task.processor`` (files it names are in ``folder``)."""
    processor = task.processor
    if hasattr(processor, "backend_tokenizer"):
        return _tokenizer_spec(processor, folder)
    if hasattr(processor, "val_transforms"):
        return {"kind": "image", "source": "timm", "steps": _timm_steps(processor.val_transforms)}
    if hasattr(processor, "image_mean") or hasattr(processor, "do_resize"):
        return {"kind": "image", "source": type(processor).__name__,
                "steps": _transformers_steps(processor)}
    raise ExportPreprocessingError(
        f"the run's processor {type(processor).__name__} is neither a fast tokenizer nor an image "
        "processor; the ONNX predictor cannot reproduce it without torch",
        hint="serve the run with PyTorch (`sft-hub predict RUN_DIR`)")


def _tokenizer_spec(tokenizer, folder: Path) -> dict[str, Any]:
    path = folder / TOKENIZER_FILE
    if not path.is_file():
        tokenizer.backend_tokenizer.save(str(path))
    limit = getattr(tokenizer, "model_max_length", None)
    return {"kind": "tokenizer", "file": TOKENIZER_FILE, "class": type(tokenizer).__name__,
            "model_input_names": list(tokenizer.model_input_names),
            "pad_token_id": tokenizer.pad_token_id,
            "padding_side": getattr(tokenizer, "padding_side", "right"),
            "truncation_side": getattr(tokenizer, "truncation_side", "right"),
            "model_max_length": int(limit) if limit and limit < 1_000_000 else None}


def _timm_steps(compose) -> list[dict[str, Any]]:
    steps = []
    for t in getattr(compose, "transforms", [compose]):
        name = type(t).__name__
        if name == "Resize":
            size = t.size
            interpolation = getattr(t.interpolation, "value", str(t.interpolation))
            if isinstance(size, int) or (isinstance(size, (list, tuple)) and len(size) == 1):
                edge = size if isinstance(size, int) else size[0]
                steps.append({"op": "resize", "shortest_edge": int(edge),
                              "max_size": t.max_size, "interpolation": interpolation})
            else:
                steps.append({"op": "resize", "size": [int(s) for s in size],
                              "interpolation": interpolation})
        elif name == "CenterCrop":
            steps.append({"op": "center_crop", "size": [int(s) for s in t.size], "offset": "round"})
        elif name in ("ToTensor", "MaybeToTensor"):
            steps.append({"op": "divide", "by": 255.0})
        elif name == "Normalize":
            steps.append({"op": "normalize", "mean": [float(v) for v in np.asarray(t.mean)],
                          "std": [float(v) for v in np.asarray(t.std)]})
        else:
            raise ExportPreprocessingError(
                f"the timm evaluation transform step {name} cannot be reproduced without torch",
                hint="export supports Resize, CenterCrop, ToTensor and Normalize (timm's "
                "crop_mode: center); serve the run with PyTorch (`sft-hub predict RUN_DIR`)")
    return steps


def _field(size: Any, key: str) -> Optional[int]:
    if size is None:
        return None
    value = size.get(key) if isinstance(size, dict) else getattr(size, key, None)
    return int(value) if value else None


def _transformers_steps(processor) -> list[dict[str, Any]]:
    """transformers' resize -> center crop -> rescale -> normalise, as its PIL backend does it."""
    steps: list[dict[str, Any]] = []
    resample = getattr(processor, "resample", None)
    resample = getattr(resample, "value", resample)
    interpolation = _INTERPOLATION.get(int(resample), "bilinear") if resample is not None \
        else "bilinear"
    if getattr(processor, "do_resize", False):
        size = getattr(processor, "size", None)
        height, width = _field(size, "height"), _field(size, "width")
        shortest = _field(size, "shortest_edge")
        if height and width:
            steps.append({"op": "resize", "size": [height, width], "interpolation": interpolation})
        elif shortest and not _field(size, "longest_edge"):
            steps.append({"op": "resize", "shortest_edge": shortest, "max_size": None,
                          "interpolation": interpolation})
        else:
            raise ExportPreprocessingError(
                f"the image processor {type(processor).__name__} resizes to {size}, which the "
                "ONNX predictor does not reproduce (it knows height/width and shortest_edge)",
                hint="serve the run with PyTorch (`sft-hub predict RUN_DIR`)")
    if getattr(processor, "do_center_crop", False):
        crop = getattr(processor, "crop_size", None)
        steps.append({"op": "center_crop", "size": [_field(crop, "height"), _field(crop, "width")],
                      "offset": "floor"})
    if getattr(processor, "do_rescale", False):
        steps.append({"op": "rescale", "factor": float(processor.rescale_factor)})
    if getattr(processor, "do_normalize", False):
        steps.append({"op": "normalize", "mean": [float(v) for v in processor.image_mean],
                      "std": [float(v) for v in processor.image_std]})
    return steps


# -- the check --------------------------------------------------------------------------------------

def _as_array(value: Any) -> np.ndarray:
    return np.asarray(value.numpy() if hasattr(value, "numpy") else value)


def _compare(expected: list[dict[str, Any]], got: list[dict[str, Any]], where: str,
             figures: dict[str, Any]) -> None:
    """Integer features must be equal (ExportPreprocessingError otherwise); the largest float
    difference goes into ``figures``."""
    for i, (a, b) in enumerate(zip(expected, got)):
        for key, value in a.items():
            if key not in b:
                raise ExportPreprocessingError(
                    f"the torch-free preprocessing gives no {key!r} ({where}, example {i})",
                    hint="report this processor as unsupported by sft-hub export")
            x, y = _as_array(value), _as_array(b[key])
            if x.dtype.kind == "f" or y.dtype.kind == "f":
                if x.shape != y.shape:
                    raise ExportPreprocessingError(
                        f"the torch-free preprocessing gives {key} of shape {y.shape}, the "
                        f"run's {x.shape} ({where}, example {i})",
                        hint="report this processor as unsupported by sft-hub export")
                diff = float(np.max(np.abs(x.astype(np.float64) - y))) if x.size else 0.0
                figures["max_abs_pixel_diff"] = max(figures.get("max_abs_pixel_diff", 0.0), diff)
            elif x.shape != y.shape or not np.array_equal(x, y):
                raise ExportPreprocessingError(
                    f"tokenizer.json through the tokenizers library does not reproduce the run's "
                    f"tokenizer: {key} differ ({where}, example {i})",
                    hint="report this tokenizer as unsupported by sft-hub export")


def _rows(task, split, limit: int) -> Optional[dict[str, list]]:
    """Up to ``limit`` unlabelled rows for ``encode_inputs`` from the validation split (for a task
    that predicts from running text but trains on words: the task's text of each example)."""
    columns = list(task.input_columns()) if hasattr(task, "input_columns") else []
    if not columns:
        return None
    part = split.select(range(min(limit, len(split))))
    if all(c in part.column_names for c in columns):
        return {c: list(part[c]) for c in columns}
    if len(columns) == 1 and hasattr(task, "example_text"):
        return {columns[0]: [task.example_text(row) for row in part]}
    return None


def check_preprocessing(task, spec: dict[str, Any], folder: Path, split, model, session, *,
                        limit: int) -> dict[str, Any]:
    """Compare the run's preprocessing with the torch-free one on ``limit`` validation examples
    (see the module docstring); returns the figures recorded in ``export_info.json``."""
    from datasets import DatasetDict

    original = task.processor
    free = build_processor(folder, spec)
    part = split.select(range(min(limit, len(split))))
    figures: dict[str, Any] = {"examples": len(part)}

    def preprocess(processor) -> list[dict[str, Any]]:
        task.processor = processor
        data = task.preprocess(DatasetDict({"validation": part}))["validation"]
        return [data[i] for i in range(len(data))]

    try:
        _compare(preprocess(original), preprocess(free), "evaluation preprocessing", figures)
        rows = _rows(task, split, limit)
        if rows is not None and hasattr(task, "encode_inputs"):
            task.processor = original
            expected = task.encode_inputs(rows)
            task.processor = free
            got = task.encode_inputs(rows)
            _compare(expected, got, "prediction preprocessing", figures)
            figures.update(_end_to_end(task, model, session, expected, got, original))
    finally:
        task.processor = original
    return figures


def _end_to_end(task, model, session, expected, got, original) -> dict[str, Any]:
    """ONNX Runtime on the torch-free inputs against PyTorch on the run's, for predict."""
    import torch

    worst, same, total = 0.0, 0, 0
    wanted = {i.name for i in session.get_inputs()}
    for start in range(0, len(expected), 8):
        a, b = expected[start:start + 8], got[start:start + 8]
        task.processor = original
        batch = task.collate_inputs(a) if hasattr(task, "collate_inputs") else None
        if batch is None:
            return {}
        with torch.no_grad():
            out = model(**{k: v for k, v in batch.items() if k in wanted})
        reference = (out.logits if hasattr(out, "logits") else out[0]).numpy()
        padded = pad_batch(b, pad_token_id=getattr(original, "pad_token_id", 0) or 0,
                           padding_side=getattr(original, "padding_side", "right"))
        logits = session.run(["logits"], {k: v for k, v in padded.items() if k in wanted})[0]
        if logits.shape != reference.shape:
            continue
        worst = max(worst, float(np.max(np.abs(logits - reference))))
        same += int(np.sum(logits.argmax(-1) == reference.argmax(-1)))
        total += int(np.prod(reference.shape[:-1]))
    return {"predict_max_abs_logit_diff": worst,
            "predict_argmax_agreement": same / total if total else None}
