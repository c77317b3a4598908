"""Tiny models built from config, a strategy factory and a short training loop for strategy tests.

Dimensions (hidden 32, intermediate 37, 3 labels) are chosen so parameter counts in the tests can
be written out by hand.
"""
from __future__ import annotations

import types
from typing import Any, Optional

import torch

from sft_hub.catalog import recipe_model
from sft_hub.strategies import get_strategy

HIDDEN, INTERMEDIATE, LABELS, VOCAB = 32, 37, 3, 100

# Hand counts for tiny_bert() (64 positions, 2 token types)
EMBEDDINGS = 100 * 32 + 64 * 32 + 2 * 32 + 2 * 32  # word, position, token type, LayerNorm = 5376
LAYER = 4 * (32 * 32 + 32) + 2 * 32 + (32 * 37 + 37) + (37 * 32 + 32) + 2 * 32  # 6789
POOLER = 32 * 32 + 32
HEAD = 32 * 3 + 3
BERT_TOTAL = EMBEDDINGS + 2 * LAYER + POOLER + HEAD  # 20109 for 2 layers


def bert_config(layers: int = 2, **extra):
    from transformers import BertConfig

    return BertConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=layers,
                      num_attention_heads=2, intermediate_size=INTERMEDIATE, num_labels=LABELS,
                      max_position_embeddings=64, **extra)


def tiny_bert(layers: int = 2, seed: int = 0):
    from transformers import BertForSequenceClassification

    torch.manual_seed(seed)
    return BertForSequenceClassification(bert_config(layers)).eval()


def timm_wrapper_config():
    from transformers import TimmWrapperConfig

    return TimmWrapperConfig(architecture="vit_tiny_patch16_224", num_labels=LABELS,
                             model_args=dict(img_size=32, patch_size=8, depth=2, embed_dim=HIDDEN,
                                             num_heads=2))


def tiny_timm_wrapper(seed: int = 0):
    """transformers' TimmWrapperForImageClassification around a 2-block timm ViT."""
    from transformers import TimmWrapperForImageClassification

    torch.manual_seed(seed)
    return TimmWrapperForImageClassification(timm_wrapper_config()).eval()


def make_strategy(strategy: dict, training: Optional[dict] = None, *, model_name: str = "org/tiny",
                  peft_task_type: Optional[str] = "SEQ_CLS", model_path: Optional[str] = None):
    """A strategy built from a real recipe; the task is a stand-in exposing what strategies use."""
    model = {"name": model_name, **({"path": model_path} if model_path else {})}
    recipe = recipe_model("text-classification").model_validate({
        "task": "text-classification", "model": model, "data": {"files": {"train": "x.csv"}},
        "strategy": strategy, "training": training or {}})
    task = types.SimpleNamespace(recipe=recipe, peft_task_type=peft_task_type)
    return get_strategy(recipe.strategy, task)


def text_batch(n: int = 6, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"input_ids": torch.randint(5, VOCAB, (n, 12), generator=g),
            "attention_mask": torch.ones(n, 12, dtype=torch.long),
            "labels": torch.arange(n) % LABELS}


def image_batch(n: int = 6, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"pixel_values": torch.randn(n, 3, 32, 32, generator=g),
            "labels": torch.arange(n) % LABELS}


def train_steps(model: Any, strategy, batch: dict, steps: int = 4, lr: float = 1e-2) -> None:
    """A few AdamW steps over the strategy's parameter groups (or the trainable parameters)."""
    args = types.SimpleNamespace(learning_rate=lr, weight_decay=0.0)
    groups = strategy.optimizer_param_groups(model, args) or [
        p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(groups, lr=lr, weight_decay=0.0)
    model.train()
    for _ in range(steps):
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    model.eval()


def logits(model: Any, batch: dict) -> torch.Tensor:
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        return model(**inputs).logits


def snapshot(model: Any) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def write_tokenizer(directory) -> Any:
    """A word-piece tokenizer over a tiny vocabulary, saved to ``directory``."""
    from transformers import BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad", "movie", "great", "awful",
             "fine", "not", "very", "film", "plot"]
    vocab += [f"w{i}" for i in range(VOCAB - len(vocab))]
    path = directory / "vocab.txt"
    directory.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab_file=str(path))
    tokenizer.save_pretrained(directory)
    return tokenizer
