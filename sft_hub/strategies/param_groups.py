"""Optimizer parameter groups: weight decay like the Trainer's, layer-wise LR decay, head LR.

``training.layer_decay: d`` scales the learning rate of layer k (1..N, N nearest the head) by
``d ** (N + 1 - k)``; the embeddings get ``d ** (N + 1)``; what sits after the layers (final norm,
pooler) and the head keep the full rate (as in BEiT / timm). ``training.head_learning_rate`` sets
the head's rate outright. Weight decay skips biases and norm weights: the Trainer's own
``get_decay_parameter_names`` decides.

timm's ``param_groups_layer_decay`` is not used: its groups carry an ``lr_scale`` that only timm's
schedulers apply (the Trainer's would ignore it), and it decays by timm's rules (every 1-d
parameter), not the Trainer's; the layer grouping of timm models does come from timm (``.layers``).
"""
from __future__ import annotations

from typing import Any, Iterable, Optional

from .layers import ModelLayout


def decay_parameter_ids(model: Any) -> set[int]:
    """``id()`` of every parameter of ``model`` (wrapped or not) weight decay applies to."""
    from transformers import Trainer

    # The Trainer's rules, from the Trainer itself: an instance method that never reads self (the
    # Trainer builds its default optimizer with it); there is no module-level function for it.
    names = set(Trainer.get_decay_parameter_names(None, model))
    return {id(p) for n, p in model.named_parameters() if n in names}


def layer_lr_scale(layout: ModelLayout, gid: int, layer_decay: Optional[float]) -> float:
    if layer_decay is None or gid >= layout.after_id:
        return 1.0
    return layer_decay ** (layout.after_id - gid)


def build_param_groups(model: Any, layout: ModelLayout, params: Iterable[tuple[str, Any]], *,
                       lr: float, weight_decay: float, layer_decay: Optional[float] = None,
                       head_lr: Optional[float] = None) -> list[dict]:
    """One group per (layer, decay or not) that has parameters, named ``<layer>/<decay>``.

    ``model`` is the model to train (peft-wrapped or not) and ``params`` are (name, parameter)
    pairs named as :func:`.layers.named_parameters` names them: the parameters the optimizer must
    know, including ones that are frozen now but will be unfrozen later (AdamW skips parameters
    whose gradient is None, so they stay untouched) and ones outside the base model.
    """
    decay_ids = decay_parameter_ids(model)
    groups: dict[tuple[int, bool], dict] = {}
    for name, param in params:
        gid = layout.group_of(name)
        decays = id(param) in decay_ids
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
