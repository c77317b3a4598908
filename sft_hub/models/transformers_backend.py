"""The transformers backend: Auto classes from a Hub id, a local directory or a pip-shipped model.

``model.name`` is the model's identity (a Hub id, recorded as ``base_model`` in cards and
adapters); ``model.path``, when set, is where the weights are actually read from.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Optional

from ..errors import RecipeError
from ..recipe.schema import ModelSpec

PKG_PREFIX = "pkg:"
# Attribute holding from_pretrained's loading info (missing / unexpected / mismatched keys).
LOADING_INFO = "sft_hub_loading_info"


def resolve_model_path(spec: ModelSpec, base_dir: Path) -> Optional[Path]:
    """The local path ``model.path`` points to, or None when the model comes from ``model.name``."""
    ref = spec.path
    if ref is None:
        local = base_dir / spec.name
        return local if spec.name.startswith((".", "/")) or local.is_dir() else None
    if ref.startswith(PKG_PREFIX):
        package, _, sub = ref[len(PKG_PREFIX):].partition("/")
        found = importlib.util.find_spec(package) if package else None
        if found is None or not found.submodule_search_locations:
            raise RecipeError(f"Python package {package!r} is not installed", field="model.path",
                              hint=f"pip install {package.replace('_', '-')}")
        path = Path(next(iter(found.submodule_search_locations))) / sub
    else:
        path = Path(ref) if Path(ref).is_absolute() else base_dir / ref
    if not path.exists():
        raise RecipeError(f"model path not found: {path}", field="model.path",
                          hint="paths are relative to the recipe file")
    return path


def model_source(spec: ModelSpec, base_dir: Path) -> tuple[str, dict[str, Any]]:
    """(name or path to pass to from_pretrained, common kwargs)."""
    path = resolve_model_path(spec, base_dir)
    kwargs: dict[str, Any] = {"trust_remote_code": spec.trust_remote_code}
    if path is None and spec.revision:
        kwargs["revision"] = spec.revision
    return (str(path) if path is not None else spec.name), kwargs


def _raise_load_error(what: str, source: str, exc: Exception) -> None:
    raise RecipeError(f"cannot load {what} {source!r}: {exc}", field="model.name",
                      hint="check the Hub id or local path; offline, set model.path to a local copy"
                      ) from None


def load_processor(spec: ModelSpec, base_dir: Path, cls: Optional[type] = None,
                   **options) -> Any:
    """The processor from ``cls`` (default ``AutoTokenizer``); ``options`` go to
    ``from_pretrained`` (e.g. ``add_prefix_space=True``)."""
    if cls is None:
        from transformers import AutoTokenizer as cls

    source, kwargs = model_source(spec, base_dir)
    if spec.processor:
        source = spec.processor
    try:
        return cls.from_pretrained(source, **kwargs, **options)
    except (OSError, ValueError) as e:
        _raise_load_error("processor", source, e)


def load_model(spec: ModelSpec, base_dir: Path, cls: type, **config_kwargs) -> Any:
    """A task model from the Auto class ``cls`` (e.g. ``AutoModelForSequenceClassification``), head
    sized by ``config_kwargs`` (num_labels, id2label...)."""
    import transformers

    source, kwargs = model_source(spec, base_dir)
    try:
        if not spec.pretrained:
            config = transformers.AutoConfig.from_pretrained(source, **kwargs, **config_kwargs)
            return cls.from_config(config, trust_remote_code=spec.trust_remote_code)
        model, info = cls.from_pretrained(source, output_loading_info=True,
                                          ignore_mismatched_sizes=spec.ignore_mismatched_sizes,
                                          **kwargs, **config_kwargs)
        setattr(model, LOADING_INFO, info)  # what loaded, for sft_hub.console.report_loading
        return model
    except (OSError, ValueError) as e:
        _raise_load_error("model", source, e)


def label_config(labels: list[str]) -> dict[str, Any]:
    """Config kwargs that size the head and store real label names."""
    return {"num_labels": len(labels), "id2label": dict(enumerate(labels)),
            "label2id": {name: i for i, name in enumerate(labels)}}
