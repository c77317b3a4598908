"""A sweep's report, rewritten after every trial so that it is useful mid-sweep.

- ``leaderboard.csv`` / ``leaderboard.md``: one row per trial (parameters, validation metric,
  state, train seconds, trainable parameters, peak memory), best first;
- ``plots/``: the optimisation history, the strategy comparison (validation metric against train
  time, one colour per strategy), the intermediate values of pruned sweeps and, once there are
  enough finished trials, parameter importance (Optuna's ``visualization.matplotlib``).

Everything is read from the study (its storage), so any worker writes the whole picture.
"""
from __future__ import annotations

import csv
import io
import os
import warnings
from pathlib import Path
from typing import Any, Optional

from .files import temporary_sibling, write_text_atomic
from .sweep_space import SweepPlan, shown

PLOTS = "plots"
IMPORTANCE_MIN_TRIALS = 4  # complete trials before parameter importance means anything
STATE_ORDER = ("complete", "pruned", "running", "failed", "interrupted")
COUNTED = ("complete", "pruned", "failed")
# Evaluation bookkeeping that is not a quality measure.
NOT_METRICS = ("runtime", "samples_per_second", "steps_per_second", "epoch", "total_flos",
               "model_preparation_time")  # the trials that count toward sweep.trials


def trial_kind(t) -> str:
    """What an Optuna trial is to the sweep: complete | pruned | failed (with an error; counted)
    | interrupted (its process died; run again) | surplus (one too many, asked while other workers
    took the last ones) | running | waiting (queued)."""
    name = t.state.name
    if name == "FAIL":
        if "error" in t.user_attrs:
            return "failed"
        return "surplus" if t.user_attrs.get("surplus") else "interrupted"
    return {"COMPLETE": "complete", "PRUNED": "pruned", "RUNNING": "running"}.get(name, "waiting")


def strategy_label(plan: SweepPlan, params: dict[str, Any], name: str) -> str:
    """The strategy a trial trained with, as the comparison plot colours it: the space's choice
    when the space picks whole strategies, else the name and the strategy keys it varies."""
    if "strategy" in params:
        return str(params["strategy"])
    varied = [f"{k.split('.', 1)[1]}={shown(v)}" for k, v in params.items() if k.startswith("strategy.")]
    return " ".join([name, *varied])


def rows(study, plan: SweepPlan) -> list[dict[str, Any]]:
    """One row per trial (surplus and queued trials left out), in trial order."""
    out = []
    for t in study.get_trials(deepcopy=False):
        kind = trial_kind(t)
        if kind in ("surplus", "waiting"):
            continue
        attrs = t.user_attrs
        value = t.value if kind == "complete" else (attrs.get("validation") or {}).get(plan.metric)
        params = attrs.get("parameters") or {}
        out.append({
            "trial": t.number, "state": kind,
            **{d.key: shown(t.params[d.key]) if d.key in t.params else "" for d in plan.dimensions},
            plan.metric: value, "strategy": attrs.get("strategy", ""),
            "train_seconds": attrs.get("train_seconds"),
            "trainable_params": params.get("trainable"),
            "trainable_percent": params.get("trainable_percent"),
            "peak_memory_mib": attrs.get("peak_memory_mib"),
            "pruned_at_step": attrs.get("pruned_at_step"),
            "rerun_of": attrs.get("rerun_of", t.system_attrs.get("failed_trial")),
            "error": (attrs.get("error") or "").splitlines()[0][:200] if attrs.get("error") else "",
            "run_dir": attrs.get("run_dir", ""),
        })
    return out


def ranked(table: list[dict[str, Any]], plan: SweepPlan) -> list[dict[str, Any]]:
    """Complete trials best first, then pruned (by their metric), running, failed, interrupted."""
    sign = -1 if plan.greater_is_better else 1

    def key(row):
        value = row[plan.metric]
        return (STATE_ORDER.index(row["state"]), sign * value if value is not None else 0,
                row["trial"])

    return sorted(table, key=key)


def _csv(table: list[dict[str, Any]], plan: SweepPlan) -> str:
    columns = ["trial", "state", *(d.key for d in plan.dimensions), plan.metric, "strategy",
               "train_seconds", "trainable_params", "trainable_percent", "peak_memory_mib",
               "pruned_at_step", "rerun_of", "error", "run_dir"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in table:
        writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in columns})
    return buffer.getvalue()


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value).replace("|", "\\|")


def markdown(table: list[dict[str, Any]], plan: SweepPlan, name: str,
             test: Optional[dict[str, Any]] = None) -> str:
    """The leaderboard as a Markdown table, best first, with the best trial's test figures apart."""
    done = sum(r["state"] in ("complete", "pruned", "failed") for r in table)
    header = ["trial", *(d.key for d in plan.dimensions), f"validation {plan.metric}", "state",
              "train s", "trainable params", "peak memory MiB"]
    lines = [f"# Sweep `{name}`", "",
             f"{done} of {plan.trials} trials finished; selection by validation `{plan.metric}` "
             f"({plan.direction}), sampler `{plan.sampler}`, pruner `{plan.pruner}`.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in ranked(table, plan):
        state = row["state"]
        if state == "pruned" and row["pruned_at_step"] is not None:
            state = f"pruned at step {row['pruned_at_step']}"
        elif state == "failed" and row["error"]:
            state = f"failed: {row['error'][:80]}"
        elif state == "interrupted":
            state = "interrupted (run again)"
        trainable = row["trainable_params"]
        if trainable is not None and row["trainable_percent"] is not None:
            trainable = f"{trainable:,} ({row['trainable_percent']:.2f}%)"
        seconds, memory = row["train_seconds"], row["peak_memory_mib"]
        cells = [row["trial"], *(row[d.key] for d in plan.dimensions), row[plan.metric], state,
                 f"{seconds:.1f}" if seconds is not None else None, trainable,
                 f"{memory:,.0f}" if memory is not None else None]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    if test:
        figures = {k: v for k, v in test["metrics"].items() if isinstance(v, (int, float))
                   and not k.endswith(NOT_METRICS)}
        lines += ["", f"Test split, evaluated once for the best trial ({test['trial']}) and not "
                      "used for selection:", "",
                  "| metric | test |", "|---|---|",
                  *(f"| {k} | {_cell(float(v))} |" for k, v in figures.items())]
    return "\n".join(lines) + "\n"


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    tmp = temporary_sibling(path)
    fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)


def comparison_figure(table: list[dict[str, Any]], plan: SweepPlan):
    """Validation metric against train time, one colour per strategy (pruned trials hollow)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    points = [r for r in table if r[plan.metric] is not None and r["train_seconds"] is not None]
    groups = sorted({r["strategy"] or "?" for r in points})
    colours = plt.get_cmap("tab10")
    for i, group in enumerate(groups):
        for state, face in (("complete", colours(i % 10)), ("pruned", "none")):
            chosen = [r for r in points if (r["strategy"] or "?") == group and r["state"] == state]
            if chosen:
                ax.scatter([r["train_seconds"] for r in chosen], [r[plan.metric] for r in chosen],
                           facecolors=face, edgecolors=colours(i % 10), s=60,
                           label=group + (" (pruned)" if state == "pruned" else ""))
    for r in points:
        ax.annotate(str(r["trial"]), (r["train_seconds"], r[plan.metric]), fontsize=7,
                    xytext=(4, 3), textcoords="offset points")
    ax.set_xlabel("train time (s)")
    ax.set_ylabel(f"validation {plan.metric}")
    ax.set_title("Strategies: validation metric against train time")
    if groups:
        ax.legend(fontsize=8, loc="best")
    ax.grid(alpha=0.3)
    return fig


def write_plots(study, plan: SweepPlan, table: list[dict[str, Any]], folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import optuna
    from optuna.trial import TrialState

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna marks its matplotlib module experimental
        if complete:
            ax = optuna.visualization.matplotlib.plot_optimization_history(
                study, target_name=f"validation {plan.metric}")
            _save(ax.figure, folder / "history.png")
            written.append(folder / "history.png")
        if any(r[plan.metric] is not None for r in table):
            _save(comparison_figure(table, plan), folder / "strategy_comparison.png")
            written.append(folder / "strategy_comparison.png")
        if plan.pruner != "none" and any(t.intermediate_values for t in study.get_trials(deepcopy=False)):
            ax = optuna.visualization.matplotlib.plot_intermediate_values(study)
            _save(ax.figure, folder / "intermediate_values.png")
            written.append(folder / "intermediate_values.png")
        if len(complete) >= IMPORTANCE_MIN_TRIALS:
            try:
                ax = optuna.visualization.matplotlib.plot_param_importances(
                    study, target_name=f"validation {plan.metric}")
            except (ValueError, RuntimeError, ZeroDivisionError):  # e.g. every value the same
                ax = None
            if ax is not None:
                _save(ax.figure, folder / "param_importances.png")
                written.append(folder / "param_importances.png")
    return written


def write_report(study, plan: SweepPlan, sweep_dir: Path,
                 test: Optional[dict[str, Any]] = None) -> list[dict[str, Any]]:
    """Rewrite the leaderboard and plots of ``sweep_dir`` from the study; returns the rows."""
    import json

    table = rows(study, plan)
    if test is None and (sweep_dir / "test_metrics.json").is_file():
        try:
            test = json.loads((sweep_dir / "test_metrics.json").read_text(encoding="utf-8"))
        except ValueError:
            test = None
    write_text_atomic(sweep_dir / "leaderboard.csv", _csv(ranked(table, plan), plan))
    write_text_atomic(sweep_dir / "leaderboard.md", markdown(table, plan, sweep_dir.name, test))
    write_plots(study, plan, table, sweep_dir / PLOTS)
    return table
