"""The timm backend: any timm architecture, wrapped as a transformers model.

A timm model is built by timm itself (``timm.create_model``), so every way timm loads weights
works: a registry name with its default pretrained weights (``resnet18``, ``resnet50.a1_in1k``),
a Hub repository (``timm/vit_small_patch16_224.augreg_in21k``, ``hf-hub:...``), a local weights
file (``model.path: weights.safetensors``, via ``pretrained_cfg_overlay=dict(file=...)``) or folder
(``local-dir:``), or random weights (``model.pretrained: false``). timm replaces the classifier when
the class count differs from the checkpoint's.

The model is then placed inside transformers' ``TimmWrapperForImageClassification``: the Trainer
gets an ``ImageClassifierOutput`` with the loss, and ``save_pretrained`` writes timm's native layout
(``config.json`` with ``architecture``, ``pretrained_cfg`` and ``label_names``;
``model.safetensors`` with timm's own parameter names). A run directory therefore loads with
``timm.create_model("local-dir:<run>", pretrained=True)``, after a push with
``timm.create_model("hf-hub:<repo>", pretrained=True)``, and with
``pipeline("image-classification", model=<run>)``, which predicts the real label names.
"""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Optional

from ..errors import RecipeError
from ..recipe.schema import ModelSpec
from .transformers_backend import resolve_model_path

SOURCE_PREFIXES = ("hf-hub:", "local-dir:")


def timm_source(spec: ModelSpec, base_dir: Path) -> tuple[str, dict[str, Any]]:
    """(name for ``timm.create_model``, keyword arguments that choose the weights)."""
    path = resolve_model_path(spec, base_dir)
    if path is not None:
        if not spec.pretrained:
            raise RecipeError("model.path gives weights but model.pretrained is false",
                              field="model.pretrained",
                              hint="remove model.path to train from scratch, or set "
                              "pretrained: true")
        if path.is_dir():
            return f"local-dir:{path}", {"pretrained": True}
        if spec.name.startswith(SOURCE_PREFIXES) or "/" in spec.name:
            raise RecipeError("with a weights file in model.path, model.name must be a timm "
                              f"architecture name, not {spec.name!r}", field="model.name",
                              hint="e.g. name: efficientnet_lite0")
        return spec.name, {"pretrained": True, "pretrained_cfg_overlay": {"file": str(path)}}
    name = spec.name
    if "/" in name and not name.startswith(SOURCE_PREFIXES):  # a Hub repository id
        name = f"hf-hub:{name}"
    if name.startswith("hf-hub:") and spec.revision and "@" not in name:
        name = f"{name}@{spec.revision}"
    return name, {"pretrained": spec.pretrained}


def _create(name: str, kwargs: dict[str, Any], spec: ModelSpec):
    import timm

    if not name.startswith(SOURCE_PREFIXES):
        arch = name.split(".")[0]
        known = timm.list_models()
        if arch not in known:
            close = difflib.get_close_matches(arch, known, n=3)
            raise RecipeError(f"timm has no architecture {arch!r}", field="model.name",
                              hint=(f"did you mean {', '.join(close)}? " if close else "")
                              + "see timm.list_models()")
    try:
        return timm.create_model(name, **kwargs)
    except RuntimeError as e:
        if "Error(s) in loading state_dict" in str(e):
            raise RecipeError(f"the weights do not fit timm architecture {spec.name!r}: "
                              f"{str(e).splitlines()[0]}", field="model.path",
                              hint="use the architecture the weights were trained with") from None
        raise RecipeError(f"cannot create timm model {name!r}: {e}", field="model.name",
                          hint="offline, set model.path to a local weights file, or "
                          "model.pretrained: false for random weights") from None
    except (OSError, ValueError) as e:
        raise RecipeError(f"cannot load timm weights for {name!r}: {e}", field="model.name",
                          hint="check the name and your network; offline, set model.path to a "
                          "local weights file, or model.pretrained: false for random weights"
                          ) from None


def build_timm_classifier(spec: ModelSpec, base_dir: Path, labels: list[str],
                          image_size: Optional[int] = None):
    """A ``TimmWrapperForImageClassification`` around a timm model with a ``len(labels)`` head.

    ``image_size`` sets the input resolution; models with a fixed input size (ViT) are built for it
    (timm resamples their position embeddings when loading pretrained weights).
    """
    name, kwargs = timm_source(spec, base_dir)
    kwargs["num_classes"] = len(labels)
    if image_size and _fixed_input_size(name, spec):
        kwargs["img_size"] = image_size
    model = _create(name, kwargs, spec)
    if kwargs.get("pretrained") and model.pretrained_cfg.get("num_classes") != len(labels):
        _init_new_head(model)
    return _wrap(model, labels, image_size)


def _wrap(model, labels: list[str], image_size: Optional[int]):
    """The timm model inside ``TimmWrapperForImageClassification``, through the two libraries'
    public save/load: timm's ``save_for_hf`` writes its native layout, transformers'
    ``from_pretrained`` reads it (and records the key mapping, so that ``save_pretrained`` writes
    timm's own parameter names and timm's loaders read the run directory)."""
    import json
    import tempfile

    from timm.models import save_for_hf
    from transformers import TimmWrapperForImageClassification

    data = {"input_size": (3, image_size, image_size)} if image_size else None
    with tempfile.TemporaryDirectory() as tmp:
        save_for_hf(model, tmp, safe_serialization=True, data_config=data)
        path = Path(tmp) / "config.json"
        native = json.loads(path.read_text())
        native.pop("label_names", None)
        native.pop("num_classes", None)
        # The wrapper passes num_classes itself (from num_labels); a second copy would clash.
        native.get("model_args", {}).pop("num_classes", None)
        path.write_text(json.dumps(native))
        return TimmWrapperForImageClassification.from_pretrained(
            tmp, num_labels=len(labels), id2label=dict(enumerate(labels)),
            label2id={n: i for i, n in enumerate(labels)})


def _init_new_head(model, std: float = 0.02) -> None:
    """Re-initialise a freshly created classifier the way transformers does for a resized head
    (normal(0, 0.02) weights, zero bias). timm's own head init (e.g. uniform(+-1/sqrt(classes)) for
    EfficientNets) is meant for training from scratch: on pretrained features it starts with large
    logits and a loss far above log(classes), which slows short fine-tuning runs down."""
    import torch

    classifier = model.get_classifier()
    modules = classifier if isinstance(classifier, (list, tuple)) else [classifier]
    with torch.no_grad():
        for module in modules:
            for sub in module.modules():
                if isinstance(sub, (torch.nn.Linear, torch.nn.Conv2d)):
                    sub.weight.normal_(0.0, std)
                    if sub.bias is not None:
                        sub.bias.zero_()


def _fixed_input_size(name: str, spec: ModelSpec) -> bool:
    """Whether the architecture only accepts its configured input size (ViT-style models)."""
    import torch

    with torch.device("meta"):  # architecture only: no weights, no memory
        probe = _create(name, {"pretrained": False}, spec)
    return bool(probe.pretrained_cfg.get("fixed_input_size", False))


def image_processor(model) -> Any:
    """The processor that ``AutoImageProcessor.from_pretrained(run_dir)`` rebuilds for this model
    (timm's evaluation transform from the saved ``pretrained_cfg``)."""
    from transformers import TimmWrapperImageProcessor

    return TimmWrapperImageProcessor(pretrained_cfg=model.config.pretrained_cfg,
                                     architecture=model.config.architecture)
