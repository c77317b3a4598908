"""Image transforms: evaluation exactly as the saved model predicts, training augmentation presets.

Evaluation uses the model's own image processor (``AutoImageProcessor`` for transformers models,
the timm data config through ``TimmWrapperImageProcessor`` for timm models): the processor saved
in the run directory is what ``pipeline("image-classification", model=run_dir)`` uses, so the
validation and test metrics are measured with the preprocessing that prediction will use.

Training augmentation presets are built with timm's transform factory from the same data config
(input size, mean/std, interpolation):

- ``none``: the evaluation transform;
- ``light``: random resized crop (50-100% of the area) + horizontal flip;
- ``strong``: random resized crop (8-100%) + horizontal flip + RandAugment
  (``rand-m9-mstd0.5-inc1``) + random erasing (p=0.25).

Transforms run lazily (``Dataset.set_transform``): images are decoded and augmented per batch, in
the dataloader workers (``training.dataloader_num_workers``), never stored.
"""
from __future__ import annotations

from typing import Any, Callable

from ..errors import DataError
from .images import image_name, open_image

PRESETS = ("none", "light", "strong")
_PIL_INTERPOLATION = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box",
                      5: "hamming"}
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def _size_field(size: Any, key: str):
    if size is None:
        return None
    return size.get(key) if isinstance(size, dict) else getattr(size, key, None)


def _center_crop(processor: Any):
    """The processor's center-crop size, when it crops."""
    if getattr(processor, "do_center_crop", False):
        return getattr(processor, "crop_size", None)
    return None


def is_timm_processor(processor: Any) -> bool:
    return hasattr(processor, "data_config") and hasattr(processor, "val_transforms")


def data_config(processor: Any) -> dict[str, Any]:
    """What training augmentation must match in a timm or transformers image processor: the size
    it outputs (``input_size``), ``mean``, ``std`` and ``interpolation``, as a timm data config."""
    if is_timm_processor(processor):
        return dict(processor.data_config)
    size = getattr(processor, "size", None)
    crop = _center_crop(processor)
    height = _size_field(crop, "height") or _size_field(size, "height")
    width = _size_field(crop, "width") or _size_field(size, "width")
    if not (height and width):  # shortest-edge resize (then a square center crop, e.g. ConvNeXt)
        height = width = _size_field(size, "shortest_edge") or 224
    resample = getattr(processor, "resample", None)
    return {
        "input_size": (3, int(height), int(width)),
        "mean": tuple(getattr(processor, "image_mean", None) or _IMAGENET_MEAN),
        "std": tuple(getattr(processor, "image_std", None) or _IMAGENET_STD),
        "interpolation": _PIL_INTERPOLATION.get(int(resample), "bilinear") if resample is not None
        else "bilinear",
    }


def set_input_size(processor: Any, image_size: int) -> None:
    """Make a transformers image processor produce ``image_size`` x ``image_size`` inputs.

    Resize and center crop keep their ratio (resize 256 / crop 224 becomes 1.14 x size / size).
    The processor is saved with the run, so prediction uses the same size.
    """
    size = getattr(processor, "size", None)
    crop = _center_crop(processor)
    height, shortest = _size_field(size, "height"), _size_field(size, "shortest_edge")
    crop_h = _size_field(crop, "height")
    scale = image_size / crop_h if crop_h else None
    if crop_h:
        processor.crop_size = {"height": image_size, "width": image_size}
    if height:
        width = _size_field(size, "width") or height
        processor.size = ({"height": round(height * scale), "width": round(width * scale)} if scale
                          else {"height": image_size, "width": image_size})
    elif shortest:
        processor.size = {"shortest_edge": round(shortest * scale) if scale else image_size}
    else:
        processor.size = {"height": image_size, "width": image_size}


class ProcessorTransform:
    """One PIL image -> CHW tensor through a transformers image processor (picklable, so it runs in
    dataloader workers under any start method)."""

    def __init__(self, processor: Any):
        self.processor = processor

    def __call__(self, image):
        return self.processor(images=image, return_tensors="pt")["pixel_values"][0]


def eval_transform(processor: Any) -> Callable[[Any], Any]:
    """PIL RGB image -> CHW float tensor, exactly as the saved processor prepares it."""
    if is_timm_processor(processor):
        return processor.val_transforms
    return ProcessorTransform(processor)


def train_transform(processor: Any, preset: str) -> Callable[[Any], Any]:
    """The training transform for an augmentation preset (see the module docstring)."""
    if preset == "none":
        return eval_transform(processor)
    if preset not in PRESETS:
        raise ValueError(f"unknown augmentation preset {preset!r}; known: {', '.join(PRESETS)}")
    from timm.data import create_transform

    cfg = data_config(processor)
    common = dict(input_size=cfg["input_size"], is_training=True,
                  interpolation=cfg["interpolation"], mean=cfg["mean"], std=cfg["std"], hflip=0.5,
                  color_jitter=None)
    if preset == "light":
        return create_transform(**common, scale=(0.5, 1.0))
    return create_transform(**common, scale=(0.08, 1.0), auto_augment="rand-m9-mstd0.5-inc1",
                            re_prob=0.25)


class BatchTransform:
    """A ``set_transform`` function: undecoded images -> ``pixel_values`` (+ ``labels``).

    A file that fails to decode here (its header passed the up-front check) gets ``pixel_values``
    None and its ``(split, file, message)`` under ``bad_images``; :func:`collate` leaves it out of
    the batch and hands the problem to the main process (:class:`~sft_hub.data.images.ImageProblems`),
    which raises the file-naming :class:`~sft_hub.errors.DataError` or skips and counts it.
    """

    def __init__(self, transform: Callable, image_column: str, label_column: str, split: str):
        self.transform = transform
        self.image_column = image_column
        self.label_column = label_column
        self.split = split

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        pixels, problems = [], []
        for v in batch[self.image_column]:
            try:
                image = open_image(v, name=image_name(v, default=f"{self.split} image"))
            except DataError as exc:
                pixels.append(None)
                problems.append((self.split, exc.file, exc.message))
                continue
            pixels.append(self.transform(image))
            problems.append(None)
        out: dict[str, list] = {"pixel_values": pixels}
        if self.label_column in batch:
            out["labels"] = batch[self.label_column]
        if any(problems):
            out["bad_images"] = problems
        return out


def collate(examples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack ``pixel_values`` and ``labels`` of transformed examples into a batch; examples whose
    image did not decode are left out and listed under ``bad_images``."""
    import torch

    problems = [e["bad_images"] for e in examples if e.get("bad_images")]
    examples = [e for e in examples if e["pixel_values"] is not None]
    batch: dict[str, Any] = {}
    if examples:
        batch["pixel_values"] = torch.stack([e["pixel_values"] for e in examples])
        if "labels" in examples[0]:
            batch["labels"] = torch.tensor([int(e["labels"]) for e in examples], dtype=torch.long)
    if problems:
        batch["bad_images"] = problems
    return batch


class ImageCollator:
    """:func:`collate` plus the main-process side of images found unreadable during training
    (``take_side_channel``, called by sft-hub's Trainer before a batch reaches the model)."""

    def __init__(self, problems: Any):
        self.problems = problems

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        return collate(examples)

    def take_side_channel(self, batch: dict[str, Any]) -> dict[str, Any]:
        return self.problems.take(batch)
