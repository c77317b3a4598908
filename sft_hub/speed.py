"""Speed defaults: what sft-hub does faster than a plain ``Trainer`` script, each one switchable.

Decided once per run by :func:`plan_speed` from the task contract (``Task.length_feature``: the
model input whose length batches are grouped by; ``Task.image_inputs``: inputs are images decoded
per batch), the device and the recipe, applied to the TrainingArguments and the model, and
recorded in ``run_info.json`` under ``speed`` (each default: its value and why).

=============================  ===========================================  =====================================
default                        applies to                                   turn it off / set it
=============================  ===========================================  =====================================
length-grouped train batches   tasks whose contract says ``groups_training_  ``training.train_sampling_strategy``
                               by_length`` (none shipped: measured to cost
                               accuracy), or the recipe asks
packed training steps          tasks with ``labels_per_token`` (NER), on    ``training.pack_batches``
                               CPU in one process, once the first batch
                               checked that packed rows give the model's
                               padded outputs (same loss and gradient, ~no
                               padding)
length-split training steps    tasks with a ``length_feature``, on CPU in   ``training.split_batches_by_length``
                               one process (each random batch run as slices
                               of similar length: same gradient, less
                               padding), where packing does not apply
length-sorted evaluation       tasks with a ``length_feature`` (text, NER;  ``training.sort_eval_by_length: false``
                               predictions restored to order)
eval batch size for the device every task, unless the recipe sets it        ``training.per_device_eval_batch_size: N``
DataLoader workers             ``image_inputs`` tasks on an accelerator     ``training.dataloader_num_workers: N``
pinned memory                  every task on an accelerator                 ``training.dataloader_pin_memory: false``
channels_last                  ``image_inputs`` + convolutions, CUDA or CPU ``training.channels_last: false``
all of the above               --                                           ``training.speed_defaults: false``
=============================  ===========================================  =====================================

Length-split training steps keep the batches exactly as random sampling draws them (so the
optimisation is the one a plain Trainer runs) and cut only the padding: a batch is sorted by
length and cut into the few slices (:func:`length_groups`) that minimise the tokens computed, each
padded to its own longest row; the slices' losses, weighted by their share of the batch's scored
items (rows, or labelled tokens when ``Task.labels_per_token``), add up to the batch's mean loss,
and one backward pass runs through all of them. The gradient is the full batch's (up to float
rounding and dropout draws). An extra slice must save at least :data:`SPLIT_SLICE_COST` of the
padded batch's tokens. On by default on CPU, where a smaller matrix product costs proportionally
less; on accelerators small slices are bound by kernel launches, so there it waits for a
measurement (turn it on with ``training.split_batches_by_length: true``). Never under several
processes: every forward pass of a DDP model synchronises buffers, so ranks whose batches cut into
different numbers of slices would wait for each other.

Packed training steps go further where every token has its own output (``Task.labels_per_token``):
the random batch's rows are laid end to end into a few rows of equal width, at most
:data:`PACK_MAX_WIDTH` tokens or the longest row (the bin capacity that computes the fewest
tokens, first fit, longest first: :func:`pack_layout`), each row numbering its positions from the
start again and attending only to itself (a block-diagonal 4-D attention mask), and the whole
batch runs as one forward and one backward pass: the labelled tokens, the loss and the gradient
are the padded batch's (up to float rounding and dropout draws), with almost no padding and none
of the per-slice passes. Whether a model honours ``position_ids`` and a 4-D mask is not assumed:
the first packable batch is run both ways without gradients (dropout off), and packing is used
only if the packed logits match the padded ones (:func:`check_packing`; positions from 0, then
from ``pad_token_id + 1`` as RoBERTa numbers them; the mask additive, which eager attention and
SDPA both read, then as booleans); otherwise the run falls back to length-split steps and
``run_info.json`` says why. Evaluation is not packed: its batches are sorted by length and small
on CPU (:data:`EVAL_BATCH_CAP`), so they hardly pad, and packed they ran 3% slower (WNUT17 test
split, batches of 32). Sequence-level tasks keep length-split steps: their head reads each row's
first token, which packing would merge.

Length grouping uses transformers' own megabatch algorithm (random megabatches of 50 batches,
sorted inside), with the lengths read from the Arrow column in one C pass and a per-epoch seed,
so resuming a run replays exactly the same batches. Length-sorted evaluation feeds the evaluation
set longest first and puts the predictions back into dataset order before ``compute_metrics``
sees them, so every metric is the one unsorted evaluation gives.

The same module holds the pure helpers the benchmarks print GPU figures with (dense bf16 peak
FLOP/s per device, training FLOPs, model FLOPs utilisation).

Nothing here imports torch at module level.
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Optional, Sequence

from .errors import RecipeError

#: The per-example inference memory estimate is multiplied by this (allocator slack, the model's
#: own buffers, the logits the evaluation loop keeps).
SAFETY = 2.0
#: Share of free accelerator memory (or of available RAM on CPU) an evaluation batch may use.
MEMORY_SHARE = {"cuda": 0.5, "cpu": 0.25}
#: Largest evaluation batch chosen per device kind (beyond it nothing gets faster). On CPU a
#: bigger batch gains no matrix-product speed but, sorted by length, pads more: test evaluation
#: of all-MiniLM-L6-v2 on 1,821 SST-2 / 1,287 WNUT17 rows took 8.24 / 7.52 s at 32, 8.46 / 8.24 s
#: at 64 and 9.43 / 9.98 s at 128 (2-core CPU, one thread, best of 2).
EVAL_BATCH_CAP = {"cuda": 1024, "cpu": 32}
#: Activation memory of an image model at inference, as a multiple of its input (conservative for
#: ResNet/EfficientNet stems and ViT blocks).
IMAGE_ACTIVATION_FACTOR = 48
MAX_WORKERS = 8
#: Where channels_last is the default for convolutional image models, and why.
CHANNELS_LAST_DEVICES = {
    "cuda": "the layout tensor-core convolutions run in",
    "cpu": "the layout oneDNN's fast CPU convolutions run in",
}
#: Length-split training steps: each extra slice must save this share of the padded batch's tokens.
SPLIT_SLICE_COST = 0.05
#: Packed training steps: the widest bin tried (or the batch's longest row, if longer). Measured
#: with all-MiniLM-L6-v2 on 16 random WNUT17 batches of 16 (2-core CPU, one thread), seconds per
#: step: padded 0.571; bins tried up to 80 tokens 0.359, up to 96 0.353, up to 128 0.373 (wider
#: rows cost more attention and attention-dropout draws than their fuller bins save); one row
#: holding the whole batch 0.65.
PACK_MAX_WIDTH = 96
#: Largest difference of packed from padded logits accepted, relative to 1 + the largest logit
#: (float32; under autocast or in half precision :data:`PACK_TOLERANCE_LOW_PRECISION`). A right
#: layout differs by float rounding (1e-8 in float32); a wrong one, even in a tiny random model
#: with near-uniform attention, by 1e-4 or more.
PACK_TOLERANCE = 1e-5
PACK_TOLERANCE_LOW_PRECISION = 3e-2


@dataclass
class SpeedPlan:
    """The speed defaults of one run (recorded in ``run_info.json`` as ``speed``)."""

    group_by_length: bool = False
    pack_batches: bool = False
    split_batches_by_length: bool = False
    sort_eval_by_length: bool = False
    length_feature: Optional[str] = None
    labels_per_token: bool = False
    per_device_eval_batch_size: int = 0
    dataloader_num_workers: int = 0
    dataloader_pin_memory: bool = False
    channels_last: bool = False
    device: str = "cpu"
    why: dict[str, str] = field(default_factory=dict)
    #: The first batch's packing check (:func:`check_packing`): the layout that reproduced the
    #: padded outputs (``position_start``, ``mask``) and the largest difference, or why it failed.
    pack_check: Optional[dict[str, Any]] = None
    #: What packed and length-split steps did: training batches seen, packed and split, tokens a
    #: padded batch holds and tokens the steps computed (filled during training).
    split_counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("batches", "packed", "split", "padded_tokens", "computed_tokens"), 0))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# -- deciding -------------------------------------------------------------------------------------
def plan_speed(task: Any, settings: Any, args: Any, model: Any) -> SpeedPlan:
    """Decide every speed default for this run (see the module docstring); nothing is applied.

    ``settings`` is the recipe's :class:`~sft_hub.recipe.schema.TrainingSettings`; ``args`` the
    TrainingArguments already built; ``model`` the prepared model.
    """
    user = settings.recipe
    extras = settings.extras
    enabled = bool(getattr(extras, "speed_defaults", True))
    length_feature = getattr(task, "length_feature", None)
    images = bool(getattr(task, "image_inputs", False))
    device = _device_kind(args)
    plan = SpeedPlan(length_feature=length_feature, device=device,
                     labels_per_token=bool(getattr(task, "labels_per_token", False)))
    why = plan.why
    off = "training.speed_defaults: false"

    # length-grouped training batches
    if "train_sampling_strategy" in user:
        plan.group_by_length = user["train_sampling_strategy"] == "group_by_length"
        why["group_by_length"] = f"recipe: train_sampling_strategy {user['train_sampling_strategy']}"
    elif not enabled:
        why["group_by_length"] = off
    elif length_feature is None:
        why["group_by_length"] = "the task's inputs have no length"
    elif not getattr(task, "groups_training_by_length", True):
        why["group_by_length"] = "the task's contract: length-grouped batches lost quality here"
    else:
        plan.group_by_length = True
        why["group_by_length"] = f"default: batches of similar {length_feature} length pad less"
    if plan.group_by_length and length_feature is None:
        raise RecipeError(f"{task.name} inputs have no length to group training batches by",
                          field="training.train_sampling_strategy",
                          hint="use train_sampling_strategy: random (the default for this task)")

    # packed training steps (checked against the padded outputs on the first batch)
    plan.pack_batches = _length_default(
        "pack_batches", extras, task, length_feature, enabled, why,
        purpose="pack training rows by",
        default="default: each random batch's rows packed end to end, each attending to itself "
                "(the same loss and gradient, almost no padding), once the first batch shows the "
                "model's outputs unchanged",
        not_here=(None if plan.labels_per_token else
                  "the task has one output per row (its head reads each row's first token)",
                  None if device == "cpu" else f"{device}: not measured there"))
    if plan.pack_batches and not plan.labels_per_token:
        raise RecipeError(f"{task.name} has one output per row: packing needs an output per token",
                          field="training.pack_batches",
                          hint="remove training.pack_batches (length-split steps cut its padding)")
    if plan.pack_batches and int(getattr(args, "world_size", 1) or 1) > 1:
        plan.pack_batches = False
        why["pack_batches"] = ("off: several processes (not measured there; each rank would check "
                               "its own first batch)")

    # length-split training steps
    plan.split_batches_by_length = _length_default(
        "split_batches_by_length", extras, task, length_feature, enabled, why,
        purpose="split training batches by",
        default="default: each random batch runs as slices of similar length (the same "
                "gradient, less padding)",
        not_here=(None if device == "cpu" else
                  f"{device}: not measured there (small slices are bound by kernel launches)",))
    if plan.split_batches_by_length and int(getattr(args, "world_size", 1) or 1) > 1:
        # a DDP model synchronises its buffers in every forward pass: ranks that cut their
        # batches into different numbers of slices would wait for each other for ever
        plan.split_batches_by_length = False
        why["split_batches_by_length"] = ("off: several processes (each forward pass of a DDP "
                                          "model is a collective; ranks' slices differ)")

    # length-sorted evaluation
    plan.sort_eval_by_length = _length_default(
        "sort_eval_by_length", extras, task, length_feature, enabled, why,
        purpose="sort evaluation batches by",
        default="default: longest first, predictions restored to dataset order")
    if plan.sort_eval_by_length and getattr(args, "batch_eval_metrics", False):
        plan.sort_eval_by_length = False
        why["sort_eval_by_length"] = "off: batch_eval_metrics computes metrics batch by batch"

    # evaluation batch size: decided later from the data (choose_eval_batch_size), recorded here
    plan.per_device_eval_batch_size = int(args.per_device_eval_batch_size)
    if "per_device_eval_batch_size" in user:
        why["per_device_eval_batch_size"] = "recipe"
    elif not enabled:
        why["per_device_eval_batch_size"] = f"{off} (sft-hub's fixed default)"

    # DataLoader workers
    plan.dataloader_num_workers = int(args.dataloader_num_workers)
    if "dataloader_num_workers" in user:
        why["dataloader_num_workers"] = "recipe"
    elif not enabled:
        why["dataloader_num_workers"] = off
    elif not images:
        why["dataloader_num_workers"] = "batches are collated from tokenized rows: no work to overlap"
    elif device == "cpu":
        why["dataloader_num_workers"] = ("CPU training: the model's own threads use every core, "
                                         "so workers would only compete with them")
    else:
        plan.dataloader_num_workers = default_workers(os.cpu_count() or 1, _local_processes())
        why["dataloader_num_workers"] = ("default: images are decoded and augmented beside the "
                                         f"{device} steps")

    plan.dataloader_pin_memory = bool(args.dataloader_pin_memory)
    why["dataloader_pin_memory"] = ("recipe" if "dataloader_pin_memory" in user else
                                    "default: on with an accelerator, off on CPU")

    # channels_last
    asked = getattr(extras, "channels_last", None)
    if asked is not None:
        plan.channels_last = bool(asked)
        why["channels_last"] = f"recipe: channels_last {str(asked).lower()}"
    elif not enabled:
        why["channels_last"] = off
    elif not images or not has_convolutions(model):
        why["channels_last"] = "the model has no 2-D convolutions"
    elif device not in CHANNELS_LAST_DEVICES:
        why["channels_last"] = f"{device}: not measured there"
    else:
        plan.channels_last = True
        why["channels_last"] = (f"default: convolutional model on {device} "
                                f"({CHANNELS_LAST_DEVICES[device]})")
    return plan


def _length_default(key: str, extras: Any, task: Any, length_feature: Optional[str],
                    enabled: bool, why: dict[str, str], *, purpose: str, default: str,
                    not_here: Sequence[Optional[str]] = ()) -> bool:
    """A default that needs inputs with a length: the recipe's ``training.<key>`` if set (refused
    where inputs have no length), else on unless speed defaults are off, the inputs have no
    length or a reason in ``not_here`` says why not; the reason goes into ``why[key]``."""
    asked = getattr(extras, key, None)
    if asked is not None:
        if asked and length_feature is None:
            raise RecipeError(f"{task.name} inputs have no length to {purpose}",
                              field=f"training.{key}", hint=f"remove training.{key}")
        why[key] = f"recipe: {key} {str(asked).lower()}"
        return bool(asked)
    for reason in ("training.speed_defaults: false" if not enabled else None,
                   "the task's inputs have no length" if length_feature is None else None,
                   *not_here):
        if reason:
            why[key] = reason
            return False
    why[key] = default
    return True


def apply_speed_defaults(task: Any, model: Any, args: Any, settings: Any, data: Any) -> SpeedPlan:
    """Decide (:func:`plan_speed`) and apply the speed defaults to ``args`` and ``model``."""
    plan = plan_speed(task, settings, args, model)
    if "per_device_eval_batch_size" not in plan.why:
        plan.per_device_eval_batch_size, why = pick_eval_batch_size(plan, args, model, data)
        plan.why["per_device_eval_batch_size"] = why
    args.per_device_eval_batch_size = plan.per_device_eval_batch_size
    args.dataloader_num_workers = plan.dataloader_num_workers
    if plan.channels_last:
        import torch

        model.to(memory_format=torch.channels_last)
    return plan


def default_workers(cpus: int, processes: int = 1) -> int:
    """DataLoader workers per process for image decoding: the process's share of the cores, less
    one for the training loop itself, at least 1 and at most :data:`MAX_WORKERS`."""
    share = max(1, cpus // max(1, processes))
    return max(1, min(MAX_WORKERS, share - 1))


def _local_processes() -> int:
    try:
        return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    except ValueError:
        return 1


def _device_kind(args: Any) -> str:
    try:
        return str(args.device.type)
    except Exception:  # pragma: no cover - device setup failed: treat as CPU
        return "cpu"


def has_convolutions(model: Any) -> bool:
    import torch.nn as nn

    return any(isinstance(m, nn.Conv2d) for m in model.modules())


# -- evaluation batch size --------------------------------------------------------------------
def choose_eval_batch_size(*, budget_bytes: float, per_example_bytes: float, floor: int,
                           cap: int) -> int:
    """The largest power of two whose batch fits ``budget_bytes`` at ``per_example_bytes`` each,
    kept between ``floor`` (the training batch: evaluation holds no gradients, so a batch that
    trains also evaluates) and ``cap``."""
    floor = max(1, int(floor))
    if per_example_bytes <= 0 or budget_bytes <= 0:
        return max(floor, 1)
    fits = int(budget_bytes // per_example_bytes)
    size = 2 ** int(math.log2(fits)) if fits >= 1 else 1
    return max(floor, min(int(cap), size))


def text_example_bytes(length: int, config: Any, dtype_bytes: int = 4) -> float:
    """Peak inference activations of one example of ``length`` tokens in a transformer encoder:
    the feed-forward and attention projections of one layer plus its attention matrices."""
    hidden = int(getattr(config, "hidden_size", 768) or 768)
    inner = int(getattr(config, "intermediate_size", 4 * hidden) or 4 * hidden)
    heads = int(getattr(config, "num_attention_heads", 12) or 12)
    return SAFETY * dtype_bytes * (length * (inner + 4 * hidden) + 2 * heads * length * length)


def image_example_bytes(shape: Sequence[int], dtype_bytes: int = 4) -> float:
    """Peak inference activations of one image input of ``shape`` (C, H, W)."""
    return SAFETY * dtype_bytes * IMAGE_ACTIVATION_FACTOR * math.prod(int(s) for s in shape)


def memory_budget(device: str, share: Optional[float] = None) -> float:
    """Bytes an evaluation batch may use: a share of free accelerator memory, or of available RAM."""
    share = MEMORY_SHARE.get(device, 0.25) if share is None else share
    if device == "cuda":
        import torch

        free, _total = torch.cuda.mem_get_info()
        return share * free
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        available = 8 << 30
    return share * available


def model_state_bytes(model: Any) -> float:
    """Device memory of a model being trained: fp32 weights (4 bytes per parameter) and, per
    trainable parameter, a gradient and AdamW's two moments (12 bytes)."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return 4.0 * total + 12.0 * trainable


def pick_eval_batch_size(plan: SpeedPlan, args: Any, model: Any, data: Any) -> tuple[int, str]:
    """The evaluation batch for this device, from the memory one example takes (the longest
    evaluation example for text, one transformed image otherwise)."""
    device = plan.device if plan.device in EVAL_BATCH_CAP else "cpu"
    dtype_bytes = 2 if (getattr(args, "bf16", False) or getattr(args, "fp16", False)) else 4
    evals = [data[s] for s in ("validation", "test") if s in data] if data is not None else []
    per_example = 0.0
    try:
        if plan.length_feature and evals:
            longest = max(max(input_lengths(ds, plan.length_feature), default=0) for ds in evals)
            per_example = text_example_bytes(longest, getattr(model, "config", None), dtype_bytes)
        elif evals and len(evals[0]):
            pixels = evals[0][0].get("pixel_values")
            if pixels is not None:
                per_example = image_example_bytes(tuple(pixels.shape), dtype_bytes)
    except Exception:  # an estimate only: fall back to the training batch
        per_example = 0.0
    budget = memory_budget(device)
    if device == "cuda":  # the training state stays on the device while evaluating
        budget -= MEMORY_SHARE["cuda"] * model_state_bytes(model)
    size = choose_eval_batch_size(budget_bytes=budget,
                                  per_example_bytes=per_example,
                                  floor=int(args.per_device_train_batch_size),
                                  cap=EVAL_BATCH_CAP[device])
    return size, (f"default: chosen for {device} ({per_example / 2**20:.1f} MiB per example "
                  f"estimated, at most {EVAL_BATCH_CAP[device]})")


# -- lengths, grouping, sorting --------------------------------------------------------------
def length_groups(lengths: Sequence[int], slice_cost: float) -> list[list[int]]:
    """Rows of one batch cut into slices of similar length: the partition of the rows, longest
    first, into contiguous runs that minimises the tokens computed (each slice padded to its own
    longest row) plus ``slice_cost`` tokens per slice after the first. Exact: dynamic
    programming over the runs of equal length (a cut inside a run never helps), so a step costs
    at most (distinct lengths)^2, however large the batch."""
    order = sorted_order(lengths)
    if not order:
        return []
    starts = [k for k in range(len(order))
              if k == 0 or lengths[order[k]] != lengths[order[k - 1]]]  # where each run begins
    bounds = starts + [len(order)]
    m = len(starts)
    best = [0.0] + [math.inf] * m  # best[j]: cost of the first j runs (longest first)
    cut = [0] * (m + 1)
    for j in range(1, m + 1):
        for i in range(j):  # the last slice is runs i..j-1, padded to run i's length
            rows = bounds[j] - bounds[i]
            cost = best[i] + rows * lengths[order[bounds[i]]] + (slice_cost if i else 0.0)
            if cost < best[j]:
                best[j], cut[j] = cost, i
    slices, j = [], m
    while j:
        slices.append(order[bounds[cut[j]]:bounds[j]])
        j = cut[j]
    return slices[::-1]


def right_padded_lengths(inputs: dict) -> Optional[list[int]]:
    """Each row's length in a batch of several rows padded on the right (its ``attention_mask``
    2-D, every row its first ``length`` tokens), or None: a batch that length slices and packing
    leave alone. Cutting left padding, or a row with holes, would shift the positions of models
    that number tokens from the first column, or drop tokens."""
    import torch

    mask = inputs.get("attention_mask")
    if not isinstance(mask, torch.Tensor) or mask.dim() != 2 or mask.shape[0] < 2:
        return None
    lengths = mask.sum(1)
    columns = torch.arange(mask.shape[1], device=mask.device)
    if not bool((mask.bool() == (columns[None, :] < lengths[:, None])).all()):
        return None
    return lengths.tolist()


def length_slices(inputs: dict, *, labels_per_token: bool,
                  slice_cost: float = SPLIT_SLICE_COST) -> Optional[list[tuple[dict, int, int]]]:
    """A padded training batch as slices of similar length: ``(inputs, scored items, tokens)``
    per slice, or None when it is not worth splitting (or cannot be: no 2-D attention mask, or
    padding on the left). Every per-row tensor is cut to the slice's rows, every per-token one
    (``labels`` only with ``labels_per_token``) to its columns; scored items are rows, or
    labelled tokens (not -100) with ``labels_per_token``. A slice that scores nothing is left out."""
    import torch

    lengths = right_padded_lengths(inputs)
    if lengths is None:
        return None
    mask = inputs["attention_mask"]
    rows, width = mask.shape
    groups = length_groups(lengths, slice_cost * rows * width)
    if len(groups) < 2:
        return None
    labels = inputs.get("labels")
    if labels_per_token:
        if not isinstance(labels, torch.Tensor) or labels.shape != mask.shape:
            return None
        scored = (labels != -100).sum(1).tolist()
    else:
        scored = [1] * rows
    slices = []
    for group in groups:
        items = sum(scored[i] for i in group)
        if not items:
            continue
        n = max(lengths[i] for i in group)
        keep = torch.tensor(group, device=mask.device)
        part = {}
        for key, value in inputs.items():
            if isinstance(value, torch.Tensor) and value.dim() and value.shape[0] == rows:
                value = value.index_select(0, keep)
                per_token = value.dim() >= 2 and value.shape[1] == width and (
                    key != "labels" or labels_per_token)
                if per_token:
                    value = value[:, :n].contiguous()
            part[key] = value
        slices.append((part, items, n * len(group)))
    return slices


def pack_rows(lengths: Sequence[int], width: int) -> list[list[int]]:
    """Rows packed end to end into bins of at most ``width`` tokens (a longer row gets a bin of its
    own): first fit, longest first. Each bin lists its rows in the order they sit in it."""
    bins: list[list[int]] = []
    used: list[int] = []
    for i in sorted_order(lengths):
        n = lengths[i]
        for b, taken in enumerate(used):
            if taken + n <= width:
                bins[b].append(i)
                used[b] += n
                break
        else:
            bins.append([i])
            used.append(n)
    return bins


def pack_layout(lengths: Sequence[int], max_width: int = PACK_MAX_WIDTH
                ) -> tuple[int, int, list[list[int]]]:
    """The packing of rows of ``lengths`` that computes the fewest tokens: ``(tokens, width,
    bins)``. Every bin capacity from the longest row up to ``max_width`` (or the longest row, if
    longer) is tried (:func:`pack_rows`); each layout pads every bin to its fullest one, and the
    fewest tokens wins, then the narrower layout (attention grows with the width)."""
    longest = max(lengths)
    best = None
    for capacity in range(longest, max(longest, int(max_width)) + 1):
        bins = pack_rows(lengths, capacity)
        width = max(sum(lengths[i] for i in b) for b in bins)
        if best is None or (len(bins) * width, width) < best[:2]:
            best = (len(bins) * width, width, bins)
    return best


def packed_batch(inputs: dict, *, position_start: int = 0, mask: str = "bool",
                 max_width: int = PACK_MAX_WIDTH) -> Optional[tuple[dict, Any, int]]:
    """A right-padded batch of per-token inputs packed end to end (:func:`pack_layout`):
    ``(packed inputs, where, tokens)``, or None when it cannot be packed (no 2-D attention mask,
    left padding, a per-row input that is not per token) or packing would not compute fewer tokens.

    Every per-token tensor is laid out bin by bin; ``position_ids`` number each row's tokens from
    ``position_start``; ``attention_mask`` becomes a ``(bins, 1, width, width)`` block-diagonal
    mask (``mask="bool"``: True attends; ``"additive"``: 0 or the dtype's lowest value, float32)
    in which every row, and each bin's tail of padding, attends only to itself. ``where`` holds,
    per packed position, the index of its token in the flattened padded batch (-1: padding).
    """
    import torch

    lengths = right_padded_lengths(inputs)
    if lengths is None:
        return None
    attention = inputs["attention_mask"]
    rows, width = attention.shape
    per_token = {}
    for key, value in inputs.items():
        if isinstance(value, torch.Tensor) and value.dim() and value.shape[0] == rows:
            if value.dim() < 2 or value.shape[1] != width:
                return None  # a per-row input (sequence labels): packing would lose its rows
            per_token[key] = value
    if "position_ids" in per_token:
        return None  # the batch numbers its own positions
    tokens, packed_width, bins = pack_layout(lengths, max_width)
    if tokens >= rows * width:
        return None
    where = torch.full((len(bins), packed_width), -1, dtype=torch.long)
    positions = torch.zeros((len(bins), packed_width), dtype=torch.long)
    segment = torch.zeros((len(bins), packed_width), dtype=torch.long)
    for b, members in enumerate(bins):
        at = 0
        for s, i in enumerate(members):
            n = lengths[i]
            where[b, at:at + n] = torch.arange(i * width, i * width + n)
            positions[b, at:at + n] = torch.arange(n)
            segment[b, at:at + n] = s
            at += n
        segment[b, at:] = len(members)  # the tail of padding: a block of its own
    device = attention.device
    where, positions, segment = where.to(device), positions.to(device), segment.to(device)
    # padding positions copy one padding position of the padded batch (its pad id, label -100)
    pad_source = int((attention.reshape(-1) == 0).nonzero()[0])
    source = torch.where(where >= 0, where, pad_source).reshape(-1)
    packed = {}
    for key, value in inputs.items():
        if key == "attention_mask":
            continue
        if key in per_token:
            flat = value.reshape(rows * width, *value.shape[2:])
            value = flat.index_select(0, source).reshape(len(bins), packed_width, *value.shape[2:])
        packed[key] = value
    packed["position_ids"] = positions + int(position_start)
    blocks = (segment[:, :, None] == segment[:, None, :])[:, None]
    if mask == "additive":
        blocks = torch.zeros(blocks.shape, device=device).masked_fill(
            ~blocks, torch.finfo(torch.float32).min)
    packed["attention_mask"] = blocks
    return packed, where, tokens


def _logits(output: Any) -> Any:
    logits = getattr(output, "logits", None)
    return logits if logits is not None else output[0]


def check_packing(model: Any, inputs: dict) -> dict[str, Any]:
    """Whether ``model`` gives the same outputs for ``inputs`` packed (:func:`packed_batch`) as
    padded: both run without gradients in eval mode (no dropout), for each layout in turn
    (positions from 0, then from ``pad_token_id + 1``; the mask additive, then as booleans).
    Returns the first layout whose logits match within :data:`PACK_TOLERANCE` (``ok``,
    ``position_start``, ``mask``, ``max_difference``), else ``ok: False`` and why."""
    import torch

    unlabelled = {k: v for k, v in inputs.items() if k != "labels"}
    config = getattr(model, "config", None)
    pad = getattr(config, "pad_token_id", None)
    starts = [0] + ([int(pad) + 1] if isinstance(pad, int) and pad >= 0 else [])
    modes = [(module, module.training) for module in model.modules()]  # put back as they were
    model.eval()
    tried: list[str] = []
    try:
        with torch.no_grad():
            reference = _logits(model(**unlabelled))
            low = torch.is_autocast_enabled() or reference.dtype in (torch.float16, torch.bfloat16)
            tolerance = (PACK_TOLERANCE_LOW_PRECISION if low else PACK_TOLERANCE) * (
                1.0 + float(reference.abs().max()))
            flat = reference.reshape(-1, *reference.shape[2:]).float()
            for mask in ("additive", "bool"):
                for start in starts:
                    made = packed_batch(unlabelled, position_start=start, mask=mask)
                    if made is None:
                        return {"ok": None, "why": "this batch cannot be packed"}
                    packed, where, _tokens = made
                    try:
                        got = _logits(model(**packed)).float()
                    except Exception as err:  # the model does not take packed rows
                        tried.append(f"{mask} mask, positions from {start}: "
                                     f"{type(err).__name__}: {err}"[:200])
                        continue
                    real = where >= 0
                    difference = float((got[real] - flat[where[real]]).abs().max())
                    if difference <= tolerance:
                        return {"ok": True, "position_start": start, "mask": mask,
                                "max_difference": difference}
                    tried.append(f"{mask} mask, positions from {start}: logits differ by "
                                 f"{difference:.3g}")
    finally:
        for module, training in modes:
            module.training = training
    return {"ok": False, "why": "; ".join(tried)}


def input_lengths(dataset: Any, feature: str) -> list[int]:
    """Length of ``feature`` (a list column such as ``input_ids``) per row, in dataset order.

    A ``datasets.Dataset`` is read as Arrow (one C pass, honouring any selection of rows); other
    datasets are indexed row by row.
    """
    try:
        import pyarrow.compute as pc

        table = dataset.select_columns([feature]).with_format("arrow")[:]
        return pc.list_value_length(table.column(feature)).to_pylist()
    except (AttributeError, KeyError, TypeError, ValueError):
        return [len(dataset[i][feature]) for i in range(len(dataset))]


def sorted_order(lengths: Sequence[int]) -> list[int]:
    """Row indices longest first (stable: equal lengths keep dataset order)."""
    return sorted(range(len(lengths)), key=lambda i: -lengths[i])


def restore_order(value: Any, order: Sequence[int]) -> Any:
    """Undo a row permutation: ``value[k]`` belongs to dataset row ``order[k]``; the result holds
    dataset row ``i`` at ``i``. Works on arrays and (nested) tuples/lists of arrays; None stays."""
    import numpy as np

    if value is None:
        return None
    if isinstance(value, (tuple, list)):
        return type(value)(restore_order(v, order) for v in value)
    array = np.asarray(value)
    if array.ndim == 0 or len(array) != len(order):
        return value
    out = np.empty_like(array)
    out[np.asarray(order)] = array
    return out


def length_grouped_sampler(lengths: list[int], batch_size: int, seed: int):
    """transformers' length-grouped sampler over precomputed ``lengths``, reseeded each epoch
    (``set_epoch``), so every process and every resumed run draws the same batches."""
    import torch
    from transformers.trainer_pt_utils import LengthGroupedSampler

    class EpochSeededLengthGroupedSampler(LengthGroupedSampler):
        def __init__(self):
            super().__init__(batch_size, lengths=lengths)
            self.seed, self.epoch = int(seed), 0

        def set_epoch(self, epoch: int) -> None:
            self.epoch = int(epoch)

        def __iter__(self):
            self.generator = torch.Generator().manual_seed(self.seed + self.epoch)
            return super().__iter__()

    return EpochSeededLengthGroupedSampler()


class SpeedTrainerMixin:
    """The Trainer methods the speed defaults need (mixed into sft-hub's Trainer subclass).

    ``self.speed`` is the run's :class:`SpeedPlan` (None: plain Trainer behaviour).
    """

    speed: Optional[SpeedPlan] = None

    def _get_train_sampler(self, train_dataset=None):
        plan = self.speed
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if plan is None or not plan.group_by_length or dataset is None:
            return super()._get_train_sampler(train_dataset)
        args = self.args
        return length_grouped_sampler(
            input_lengths(dataset, plan.length_feature),
            args.train_batch_size * args.gradient_accumulation_steps,
            seed=args.data_seed if args.data_seed is not None else args.seed)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        plan = self.speed
        if plan is None or return_outputs or not model.training or not (
                plan.pack_batches or plan.split_batches_by_length):
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        counts = plan.split_counts
        counts["batches"] += 1
        mask = inputs.get("attention_mask")
        padded = int(mask.numel()) if mask is not None else 0
        counts["padded_tokens"] += padded
        packed = self._packed(model, inputs) if plan.pack_batches else None
        if packed is not None:  # one pass: the padded batch's labelled tokens, less padding
            counts["packed"] += 1
            counts["computed_tokens"] += packed[2]
            return super().compute_loss(model, packed[0], num_items_in_batch=num_items_in_batch)
        slices = (length_slices(inputs, labels_per_token=plan.labels_per_token)
                  if plan.split_batches_by_length else None)
        counts["computed_tokens"] += sum(s[2] for s in slices) if slices else padded
        if not slices:
            return super().compute_loss(model, inputs, num_items_in_batch=num_items_in_batch)
        counts["split"] += 1
        # A slice's loss is its own mean unless the Trainer normalises every loss by the items of
        # the whole (accumulated) batch: then the slices' losses simply add up.
        shared = num_items_in_batch is not None and (
            self.model_accepts_loss_kwargs or self.label_smoother is not None
            or self.compute_loss_func is not None)
        total = sum(items for _part, items, _tokens in slices)
        loss = 0.0
        for part, items, _tokens in slices:
            part_loss = super().compute_loss(model, part, num_items_in_batch=num_items_in_batch)
            loss = loss + (part_loss if shared else part_loss * (items / total))
        return loss

    def _packed(self, model, inputs):
        """This batch packed in the layout the first packable batch was checked with
        (:func:`check_packing`); a failed check turns packing off for the run, with the reason
        recorded. None: this batch is not packed."""
        plan = self.speed
        if plan.pack_check is None:
            check = check_packing(model, inputs)
            if check["ok"] is None:
                return None  # not packable: the next batch is checked
            plan.pack_check = check
            if not check["ok"]:
                plan.pack_batches = False
                plan.why["pack_batches"] = ("off: packed rows changed this model's outputs on "
                                            "the first batch (" + check["why"] + ")")
                return None
        return packed_batch(inputs, position_start=plan.pack_check["position_start"],
                            mask=plan.pack_check["mask"])

    def _get_eval_sampler(self, eval_dataset):
        if self.speed is not None and self.args.train_sampling_strategy == "group_by_length":
            # transformers would shuffle evaluation into length megabatches; evaluation order is
            # sft-hub's (sorted and restored, or dataset order)
            import torch

            return torch.utils.data.SequentialSampler(eval_dataset) if self.args.world_size <= 1 \
                else None
        return super()._get_eval_sampler(eval_dataset)

    def _sorted_loader(self, dataset, make):
        plan = self.speed
        if plan is None or not plan.sort_eval_by_length or dataset is None \
                or not hasattr(dataset, "select"):
            return make(dataset)
        order = sorted_order(input_lengths(dataset, plan.length_feature))
        loader = make(dataset.select(order))
        loader.sft_length_order = order
        return loader

    def get_eval_dataloader(self, eval_dataset=None):
        dataset = eval_dataset
        if isinstance(dataset, str):
            dataset = self.eval_dataset[dataset]
        elif dataset is None:
            dataset = self.eval_dataset
        if isinstance(dataset, dict):  # several evaluation sets: evaluate() calls per name
            return super().get_eval_dataloader(eval_dataset)
        return self._sorted_loader(dataset, super().get_eval_dataloader)

    def get_test_dataloader(self, test_dataset):
        return self._sorted_loader(test_dataset, super().get_test_dataloader)

    def evaluation_loop(self, dataloader, *args, **kwargs):
        order = getattr(dataloader, "sft_length_order", None)
        if order is None:
            return super().evaluation_loop(dataloader, *args, **kwargs)
        compute = self.compute_metrics
        if compute is not None:
            from transformers import EvalPrediction

            def in_dataset_order(p):
                return compute(EvalPrediction(
                    predictions=restore_order(p.predictions, order),
                    label_ids=restore_order(p.label_ids, order),
                    inputs=restore_order(p.inputs, order), losses=restore_order(p.losses, order)))

            self.compute_metrics = in_dataset_order
        try:
            output = super().evaluation_loop(dataloader, *args, **kwargs)
        finally:
            self.compute_metrics = compute
        return output._replace(predictions=restore_order(output.predictions, order),
                               label_ids=restore_order(output.label_ids, order))

    def _prepare_inputs(self, inputs):
        take = getattr(self.data_collator, "take_side_channel", None)
        if take is not None and isinstance(inputs, dict):
            inputs = take(inputs)
        return super()._prepare_inputs(inputs)


def channels_last_callback():
    """Puts the model back into the standard memory layout when training ends (safetensors saves
    only contiguous tensors, and the saved model must not depend on a training-time layout)."""
    from transformers import TrainerCallback

    class ContiguousAtEnd(TrainerCallback):
        def on_train_end(self, args, state, control, model=None, **kwargs):
            if model is not None:
                import torch

                model.to(memory_format=torch.contiguous_format)

    return ContiguousAtEnd()


def speed_callbacks(plan: Optional[SpeedPlan]) -> list:
    return [channels_last_callback()] if plan is not None and plan.channels_last else []


def speed_facts(trainer: Any) -> Optional[dict[str, Any]]:
    plan = getattr(trainer, "speed", None)
    return plan.to_json() if plan is not None else None


# -- GPU throughput figures (benchmarks) ------------------------------------------------------
#: Dense (no sparsity) bf16 tensor-core peak, TFLOP/s, per device name fragment (vendor data
#: sheets; SXM figures where a part has several forms, PCIe/NVL listed first where they differ).
DENSE_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    ("GB200", 2500.0), ("B200", 2250.0), ("B100", 1750.0),
    ("H200", 989.0), ("H100 PCIE", 756.0), ("H100 NVL", 835.0), ("H100", 989.0), ("H800", 989.0),
    ("GH200", 989.0), ("H20", 148.0),
    ("A100", 312.0), ("A800", 312.0), ("A10G", 70.0), ("A10", 125.0), ("A30", 165.0),
    ("A40", 149.7), ("A6000", 154.8), ("L40S", 362.0), ("L40", 181.0), ("L4", 121.0),
    ("RTX 6000 ADA", 364.0), ("RTX 4090", 165.2), ("RTX 3090", 71.0),
)


def peak_bf16_flops(device_name: str) -> Optional[float]:
    """Dense bf16 peak FLOP/s of a GPU from its name (``torch.cuda.get_device_name``), or None
    when the device is not in :data:`DENSE_BF16_TFLOPS`."""
    name = " ".join(device_name.upper().replace("-", " ").split())
    for fragment, tflops in DENSE_BF16_TFLOPS:
        if fragment in name:
            return tflops * 1e12
    return None


def training_flops(parameters: int, tokens: float) -> float:
    """Model FLOPs of training on ``tokens`` tokens (or images): 6 x parameters x tokens
    (forward 2, backward 4 per parameter and token)."""
    return 6.0 * float(parameters) * float(tokens)


def inference_flops(parameters: int, tokens: float) -> float:
    """Model FLOPs of a forward pass over ``tokens`` tokens: 2 x parameters x tokens."""
    return 2.0 * float(parameters) * float(tokens)


def mfu(flops: float, seconds: float, peak: Optional[float]) -> Optional[float]:
    """Model FLOPs utilisation: achieved FLOP/s over the device's peak (None without a peak)."""
    if not peak or seconds <= 0:
        return None
    return flops / seconds / peak
