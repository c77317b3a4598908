"""Launch topologies: the shipped accelerate configs, the precision rule, and a REAL two-process
data-parallel run on CPU (gloo) started with ``accelerate launch``.

The two-process run is checked from inside each rank (``tests/training_probes.py``): two ranks in
one gloo group, each trains on its own half of every global batch, both end with the same
weights, only rank 0 writes the run directory, and rank 1 reuses rank 0's preprocessing cache.
With dropout off and the same global batch, its weights match a single-process run: both runs
see the same examples at every step (checked), so the only difference is float32 rounding. Both
gradients are float32 sums of the same terms in a different order (two half-batch backward
passes averaged by gloo, and padding to a different length), which differ by a few ulps (~1e-7
relative); Adam turns each step's gradient into an update of at most ~lr, so after 12 steps the
weights can drift by ~1e-6 (measured: 1.5e-6, while training moved them by up to 2.3e-2). The
tolerance, 1e-4, is 70x above that noise and 100x below what a real fault does: a gradient off by
a factor of 2 (loss scaled twice), or ranks that do not synchronise, moved weights by ~1e-2.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml

from sft_hub import distributed
from sft_hub.distributed import PrecisionConflictWarning
from sft_hub.errors import RecipeError, SftHubError

from .conftest import REPO, free_port, make_text_rows, write_csv
from .training_probes import BatchProbe, no_dropout_copy

CONFIGS = REPO / "accelerate_configs"
TOPOLOGIES = {"single_gpu": "NO", "multi_gpu": "MULTI_GPU", "fsdp": "FSDP",
              "deepspeed_zero2": "DEEPSPEED", "deepspeed_zero3": "DEEPSPEED",
              "multi_node": "MULTI_GPU", "cpu_2proc": "MULTI_GPU"}
WEIGHT_TOLERANCE = 1e-4
TRAIN_ROWS, PER_DEVICE_BATCH, EPOCHS = 48, 4, 2  # 48 rows / global batch 8 = 6 steps per epoch


# -- the shipped accelerate configs ------------------------------------------------------------------
def test_every_topology_has_a_config_that_accelerate_loads():
    from accelerate.commands.config.config_args import load_config_from_file

    assert {p.stem for p in CONFIGS.glob("*.yaml")} == set(TOPOLOGIES)
    for name, kind in TOPOLOGIES.items():
        path = CONFIGS / f"{name}.yaml"
        config = load_config_from_file(str(path))
        assert str(config.distributed_type.value) == kind, name
        header = path.read_text().split("compute_environment")[0]
        assert f"--config_file accelerate_configs/{name}.yaml" in header, name
        assert "-m sft_hub train <recipe>" in header and "When:" in header or name == "cpu_2proc"


def test_sharded_and_multi_machine_configs_say_what_they_promise():
    from accelerate.commands.config.config_args import load_config_from_file

    fsdp = load_config_from_file(str(CONFIGS / "fsdp.yaml")).fsdp_config
    assert fsdp["fsdp_version"] == 2 and fsdp["fsdp_reshard_after_forward"] is True
    assert fsdp["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    assert fsdp["fsdp_state_dict_type"] == "FULL_STATE_DICT"  # one loadable model file at the end
    for stage in (2, 3):
        ds = load_config_from_file(str(CONFIGS / f"deepspeed_zero{stage}.yaml")).deepspeed_config
        assert ds["zero_stage"] == stage
        assert "gradient_accumulation_steps" not in ds  # "auto": taken from the recipe
    assert load_config_from_file(str(CONFIGS / "deepspeed_zero3.yaml")).deepspeed_config[
        "zero3_save_16bit_model"] is True
    node = load_config_from_file(str(CONFIGS / "multi_node.yaml"))
    assert node.num_machines == 2 and node.main_process_ip and node.main_process_port
    cpu = load_config_from_file(str(CONFIGS / "cpu_2proc.yaml"))
    assert cpu.use_cpu and cpu.num_processes == 2 and cpu.mixed_precision == "no"


# -- precision: the recipe decides when it says something, the launcher otherwise --------------------
def test_launcher_precision_applies_when_the_recipe_is_silent(monkeypatch):
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert distributed.resolve_precision({"learning_rate": 1e-3}) == ("bf16", "launcher")
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION")
    assert distributed.resolve_precision({}) == ("no", "launcher")


def test_recipe_precision_wins_over_the_launcher_with_a_warning(monkeypatch):
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")
    with pytest.warns(PrecisionConflictWarning, match=r"training.bf16 \(bf16\) overrides the "
                      r"launcher's mixed_precision=fp16"):
        assert distributed.resolve_precision({"bf16": True}) == ("bf16", "recipe")
    with pytest.warns(PrecisionConflictWarning, match="overrides"):  # an explicit false: fp32
        assert distributed.resolve_precision({"fp16": False}) == ("no", "recipe")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # agreeing is not a conflict
        assert distributed.resolve_precision({"fp16": True}) == ("fp16", "recipe")


def test_resolved_precision_reaches_training_arguments(monkeypatch):
    from transformers import TrainingArguments

    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    with pytest.warns(PrecisionConflictWarning):
        args, precision = distributed.device_arguments({"bf16": False})
    with distributed.launcher_precision_as(precision):
        built = TrainingArguments(output_dir="out", report_to="none", **args)
    assert built.mixed_precision == "no"  # the Trainer alone would have taken the launcher's bf16
    assert os.environ["ACCELERATE_MIXED_PRECISION"] == "bf16"  # restored afterwards


def test_mixed_precision_without_native_support_on_cpu_is_refused(monkeypatch):
    monkeypatch.setattr(distributed, "_cpu_supports", lambda precision: False)
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    with pytest.raises(RecipeError, match="fp16 mixed precision is not supported on this CPU") as e:
        distributed.device_arguments({"fp16": True, "use_cpu": True}, "r.yaml")
    assert e.value.field == "training.fp16" and e.value.file == "r.yaml"
    assert "train in fp32" in e.value.hint
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    with pytest.raises(RecipeError, match="bf16 mixed precision is not supported") as e:
        distributed.device_arguments({"use_cpu": True})
    assert e.value.field.startswith("mixed_precision") and "mixed_precision: 'no'" in e.value.hint


def test_processes_that_did_not_join_one_group_are_refused(monkeypatch):
    class Alone:
        num_processes = 1

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SftHubError, match="started 2 processes but they did not join"):
        distributed.check_processes_connected(Alone())
    monkeypatch.setenv("WORLD_SIZE", "1")
    distributed.check_processes_connected(Alone())


def test_ddp_unused_parameter_failure_becomes_advice():
    err = distributed.explain_distributed_error(RuntimeError(
        "Expected to have finished reduction in the prior iteration before starting a new one"))
    assert err.field == "training.ddp_find_unused_parameters" and "true" in err.hint
    assert distributed.explain_distributed_error(RuntimeError("out of memory")) is None


def test_merging_an_adapter_is_refused_under_sharded_engines():
    from .strategies_helpers import make_strategy

    class FsdpTrainer:
        is_fsdp_enabled, is_deepspeed_enabled = True, False

    merging = make_strategy({"name": "lora", "save": "merged"})
    with pytest.raises(RecipeError, match="needs the whole model") as e:
        distributed.check_strategy_fits_engine(merging, FsdpTrainer())
    assert e.value.field == "strategy.save"
    distributed.check_strategy_fits_engine(make_strategy({"name": "lora"}), FsdpTrainer())


def test_sharded_final_save_path_writes_a_complete_run(text_recipe, write_recipe, monkeypatch):
    """Under FSDP / DeepSpeed the final model is gathered by the Trainer's collective save_model;
    that path, forced on a single process, still yields a complete, loadable run directory."""
    from transformers import AutoModelForSequenceClassification

    from sft_hub import training

    monkeypatch.setattr(training, "weights_are_sharded", lambda trainer: True)
    text_recipe["training"].update(num_train_epochs=1)
    text_recipe["data"]["max_train_samples"] = 16
    result = training.train(write_recipe(text_recipe))
    run = result.run_dir
    assert (run / "model.safetensors").is_file() and (run / "run_info.json").is_file()
    assert not (run / distributed.GATHERED).exists() and not (run / "training_args.bin").exists()
    assert AutoModelForSequenceClassification.from_pretrained(run).config.id2label == {
        0: "ham", 1: "spam"}


# -- a real two-process run ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ddp_setup(tiny_bert_dir, tmp_path_factory):
    """Data, a no-dropout model, and a recipe whose global batch is 2 ranks x 4 examples."""
    root = tmp_path_factory.mktemp("ddp")
    data = root / "data"
    write_csv(data / "train.csv", make_text_rows(60, seed=1))
    write_csv(data / "validation.csv", make_text_rows(20, seed=2))
    recipe = {
        "task": "text-classification",
        "model": {"name": "tiny-bert", "path": str(no_dropout_copy(tiny_bert_dir, root / "m"))},
        "data": {"files": {"train": str(data / "train.csv"),
                           "validation": str(data / "validation.csv")},
                 "max_length": 16, "max_train_samples": TRAIN_ROWS},
        # eval batch 10: the 20 validation rows split evenly, so eval loss is exact too;
        # logging every step: the reported train loss is averaged over both ranks
        "training": {"num_train_epochs": EPOCHS, "per_device_train_batch_size": PER_DEVICE_BATCH,
                     "per_device_eval_batch_size": 10, "learning_rate": 5e-3, "seed": 0,
                     "logging_steps": 1, "disable_tqdm": True,
                     # plain random batches: length grouping forms its megabatches from the
                     # per-device batch size, so 2 x 4 and 1 x 8 would see other examples
                     "train_sampling_strategy": "random"},
        "output": {"dir": str(root / "run-2proc")},
    }
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return root, path


@pytest.fixture(scope="module")
def two_process_runs(ddp_setup):
    """One `accelerate launch` of 2 CPU processes running three recipes in turn: full fine-tuning,
    LoRA and freeze (both with activation checkpointing)."""
    root, recipe = ddp_setup
    one_epoch = ["training.num_train_epochs=1"]
    jobs = [
        {"recipe": str(recipe), "record": str(root / "full-{rank}.json")},
        {"recipe": str(recipe), "record": str(root / "lora-{rank}.json"),
         "overrides": ["strategy.name=lora", "strategy.r=4", "training.activation_checkpointing=true",
                       f"output.dir={root / 'run-lora'}", *one_epoch]},
        {"recipe": str(recipe), "record": str(root / "freeze-{rank}.json"),
         "overrides": ["strategy.name=freeze", "strategy.train_last_n_layers=1",
                       "training.gradient_checkpointing=true", f"output.dir={root / 'run-freeze'}",
                       *one_epoch]},
    ]
    (root / "jobs.json").write_text(json.dumps(jobs))
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_CACHE": str(root / "datasets-cache"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(CONFIGS / "cpu_2proc.yaml"), "--main_process_port", str(free_port()),
           str(REPO / "tests" / "training_probes.py"), str(root / "jobs.json")]
    proc = subprocess.run(cmd, env=env, cwd=root, capture_output=True, text=True, timeout=420)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    records = {name: [json.loads((root / f"{name}-{rank}.json").read_text()) for rank in (0, 1)]
               for name in ("full", "lora", "freeze")}
    return root, records, proc.stdout


@pytest.fixture(scope="module")
def single_process_run(ddp_setup):
    """The same recipe in this process with the same global batch (8 on one process)."""
    from sft_hub.training import train

    root, recipe = ddp_setup
    probe = BatchProbe()
    result = train(recipe, [f"training.per_device_train_batch_size={2 * PER_DEVICE_BATCH}",
                            f"output.dir={root / 'run-1proc'}"], callbacks=[probe])
    return result, probe.dump(root / "single.json")


@pytest.mark.distributed
def test_two_process_run_is_really_distributed(two_process_runs):
    root, records, stdout = two_process_runs
    rank0, rank1 = records["full"]
    assert (rank0["rank"], rank1["rank"]) == (0, 1)
    for r in (rank0, rank1):
        assert (r["world_size"], r["distributed_type"], r["backend"]) == (2, "MULTI_CPU", "gloo")
    steps = EPOCHS * TRAIN_ROWS // (2 * PER_DEVICE_BATCH)
    assert len(rank0["steps"]) == len(rank1["steps"]) == steps
    for rows0, rows1 in zip(rank0["steps"], rank1["steps"]):
        assert len(rows0) == len(rows1) == PER_DEVICE_BATCH
        assert not set(rows0) & set(rows1)  # each rank trains on its own half of the batch
    seen0 = sum(len(s) for s in rank0["steps"])
    assert seen0 == sum(len(s) for s in rank1["steps"]) == EPOCHS * TRAIN_ROWS // 2
    assert rank0["final"] == rank1["final"]  # DDP kept the replicas identical

    # only the main process writes and reports; preprocessing ran once, rank 1 read the cache
    run = root / "run-2proc"
    info = json.loads((run / "run_info.json").read_text())
    assert info["complete"] and info["topology"]["num_processes"] == 2
    assert info["topology"]["launcher"] == "accelerate launch"
    assert info["topology"]["global_train_batch_size"] == 2 * PER_DEVICE_BATCH
    # every DDP forward pass is a collective: ranks never cut their batches into slices
    assert info["speed"]["split_batches_by_length"] is False
    assert "several processes" in info["speed"]["why"]["split_batches_by_length"]
    assert stdout.count("run directory:") == len(records)  # once per run, from rank 0 only
    assert rank0["cache_hits"] == []
    assert len(rank1["cache_hits"]) >= 2  # labels encoded and texts tokenized by rank 0


@pytest.mark.distributed
def test_two_process_weights_match_a_single_process_run(two_process_runs, single_process_run):
    from safetensors.torch import load_file

    root, records, _ = two_process_runs
    single, single_record = single_process_run
    # the same examples at every step: the union of the two ranks' halves is the single batch
    for step, (rows, rows0, rows1) in enumerate(zip(single_record["steps"], *(
            r["steps"] for r in records["full"]))):
        assert set(rows) == set(rows0) | set(rows1), f"step {step}"

    one = load_file(single.run_dir / "model.safetensors")
    two = load_file(root / "run-2proc" / "model.safetensors")
    start = load_file(Path(yaml.safe_load((root / "recipe.yaml").read_text())["model"]["path"])
                      / "model.safetensors")
    diff = max((one[k] - two[k]).abs().max().item() for k in one)
    moved = max((one[k] - start[k]).abs().max().item() for k in one)
    print(f"\nsingle vs two processes: max |w1 - w2| = {diff:.3g}; "
          f"training moved weights by up to {moved:.3g}")
    assert moved > 100 * WEIGHT_TOLERANCE  # training did move the weights
    assert diff < WEIGHT_TOLERANCE

    metrics_two = json.loads((root / "run-2proc" / "metrics.json").read_text())
    for key in ("accuracy", "f1_macro"):
        assert metrics_two["validation"][key] == single.metrics["validation"][key]
    assert metrics_two["validation"]["loss"] == pytest.approx(single.metrics["validation"]["loss"],
                                                              abs=1e-5)
    assert metrics_two["train"]["loss"] == pytest.approx(single.metrics["train"]["loss"], abs=1e-5)


@pytest.mark.distributed
@pytest.mark.parametrize("strategy", ["lora", "freeze"])
def test_partial_strategies_train_under_ddp_with_activation_checkpointing(two_process_runs, strategy):
    root, records, _ = two_process_runs
    rank0, rank1 = records[strategy]
    assert rank0["world_size"] == 2 and len(rank0["steps"]) == TRAIN_ROWS // (2 * PER_DEVICE_BATCH)
    assert rank0["final"] == rank1["final"]
    assert rank0["activation_checkpointing"] and rank1["activation_checkpointing"]
    run = root / f"run-{strategy}"
    info = json.loads((run / "run_info.json").read_text())
    assert info["topology"]["ddp_find_unused_parameters"] is False
    assert info["parameters"]["trainable"] < info["parameters"]["total"]
    saved = "adapter_model.safetensors" if strategy == "lora" else "model.safetensors"
    assert (run / saved).is_file()
