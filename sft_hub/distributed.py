"""Where a run executes: processes, devices, numeric precision, and the DDP settings.

sft-hub never starts processes itself. ``accelerate launch`` (or ``torchrun``) starts them, and
``transformers.Trainer`` runs accelerate's engines (DDP, FSDP, DeepSpeed) inside each one. This
module makes every process agree with its launcher and records what actually ran:

* **Device.** Without a GPU (or with ``ACCELERATE_USE_CPU=true``) the run trains on CPU, and so do
  processes started by a multi-process launcher: they then join one ``gloo`` process group. (The
  Trainer's own default would leave each process untied on a machine without GPUs: N separate
  runs racing on one run directory.) :func:`check_processes_connected` refuses a launch whose
  processes did not join.
* **Precision.** The recipe (``training.bf16`` / ``training.fp16``) and the launcher
  (``mixed_precision`` of the accelerate config, or ``--mixed_precision``) can both choose it.
  Rule: *if the recipe sets either key, the recipe decides* (bf16 if ``bf16: true``, fp16 if
  ``fp16: true``, full fp32 otherwise); only a recipe that sets neither key takes the launcher's
  choice. A launcher that asks for something else is overruled with a warning, never silently.
  A recipe records the numbers a model was trained with; the launcher describes the machine.
  bf16 / fp16 where the device has no native support is refused before training.
* **DDP.** ``ddp_find_unused_parameters`` defaults to false: every shipped strategy trains only
  parameters that take part in each forward pass (frozen ones are outside DDP's bookkeeping), so
  DDP need not search the graph for unused ones, which also keeps activation checkpointing
  working. A model with conditional branches can set ``training.ddp_find_unused_parameters: true``;
  DDP's own error is translated into that advice (:func:`explain_distributed_error`).
* **Sharded engines.** Under FSDP and DeepSpeed the final weights live in pieces on every process;
  :func:`weights_are_sharded` tells the training loop to gather them with the Trainer's collective
  ``save_model`` (all processes) instead of saving from the main process alone.

Nothing here imports torch at module level (``sft-hub validate`` imports the recipe checks).
"""
from __future__ import annotations

import contextlib
import os
import platform
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Optional

from .errors import RecipeError, SftHubError
from .strategies import strategy_contract

if TYPE_CHECKING:  # pragma: no cover
    from accelerate import PartialState

PRECISIONS = ("no", "fp16", "bf16")
LAUNCHER_PRECISION_ENV = "ACCELERATE_MIXED_PRECISION"
LAUNCHER_FIELD = "mixed_precision (accelerate config or --mixed_precision)"
GATHERED = ".gathered"  # run-dir folder the sharded final model is gathered into before staging


class PrecisionConflictWarning(UserWarning):
    """The recipe and the launcher ask for different mixed precision; the recipe's choice runs."""


# -- device -----------------------------------------------------------------------------------------
def has_accelerator() -> bool:
    import torch

    return torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


def use_cpu(training: dict[str, Any]) -> bool:
    """True when the run trains on CPU: the recipe says so (``training.use_cpu``), the launcher says
    so (``ACCELERATE_USE_CPU``), or there is no accelerator."""
    if training.get("use_cpu") is not None:
        return bool(training["use_cpu"])
    return _env_flag("ACCELERATE_USE_CPU") or not has_accelerator()


def process_state(cpu: bool) -> "PartialState":
    """The process group for this run, created the way the Trainer will create it (same ``cpu``),
    so that ``main_process_first`` and the main-process checks before the Trainer exists already
    see every process."""
    from accelerate import PartialState

    return PartialState(cpu=cpu)


def launched_processes() -> int:
    """How many processes the launcher started (``WORLD_SIZE``; 1 for a plain ``python`` run)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def check_processes_connected(state: "PartialState") -> None:
    """Refuse to train when the launcher started several processes that did not join one group
    (each would train alone and they would overwrite each other's run directory)."""
    launched = launched_processes()
    if launched > 1 and state.num_processes != launched:
        raise SftHubError(
            f"the launcher started {launched} processes but they did not join one process group "
            f"(this process sees {state.num_processes}); each would train on its own",
            hint="on CPU launch with `ACCELERATE_USE_CPU=true accelerate launch --config_file "
                 "accelerate_configs/cpu_2proc.yaml -m sft_hub train RECIPE`; on GPUs check that "
                 "every process sees a GPU (CUDA_VISIBLE_DEVICES)")


# -- precision --------------------------------------------------------------------------------------
def launcher_precision() -> str:
    """Mixed precision the launcher asked for ("no" when not launched by accelerate)."""
    value = os.environ.get(LAUNCHER_PRECISION_ENV, "no").strip().lower()
    return value if value in PRECISIONS else "no"


def recipe_precision(training: dict[str, Any]) -> Optional[str]:
    """The recipe's precision, or None when the recipe sets neither ``bf16`` nor ``fp16``."""
    if "bf16" not in training and "fp16" not in training:
        return None
    if training.get("bf16") and training.get("fp16"):
        raise RecipeError("training.bf16 and training.fp16 are both true", field="training.bf16",
                          hint="choose one mixed precision")
    return "bf16" if training.get("bf16") else "fp16" if training.get("fp16") else "no"


def resolve_precision(training: dict[str, Any]) -> tuple[str, str]:
    """(precision, who chose it: "recipe" or "launcher"); warns when the two disagree."""
    ours, theirs = recipe_precision(training), launcher_precision()
    if ours is None:
        return theirs, "launcher"
    if theirs != "no" and theirs != ours:
        key = "training.bf16" if ours == "bf16" else "training.fp16" if ours == "fp16" else \
            "training.bf16/fp16 (false)"
        warnings.warn(
            f"mixed precision: the recipe's {key} ({ours}) overrides the launcher's "
            f"mixed_precision={theirs}; remove the recipe key to let the launcher decide",
            PrecisionConflictWarning, stacklevel=2)
    return ours, "recipe"


def _cpu_supports(precision: str) -> bool:
    """Native oneDNN kernels for this precision on this CPU (AVX512-BF16 / AMX for bf16,
    AVX512-FP16 / AMX-FP16 for fp16); emulation is too slow to train with."""
    import torch

    # torch has no public probe for native CPU bf16/fp16 kernels (torch.cpu's are private too).
    probe = {"bf16": "_is_mkldnn_bf16_supported", "fp16": "_is_mkldnn_fp16_supported"}[precision]
    try:
        return bool(getattr(torch.ops.mkldnn, probe)())
    except (AttributeError, RuntimeError):
        return False


def check_precision_supported(precision: str, chosen_by: str, cpu: bool) -> None:
    """Refuse bf16 / fp16 on a device without native support, naming who asked for it."""
    if precision == "no":
        return
    import torch

    field = f"training.{precision}" if chosen_by == "recipe" else LAUNCHER_FIELD
    fix_where = ("remove training.%s (or set it to false)" % precision if chosen_by == "recipe"
                 else "launch with mixed_precision: 'no'")
    if cpu:
        if not _cpu_supports(precision):
            raise RecipeError(
                f"{precision} mixed precision is not supported on this CPU "
                f"({platform.processor() or platform.machine()}): it has no native {precision} "
                "kernels", field=field,
                hint=f"{fix_where} to train in fp32 on CPU, or train on a GPU")
        return
    if precision == "bf16" and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        raise RecipeError(
            f"bf16 needs an Ampere or newer GPU; {torch.cuda.get_device_name(0)} has no bf16",
            field=field, hint="use fp16 instead (training.fp16: true), or fp32")


@contextlib.contextmanager
def launcher_precision_as(precision: str) -> Iterator[None]:
    """Build ``TrainingArguments`` inside this: it reads the launcher's precision from the
    environment whenever ``bf16`` and ``fp16`` are false, so the resolved precision is put there."""
    before = os.environ.get(LAUNCHER_PRECISION_ENV)
    os.environ[LAUNCHER_PRECISION_ENV] = precision
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(LAUNCHER_PRECISION_ENV, None)
        else:
            os.environ[LAUNCHER_PRECISION_ENV] = before


# -- TrainingArguments ------------------------------------------------------------------------------
def device_arguments(training: dict[str, Any], file: Optional[str] = None) -> tuple[dict[str, Any], str]:
    """TrainingArguments keys this module decides (device, precision, DDP), and the precision.

    Keys the recipe sets itself are left to the recipe.
    """
    cpu = use_cpu(training)
    try:
        precision, chosen_by = resolve_precision(training)
        check_precision_supported(precision, chosen_by, cpu)
    except RecipeError as e:
        e.file = e.file or file
        raise
    args: dict[str, Any] = {"use_cpu": cpu, "dataloader_pin_memory": not cpu,
                            "ddp_find_unused_parameters": False}
    return {k: v for k, v in args.items() if k not in training}, precision


def explain_distributed_error(exc: BaseException) -> Optional[SftHubError]:
    """A user-facing error for DDP's "unused parameters" failure, else None."""
    text = str(exc)
    if "Expected to have finished reduction" in text or "find_unused_parameters=True" in text:
        return RecipeError(
            "distributed training found trainable parameters that took no part in the loss "
            "(DDP was told every trainable parameter is used)",
            field="training.ddp_find_unused_parameters",
            hint="set training.ddp_find_unused_parameters: true, or freeze the unused parameters")
    return None


# -- sharded engines --------------------------------------------------------------------------------
def weights_are_sharded(trainer: Any) -> bool:
    """True under FSDP or DeepSpeed: saving the final model is then a collective operation."""
    return bool(getattr(trainer, "is_fsdp_enabled", False) or
                getattr(trainer, "is_deepspeed_enabled", False))


def engine(trainer: Any) -> Optional[str]:
    """The multi-process engine the Trainer runs (``fsdp``, ``deepspeed``, ``ddp``), or None for
    one process: the names strategy contracts declare their engines by."""
    if getattr(trainer, "is_fsdp_enabled", False):
        return "fsdp"
    if getattr(trainer, "is_deepspeed_enabled", False):
        return "deepspeed"
    args = getattr(trainer, "args", None)
    return "ddp" if getattr(args, "world_size", 1) > 1 else None


def check_strategy_fits_engine(strategy: Any, trainer: Any) -> None:
    """Refuse, before training, an engine the strategy's contract does not run under (e.g. a
    save that merges an adapter, which needs the whole model in one process, under FSDP)."""
    strategy_contract(strategy).check_engine(engine(trainer))


def save_sharded_model(trainer: Any, out_dir: Path) -> None:
    """Gather the sharded weights and write the model to ``out_dir`` (call on every process; the
    main process writes). Uses the Trainer's own FSDP / DeepSpeed-aware ``save_model``."""
    trainer.save_model(str(out_dir))
    (Path(out_dir) / "training_args.bin").unlink(missing_ok=True)


# -- what ran ---------------------------------------------------------------------------------------
def launcher() -> str:
    """Which launcher started this process, from the environment it sets."""
    if "ACCELERATE_MIXED_PRECISION" in os.environ and "LOCAL_RANK" in os.environ:
        return "accelerate launch"
    if "TORCHELASTIC_RUN_ID" in os.environ:
        return "torchrun"
    if "ACCELERATE_MIXED_PRECISION" in os.environ:
        return "accelerate launch"
    return "python"


def command_line() -> str:
    """This process's command as a user would type it (``python -m sft_hub`` for the module)."""
    import shlex

    argv0 = sys.argv[0] if sys.argv else ""
    path = Path(argv0)
    if path.name == "__main__.py" and path.parent.name == "sft_hub":
        head = ["python", "-m", "sft_hub"]
    else:
        head = [path.name or "python"]
    return shlex.join([*head, *sys.argv[1:]])


def _local_world_size(state: Any) -> int:
    try:
        return int(os.environ.get("LOCAL_WORLD_SIZE", state.num_processes))
    except ValueError:
        return state.num_processes


def topology(trainer: Any) -> dict[str, Any]:
    """Processes, machines, engine and precision of the run, for run_info.json."""
    accelerator = trainer.accelerator
    state = accelerator.state
    return {
        "launcher": launcher(),
        "num_processes": state.num_processes,
        "num_machines": max(state.num_processes // _local_world_size(state), 1),
        "distributed_type": str(getattr(state.distributed_type, "value", state.distributed_type)),
        "backend": state.backend,
        "device": accelerator.device.type,
        "mixed_precision": str(accelerator.mixed_precision),
        "ddp_find_unused_parameters": trainer.args.ddp_find_unused_parameters,
        "gradient_accumulation_steps": trainer.args.gradient_accumulation_steps,
        "per_device_train_batch_size": trainer.args.per_device_train_batch_size,
        "global_train_batch_size": trainer.args.per_device_train_batch_size
        * trainer.args.gradient_accumulation_steps * state.num_processes,
    }
