"""Tiny fixtures for the plugin contract test, one builder per registered task, keyed by task name.

A builder writes a tiny model (built from config, random weights) and a few rows of data under the
directory it is given and returns a :class:`TaskFixture`: the recipe sections of a run on them and
the model backend it uses. A task may have several (``FIXTURES[task][fixture id]``), e.g. one per
model backend. ``tests/test_contract.py`` fails, naming this file, for a
registered task without a builder here: adding a task means adding its fixture below.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .strategies_helpers import bert_config, write_tokenizer

WORDS = {"pos": ["good", "great", "fine"], "neg": ["bad", "awful", "not"]}


@dataclass
class TaskFixture:
    task: str
    backend: str          # model backend the fixture's model uses: "transformers" | "timm"
    recipe: dict[str, Any]  # task, model and data sections; the base directory is the builder's
    base_dir: Path


def _tiny_bert(root: Path, num_labels: int) -> Path:
    """A 2-layer BERT sequence classifier and its tokenizer; model.name is this directory, so
    that adapters record it as their base model and peft's Auto classes load it offline."""
    import torch
    from transformers import BertForSequenceClassification

    out = root / f"tiny-bert-{num_labels}"
    if not (out / "config.json").is_file():
        torch.manual_seed(0)
        BertForSequenceClassification(_config(num_labels)).save_pretrained(out)
        write_tokenizer(out)
    return out


def _config(num_labels: int):
    config = bert_config()
    config.num_labels = num_labels
    return config


def _write_jsonl(path: Path, rows: list[dict]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def _sentences(n: int) -> list[tuple[str, str]]:
    rows = []
    for i in range(n):
        label = "pos" if i % 2 == 0 else "neg"
        words = WORDS[label]
        rows.append((" ".join([words[i % 3], "movie", words[(i + 1) % 3], "film"]), label))
    return rows


def text_classification(root: Path) -> TaskFixture:
    rows = [{"text": t, "label": label} for t, label in _sentences(8)]
    data = {"files": {"train": _write_jsonl(root / "text" / "train.jsonl", rows),
                      "validation": _write_jsonl(root / "text" / "validation.jsonl", rows[:4])},
            "max_length": 12}
    model = {"name": str(_tiny_bert(root, 2))}
    return TaskFixture("text-classification", "transformers",
                       {"task": "text-classification", "model": model, "data": data}, root)


def multi_label_text_classification(root: Path) -> TaskFixture:
    tags = [["plot"], ["plot", "acting"], [], ["acting"]]
    rows = [{"text": t, "labels": tags[i % 4]} for i, (t, _) in enumerate(_sentences(8))]
    data = {"files": {"train": _write_jsonl(root / "multi" / "train.jsonl", rows),
                      "validation": _write_jsonl(root / "multi" / "validation.jsonl", rows[:4])},
            "max_length": 12}
    model = {"name": str(_tiny_bert(root, 2))}
    return TaskFixture("multi-label-text-classification", "transformers",
                       {"task": "multi-label-text-classification", "model": model, "data": data},
                       root)


def token_classification(root: Path) -> TaskFixture:
    sentences = [(["good", "movie", "in", "plot"], ["O", "B-MISC", "O", "B-LOC"]),
                 (["bad", "film", "not", "fine"], ["O", "B-MISC", "O", "O"])]
    rows = [{"tokens": w, "ner_tags": t} for w, t in sentences * 4]
    data = {"files": {"train": _write_jsonl(root / "ner" / "train.jsonl", rows),
                      "validation": _write_jsonl(root / "ner" / "validation.jsonl", rows[:4])},
            "max_length": 12}
    model = {"name": str(_tiny_bert(root, 3))}
    return TaskFixture("token-classification", "transformers",
                       {"task": "token-classification", "model": model, "data": data}, root)


def _image_folder(root: Path) -> Path:
    import numpy as np
    from PIL import Image

    folder = root / "images"
    if not folder.is_dir():
        rng = np.random.default_rng(0)
        for label, level in (("dark", 40), ("light", 210)):
            (folder / label).mkdir(parents=True)
            for i in range(4):
                pixels = np.clip(rng.normal(level, 20, (32, 32, 3)), 0, 255).astype("uint8")
                Image.fromarray(pixels).save(folder / label / f"{i}.png")
    return folder


def _image_data(root: Path) -> dict[str, Any]:
    return {"files": {"train": str(_image_folder(root))}, "validation_split": 0.25,
            "augmentation": "none"}


def image_classification_vit(root: Path) -> TaskFixture:
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    vit = root / "tiny-vit"
    if not (vit / "config.json").is_file():
        torch.manual_seed(0)
        ViTForImageClassification(ViTConfig(
            image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
            num_attention_heads=2, intermediate_size=37, num_labels=2)).save_pretrained(vit)
        ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(vit)
    return TaskFixture("image-classification", "transformers",
                       {"task": "image-classification", "model": {"name": str(vit)},
                        "data": _image_data(root)}, root)


def image_classification_timm(root: Path) -> TaskFixture:
    """timm's own tiny test ViT, its random weights saved to a file (``model.path``), so that the
    base an adapter is reloaded onto is the base it was trained on."""
    import timm
    import torch
    from safetensors.torch import save_file

    weights = root / "test_vit.safetensors"
    if not weights.is_file():
        torch.manual_seed(0)
        save_file(timm.create_model("test_vit", pretrained=False).state_dict(), str(weights))
    return TaskFixture("image-classification", "timm",
                       {"task": "image-classification",
                        "model": {"name": "test_vit", "backend": "timm", "path": str(weights)},
                        "data": {**_image_data(root), "image_size": 32}}, root)


# task name -> {fixture id: builder}
FIXTURES: dict[str, dict[str, Callable[[Path], TaskFixture]]] = {
    "text-classification": {"bert": text_classification},
    "multi-label-text-classification": {"bert": multi_label_text_classification},
    "token-classification": {"bert": token_classification},
    "image-classification": {"vit": image_classification_vit, "timm": image_classification_timm},
}
