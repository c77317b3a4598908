"""``image-classification``: one label per image, with a transformers or a timm backbone.

Data: a Hub dataset with an Image column, image folders (``data.files.train: photos/train`` laid
out as ``<label>/<image>``), or CSV/JSON tables with an image-path column (paths relative to the
table's folder) and a label column. Every image is opened as RGB by
:func:`sft_hub.data.images.open_image`; every image file's header is checked (a missing, empty or
non-image file fails the run, naming the file), in a background thread beside training, so that
the time to the first step does not grow with the data; pixels are decoded only when training
reads them (a file that fails then raises the same error). With ``data.skip_bad_images: true``
either kind is skipped and reported (training images when training meets them, evaluation images
before training).

Models: ``model.backend: transformers`` loads ``AutoModelForImageClassification`` and
``AutoImageProcessor`` (ViT, ConvNeXt, ResNet, Swin, and timm checkpoints on the Hub);
``model.backend: timm`` builds any timm architecture (see :mod:`sft_hub.models.timm_backend`).
Both give a transformers model whose run directory loads with
``pipeline("image-classification", model=run_dir)`` and predicts the real label names.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Optional

from pydantic import Field

from ..data.columns import column_values
from ..data.images import (BackgroundHeaderCheck, BadImages, check_label_folders,
                           find_bad_images, image_name, ImageProblems, open_image,
                           read_image_folder)
from ..data.sources import READERS, file_format, resolve_local
from ..data.transforms import (BatchTransform, eval_transform, ImageCollator, is_timm_processor,
                               train_transform)
from ..errors import DataError, RecipeError
from ..models.transformers_backend import label_config, load_model
from ..recipe.schema import Column, DataSpec, Switch
from . import TASKS
from ._single_label import SingleLabelTask

if TYPE_CHECKING:  # pragma: no cover
    from datasets import DatasetDict

READERS.setdefault("imagefolder", read_image_folder)


class ImageClassificationData(DataSpec):
    image_column: Column = Field("image", description="column holding images or image paths")
    label_column: Column = "label"
    augmentation: Literal["none", "light", "strong"] = Field(
        "light", description="training augmentation: none, light (random resized crop + flip), "
        "strong (+ RandAugment and random erasing)")
    image_size: Optional[int] = Field(
        None, gt=0, description="input resolution in pixels (default: the model's own)")
    skip_bad_images: Switch = Field(
        False, description="skip unreadable images (counted and reported) instead of failing")


@TASKS.register
class ImageClassification(SingleLabelTask):
    name = "image-classification"
    data_spec = ImageClassificationData
    pipeline_task = "image-classification"
    input_files = True
    image_inputs = True  # decoded per batch: workers, pinned memory, channels_last (speed.py)
    usage_input = ('from PIL import Image\n\n'
                   'inputs = Image.new("RGB", (224, 224), "white")  # or Image.open("photo.jpg")')

    @classmethod
    def auto_model_class(cls):
        from transformers import AutoModelForImageClassification

        return AutoModelForImageClassification

    def __init__(self, recipe, recipe_dir: Path):
        super().__init__(recipe, recipe_dir)
        self.bad_images = BadImages()
        self.header_checks: list[BackgroundHeaderCheck] = []  # run beside training
        self._timm_model: Any = None

    @property
    def uses_timm(self) -> bool:
        return self.recipe.model.backend == "timm"

    # -- validation (no torch) ----------------------------------------------------------------
    def required_columns(self) -> list[str]:
        return [self.recipe.data.image_column, self.recipe.data.label_column]

    def check_data(self) -> None:
        super().check_data()
        spec = self.recipe.data
        for split, value in (spec.files or {}).items():
            paths = resolve_local(value, self.recipe_dir, split=split)
            if file_format(paths, spec, split=split) == "imagefolder":
                for path in paths:
                    check_label_folders(path, split)  # the layout; files are listed at load

    # -- data ----------------------------------------------------------------------------------
    def prepare_raw(self, raw: "DatasetDict") -> "DatasetDict":
        """Image columns become undecoded images; table paths are resolved against their file."""
        from datasets import DatasetDict

        return DatasetDict({split: self._undecoded_images(split, ds) for split, ds in raw.items()})

    def _undecoded_images(self, split: str, ds):
        from datasets import Image, Value

        column = self.recipe.data.image_column
        feature = ds.features[column]
        if isinstance(feature, Image):
            return ds.cast_column(column, Image(decode=False))
        if not (isinstance(feature, Value) and feature.dtype in ("string", "large_string")):
            raise DataError(f"the {split} split's column {column!r} holds {feature}, not images or "
                            "image paths", field="data.image_column",
                            hint="point data.image_column at the image (or image path) column")
        base = self._table_folder(split)
        if base is not None:
            from ..data.images import resolve_image_path

            ds = ds.map(lambda b: {column: [resolve_image_path(v, base) for v in b[column]]},
                        batched=True, desc=f"image paths ({split})")
        return ds.cast_column(column, Image(decode=False))

    def _table_folder(self, split: str) -> Optional[Path]:
        """The folder image paths of a local table are relative to (None for Hub data)."""
        files = self.recipe.data.files
        if not files or split not in files:
            return None
        paths = resolve_local(files[split], self.recipe_dir, split=split)
        if any(p.is_dir() for p in paths):  # image folders: paths are absolute already
            return None
        folders = {p.parent.resolve() for p in paths}
        if len(folders) > 1:
            listed = ", ".join(map(str, sorted(folders)))
            raise DataError(f"the {split} files are in several folders ({listed}): image paths "
                            "in them would be ambiguous", field=f"data.files.{split}",
                            hint="keep one split's tables in one folder, or use absolute image "
                            "paths")
        return folders.pop()

    def load_data(self) -> "DatasetDict":
        """The final splits, with unreadable images failing the run or dropped and reported (the
        training split's files are checked beside training: :meth:`_check_images`)."""
        return self._check_images(super().load_data(), beside_training="train")

    def load_eval_data(self, raw: "DatasetDict") -> "DatasetDict":
        return self._check_images(super().load_eval_data(raw))

    def _check_images(self, dsd: "DatasetDict",
                      beside_training: Optional[str] = None) -> "DatasetDict":
        """Check every image file's header (no decoding): an unreadable one fails, naming the
        file, or is dropped and counted (``data.skip_bad_images``). Pixels that do not decode are
        found when training reads them (same error, or skipped and counted: data/images.py
        ImageProblems); so are images embedded in a Hub dataset, which are not read up front.

        When loading for training (``beside_training``: the training split's name), nothing is
        read here, so that the time to the first step does not grow with the data: every split's
        headers are checked in a background thread whose first finding fails the run at the next
        batch (:class:`BackgroundHeaderCheck`; a file training never reads, e.g. past
        ``max_steps``, fails nothing). With ``skip_bad_images`` an unreadable training image is
        skipped and counted when training meets it, and evaluation splits are checked here (their
        predictions are matched to their rows, so a bad row is dropped before evaluating)."""
        from datasets import DatasetDict

        spec = self.recipe.data
        out = {}
        for split, ds in dsd.items():
            if not spec.files:  # Hub data: the bytes are in the dataset; reading them costs the data
                out[split] = ds
                continue
            if beside_training is not None and not spec.skip_bad_images:
                self.header_checks.append(BackgroundHeaderCheck(
                    partial(column_values, ds, spec.image_column), split))
                out[split] = ds
                continue
            if split == beside_training:  # skipped and counted when training meets them
                out[split] = ds
                continue
            values = (v for batch in ds.select_columns([spec.image_column]).iter(batch_size=256)
                      for v in batch[spec.image_column])
            bad = find_bad_images(values, split=split, skip=spec.skip_bad_images,
                                  bad=self.bad_images)
            if bad:
                drop = set(bad)
                ds = ds.select([i for i in range(len(ds)) if i not in drop])
                if len(ds) == 0:
                    raise DataError(f"every image of the {split} split is unreadable",
                                    field="data.files" if spec.files else "data.dataset")
            out[split] = ds
        if self.bad_images.count:
            import logging

            message = self.bad_images.summary()
            logging.getLogger(__name__).warning(message)
            self.notes.append(message)
        return DatasetDict(out)

    # -- model and processor -------------------------------------------------------------------
    def build_processor(self) -> Any:
        """The evaluation preprocessing the saved model predicts with.

        For timm models it comes from the model's data config, so the model is built here (once).
        """
        image_size = self.recipe.data.image_size
        if self.uses_timm:
            from ..models.timm_backend import build_timm_classifier, image_processor

            if self.recipe.model.processor:
                raise RecipeError("model.processor is not used with the timm backend: timm models "
                                  "preprocess with their own data config", field="model.processor",
                                  hint="remove model.processor (set data.image_size to change the "
                                  "input resolution)")
            self._timm_model = build_timm_classifier(self.recipe.model, self.recipe_dir,
                                                     self.labels, image_size)
            self.processor = image_processor(self._timm_model)
        else:
            from transformers import AutoImageProcessor

            from ..data.transforms import set_input_size
            from ..models.transformers_backend import load_processor

            self.processor = load_processor(self.recipe.model, self.recipe_dir, AutoImageProcessor)
            if image_size:
                set_input_size(self.processor, image_size)
        return self.processor

    def build_model(self) -> Any:
        if self.uses_timm:
            if self._timm_model is None:
                self.build_processor()
            model, self._timm_model = self._timm_model, None
            return model
        spec, image_size = self.recipe.model, self.recipe.data.image_size
        extra = {"image_size": image_size} if image_size and not spec.pretrained else {}
        model = load_model(spec, self.recipe_dir, self.auto_model_class(),
                           **label_config(self.labels), **extra)
        model.config.update(self.model_config_extras())
        fixed = getattr(model.config, "image_size", None)
        if image_size and isinstance(fixed, int) and fixed != image_size:
            raise RecipeError(f"{spec.name} takes {fixed}x{fixed} images; data.image_size is "
                              f"{image_size}", field="data.image_size",
                              hint=f"remove data.image_size or set it to {fixed}")
        return model

    def save_processor(self, out_dir: Path) -> None:
        if not is_timm_processor(self.processor):  # timm: the data config is in config.json
            super().save_processor(out_dir)

    # -- training-time data --------------------------------------------------------------------
    def preprocess(self, raw: "DatasetDict") -> "DatasetDict":
        """Attach lazy transforms: augmentation for train, the model's own preprocessing else."""
        from datasets import DatasetDict

        spec = self.recipe.data
        evaluate = eval_transform(self.processor)
        train = train_transform(self.processor, spec.augmentation)
        return DatasetDict({
            split: ds.with_transform(BatchTransform(train if split == "train" else evaluate,
                                                    spec.image_column, spec.label_column, split))
            for split, ds in raw.items()})

    def data_collator(self):
        # images that decode badly during training fail or are skipped on the main process
        return ImageCollator(ImageProblems(self.bad_images, skip=self.recipe.data.skip_bad_images,
                                           notes=self.notes, checks=self.header_checks))

    # -- eval and predict ----------------------------------------------------------------------
    @classmethod
    def processor_class(cls) -> type:
        from transformers import AutoImageProcessor

        return AutoImageProcessor

    def input_columns(self) -> list[str]:
        return [self.recipe.data.image_column]

    def encode_inputs(self, rows: dict) -> list[dict]:
        """Images (paths, bytes or PIL images) -> ``pixel_values`` by the evaluation transform;
        an unreadable image is a DataError naming the file."""
        transform = eval_transform(self.processor)
        return [{"pixel_values": transform(open_image(v, name=image_name(v)))}
                for v in rows[self.recipe.data.image_column]]

    def example_text(self, row: dict) -> str:
        return image_name(row.get(self.recipe.data.image_column), default="<image>")

    def trainer_kwargs(self) -> dict[str, Any]:
        # The raw image column must reach the lazy transform, so the Trainer must not drop it.
        return {"remove_unused_columns": False}
