"""``sft-hub train RECIPE --resume``: a run killed hard (SIGKILL) after a checkpoint continues to
the same final metrics and weights as a run that was never interrupted, for full fine-tuning and
for an adapter; and a crash never leaves a final model that looks complete."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from sft_hub import cli
from sft_hub.errors import RunDirError
from sft_hub.run_dir import (RunPlace, check_run_dir, find_checkpoint, is_complete, publish_final,
                             start_run_dir)
from sft_hub.training import train

from .training_probes import kill_at_checkpoint

STEPS_PER_EPOCH = 4  # 32 training rows, batch 8
REPORTED = ("runtime", "samples_per_second", "steps_per_second")  # timings, not results


def _results(metrics: dict) -> dict:
    return {split: {k: v for k, v in values.items() if k not in REPORTED}
            for split, values in metrics.items() if split != "train"}


def _weights(run: Path) -> dict:
    from safetensors.torch import load_file

    name = "adapter_model.safetensors" if (run / "adapter_config.json").exists() else \
        "model.safetensors"
    return load_file(run / name)


@pytest.mark.parametrize("strategy", [{"name": "full"}, {"name": "lora", "r": 4}],
                         ids=["full", "lora"])
def test_killed_run_resumes_to_the_uninterrupted_result(text_recipe, write_recipe, tmp_path,
                                                        capsys, strategy):
    text_recipe["strategy"] = strategy
    text_recipe["data"]["max_train_samples"] = 4 * 8
    # the final weights are the last step's (not a best checkpoint that may predate the kill);
    # dropout stays on, so the random state must resume too
    text_recipe["training"].update(num_train_epochs=3, learning_rate=2e-3,
                                   load_best_model_at_end=False)
    recipe = write_recipe(text_recipe)
    reference = train(recipe, [f"output.dir={tmp_path / 'uninterrupted'}"])

    run = tmp_path / "killed"
    kill_at_checkpoint(recipe, [f"output.dir={run}"], STEPS_PER_EPOCH, tmp_path)
    checkpoint = find_checkpoint(run, True)
    assert checkpoint.name == f"checkpoint-{STEPS_PER_EPOCH}"
    at_kill = _weights(checkpoint)
    # the killed run is visibly unfinished: no final model at the root, no completion marker
    assert not is_complete(run)
    assert not any((run / f).exists() for f in ("run_info.json", "model.safetensors",
                                                 "adapter_model.safetensors", "metrics.json"))
    assert cli.main(["train", str(recipe), f"output.dir={run}"]) == 2
    assert "holds an unfinished run" in capsys.readouterr().err

    assert cli.main(["train", str(recipe), f"output.dir={run}", "--resume"]) == 0
    info = json.loads((run / "run_info.json").read_text())
    assert info["complete"] and info["resumed_from"].endswith(f"checkpoint-{STEPS_PER_EPOCH}")
    assert info["global_step"] == 3 * STEPS_PER_EPOCH

    resumed = json.loads((run / "metrics.json").read_text())
    assert _results(resumed) == _results(reference.metrics)
    expected, got = _weights(reference.run_dir), _weights(run)
    assert expected.keys() == got.keys()
    diff = max((expected[k] - got[k]).abs().max().item() for k in expected)
    print(f"\n{strategy['name']}: resumed vs uninterrupted: max |dw| = {diff:.3g}; "
          f"validation {resumed['validation']} vs {reference.metrics['validation']}")
    assert diff == 0.0
    assert any((at_kill[k] - got[k]).abs().max().item() > 0 for k in got)  # it did train on


def test_a_crash_while_publishing_leaves_no_complete_looking_run(tmp_path):
    run = tmp_path / "run"
    start_run_dir(RunPlace(run, run), recipe="r.yaml", resume=False)

    def write_then_crash(staging: Path) -> None:
        (staging / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        publish_final(run, write_then_crash, {"complete": True})
    assert not is_complete(run) and not (run / "model.safetensors").exists()
    with pytest.raises(RunDirError, match="holds an unfinished run"):
        check_run_dir(run, overwrite=False, resume=False)

    publish_final(run, lambda staging: (staging / "model.safetensors").write_bytes(b"w"),
                  {"complete": True})
    assert is_complete(run) and not (run / ".staging").exists()


def test_resume_skips_a_checkpoint_cut_short(tmp_path, capsys):
    checkpoints = tmp_path / "run" / "checkpoints"
    for step, state in ((2, '{"global_step": 2}'), (4, '{"global_st'), (10, None)):
        (checkpoints / f"checkpoint-{step}").mkdir(parents=True)
        if state is not None:
            (checkpoints / f"checkpoint-{step}" / "trainer_state.json").write_text(state)
    assert find_checkpoint(tmp_path / "run", True).name == "checkpoint-2"
    assert "skipping checkpoint-10" in capsys.readouterr().err
    with pytest.raises(RunDirError, match="not a complete Trainer checkpoint"):
        find_checkpoint(tmp_path / "run", str(checkpoints / "checkpoint-4"))
    assert find_checkpoint(tmp_path / "run", str(checkpoints / "checkpoint-2")).name == "checkpoint-2"
    with pytest.raises(RunDirError, match="no complete checkpoint to resume from"):
        find_checkpoint(tmp_path / "elsewhere", True)
