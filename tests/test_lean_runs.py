"""Lean run directories: a complete run keeps its final model and records, not its intermediate
checkpoints (unless output.keep_checkpoints: true); an unfinished run keeps them for --resume."""
from __future__ import annotations

import json

import pytest

from sft_hub import cli
from sft_hub.checkpoints import prune_checkpoints
from sft_hub.errors import RunDirError
from sft_hub.run_dir import find_checkpoint
from sft_hub.training import train


def test_complete_run_removes_checkpoints_and_keeps_the_best_ones_metrics(
        write_recipe, text_recipe, tmp_path, capsys):
    result = train(write_recipe(text_recipe))
    run = result.run_dir
    assert not (run / "checkpoints").exists()
    assert not (run / ".checkpoints.removing").exists()
    for name in ("model.safetensors", "config.json", "recipe.yaml", "metrics.json",
                 "trainer_state.json", "run_info.json"):
        assert (run / name).is_file(), name
    record = json.loads((run / "run_info.json").read_text())["checkpoints"]
    assert record["kept"] is False
    best = record["best"]
    assert best["metric"] == "accuracy" and best["step"] in (8, 16)
    assert best["eval"]["eval_accuracy"] == pytest.approx(best["value"])
    assert best["eval"]["eval_accuracy"] == pytest.approx(result.metrics["validation"]["accuracy"])
    assert "removed 2 intermediate checkpoint(s)" in capsys.readouterr().err
    # --resume of a complete run says why there is nothing to resume and how to keep them
    with pytest.raises(RunDirError) as err:
        find_checkpoint(run, True)
    assert "keep_checkpoints" in err.value.hint


def test_keep_checkpoints_keeps_them(write_recipe, text_recipe, tmp_path):
    text_recipe["output"]["keep_checkpoints"] = True
    run = train(write_recipe(text_recipe)).run_dir
    kept = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert kept == ["checkpoint-16", "checkpoint-8"]
    assert json.loads((run / "run_info.json").read_text())["checkpoints"]["kept"] is True
    assert find_checkpoint(run, True).name == "checkpoint-16"


def test_interrupted_run_keeps_its_checkpoint_and_resumes(write_recipe, text_recipe, tmp_path,
                                                           capsys):
    from transformers import TrainerCallback

    class StopAfterFirstSave(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            raise KeyboardInterrupt  # as a user's Ctrl-C after the first checkpoint

    path = write_recipe(text_recipe)
    with pytest.raises(KeyboardInterrupt):
        train(path, callbacks=[StopAfterFirstSave()])
    run = tmp_path / "run"
    assert find_checkpoint(run, True).name == "checkpoint-8"
    assert cli.main(["train", str(path), "--resume", "-q"]) == 0
    info = json.loads((run / "run_info.json").read_text())
    assert info["complete"] and info["resumed_from"].endswith("checkpoint-8")
    assert not (run / "checkpoints").exists()  # complete now: lean


def test_prune_is_a_no_op_without_checkpoints(tmp_path):
    assert prune_checkpoints(tmp_path, keep=False) == (0, 0)
    (tmp_path / "checkpoints" / "checkpoint-1").mkdir(parents=True)
    (tmp_path / "checkpoints" / "checkpoint-1" / "optimizer.pt").write_bytes(b"x" * 10)
    assert prune_checkpoints(tmp_path, keep=True) == (0, 0)
    assert prune_checkpoints(tmp_path, keep=False) == (1, 10)
    assert not (tmp_path / "checkpoints").exists()
