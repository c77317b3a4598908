"""``sft-hub sweep``: tune a recipe's keys with Optuna on the validation split.

Each trial is an ordinary run (:func:`sft_hub.training.train`) in ``<sweep dir>/trials/<n>/``,
with the trial's number and parameters in its ``run_info.json``; trials never evaluate the test
split. The study lives in the sweep directory (Optuna's journal file ``study.journal``) unless
``--storage`` names a database URL or a journal file that several workers share: every worker runs
the same command, takes the next trial from the shared study, and all of them stop when the study
holds ``sweep.trials`` finished trials (complete, pruned or failed with an error). A worker may be
a multi-process launch (``accelerate launch -m sft_hub sweep``): its processes train each trial
together (:class:`_Ranks`).

The sweep directory holds, written as the sweep goes: ``sweep.json`` (what this sweep is),
``leaderboard.csv`` / ``leaderboard.md``, ``plots/`` and ``best.yaml`` (the best trial's complete
recipe, no ``sweep:``, which ``sft-hub train best.yaml`` reproduces). At the end the best trial is
evaluated once on the test split (``test_metrics.json``, and ``test`` in that trial's
``metrics.json``) and, with ``hub.push`` set, pushed with the leaderboard and plots in its card.

``--resume`` continues a sweep after a crash or ``kill -9``: finished trials are kept; a trial
whose process died (on this machine; with a database storage, any trial whose heartbeat stopped)
is marked failed and run again with the same parameters.
"""
from __future__ import annotations

import gc
import json
import os
import shutil
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Union

from .card import SWEEP_FOLDER as CARD_DIR  # the best run's leaderboard and plots
from .catalog import load_recipe, load_variant
from .distributed import check_processes_connected, launched_processes, process_state, use_cpu
from .errors import RecipeError, RunDirError
from .files import write_text_atomic
from .evaluation import EVAL_DIR
from .hub import preflight, push_run
from .recipe.load import COMMAND_LINE, LoadedRecipe
from .recipe.yaml_io import dump_yaml
from .run_dir import CHECKPOINTS, is_complete, run_directory
from .sweep_report import COUNTED, NOT_METRICS, strategy_label, trial_kind, write_report
from .sweep_space import SweepPlan, check_space, shown, sweep_plan, trial_recipe
from .validation import validate

SWEEP_INFO = "sweep.json"
JOURNAL = "study.journal"
TRIALS = "trials"
TRIAL_RECORD = "trial.json"
BEST_RECIPE = "best.yaml"
TEST_METRICS = "test_metrics.json"
TEST_LOCK = ".test_metrics.lock"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx")
HEARTBEAT_S, GRACE_S = 60, 180  # database storages: a trial silent this long is failed


@dataclass
class SweepResult:
    sweep_dir: Path
    best_trial: Optional[int]
    best_value: Optional[float]
    best_recipe: Optional[Path]
    trials: list[dict[str, Any]] = field(default_factory=list)  # leaderboard rows, trial order
    test_metrics: Optional[dict[str, Any]] = None


# -- the study --------------------------------------------------------------------------------------

def _storage(url: Optional[str], sweep_dir: Path):
    """An Optuna storage: a database URL (``dialect://``), else a journal file (default: the one
    in the sweep directory), which works for processes on one machine and on a shared filesystem."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    if url and "://" in url:
        return optuna.storages.RDBStorage(
            url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
            failed_trial_callback=optuna.storages.RetryFailedTrialCallback(max_retry=1))
    path = Path(url) if url else sweep_dir / JOURNAL
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def _sampler(plan: SweepPlan):
    import optuna

    if plan.sampler == "grid":
        class Grid(optuna.samplers.GridSampler):
            """Optuna's grid; a re-run of an interrupted trial (queued with its parameters) has
            no grid point of its own, which GridSampler.after_trial expects. Its stopping the
            study is not needed: the sweep counts its trials itself."""

            def after_trial(self, study, trial, state, values):
                try:
                    super().after_trial(study, trial, state, values)
                except KeyError:  # a queued trial: no grid_id
                    pass

        return Grid(plan.grid_space(), seed=plan.seed)
    if plan.sampler == "random":
        return optuna.samplers.RandomSampler(seed=plan.seed)
    return optuna.samplers.TPESampler(seed=plan.seed)


def _pruner(plan: SweepPlan):
    import optuna

    if plan.pruner == "median":  # prune below the median of earlier trials at the same evaluation
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0)
    if plan.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, reduction_factor=3)
    return optuna.pruners.NopPruner()


def _worker() -> dict[str, Any]:
    import psutil

    return {"host": socket.gethostname(), "pid": os.getpid(),
            "started": psutil.Process().create_time()}


def _is_dead(worker: Any) -> bool:
    """True when ``worker`` (a trial's ``worker`` attribute) ran on this machine and has exited."""
    import psutil

    if not isinstance(worker, dict) or worker.get("host") != socket.gethostname():
        return False  # another machine: its database heartbeat (if any) decides
    try:
        return abs(psutil.Process(int(worker["pid"])).create_time() - worker["started"]) > 1e-3
    except (psutil.NoSuchProcess, KeyError, TypeError, ValueError):
        return True


def _rerun_of(t) -> Optional[int]:
    value = t.user_attrs.get("rerun_of", t.system_attrs.get("failed_trial"))
    return int(value) if value is not None else None


def _recover(study) -> list[int]:
    """Mark trials whose process died as failed (interrupted) and queue each interrupted trial
    once more with its parameters. Returns the numbers requeued."""
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if _is_dead(t.user_attrs.get("worker")):
            study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
            print(f"note: trial {t.number} was interrupted (its process is gone); it runs again",
                  file=sys.stderr)
    trials = study.get_trials(deepcopy=False)
    rerun = {_rerun_of(t) for t in trials}
    requeued = []
    for t in trials:
        if trial_kind(t) == "interrupted" and t.number not in rerun:
            study.enqueue_trial(t.params, user_attrs={"rerun_of": t.number})
            requeued.append(t.number)
    return requeued


def _counts(study) -> tuple[int, int]:
    """(finished trials that count toward sweep.trials, trials running or queued)."""
    kinds = [trial_kind(t) for t in study.get_trials(deepcopy=False)]
    return sum(k in COUNTED for k in kinds), sum(k in ("running",) for k in kinds)


def _slot_taken(study, number: int, budget: int) -> bool:
    """True when earlier trials (finished or running) already fill the budget: several workers
    asked for a trial at the same moment, and this one is one too many."""
    earlier = [t for t in study.get_trials(deepcopy=False)
               if t.number < number and trial_kind(t) in (*COUNTED, "running")]
    return len(earlier) >= budget


# -- one trial --------------------------------------------------------------------------------------

def _trial_callback(trial, plan: SweepPlan, ranks: Optional["_Ranks"] = None):
    """A TrainerCallback that reports every evaluation to the Optuna trial (its n-th evaluation is
    step n), stops training when the pruner says so (recording the optimizer step; under a
    multi-process launch every rank stops at that step), and measures peak memory (CUDA:
    allocated by torch; CPU: resident set size of the process)."""
    import psutil
    import torch
    from transformers import TrainerCallback

    class TrialReporter(TrainerCallback):
        def __init__(self):
            self.evaluations = 0
            self.pruned_at: Optional[int] = None
            self.training = False
            self.peak_rss = 0
            self.process = psutil.Process()

        def _sample(self):
            self.peak_rss = max(self.peak_rss, self.process.memory_info().rss)

        def on_train_begin(self, args, state, control, **kwargs):
            self.training = True
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            self._sample()

        def on_step_end(self, args, state, control, **kwargs):
            self._sample()

        def on_train_end(self, args, state, control, **kwargs):
            self._sample()
            self.training = False

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            self._sample()
            key = f"eval_{plan.metric}"
            if not self.training:
                return
            prune = False
            if metrics and key in metrics:
                self.evaluations += 1
                trial.report(float(metrics[key]), step=self.evaluations)
                prune = state.global_step < state.max_steps and trial.should_prune()  # not at the end
            if ranks is not None:
                prune = ranks.share(prune)  # every evaluation during training, on every rank
            if prune:
                self.pruned_at = state.global_step
                control.should_training_stop = True

        @property
        def peak_memory_mib(self) -> float:
            if torch.cuda.is_available():
                return round(torch.cuda.max_memory_allocated() / 2**20, 1)
            return round(self.peak_rss / 2**20, 1)

    return TrialReporter()


def _write_json(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, default=str))


def _trial_variant(loaded: LoadedRecipe, plan: SweepPlan, values: dict[str, Any],
                   run_dir: Path) -> LoadedRecipe:
    """The trial's recipe: the sweep's recipe with the trial's values, in its own run directory,
    never pushed (the sweep pushes its best run at the end)."""
    return load_variant(trial_recipe(loaded, plan, values),
                        {"output.dir": str(run_dir), "hub.push": None, "output.overwrite": False},
                        source=COMMAND_LINE)


def _run_trial(trial, loaded: LoadedRecipe, plan: SweepPlan, sweep_dir: Path,
               callbacks: list, ranks: Optional["_Ranks"] = None) -> float:
    """The objective: one ordinary run with the trial's values; returns its validation metric.
    Under a multi-process launch (``ranks``) every rank trains it: this one, rank 0, sends the
    trial to the others first."""
    import optuna

    from .training import train

    if _slot_taken(trial.study, trial.number, plan.trials):
        trial.set_user_attr("surplus", True)
        raise _Surplus()
    values = {d.key: d.suggest(trial) for d in plan.dimensions}
    trial.set_user_attr("worker", _worker())
    run_dir = sweep_dir / TRIALS / str(trial.number)
    trial.set_user_attr("run_dir", f"{TRIALS}/{trial.number}")
    record = {"trial": trial.number, "params": {k: shown(v) for k, v in trial.params.items()},
              "rerun_of": trial.user_attrs.get("rerun_of")}
    try:
        variant = _trial_variant(loaded, plan, values, run_dir)
        trial.set_user_attr("strategy", strategy_label(plan, trial.params,
                                                       variant.recipe.strategy.name))
        trial.set_user_attr("recipe", variant.to_dict(relative_to=sweep_dir))
        reporter = _trial_callback(trial, plan, ranks)
        print(f"\ntrial {trial.number}: " + "  ".join(f"{k}={shown(v)}" for k, v in values.items()),
              flush=True)
        extra = {"sweep": {"trial": trial.number, "params": dict(trial.params), "values": values,
                           "study": trial.study.study_name, "metric": plan.metric,
                           "peak_memory_mib": reporter.peak_memory_mib}}
        if ranks is not None:
            ranks.share({"trial": trial.number, "values": values, "run_info": extra})
        result = train(variant, callbacks=[reporter, *callbacks], evaluate_test=False,
                       run_info_extra=extra)
    except optuna.TrialPruned:
        raise
    except Exception as e:  # out of memory, a value the model rejects...: recorded, the sweep goes on
        error = f"{type(e).__name__}: {e}".strip()
        trial.set_user_attr("error", error[:2000])
        _write_record(run_dir, {**record, "state": "failed", "error": error})
        print(f"trial {trial.number} failed: {error.splitlines()[0]}", file=sys.stderr, flush=True)
        raise
    validation = result.metrics.get("validation", {})
    info = result.run_info
    trial.set_user_attr("validation", {k: v for k, v in validation.items()
                                       if isinstance(v, (int, float))})
    trial.set_user_attr("train_seconds", round(result.metrics.get("train", {}).get(
        "runtime", info.get("train_seconds", 0.0)), 2))
    trial.set_user_attr("parameters", info.get("parameters"))
    trial.set_user_attr("peak_memory_mib", reporter.peak_memory_mib)
    trial.set_user_attr("global_step", info.get("global_step"))
    if plan.metric not in validation:
        message = (f"the validation metrics have no {plan.metric!r} (they have "
                   f"{', '.join(sorted(validation))})")
        trial.set_user_attr("error", message)
        _write_record(run_dir, {**record, "state": "failed", "error": message})
        raise RecipeError(message, field="sweep.metric")
    value = float(validation[plan.metric])
    if reporter.pruned_at is not None:
        trial.set_user_attr("pruned_at_step", reporter.pruned_at)
        _write_record(run_dir, {**record, "state": "pruned", "pruned_at_step": reporter.pruned_at,
                                plan.metric: value})
        raise optuna.TrialPruned(f"pruned after step {reporter.pruned_at}")
    _write_record(run_dir, {**record, "state": "complete", plan.metric: value})
    return value


class _Surplus(Exception):
    """Other workers already took the last trials of the budget."""


def _write_record(run_dir: Path, record: dict[str, Any]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_json(run_dir / TRIAL_RECORD, record)


# -- weights, best recipe, test split ----------------------------------------------------------------

def _ranking(study, plan: SweepPlan) -> list:
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return sorted(done, key=lambda t: (-t.value if plan.greater_is_better else t.value, t.number))


def _strip_weights(run_dir: Path) -> bool:
    """Remove a trial's weights and checkpoints; its records stay. True if anything was removed."""
    removed = False
    for entry in list(run_dir.iterdir()) if run_dir.is_dir() else []:
        if entry.is_dir() and entry.name in (CHECKPOINTS, "adapter"):
            shutil.rmtree(entry, ignore_errors=True)
            removed = True
        elif entry.is_file() and (entry.name.endswith(WEIGHT_SUFFIXES)
                                  or entry.name.endswith(".index.json")):
            entry.unlink(missing_ok=True)
            removed = True
    return removed


def apply_keep(study, plan: SweepPlan, sweep_dir: Path, keep: int) -> None:
    """Only the best ``keep`` complete trials (of this machine's trial folders) keep weights; every
    trial loses its checkpoints (optimizer states), which a finished trial no longer needs."""
    kept = {t.number for t in _ranking(study, plan)[:keep]}
    for t in study.get_trials(deepcopy=False):
        folder = sweep_dir / TRIALS / str(t.number)
        if t.state.is_finished() and folder.is_dir():
            if t.number in kept:
                shutil.rmtree(folder / CHECKPOINTS, ignore_errors=True)
            else:
                _strip_weights(folder)


def best_recipe(study, plan: SweepPlan, loaded: LoadedRecipe, sweep_dir: Path) -> Optional[Path]:
    """Write ``best.yaml``: the best trial's complete recipe (paths relative to the sweep folder),
    no ``sweep:``, its run going to ``<sweep dir>-best``, the recipe's own ``hub:`` section."""
    ranking = _ranking(study, plan)
    if not ranking:
        return None
    best = ranking[0]
    recipe = dict(best.user_attrs["recipe"])
    recipe["output"] = {**recipe.get("output", {}), "dir": str(sweep_dir.parent / f"{sweep_dir.name}-best")}
    recipe["hub"] = loaded.to_dict().get("hub", {})
    header = (f"# The best trial ({best.number}) of the sweep {sweep_dir}: validation "
              f"{plan.metric} = {best.value:.6g}.\n# A plain recipe (no sweep:); "
              f"`sft-hub train {sweep_dir / BEST_RECIPE}` trains it again.\n")
    path = sweep_dir / BEST_RECIPE
    write_text_atomic(path, header + dump_yaml(recipe))
    return path


def evaluate_test(run_dir: Path) -> Optional[dict[str, float]]:
    """Evaluate a finished trial's saved model on its recipe's test split, with ``sft-hub eval``'s
    report in ``<trial>/eval/test/`` (None: the recipe has no test split)."""
    from .evaluation import evaluate

    loaded = load_recipe(run_dir / "recipe.yaml")
    data = loaded.recipe.data
    if not ((data.files or {}).get("test") or data.splits.test):
        return None
    report = evaluate(run_dir, split="test")
    return {k: v for k, v in report.metrics.items() if isinstance(v, (int, float))}


def _evaluate_best_on_test(study, plan: SweepPlan, sweep_dir: Path) -> Optional[dict[str, Any]]:
    """The test split, evaluated once, for the best trial only (kept apart from selection)."""
    ranking = _ranking(study, plan)
    if not ranking:
        return None
    best = ranking[0]
    path = sweep_dir / TEST_METRICS
    try:
        previous = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        previous = None
    if previous and previous.get("trial") == best.number:
        return previous
    folder = sweep_dir / TRIALS / str(best.number)
    if not (is_complete(folder) and any(folder.glob("*.safetensors"))):
        print(f"note: the best trial ({best.number}) ran on another machine (no weights in "
              f"{folder}); run `sft-hub sweep ... --resume` there to evaluate it on the test split",
              file=sys.stderr)
        return None
    metrics = evaluate_test(folder)
    if metrics is None:
        return None
    result = {"trial": best.number, "split": "test", "params": dict(best.params),
              "validation": {plan.metric: best.value}, "metrics": metrics}
    _write_json(path, result)
    if previous and previous.get("trial") is not None:  # an earlier best: only the best has test
        earlier = sweep_dir / TRIALS / str(previous["trial"])
        _set_test_metrics(earlier, None)
        shutil.rmtree(earlier / EVAL_DIR / "test", ignore_errors=True)
    _set_test_metrics(folder, metrics)
    return result


def _set_test_metrics(run_dir: Path, metrics: Optional[dict[str, float]]) -> None:
    path = run_dir / "metrics.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    data.pop("test", None)
    if metrics is not None:
        data["test"] = metrics
    _write_json(path, data)


# -- the sweep --------------------------------------------------------------------------------------

def _prepare_dir(sweep_dir: Path, loaded: LoadedRecipe, plan: SweepPlan, storage: Optional[str],
                 resume: bool) -> tuple[Optional[str], bool]:
    """Check the sweep directory; returns (storage, joining an existing study)."""
    info_path = sweep_dir / SWEEP_INFO
    info = None
    if info_path.is_file():
        try:
            info = json.loads(info_path.read_text(encoding="utf-8"))
        except ValueError:
            info = None
    if sweep_dir.exists() and not sweep_dir.is_dir():
        raise RunDirError(f"{sweep_dir} is a file", field="output.dir",
                          hint="set output.dir to a directory for the sweep")
    if sweep_dir.is_dir() and any(sweep_dir.iterdir()) and not info:
        if is_complete(sweep_dir):
            what = "a training run"
        else:
            what = "files that are not an sft-hub sweep"
        raise RunDirError(f"{sweep_dir} holds {what}; a sweep needs a directory of its own",
                          field="output.dir", hint="set output.dir=<a new directory>")
    storage = storage or plan.storage or (info or {}).get("storage")
    if info and not resume and not storage:
        raise RunDirError(f"{sweep_dir} already holds a sweep ({len(list((sweep_dir / TRIALS).glob('*')))} "
                          "trial folders)", field="output.dir",
                          hint="pass --resume to continue it (or join it as another worker), or "
                               "set output.dir=<another directory>")
    sweep_dir.mkdir(parents=True, exist_ok=True)
    if not info:
        _write_json(info_path, {"sft_hub_sweep": True, "recipe": loaded.path, "storage": storage,
                                "study_name": plan.study_name or sweep_dir.name,
                                "metric": plan.metric, "direction": plan.direction,
                                "trials": plan.trials,
                                "started": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return storage, bool(info)


def _progress(t, plan: SweepPlan, study, done: int) -> str:
    kind = trial_kind(t)
    params = "  ".join(f"{k}={shown(v)}" for k, v in t.params.items())
    value = t.value if t.value is not None else (t.user_attrs.get("validation") or {}).get(plan.metric)
    parts = [f"trial {t.number} [{done}/{plan.trials}] {kind}"
             + (f" at step {t.user_attrs['pruned_at_step']}" if kind == "pruned" else ""), params]
    if value is not None:
        parts.append(f"{plan.metric}={value:.4f}")
    ranking = _ranking(study, plan)
    if ranking:
        parts.append(f"best={ranking[0].value:.4f} (trial {ranking[0].number})")
    if t.user_attrs.get("train_seconds") is not None:
        parts.append(f"{t.user_attrs['train_seconds']:.0f} s")
    return "  ".join(parts)


def sweep(recipe: Union[str, os.PathLike], overrides: Iterable[str] = (), *, resume: bool = False,
          storage: Optional[str] = None, callbacks: Iterable[Any] = ()) -> SweepResult:
    """Run (or continue, or join) the sweep of a recipe's ``sweep:`` section.

    ``storage``: an Optuna database URL or journal file shared by several workers (default: the
    recipe's ``sweep.storage``, else ``study.journal`` in the sweep directory). ``callbacks``:
    extra TrainerCallbacks for every trial.

    Under ``accelerate launch`` / ``torchrun`` the launch is one worker whose processes train
    every trial together (data parallel, as ``sft-hub train`` does); rank 0 talks to the study.
    """
    loaded = validate(recipe, overrides)
    plan = sweep_plan(loaded)
    check_space(loaded)
    sweep_dir = run_directory(loaded)
    ranks = _Ranks.of_launch(loaded)
    if ranks is not None and not ranks.main:
        try:
            return _follow(ranks, loaded, plan, sweep_dir, list(callbacks))
        finally:
            ranks.close()
    try:
        return _lead(loaded, plan, sweep_dir, resume, storage, list(callbacks), ranks)
    finally:
        if ranks is not None:
            ranks.share(None)  # the other ranks stop waiting for trials
            ranks.close()


def _lead(loaded: LoadedRecipe, plan: SweepPlan, sweep_dir: Path, resume: bool,
          storage: Optional[str], extra: list, ranks: Optional["_Ranks"]) -> SweepResult:
    """The sweep's loop, in the one process that talks to the study."""
    import optuna

    if loaded.recipe.hub.push:
        preflight(loaded.recipe.hub, strategy=loaded.recipe.strategy)
    storage, existed = _prepare_dir(sweep_dir, loaded, plan, storage, resume)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=_storage(storage, sweep_dir), sampler=_sampler(plan),
                                pruner=_pruner(plan), direction=plan.direction,
                                study_name=plan.study_name or sweep_dir.name, load_if_exists=True)
    if study.direction.name.lower() != plan.direction:
        raise RecipeError(f"the study {study.study_name} optimises in direction "
                          f"{study.direction.name.lower()}, the recipe says {plan.direction}",
                          field="sweep.direction", hint="use another sweep.study_name or directory")
    requeued = _recover(study) if (existed or resume or storage) else []
    if requeued:
        print(f"resuming: trial(s) {', '.join(map(str, requeued))} run again", file=sys.stderr)
    write_report(study, plan, sweep_dir)
    while True:
        done, running = _counts(study)
        if done + running >= plan.trials:
            break
        asked: list[int] = []

        def objective(trial):
            asked.append(trial.number)
            return _run_trial(trial, loaded, plan, sweep_dir, extra, ranks)

        study.optimize(objective, n_trials=1, catch=(Exception,), gc_after_trial=False)
        _after_trial(study, plan, sweep_dir)
        if not asked:  # the sampler stopped the study (a grid with every point taken)
            break
        last = next(t for t in study.get_trials(deepcopy=False) if t.number == asked[0])
        if trial_kind(last) == "surplus":
            break
        print(_progress(last, plan, study, _counts(study)[0]), flush=True)
        best_recipe(study, plan, loaded, sweep_dir)
        write_report(study, plan, sweep_dir)
    return _finish(study, plan, loaded, sweep_dir)


# -- a worker under accelerate launch / torchrun -----------------------------------------------------

class _Ranks:
    """The processes of one multi-process launch (``accelerate launch`` / ``torchrun``), which
    train every trial together: rank 0 talks to the study and sends each trial (its number and
    values) to the others, and its pruning decisions, with ``share``; the other ranks
    (:func:`_follow`) train what they receive. Each launch is one sweep worker: several launches
    (one per machine or group of GPUs) share a study through ``--storage``."""

    def __init__(self, state: Any):
        self.state = state
        self.main = state.is_main_process

    @classmethod
    def of_launch(cls, loaded: LoadedRecipe) -> Optional["_Ranks"]:
        """The launch's processes, joined in one group the way its trials' Trainers join it
        (None for a plain one-process run)."""
        if launched_processes() <= 1:
            return None
        state = process_state(cpu=use_cpu(loaded.recipe.training))
        check_processes_connected(state)
        return cls(state)

    def close(self) -> None:
        """Leave the process group together: a rank that exits with the group still open can
        abort in gloo's teardown ("terminate called without an active exception")."""
        import torch.distributed as dist

        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()

    def share(self, message: Any = None) -> Any:
        """Rank 0's ``message``, on every rank (a collective: all ranks call it in step)."""
        import torch.distributed as dist

        box = [message]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def _follow(ranks: _Ranks, loaded: LoadedRecipe, plan: SweepPlan, sweep_dir: Path,
            callbacks: list) -> SweepResult:
    """A rank other than 0: train each trial rank 0 sends, until it sends None. Only rank 0
    writes the trial's run directory and records its outcome."""
    from transformers import TrainerCallback

    from .training import train

    class FollowPruning(TrainerCallback):
        training = False

        def on_train_begin(self, args, state, control, **kwargs):
            self.training = True

        def on_train_end(self, args, state, control, **kwargs):
            self.training = False

        def on_evaluate(self, args, state, control, **kwargs):
            if self.training and ranks.share():  # rank 0's pruning decision
                control.should_training_stop = True

    while (job := ranks.share()) is not None:
        variant = _trial_variant(loaded, plan, job["values"], sweep_dir / TRIALS / str(job["trial"]))
        try:
            train(variant, callbacks=[FollowPruning(), *callbacks], evaluate_test=False,
                  run_info_extra=job["run_info"])
        except Exception as e:  # rank 0 records the trial as failed; wait for the next one
            print(f"trial {job['trial']} failed on rank {ranks.state.process_index}: "
                  f"{type(e).__name__}: {e}", file=sys.stderr, flush=True)
    return SweepResult(sweep_dir, None, None, None)


def _after_trial(study, plan: SweepPlan, sweep_dir: Path) -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover
        pass
    apply_keep(study, plan, sweep_dir, max(plan.keep, 1))  # the best keeps weights for the test split


def _finish(study, plan: SweepPlan, loaded: LoadedRecipe, sweep_dir: Path) -> SweepResult:
    done, running = _counts(study)
    finished = running == 0 and done >= plan.trials
    test = None
    if finished:  # workers that finish together take turns: the first evaluates, the rest read it
        from filelock import FileLock

        with FileLock(str(sweep_dir / TEST_LOCK)):
            test = _evaluate_best_on_test(study, plan, sweep_dir)
    hub = loaded.recipe.hub
    ranking = _ranking(study, plan)
    best = ranking[0] if ranking else None
    best_folder = sweep_dir / TRIALS / str(best.number) if best is not None else None
    pushable = (finished and hub.push and best_folder is not None and is_complete(best_folder)
                and any(best_folder.glob("*.safetensors")))
    apply_keep(study, plan, sweep_dir, plan.keep if finished and not pushable else max(plan.keep, 1))
    best_path = best_recipe(study, plan, loaded, sweep_dir)
    rows = write_report(study, plan, sweep_dir, test=test)
    if best is not None:
        print(f"\nsweep directory: {sweep_dir}\n      best: trial {best.number}  "
              + "  ".join(f"{k}={shown(v)}" for k, v in best.params.items())
              + f"  validation {plan.metric}={best.value:.4f}")
        if test:
            shown_test = {k: v for k, v in test["metrics"].items()
                          if isinstance(v, float) and not k.endswith(NOT_METRICS)}
            print("      test (best trial only): "
                  + "  ".join(f"{k}={v:.4f}" for k, v in list(shown_test.items())[:4]))
        print(f"      recipe: {best_path}")
    elif running:
        print(f"\n{running} trial(s) still running in other workers", file=sys.stderr)
    if running:
        print("note: other workers are still running trials; the test split and the push come "
              "when the last one finishes", file=sys.stderr)
    if pushable:
        _copy_report(sweep_dir, best_folder / CARD_DIR)
        try:
            push_run(best_folder, hub)
        finally:
            apply_keep(study, plan, sweep_dir, plan.keep)
    elif finished and hub.repo_id and best_folder is not None and is_complete(best_folder):
        # a destination without hub.push (the rule of `sft-hub train`: pushing needs the user's
        # word): the best run is ready to push, leaderboard and plots in its card included
        _copy_report(sweep_dir, best_folder / CARD_DIR)
        print(f"      push the best run to {hub.repo_id}: sft-hub push {best_folder}")
    return SweepResult(sweep_dir, best.number if best else None, best.value if best else None,
                       best_path, rows, test)


def _copy_report(sweep_dir: Path, target: Path) -> None:
    """The leaderboard and plots, beside the best run's files, for its model card."""
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for name in ("leaderboard.md", "leaderboard.csv"):
        if (sweep_dir / name).is_file():
            shutil.copy(sweep_dir / name, target / name)
    for plot in sorted((sweep_dir / "plots").glob("*.png")):
        shutil.copy(plot, target / plot.name)


def trial_run_dirs(sweep_dir: Path) -> list[Path]:
    """The trial folders of a sweep directory, in trial order."""
    folders = [p for p in (Path(sweep_dir) / TRIALS).glob("*") if p.name.isdigit()]
    return sorted(folders, key=lambda p: int(p.name))

