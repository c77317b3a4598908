"""Same recipe, same seed, same machine: the same metrics and bit-identical weights (on CPU); the
seed is really applied (another seed gives other weights); and run_info.json records what is
needed to repeat the run: versions, command line, topology, seed and a fingerprint of the data."""
from __future__ import annotations

import json
import os

from sft_hub.training import train

TIMINGS = ("runtime", "samples_per_second", "steps_per_second")


def _weights(run):
    from safetensors.torch import load_file

    return load_file(run / "model.safetensors")


def _results(run) -> dict:
    metrics = json.loads((run / "metrics.json").read_text())
    return {split: {k: v for k, v in values.items() if not k.endswith(TIMINGS)}
            for split, values in metrics.items()}


def test_same_recipe_and_seed_give_identical_runs(text_recipe, write_recipe, tmp_path):
    text_recipe["data"]["max_train_samples"] = 24
    text_recipe["training"].update(num_train_epochs=1, seed=7)  # dropout on: the seed matters
    recipe = write_recipe(text_recipe)
    first = train(recipe, [f"output.dir={tmp_path / 'a'}"]).run_dir
    second = train(recipe, [f"output.dir={tmp_path / 'b'}"]).run_dir
    other_seed = train(recipe, [f"output.dir={tmp_path / 'c'}", "training.seed=8"]).run_dir

    assert _results(first) == _results(second)
    w1, w2, w3 = _weights(first), _weights(second), _weights(other_seed)
    assert all((w1[k] == w2[k]).all() for k in w1)  # bit for bit
    assert any((w1[k] != w3[k]).any() for k in w1)

    info = json.loads((first / "run_info.json").read_text())
    again = json.loads((second / "run_info.json").read_text())
    assert info["seed"] == 7
    assert {"sft_hub", "python", "torch", "transformers", "datasets", "accelerate"} <= set(
        info["versions"])
    assert info["command"]  # the command line that ran (pytest here)
    topology = info["topology"]
    assert (topology["num_processes"], topology["distributed_type"], topology["mixed_precision"],
            topology["launcher"]) == (1, "NO", "no", "python")
    data_files = text_recipe["data"]["files"]
    # paths as written from the directory the run started in (run_info holds no absolute path)
    assert set(info["data_fingerprint"]) == {os.path.relpath(p) for p in data_files.values()}
    assert all(len(h) == 64 for h in info["data_fingerprint"].values())  # sha256 per file
    assert info["data_fingerprint"] == again["data_fingerprint"]
