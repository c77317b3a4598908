"""Does length grouping change accuracy? sft-hub on SST-2 with length-grouped training batches
(the default) and with random batches, same seed and data; validation accuracy of each
(a benchmark, not a test).

    python benchmarks/grouping_accuracy.py [--train-rows 1000] [--seeds 42 43] [--lr 1e-4]
    python benchmarks/grouping_accuracy.py --variant random   # one variant only (run two in parallel)

all-MiniLM-L6-v2, seeded SST-2 training rows, 1 epoch, batch 32, max_length 64, scored on the 872
GLUE validation sentences. Prints the accuracy per seed and variant and the mean difference.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import _bench as B
from end_to_end import sft_text

VARIANTS = {"grouped": [], "random": ["training.train_sampling_strategy=random"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train-rows", type=int, default=1000)
    p.add_argument("--seeds", type=int, nargs="+", default=[42, 43])
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--variant", choices=sorted(VARIANTS), action="append")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    a = p.parse_args()
    variants = a.variant or sorted(VARIANTS)
    out: dict[str, dict[int, float]] = {v: {} for v in variants}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        files = B.sst2_subset(work / "data", a.train_rows, None, 10)
        files.pop("test")
        for seed in a.seeds:
            for v in variants:
                r = sft_text(files, work / v, seed, a.device,
                             [f"training.learning_rate={a.lr}", *VARIANTS[v]])
                out[v][seed] = r["validation"]
                print(f"[{v}] seed {seed}: validation accuracy {r['validation']:.4f} "
                      f"(train {r['train_s']:.0f} s)", flush=True)
    print(f"\nSST-2, {a.train_rows} training rows, lr {a.lr}; {B.machine()}")
    for v in variants:
        print(f"{v:>8}: " + "  ".join(f"seed {s}: {x:.4f}" for s, x in out[v].items())
              + f"   mean {statistics.mean(out[v].values()):.4f}")
    if len(variants) == 2:
        diffs = [out["grouped"][s] - out["random"][s] for s in a.seeds]
        print(f"grouped - random: {', '.join(f'{100 * d:+.2f}' for d in diffs)} points, mean "
              f"{100 * statistics.mean(diffs):+.2f}")


if __name__ == "__main__":
    main()
