"""sft-hub: fine-tune Hugging Face and timm models from declarative YAML recipes.

Public API (the CLI calls exactly these)::

    from sft_hub import load_recipe, validate, train
"""
from ._version import __version__

__all__ = ["load_recipe", "validate", "train", "SftHubError"]


def __getattr__(name):  # lazy: `import sft_hub` stays cheap
    if name == "load_recipe":
        from .catalog import load_recipe
        return load_recipe
    if name == "validate":
        from .validation import validate
        return validate
    if name == "train":
        from .training import train
        return train
    if name == "SftHubError":
        from .errors import SftHubError
        return SftHubError
    raise AttributeError(name)
