"""``sft-hub sweep``: Optuna over recipe keys, each trial an ordinary run, selection on validation
only, resumable after kill -9, several workers on one journal storage, and a best.yaml that
trains the winner again bit for bit (tiny BERT, toy spam data, offline)."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from sft_hub import cli
from sft_hub.sweep import sweep
from sft_hub.training import train

from .conftest import REPO, free_port, make_text_rows, write_csv
from .hub_server import hub_server  # noqa: F401  (pytest fixture)
from .test_safety import fake_hub  # noqa: F401  (pytest fixture)

GRID = [1e-3, 5e-3, 2e-2]


@pytest.fixture(scope="module")
def spam_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("spam")
    for split, n, seed in (("train", 48, 1), ("validation", 21, 2), ("test", 21, 3)):
        write_csv(d / f"{split}.csv", make_text_rows(n, seed=seed))
    return d


def sweep_recipe(model: Path, data: Path, out: Path, **sweep_section) -> dict:
    section = {"sampler": "grid",
               "space": {"training.learning_rate": {"choice": GRID}}, **sweep_section}
    return {"task": "text-classification", "model": {"name": "tiny-bert", "path": str(model)},
            "data": {"files": {s: str(data / f"{s}.csv") for s in ("train", "validation", "test")},
                     "max_length": 16},
            "training": {"num_train_epochs": 1, "per_device_train_batch_size": 8,
                         "learning_rate": 5e-3, "seed": 0, "logging_steps": 50,
                         "disable_tqdm": True, "use_cpu": True},
            "output": {"dir": str(out)}, "sweep": section}


def write(path: Path, recipe: dict) -> Path:
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    return path


def weights(run: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(run / "model.safetensors")


def metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def info(run: Path) -> dict:
    return json.loads((run / "run_info.json").read_text())


def leaderboard(sweep_dir: Path) -> list[dict]:
    with open(sweep_dir / "leaderboard.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def grid_sweep(tiny_bert_dir, spam_dir, tmp_path_factory):
    """A finished 3-point grid sweep run through the CLI, and what it printed."""
    root = tmp_path_factory.mktemp("grid")
    recipe = write(root / "grid.yaml", sweep_recipe(tiny_bert_dir, spam_dir, root / "sweep"))
    proc = subprocess.run([sys.executable, "-m", "sft_hub", "sweep", str(recipe)], cwd=root,
                          capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root, root / "sweep", proc.stdout


def test_a_three_point_grid_runs_three_ordinary_trials(grid_sweep):
    root, sweep_dir, out = grid_sweep
    trials = sorted((sweep_dir / "trials").iterdir(), key=lambda p: int(p.name))
    assert [p.name for p in trials] == ["0", "1", "2"]
    seen = []
    for run in trials:
        record = info(run)
        assert record["complete"] and record["sweep"]["trial"] == int(run.name)
        lr = record["sweep"]["params"]["training.learning_rate"]
        assert record["training_arguments"]["learning_rate"] == lr  # the trial trained with it
        assert yaml.safe_load((run / "recipe.yaml").read_text())["training"]["learning_rate"] == lr
        assert "sweep" not in yaml.safe_load((run / "recipe.yaml").read_text())
        seen.append(lr)
    assert sorted(seen) == sorted(GRID)
    # one progress line per finished trial: number, parameters, metric, best so far
    lines = [line for line in out.splitlines() if line.startswith("trial ") and "best=" in line]
    assert len(lines) == 3 and all("training.learning_rate=" in x and "accuracy=" in x for x in lines)
    rows = leaderboard(sweep_dir)
    assert sorted(int(r["trial"]) for r in rows) == [0, 1, 2]
    assert all(r["state"] == "complete" and float(r["train_seconds"]) > 0
               and int(r["trainable_params"]) > 0 and float(r["peak_memory_mib"]) > 0 for r in rows)
    values = [float(r["accuracy"]) for r in rows]
    assert values == sorted(values, reverse=True)  # best first
    md = (sweep_dir / "leaderboard.md").read_text()
    assert "validation accuracy" in md and "| 0 |" in md
    assert {"history.png", "strategy_comparison.png"} <= {p.name for p in (sweep_dir / "plots").iterdir()}


def test_selection_reads_validation_and_only_the_best_trial_sees_test(grid_sweep):
    _, sweep_dir, _ = grid_sweep
    rows = leaderboard(sweep_dir)
    best = int(rows[0]["trial"])
    validation = {int(r["trial"]): float(r["accuracy"]) for r in rows}
    assert validation[best] == max(validation.values())
    for run in (sweep_dir / "trials").iterdir():
        m = metrics(run)
        assert m["validation"]["accuracy"] == validation[int(run.name)]
        assert ("test" in m) == (int(run.name) == best), run.name
        assert (run / "eval" / "test").is_dir() == (int(run.name) == best)  # sft-hub eval's report
    test = json.loads((sweep_dir / "test_metrics.json").read_text())
    assert test["trial"] == best and "accuracy" in test["metrics"]
    assert test["metrics"] == metrics(sweep_dir / "trials" / str(best))["test"]
    assert "Test split, evaluated once for the best trial" in (sweep_dir / "leaderboard.md").read_text()


def test_only_the_best_trial_keeps_weights_the_others_keep_records(grid_sweep):
    _, sweep_dir, _ = grid_sweep
    best = int(leaderboard(sweep_dir)[0]["trial"])
    for run in (sweep_dir / "trials").iterdir():
        assert (run / "model.safetensors").exists() == (int(run.name) == best)
        assert not (run / "checkpoints").exists()
        assert all((run / f).is_file() for f in ("recipe.yaml", "metrics.json", "run_info.json"))


def test_best_yaml_trains_the_best_trial_again_bit_for_bit(grid_sweep):
    root, sweep_dir, _ = grid_sweep
    best = int(leaderboard(sweep_dir)[0]["trial"])
    recipe = yaml.safe_load((sweep_dir / "best.yaml").read_text())
    assert "sweep" not in recipe
    os.chdir(root)
    again = train(sweep_dir / "best.yaml").run_dir
    assert again == sweep_dir.parent / "sweep-best"
    trial = sweep_dir / "trials" / str(best)
    w1, w2 = weights(trial), weights(again)
    assert set(w1) == set(w2) and all((w1[k] == w2[k]).all() for k in w1)
    assert metrics(again)["validation"]["accuracy"] == metrics(trial)["validation"]["accuracy"]
    assert metrics(again)["test"]["accuracy"] == metrics(trial)["test"]["accuracy"]
    # the last trial of the process too (its weights are gone: its figures, to the last digit)
    last = sweep_dir / "trials" / "2"
    rerun = train(last / "recipe.yaml", [f"output.dir={root / 'last-again'}"]).run_dir
    assert {k: metrics(rerun)["validation"][k] for k in ("loss", "accuracy")} == {
        k: metrics(last)["validation"][k] for k in ("loss", "accuracy")}


def test_a_finished_sweep_is_not_rerun_and_resume_adds_nothing(grid_sweep, capsys):
    root, sweep_dir, _ = grid_sweep
    os.chdir(root)
    code = cli.main(["sweep", str(root / "grid.yaml")])
    assert code == 2 and "--resume" in capsys.readouterr().err
    before = sorted(p.name for p in (sweep_dir / "trials").iterdir())
    result = sweep(root / "grid.yaml", resume=True)
    assert sorted(p.name for p in (sweep_dir / "trials").iterdir()) == before
    assert result.best_trial == int(leaderboard(sweep_dir)[0]["trial"])


# -- invalid spaces fail before any training -------------------------------------------------------

@pytest.mark.parametrize("space, fragments", [
    ({"strategy": {"choice": [{"name": "full"}, {"name": "lora", "rr": 8}]}},
     ["sweep.space.strategy", "{name: lora, rr: 8}", "did you mean strategy.r?"]),
    ({"training.learnin_rate": {"choice": [1e-5, 1e-3]}},
     ["sweep.space.training.learnin_rate", "did you mean training.learning_rate?"]),
    ({"trainin.seed": {"choice": [1, 2]}}, ["did you mean training?"]),
    ({"training.per_device_train_batch_size": {"int": [0, 16], "step": 8}},
     ["sweep.space.training.per_device_train_batch_size", "=0"]),
    ({"data.text_column": {"choice": ["text", "sms"]}}, ["data.text_column=sms", "no column 'sms'"]),
    ({"training.learning_rate": {"loguniform": [1e-5, 1e-3]}}, ["sampler: grid", "continuous"]),
    ({"output.dir": {"choice": ["a", "b"]}}, ["cannot vary output"]),
    ({"training.learning_rate": {"choise": [1e-3]}}, ["sweep.space.training.learning_rate.choise"]),
])
def test_an_invalid_space_exits_2_before_training(tiny_bert_dir, spam_dir, tmp_path, capsys, space,
                                                  fragments):
    recipe = write(tmp_path / "bad.yaml",
                   sweep_recipe(tiny_bert_dir, spam_dir, tmp_path / "sweep", space=space))
    for command in ("validate", "sweep"):
        code = cli.main([command, str(recipe)])
        err = capsys.readouterr().err
        assert code == 2 and "Traceback" not in err and "error: " in err, err
        for fragment in fragments:
            assert fragment in err, err
    assert not (tmp_path / "sweep").exists()  # nothing trained, nothing written


def test_validate_checks_every_corner_without_torch_or_optuna(tiny_bert_dir, spam_dir, tmp_path):
    recipe = sweep_recipe(tiny_bert_dir, spam_dir, tmp_path / "sweep", sampler="tpe", space={
        "training.learning_rate": {"loguniform": [1e-5, 1e-3]},
        "training.num_train_epochs": {"choice": [1, 2]},
        "strategy": {"choice": [{"name": "full"}, {"name": "lora", "r": 4}]}})
    path = write(tmp_path / "ok.yaml", recipe)
    code = ("import sys; from sft_hub.cli import main; assert main(['validate', '-q', %r]) == 0; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', "
            "'optuna')); assert not bad, bad" % str(path))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "8 combinations of the space checked" in proc.stderr


def test_a_hub_recipe_cannot_sweep_what_it_may_not_set(tiny_bert_dir, spam_dir, tmp_path, capsys,
                                                        fake_hub):
    recipe = sweep_recipe(tiny_bert_dir, spam_dir, tmp_path / "sweep", sampler="grid",
                          space={"model.trust_remote_code": {"choice": [False, True]}})
    del recipe["output"]
    recipe["model"].pop("path")
    recipe["data"]["files"] = {"train": "train.csv"}
    fake_hub("sft-org/recipes", {"sweep.yaml": yaml.safe_dump(recipe)})
    code = cli.main(["validate", "hf://sft-org/recipes/sweep.yaml", f"model.path={tiny_bert_dir}",
                     f"data.files.train={spam_dir / 'train.csv'}"])
    err = capsys.readouterr().err
    assert code == 2 and "model.trust_remote_code" in err and "recipe from the Hub" in err, err


# -- failures, pruning -----------------------------------------------------------------------------

class FailOn:
    """A TrainerCallback that fails the trials with this learning rate, as an out-of-memory
    would."""

    def __new__(cls, lr):
        from transformers import TrainerCallback

        class _Fail(TrainerCallback):
            def on_train_begin(self, args, state, control, **kwargs):
                if abs(args.learning_rate - lr) < 1e-12:
                    raise RuntimeError("CUDA out of memory (simulated)")

        return _Fail()


def test_a_failed_trial_is_recorded_and_the_sweep_goes_on(tiny_bert_dir, spam_dir, tmp_path):
    recipe = write(tmp_path / "r.yaml", sweep_recipe(tiny_bert_dir, spam_dir, tmp_path / "sweep"))
    result = sweep(recipe, callbacks=[FailOn(5e-3)])
    rows = {r["training.learning_rate"]: r for r in leaderboard(tmp_path / "sweep")}
    assert rows["0.005"]["state"] == "failed" and "out of memory" in rows["0.005"]["error"]
    assert {rows["0.001"]["state"], rows["0.02"]["state"]} == {"complete"}
    failed = tmp_path / "sweep" / "trials" / rows["0.005"]["trial"]
    assert json.loads((failed / "trial.json").read_text())["state"] == "failed"
    assert result.best_trial in (int(rows["0.001"]["trial"]), int(rows["0.02"]["trial"]))
    assert "failed: RuntimeError: CUDA out of memory" in (tmp_path / "sweep" / "leaderboard.md").read_text()


def test_pruned_trials_are_recorded_with_the_step_they_stopped_at(tiny_bert_dir, spam_dir, tmp_path,
                                                                 monkeypatch):
    import optuna

    from sft_hub import sweep as sweep_module

    class PruneSecondTrial(optuna.pruners.BasePruner):
        def prune(self, study, trial):
            return trial.number == 1

    monkeypatch.setattr(sweep_module, "_pruner", lambda plan: PruneSecondTrial())
    recipe = sweep_recipe(tiny_bert_dir, spam_dir, tmp_path / "sweep", pruner="median")
    recipe["training"].update(num_train_epochs=3)
    sweep(write(tmp_path / "r.yaml", recipe))
    rows = {int(r["trial"]): r for r in leaderboard(tmp_path / "sweep")}
    steps_per_epoch = 6  # 48 rows, batch 8
    assert rows[1]["state"] == "pruned" and int(rows[1]["pruned_at_step"]) == steps_per_epoch
    assert info(tmp_path / "sweep" / "trials" / "1")["global_step"] == steps_per_epoch
    assert rows[0]["state"] == rows[2]["state"] == "complete"
    assert info(tmp_path / "sweep" / "trials" / "0")["global_step"] == 3 * steps_per_epoch
    assert f"pruned at step {steps_per_epoch}" in (tmp_path / "sweep" / "leaderboard.md").read_text()
    assert (tmp_path / "sweep" / "plots" / "intermediate_values.png").is_file()


# -- resume and several workers --------------------------------------------------------------------

def _probe(job: dict, tmp_path: Path, name: str) -> subprocess.Popen:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(job))
    return subprocess.Popen([sys.executable, str(REPO / "tests" / "sweep_probe.py"), str(path)],
                            cwd=tmp_path, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wait_for(path: Path, child: subprocess.Popen, seconds: float = 300) -> None:
    deadline = time.time() + seconds
    while not path.exists():
        if child.poll() is not None:
            pytest.fail(f"the sweep ended early:\n{child.stderr.read()[-3000:]}")
        if time.time() > deadline:
            child.kill()
            pytest.fail(f"no {path.name} within {seconds} s")
        time.sleep(0.2)


def test_kill_9_mid_trial_then_resume_keeps_finished_trials_and_reruns_the_interrupted_one(
        tiny_bert_dir, spam_dir, tmp_path, capsys):
    recipe = write(tmp_path / "r.yaml", sweep_recipe(tiny_bert_dir, spam_dir, tmp_path / "sweep"))
    flag = tmp_path / "holding"
    child = _probe({"recipe": str(recipe), "hold_in_train": 2, "hold_flag": str(flag)}, tmp_path, "kill")
    _wait_for(flag, child)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    child.stderr.close()
    first = tmp_path / "sweep" / "trials" / "0"
    kept = (first / "run_info.json").read_bytes()
    assert info(first)["complete"]

    assert cli.main(["sweep", str(recipe), "--resume"]) == 0
    out = capsys.readouterr()
    assert "trial 1 was interrupted" in out.err
    rows = {int(r["trial"]): r for r in leaderboard(tmp_path / "sweep")}
    assert rows[1]["state"] == "interrupted"
    finished = [r for r in rows.values() if r["state"] == "complete"]
    assert len(finished) == 3  # the total reaches sweep.trials
    rerun = [r for r in finished if r["rerun_of"] == "1"]
    assert len(rerun) == 1 and rerun[0]["training.learning_rate"] == rows[1]["training.learning_rate"]
    assert sorted(float(r["training.learning_rate"]) for r in finished) == sorted(GRID)
    assert (first / "run_info.json").read_bytes() == kept  # trial 0 was not run again


def test_two_workers_on_one_journal_run_disjoint_trials(tiny_bert_dir, spam_dir, tmp_path):
    recipe = sweep_recipe(tiny_bert_dir, spam_dir, tmp_path / "sweep",
                          space={"training.learning_rate": {"choice": [1e-3, 5e-3, 1e-2, 2e-2]}})
    path = write(tmp_path / "r.yaml", recipe)
    storage = str(tmp_path / "shared" / "study.journal")
    job = {"recipe": str(path), "storage": storage, "barrier_dir": str(tmp_path / "barrier"),
           "barrier": 2}  # each worker's first trial waits until both have one
    workers = [_probe(job, tmp_path, f"worker{i}") for i in range(2)]
    for w in workers:
        assert w.wait(timeout=600) == 0, w.stderr.read()[-3000:]
        w.stderr.close()
    runs = sorted((tmp_path / "sweep" / "trials").iterdir(), key=lambda p: int(p.name))
    records = [info(r) for r in runs]
    assert len(records) == 4 and all(r["complete"] for r in records)
    assert sorted(r["sweep"]["params"]["training.learning_rate"] for r in records) == [
        1e-3, 5e-3, 1e-2, 2e-2]  # each point once: disjoint trials, total = sweep.trials
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    study = optuna.load_study(study_name="sweep",
                              storage=JournalStorage(JournalFileBackend(storage)))
    pids = {t.user_attrs["worker"]["pid"] for t in study.trials}
    assert pids == {w.pid for w in workers}
    assert sorted(t.state.name for t in study.trials) == ["COMPLETE"] * 4


# -- the Hub ---------------------------------------------------------------------------------------

def test_the_best_run_is_pushed_with_the_leaderboard_in_its_card(tiny_bert_dir, spam_dir, tmp_path,
                                                                 hub_server):
    recipe = sweep_recipe(tiny_bert_dir, spam_dir, tmp_path / "sweep")
    recipe["hub"] = {"repo_id": "sft-tester/spam-sweep", "push": "model"}
    result = sweep(write(tmp_path / "r.yaml", recipe))
    files = hub_server.files("sft-tester/spam-sweep")
    card = files["README.md"].decode()
    assert "## Hyperparameter sweep" in card and "validation accuracy" in card
    assert "sweep/strategy_comparison.png" in card and "sweep/strategy_comparison.png" in files
    assert "sweep/leaderboard.csv" in files
    pushed = yaml.safe_load(files["recipe.yaml"])
    assert pushed["training"]["learning_rate"] == float(
        leaderboard(tmp_path / "sweep")[0]["training.learning_rate"])
    assert result.best_trial == int(leaderboard(tmp_path / "sweep")[0]["trial"])
    # only the best trial was pushed, the trials themselves never pushed
    assert not any("trials/" in f for f in files)


def test_a_destination_without_push_leaves_the_best_run_ready_for_sft_hub_push(
        tiny_bert_dir, spam_dir, tmp_path, hub_server, capsys):
    recipe = sweep_recipe(tiny_bert_dir, spam_dir, tmp_path / "sweep")
    recipe["hub"] = {"repo_id": "sft-tester/spam-sweep-later"}  # no hub.push: nothing is pushed
    result = sweep(write(tmp_path / "r.yaml", recipe))
    best = tmp_path / "sweep" / "trials" / str(result.best_trial)
    assert f"sft-hub push {best}" in capsys.readouterr().out
    with pytest.raises(KeyError):  # the repository was never created
        hub_server.files("sft-tester/spam-sweep-later")
    assert cli.main(["push", str(best)]) == 0  # the command it printed
    files = hub_server.files("sft-tester/spam-sweep-later")
    assert "## Hyperparameter sweep" in files["README.md"].decode()
    assert "sweep/leaderboard.csv" in files and "sweep/strategy_comparison.png" in files


@pytest.mark.distributed
def test_a_worker_under_accelerate_launch_trains_each_trial_on_every_rank(tiny_bert_dir, spam_dir,
                                                                          tmp_path):
    """One worker = one `accelerate launch` of 2 CPU processes: rank 0 takes the trials from the
    study, both ranks train each of them data-parallel, and a pruned trial stops on both ranks
    at the same step (a rank left training would hang the launch)."""
    recipe = sweep_recipe(tiny_bert_dir, spam_dir, tmp_path / "sweep", pruner="median")
    recipe["training"].update(num_train_epochs=2, per_device_train_batch_size=4,
                              train_sampling_strategy="random")
    job = {"recipe": str(write(tmp_path / "r.yaml", recipe)), "prune_trial": 1,
           "ranks_record": str(tmp_path / "rank-{rank}.json")}
    (tmp_path / "job.json").write_text(json.dumps(job))
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(REPO / "accelerate_configs" / "cpu_2proc.yaml"), "--main_process_port",
           str(free_port()), str(REPO / "tests" / "sweep_probe.py"), str(tmp_path / "job.json")]
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]

    steps_per_epoch = 48 // (2 * 4)  # 48 rows, 2 ranks x 4 per device
    rows = {int(r["trial"]): r for r in leaderboard(tmp_path / "sweep")}
    assert [rows[n]["state"] for n in range(3)] == ["complete", "pruned", "complete"]
    assert int(rows[1]["pruned_at_step"]) == steps_per_epoch
    ranks = [json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in (0, 1)]
    for rank, runs in enumerate(ranks):  # each rank trained every trial, in the trial's folder
        assert [Path(run["output_dir"]).parent.name for run in runs] == ["0", "1", "2"]
        assert {(run["world_size"], run["process_index"]) for run in runs} == {(2, rank)}
        assert [run["steps"] for run in runs] == [2 * steps_per_epoch, steps_per_epoch,
                                                  2 * steps_per_epoch]
    for n in range(3):  # one run directory per trial, written by rank 0, a 2-process topology
        run_info = info(tmp_path / "sweep" / "trials" / str(n))
        assert run_info["topology"]["num_processes"] == 2
        assert run_info["sweep"]["trial"] == n
    assert (tmp_path / "sweep" / "test_metrics.json").is_file()  # the best trial, evaluated once
    assert proc.stdout.count("sweep directory:") == 1  # the summary comes from rank 0 only

