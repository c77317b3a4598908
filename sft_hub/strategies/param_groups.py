"""Optimizer parameter groups: weight decay like the Trainer's, layer-wise LR decay, head LR.

``training.layer_decay: d`` scales the learning rate of layer k (1..N, N nearest the head) by
``d ** (N + 1 - k)``; the embeddings get ``d ** (N + 1)``; what sits after the layers (final norm,
pooler) and the head keep the full rate (as in BEiT / timm). ``training.head_learning_rate`` sets
the head's rate outright. Weight decay skips biases and norm weights, with the Trainer's rules.
"""
from __future__ import annotations

from typing import Any, Iterable, Optional

from .layers import ModelLayout

# transformers.Trainer.get_decay_parameter_names' name patterns (applied with nn.LayerNorm).
NO_DECAY_PATTERNS = [r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)"]


def decay_parameter_names(model: Any) -> set[str]:
    """Names (relative to ``model``) of the parameters weight decay applies to."""
    import torch.nn as nn
    from transformers.trainer_pt_utils import get_parameter_names

    return set(get_parameter_names(model, [nn.LayerNorm], NO_DECAY_PATTERNS))


def layer_lr_scale(layout: ModelLayout, gid: int, layer_decay: Optional[float]) -> float:
    if layer_decay is None or gid >= layout.after_id:
        return 1.0
    return layer_decay ** (layout.after_id - gid)


def build_param_groups(model: Any, layout: ModelLayout, params: Iterable[tuple[str, Any]], *,
                       lr: float, weight_decay: float, layer_decay: Optional[float] = None,
                       head_lr: Optional[float] = None) -> list[dict]:
    """One group per (layer, decay or not) that has parameters, named ``<layer>/<decay>``.

    ``model`` is the unwrapped model and ``params`` are (name, parameter) pairs relative to it:
    the parameters the optimizer must know, including ones that are frozen now but will be
    unfrozen later (AdamW skips parameters whose gradient is None, so they stay untouched).
    """
    decay_names = decay_parameter_names(model)
    groups: dict[tuple[int, bool], dict] = {}
    for name, param in params:
        gid = layout.group_of(name)
        decays = name in decay_names
        group = groups.get((gid, decays))
        if group is None:
            group_lr = (head_lr if gid == layout.head_id and head_lr is not None
                        else lr * layer_lr_scale(layout, gid, layer_decay))
            group = groups[(gid, decays)] = {
                "name": f"{layout.label(gid)}/{'decay' if decays else 'no_decay'}", "params": [],
                "lr": group_lr, "weight_decay": weight_decay if decays else 0.0}
        group["params"].append(param)
    # Nearest the head first (the Trainer logs the first group's rate), the head last.
    return [groups[k] for k in sorted(groups, key=lambda k: (k[0] == layout.head_id, -k[0], k[1]))]
