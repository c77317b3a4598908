"""Recipe -> Trainer -> run directory.

The flow: load the recipe, check the run directory, build the task's data and model, let the
strategy prepare the model, train with ``transformers.Trainer`` (accelerate underneath), evaluate on
validation and test, then let the main process write the run directory: the final model is staged
in a hidden folder and moved into place, and ``run_info.json`` (``"complete": true``) is written last.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Union

from .distributed import (GATHERED, check_processes_connected, check_strategy_fits_engine,
                          command_line, device_arguments, explain_distributed_error,
                          launcher_precision_as, process_state, save_sharded_model, topology,
                          use_cpu, weights_are_sharded)
from ._version import __version__
from .advice import RunAdvice, default_arguments, resolved_recipe_yaml
from . import console, tracking
from .checkpoints import checkpoint_record, prune_checkpoints
from .data.sources import fingerprint
from .card import write_run_card
from .errors import RecipeError, attributed_to
from .evaluation import PredictionCapture, write_run_reports
from .hub import preflight, push_run
from .catalog import load_recipe
from .recipe.load import LoadedRecipe
from .portable import hub_private, portable_run_info
from .recipe_checks import check_recipe
from .run_totals import time_keeper, whole_run_train_metrics
from .speed import SpeedTrainerMixin, apply_speed_defaults, speed_callbacks, speed_facts
from .run_dir import (CHECKPOINTS, abandon_run_dir, check_run_dir, find_checkpoint, finish_run_dir,
                      publish_final, recover_interrupted_replace, run_directory, start_run_dir)
from .strategies import get_strategy
from .tasks import get_task_class
from .training_controls import (check_model_supports, control_callbacks, declare_batch_mean_loss,
                                trainer_defaults)


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, dict[str, float]]
    run_info: dict[str, Any]


def _strip_prefix(metrics: dict[str, float], prefix: str) -> dict[str, float]:
    out = {}
    for k, v in metrics.items():
        out[k[len(prefix) + 1:] if k.startswith(prefix + "_") else k] = v
    return out


def training_arguments(loaded: LoadedRecipe, task, run_dir: Path):
    """TrainingArguments from our defaults, the task's and the recipe's ``training:`` keys.

    Built before any data or model is loaded, so settings TrainingArguments rejects fail first.
    Device, precision and DDP defaults come from :mod:`sft_hub.distributed` (which also settles
    the recipe-versus-launcher precision rule).
    """
    from transformers import TrainingArguments

    settings = loaded.recipe.settings
    defaults: dict[str, Any] = {**settings.defaults, "metric_for_best_model": task.default_metric,
                                "greater_is_better": task.greater_is_better, **trainer_defaults()}
    device, precision = device_arguments(loaded.recipe.training, loaded.path)
    defaults.update(device)
    defaults.update(task.trainer_kwargs())
    defaults.update(default_arguments(loaded.recipe))  # the strategy's learning rate (advice.py)
    try:
        with launcher_precision_as(precision):
            return TrainingArguments(output_dir=str(run_dir / CHECKPOINTS),
                                     **{**defaults, **settings.recipe})
    except (ValueError, TypeError) as e:
        raise RecipeError(f"TrainingArguments rejected the settings: {e}", file=loaded.path,
                          field="training", hint="see transformers.TrainingArguments") from None


def _make_trainer(strategy, speed=None, **kwargs):
    from transformers import Trainer

    class SftTrainer(SpeedTrainerMixin, Trainer):
        """Trainer whose optimizer parameter groups come from the strategy when it has any, with
        the run's speed defaults (``speed``: batching, sorted evaluation; sft_hub/speed.py)."""

        def create_optimizer(self, model=None):
            if self.optimizer is None:
                groups = strategy.optimizer_param_groups(model or self.model, self.args)
                if groups is not None:
                    cls, opt_kwargs = Trainer.get_optimizer_cls_and_kwargs(self.args, self.model)
                    self.optimizer = cls(groups, **opt_kwargs)
                    return self.optimizer
            return super().create_optimizer(model)

    trainer = SftTrainer(**kwargs)
    trainer.speed = speed
    return trainer


def _final_step(trainer) -> int:
    """The step of the weights the run ends with (the best checkpoint's when it loads it)."""
    state, args = trainer.state, trainer.args
    if args.load_best_model_at_end and state.best_model_checkpoint:
        return int(state.best_model_checkpoint.rstrip("/").rsplit("-", 1)[-1])
    return state.global_step


def _final_validation(trainer) -> dict[str, float]:
    """Validation metrics of the model the run ends with, reusing the Trainer's own evaluation of
    that step when there is one (evaluating the same weights twice costs a full pass)."""
    step = _final_step(trainer)
    for entry in reversed(trainer.state.log_history):
        if entry.get("step") == step and any(k.startswith("eval_") and k != "eval_loss" for k in entry):
            return {k: v for k, v in entry.items() if k.startswith("eval_")}
    return trainer.evaluate()


def count_parameters(model) -> dict[str, Any]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable,
            "trainable_percent": round(100.0 * trainable / max(total, 1), 4)}


def train(recipe: Union[str, os.PathLike, LoadedRecipe], overrides: Iterable[str] = (), *,
          overwrite: bool = False, resume: Union[bool, str, None] = None,
          callbacks: Iterable[Any] = (), evaluate_test: bool = True,
          run_info_extra: Union[dict[str, Any], None] = None) -> RunResult:
    """Train a recipe end to end; returns the run directory and its metrics.

    ``resume``: True for the latest checkpoint in the run directory, or a checkpoint path.
    ``callbacks``: extra ``transformers.TrainerCallback`` objects (progress reporting, probes),
    added after the strategy's and the recipe's own (early stopping).
    ``evaluate_test``: False leaves the test split alone (sweep trials select on validation only);
    ``run_info_extra``: more keys for ``run_info.json`` (a sweep trial's number and parameters).

    Launched by ``accelerate launch`` / ``torchrun``, every process calls this; only the main
    process writes the run directory, prints the summary and pushes.
    """
    loaded = recipe if isinstance(recipe, LoadedRecipe) else load_recipe(recipe, overrides)
    with attributed_to(loaded.path):
        return _train(loaded, overwrite=overwrite, resume=resume, callbacks=list(callbacks),
                      evaluate_test=evaluate_test, run_info_extra=run_info_extra)


def _train(loaded: LoadedRecipe, *, overwrite: bool, resume: Union[bool, str, None],
           callbacks: list, evaluate_test: bool = True,
           run_info_extra: Union[dict[str, Any], None] = None) -> RunResult:
    from transformers import set_seed

    console.quiet_libraries()
    r = loaded.recipe
    check_recipe(loaded, get_task_class(r.task))  # what `validate` checks, before anything is read
    task = get_task_class(r.task)(r, loaded.base_dir)
    strategy = get_strategy(r.strategy, task)
    task.check_data()
    run_dir = run_directory(loaded)
    state = process_state(cpu=use_cpu(r.training))
    check_processes_connected(state)
    if state.is_main_process:
        recover_interrupted_replace(run_dir)
    state.wait_for_everyone()
    place = check_run_dir(run_dir, overwrite=overwrite or r.output.overwrite, resume=bool(resume))
    checkpoint = find_checkpoint(run_dir, resume) if resume else None
    hub = r.hub.model_copy(update={"private": hub_private(loaded)})  # a Hub recipe's is not yours
    if hub.push:
        preflight(hub, strategy=r.strategy)
    args = training_arguments(loaded, task, place.work)  # before data and model: settings first

    started = time.time()
    seed = r.settings.seed
    set_seed(seed)
    with state.main_process_first():
        raw = task.load_data()
        task.build_processor()
        data = task.preprocess(raw)
    set_seed(seed)
    model = strategy.prepare(task.build_model())
    check_model_supports(model, r.training, r.model.name)
    declare_batch_mean_loss(model)
    params = count_parameters(model)
    console.report_model_loading(model, r.model)  # a head that does not match, missing weights
    data["train"] = _avoid_single_example_batch(model, data["train"], args, task.notes)

    if state.is_main_process:
        start_run_dir(place, recipe=loaded.path, resume=bool(resume))  # after every input check
    state.wait_for_everyone()
    try:
        result = _fit_and_publish(loaded, task, strategy, model, args, data, place, state, raw=raw,
                                  callbacks=callbacks, checkpoint=checkpoint, params=params,
                                  started=started, seed=seed, evaluate_test=evaluate_test,
                                  run_info_extra=run_info_extra)
    except BaseException:
        if state.is_main_process:
            abandon_run_dir(place)  # the previous run (if any) is untouched
        raise
    if hub.push and state.is_main_process:
        push_run(run_dir, hub)
    return result


def _fit_and_publish(loaded: LoadedRecipe, task, strategy, model, args, data, place, state, *,
                     raw=None,
                     callbacks: list, checkpoint, params, started: float, seed: int,
                     evaluate_test: bool = True,
                     run_info_extra: Union[dict[str, Any], None] = None) -> RunResult:
    r = loaded.recipe
    advice = RunAdvice(loaded, task, params, len(data["train"]), main_process=state.is_main_process)
    speed = apply_speed_defaults(task, model, args, r.settings, data)  # sft_hub/speed.py
    tracking.before_trainer(place.work, args.report_to)  # report_to logs go to <run dir>/logs/
    trainer = _make_trainer(
        strategy, speed=speed, model=model, args=args, train_dataset=data["train"],
        eval_dataset=data["validation"], data_collator=task.data_collator(),
        processing_class=task.processor, compute_metrics=(capture := PredictionCapture(
            advice.compute_metrics)),
        callbacks=[*strategy.callbacks(), *control_callbacks(r.training), *speed_callbacks(speed),
                   (keeper := time_keeper(checkpoint)), *callbacks])
    check_strategy_fits_engine(strategy, trainer)
    tracking.direct_logs(trainer, place.work)
    console.start(trainer, loaded=loaded, task=task, params=params, data=data, place=place,
                  resumed_from=checkpoint)  # banner, progress bars, evaluation tables
    capture.trainer = trainer  # keeps validation predictions for the report (evaluation.py)
    try:
        train_output = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    except RuntimeError as e:
        explained = explain_distributed_error(e)
        if explained is None:
            raise
        raise explained from e
    metrics = {"train": whole_run_train_metrics(  # a resumed run: the whole run's loss and time
                   _strip_prefix(train_output.metrics, "train"), log_history=trainer.state.log_history,
                   resumed_from=checkpoint, global_step=trainer.state.global_step,
                   prior_seconds=keeper.before, samples_per_step=args.per_device_train_batch_size
                   * args.gradient_accumulation_steps * args.world_size),
               "validation": _strip_prefix(_final_validation(trainer), "eval")}
    predicted = {"validation": capture.predictions(_final_step(trainer))}
    capture.active = False
    if predicted["validation"] is None:  # no evaluation of the final weights to reuse
        predicted["validation"] = trainer.predict(data["validation"])
    if "test" in data and evaluate_test:
        predicted["test"] = trainer.predict(data["test"], metric_key_prefix="test")
        metrics["test"] = _strip_prefix(predicted["test"].metrics, "test")
    run_info = _run_info(loaded, task, trainer, params, started, seed=seed, resumed_from=checkpoint,
                         work_dir=place.work)
    run_info.update(run_info_extra or {})
    run_info.update(advice.finish(metrics))  # defaults_applied, warnings (advice.py)
    run_info["checkpoints"] = checkpoint_record(trainer.state, args.metric_for_best_model,
                                                keep=r.output.keep_checkpoints)
    run_info = portable_run_info(run_info, place.final)  # no absolute local paths
    gathered = None
    if weights_are_sharded(trainer):  # FSDP / DeepSpeed: every process takes part in the gather
        gathered = place.work / GATHERED
        save_sharded_model(trainer, gathered)
        state.wait_for_everyone()
    if state.is_main_process:
        def write(staging: Path) -> None:
            if gathered is not None:
                for item in gathered.iterdir():
                    os.replace(item, staging / item.name)
                gathered.rmdir()
            else:
                strategy.save(trainer.model, staging)
            task.save_processor(staging)
            (staging / "recipe.yaml").write_text(resolved_recipe_yaml(loaded, place.final),
                                                encoding="utf-8")
            trainer.state.save_to_json(str(staging / "trainer_state.json"))
            (staging / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
            write_run_reports(staging, task, {  # eval/<split>/, learning curves (evaluation.py)
                split: (pred, raw[split] if raw is not None and split in raw else None,
                        metrics[split]) for split, pred in predicted.items()},
                log_history=trainer.state.log_history, seed=seed)
            write_run_card(staging, run_info, place.final)

        publish_final(place.work, write, run_info)
        removed = prune_checkpoints(place.work, keep=r.output.keep_checkpoints)  # complete now
        finish_run_dir(place)  # a previous run is replaced only now, by a complete one
        console.checkpoints_removed(*removed)
        console.summary(place.final, metrics, task.headline_metrics)
    state.wait_for_everyone()
    return RunResult(run_dir=place.final, metrics=metrics, run_info=run_info)


def _avoid_single_example_batch(model, train, args, notes: list[str]):
    """A model with BatchNorm cannot train on a batch of one example (it crashes on 1x1 feature
    maps and learns noise otherwise). When the last training batch of an epoch would hold one
    example, leave that example out (recorded in the run's notes)."""
    import torch.nn as nn

    norms = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
    if args.world_size > 1 or not any(isinstance(m, norms) for m in model.modules()):
        return train  # several processes: accelerate evens out the last batches
    if len(train) > 1 and len(train) % args.per_device_train_batch_size == 1:
        notes.append(f"left 1 of {len(train)} training examples out so that no training batch "
                     "holds a single example (the model has BatchNorm layers)")
        return train.select(range(len(train) - 1))
    return train


def _run_info(loaded: LoadedRecipe, task, trainer, params, started: float, *, seed: int,
              resumed_from: Union[Path, None], work_dir: Path) -> dict[str, Any]:
    import platform

    import torch


    versions = {"sft_hub": __version__, "python": platform.python_version()}
    for lib in ("torch", "transformers", "datasets", "accelerate", "peft", "timm", "huggingface_hub"):
        try:
            versions[lib] = __import__(lib).__version__
        except ImportError:
            pass
    device = (torch.cuda.get_device_name(0) if torch.cuda.is_available()
              else f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)")
    return {
        "complete": True,
        "recipe": loaded.path,
        "command": command_line(),
        "task": task.name,
        "base_model": loaded.recipe.model.name,
        "strategy": loaded.recipe.strategy.name,
        "labels": task.labels,
        "parameters": params,
        "notes": task.notes,
        "task_contract": task.card_facts(),  # what the model card needs (tasks/base.py)
        "strategy_contract": loaded.recipe.strategy.card_facts(),  # the card's (strategies/base.py)
        "train_seconds": round(time.time() - started, 2),
        "hardware": device,
        "topology": topology(trainer),
        "seed": seed,
        "resumed_from": str(resumed_from) if resumed_from else None,
        "global_step": trainer.state.global_step,
        "versions": versions,
        "data_fingerprint": fingerprint(loaded.recipe.data, loaded.base_dir),
        "best_checkpoint": _relative(trainer.state.best_model_checkpoint, work_dir),
        "training_arguments": _effective_arguments(trainer.args),
        "speed": speed_facts(trainer),  # the speed defaults and why (sft_hub/speed.py)
    }


def _relative(path: Union[str, None], base: Path) -> Union[str, None]:
    """``path`` relative to the run directory (the run may have trained in a sibling folder)."""
    if not path:
        return None
    try:
        return Path(path).resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return str(path)


EFFECTIVE_ARGUMENTS = ("learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size",
                       "gradient_accumulation_steps", "lr_scheduler_type", "warmup_steps",
                       "weight_decay", "optim", "seed", "bf16", "fp16", "metric_for_best_model")


def _effective_arguments(args) -> dict[str, Any]:
    """The TrainingArguments that shaped the run (recipe values and sft-hub's defaults)."""
    values = args.to_dict()
    out = {k: values[k] for k in EFFECTIVE_ARGUMENTS if k in values}
    out["total_train_batch_size"] = (args.per_device_train_batch_size * args.world_size
                                     * args.gradient_accumulation_steps)
    return out

