"""sft-hub: fine-tune Hugging Face and timm models from declarative YAML recipes."""
__version__ = "0.1.0"
