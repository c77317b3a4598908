"""Where a model's layers and task head are: the structure freezing, adapters and layer-wise LR use.

Discovered from the model, never from per-architecture tables:

* timm models (bare, or inside transformers' ``TimmWrapperForImageClassification`` at
  ``.timm_model``): the head is ``get_classifier()``; layers are timm's own coarse parameter groups,
  as timm's ``group_parameters`` forms them from ``group_matcher(coarse=True)`` (transformer
  blocks, or stages for convnets; a final norm timm assigns to the previous group trains with the
  last block); timm's first group is the stem and the parameters its matcher leaves unmatched
  (neck, pooling norm) count as "after the layers".
* transformers models: the backbone is the child named by ``base_model_prefix`` and every other
  top-level child with parameters is the head (``classifier``, ``score``, DistilBERT's
  ``pre_classifier``, DeBERTa's ``pooler``...). The layers are the backbone's list of blocks whose
  length is ``config.num_hidden_layers``; parameters registered before it are the embeddings,
  parameters after it (final norm, pooler) are "after the layers".

Every parameter gets a *group id*: 0 = embeddings / stem, 1..N = layer 1..N (N = last, nearest the
head), N+1 = after the layers, N+2 = head. Lookups go by module path, so they keep working after
peft has wrapped a layer (``query`` -> ``query.base_layer`` + ``query.lora_A``...).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

from ..errors import RecipeError

LAYERS_FIELD = "strategy.layers_module"


@dataclass
class ModelLayout:
    num_layers: int
    head: list[str]  # module paths of the task head, relative to the unwrapped model
    source: str  # how the layers were found, for messages and `sft-hub plan`
    groups: dict[str, int] = field(default_factory=dict)  # module path (or root param name) -> id

    @property
    def after_id(self) -> int:
        return self.num_layers + 1

    @property
    def head_id(self) -> int:
        return self.num_layers + 2

    def group_of(self, name: str) -> int:
        """Group id of a parameter (name relative to the unwrapped model, peft-wrapped or not)."""
        parts = name.split(".")
        for end in range(len(parts), 0, -1):
            gid = self.groups.get(".".join(parts[:end]))
            if gid is not None:
                return gid
        return self.after_id  # a parameter added later outside every known module

    def is_head(self, name: str) -> bool:
        return self.group_of(name) == self.head_id

    def trainable_groups(self, last_n_layers: int, embeddings: bool) -> set[int]:
        """Group ids trained when the last ``last_n_layers`` layers (and maybe embeddings) train."""
        ids = {self.head_id}
        if last_n_layers > 0:
            ids |= set(range(self.num_layers - last_n_layers + 1, self.num_layers + 2))
        if embeddings:
            ids.add(0)
        return ids

    def label(self, gid: int) -> str:
        if gid == 0:
            return "embeddings"
        if gid == self.head_id:
            return "head"
        if gid == self.after_id:
            return "after_layers"
        return f"layer_{gid}"


def unwrap(model: Any) -> Any:
    """The model underneath a peft wrapper (module paths there match the original model's)."""
    if hasattr(model, "peft_config") and hasattr(model, "get_base_model"):
        return model.get_base_model()
    return model


def named_parameters(model: Any) -> list[tuple[str, Any]]:
    """Every parameter of ``model`` (peft-wrapped or not), named relative to the unwrapped model;
    parameters that live outside it (a peft prompt encoder) keep their name in the wrapper."""
    base = unwrap(model)
    if base is model:
        return list(model.named_parameters())
    inner = {id(p): n for n, p in base.named_parameters()}
    return [(inner.get(id(p), n), p) for n, p in model.named_parameters()]


def discover_layout(model: Any, layers_module: Optional[str] = None) -> ModelLayout:
    """Find the head and the layers of ``model`` (see module docstring); RecipeError if unknown."""
    model = unwrap(model)
    timm = _find_timm_model(model)
    if timm is not None:
        prefix, timm_model = timm
        head = _timm_head(model, timm_model, prefix)
        if layers_module is None:
            return _timm_layout(model, timm_model, prefix, head)
    else:
        head = _transformers_head(model)
    path = layers_module or _find_layer_list(model, head)
    return _layer_list_layout(model, path, head)


def module_paths(model: Any, modules) -> list[str]:
    """Dotted paths of ``modules`` (found by identity) inside ``model``."""
    wanted = {id(m) for m in modules}
    return [name for name, m in model.named_modules() if id(m) in wanted and name]


def under(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


# -- timm -----------------------------------------------------------------------------------------
def _find_timm_model(model: Any) -> Optional[tuple[str, Any]]:
    for name, module in model.named_modules():
        if callable(getattr(module, "get_classifier", None)) and callable(
                getattr(module, "group_matcher", None)):
            return (name + "." if name else ""), module
    return None


def _timm_head(model: Any, timm_model: Any, prefix: str) -> list[str]:
    classifier = timm_model.get_classifier()
    modules = classifier if isinstance(classifier, (tuple, list)) else [classifier]
    modules = [m for m in modules if m is not None and any(True for _ in m.parameters())]
    head = [prefix + p for p in module_paths(timm_model, modules)]
    if not head:
        raise RecipeError(f"{type(timm_model).__name__} has no classifier head (get_classifier() "
                          "returned a module without parameters)", field="model.name",
                          hint="build the model with num_classes > 0 (the task sets it from the "
                               "labels)")
    return head


def _timm_layout(model: Any, timm_model: Any, prefix: str, head: list[str]) -> ModelLayout:
    """Layers from timm's coarse parameter groups: stem = 0, blocks/stages = 1..N, rest after."""
    from timm.models import group_parameters

    matcher = timm_model.group_matcher(coarse=True)
    if not isinstance(matcher, dict):
        raise RecipeError(f"cannot tell the layers of timm model {type(timm_model).__name__} "
                          "(its group_matcher is not a pattern dict)", field=LAYERS_FIELD,
                          hint=_layers_hint(model, head))
    group_of = group_parameters(timm_model, matcher, reverse=True)  # parameter name -> group
    # timm gathers the parameters its matcher leaves unmatched (head, neck) into its last group. A
    # catch-all pattern that joins the previous group shows whether that group exists: it merges
    # the unmatched parameters into the last block, one group fewer.
    merged = group_parameters(timm_model, {**matcher, "_unmatched": [(r"", (99999,))]},
                              reverse=True)
    last = max(group_of.values(), default=0)
    unmatched = last if last > max(merged.values(), default=0) else None
    blocks = sorted({g for n, g in group_of.items() if g not in (0, unmatched)
                     and not under(_owner_key(prefix + n), head)})
    if not blocks:
        raise RecipeError(f"timm model {type(timm_model).__name__} has no layer groups",
                          field=LAYERS_FIELD, hint=_layers_hint(model, head))
    rank = {g: i + 1 for i, g in enumerate(blocks)}
    layout = ModelLayout(num_layers=len(blocks), head=head,
                         source=f"timm group_matcher(coarse=True) of {type(timm_model).__name__}")
    for name, group in group_of.items():
        key = _owner_key(prefix + name)
        if not under(key, head):
            layout.groups[key] = 0 if group == 0 else rank.get(group, layout.after_id)
    for h in head:
        layout.groups[h] = layout.head_id
    return layout


# -- transformers / any module with a list of blocks -----------------------------------------------
def _transformers_head(model: Any) -> list[str]:
    prefix = getattr(model, "base_model_prefix", None)
    backbone = getattr(model, prefix, None) if prefix else None
    if backbone is None or backbone is model:
        raise RecipeError(f"cannot tell the task head of {type(model).__name__}: it has no "
                          "backbone attribute named by base_model_prefix", field="model.name",
                          hint="use a model with a task head (an AutoModelFor<Task> class)")
    head = [name for name, child in model.named_children()
            if child is not backbone and any(True for _ in child.parameters())]
    if not head:
        raise RecipeError(f"{type(model).__name__} has no task head besides its backbone "
                          f"{prefix!r}", field="model.name",
                          hint="use a model with a task head (an AutoModelFor<Task> class)")
    return head


def _block_lists(model: Any, head: list[str]) -> Iterator[tuple[str, Any]]:
    import torch.nn as nn

    for name, module in model.named_modules():
        if (isinstance(module, (nn.ModuleList, nn.Sequential)) and len(module) > 1
                and not under(name, head) and len({type(m) for m in module}) == 1):
            yield name, module


def _find_layer_list(model: Any, head: list[str]) -> str:
    """The block list: length config.num_hidden_layers if the config says, most parameters wins."""
    lists = list(_block_lists(model, head))
    expected = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    matching = ([(n, m) for n, m in lists if len(m) == expected]
                or (lists if expected is None else []))
    if not matching:
        raise RecipeError(f"cannot find the layers of {type(model).__name__}", field=LAYERS_FIELD,
                          hint=_layers_hint(model, head))
    return max(matching, key=lambda nm: sum(p.numel() for p in nm[1].parameters()))[0]


def _layer_list_layout(model: Any, path: str, head: list[str]) -> ModelLayout:
    import torch.nn as nn

    try:
        blocks = model.get_submodule(path)
    except AttributeError:
        blocks = None
    if not isinstance(blocks, (nn.ModuleList, nn.Sequential)) or len(blocks) == 0:
        raise RecipeError(f"{path!r} is not a list of layers in {type(model).__name__}",
                          field=LAYERS_FIELD, hint=_layers_hint(model, head))
    layout = ModelLayout(num_layers=len(blocks), head=head, source=f"{path} ({len(blocks)} layers)")
    block_names = [f"{path}.{name}" for name, _ in blocks.named_children()]
    seen_blocks = False
    for name, _ in model.named_parameters():
        key = _owner_key(name)
        if under(key, head):
            continue
        index = next((i for i, b in enumerate(block_names) if under(key, [b])), None)
        if index is not None:
            seen_blocks = True
            layout.groups[block_names[index]] = index + 1
        else:  # registration order tells embeddings (before the blocks) from final norms (after)
            layout.groups[key] = layout.after_id if seen_blocks else 0
    for h in head:
        layout.groups[h] = layout.head_id
    return layout


def _owner_key(param_name: str) -> str:
    """The module owning a parameter; the parameter name itself for the model's own parameters."""
    owner = param_name.rpartition(".")[0]
    return owner or param_name


def _layers_hint(model: Any, head: list[str]) -> str:
    found = [f"{n} ({len(m)})" for n, m in _block_lists(model, head)]
    where = f"; lists of blocks in this model: {', '.join(found[:8])}" if found else ""
    return f"set strategy.layers_module to the dotted path of the model's list of layers{where}"
