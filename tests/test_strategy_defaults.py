"""Strategy defaults (the learning rate a recipe gets when it sets none, recorded as a default) and
the warnings for likely-wrong recipes (sft_hub/advice.py), on tiny models."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import yaml

from sft_hub import advice
from sft_hub.advice import RunAdvice, default_arguments, defaults_applied, majority_warnings
from sft_hub.catalog import load_recipe
from sft_hub.strategies import STRATEGIES
from sft_hub.training import train

from .conftest import make_text_rows, write_csv
from .contract_fixtures import FIXTURES

STRATEGY_NAMES = sorted(STRATEGIES.all())
FIXTURE_IDS = [(t, f) for t in sorted(FIXTURES) for f in sorted(FIXTURES[t])]


def _load(tmp_path, recipe: dict):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return load_recipe(str(path))


def _bare(recipe: dict, strategy: dict) -> dict:
    recipe = copy.deepcopy(recipe)
    recipe["strategy"] = strategy
    recipe["training"].pop("learning_rate")
    return recipe


# -- defaults ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", STRATEGY_NAMES)
@pytest.mark.parametrize("backend", ["transformers", "timm"])
def test_every_strategy_declares_a_default_learning_rate_per_backend(name, backend):
    cls = STRATEGIES.all()[name]
    spec = cls.spec_class()
    d = spec.defaults(backend)
    assert d.learning_rate == cls.default_learning_rate(spec, backend) > 0
    assert d.source == f"strategy {name}" and d.family == backend
    assert d.measured == "benchmarks/defaults.py"
    assert json.loads(json.dumps(d.to_dict())) == d.to_dict()


def test_registration_refuses_a_strategy_without_default_learning_rates():
    from sft_hub.strategies.base import check_strategy_class

    cls = STRATEGIES.all()["full"]
    missing = type("NoRates", (cls,), {"learning_rates": {"transformers": 1e-4}})  # no timm
    with pytest.raises(TypeError, match="learning_rates"):
        check_strategy_class(missing)


def test_default_applies_only_when_the_recipe_sets_no_learning_rate(text_recipe, tmp_path):
    lora = STRATEGIES.all()["lora"].learning_rates["transformers"]
    bare = _load(tmp_path, _bare(text_recipe, {"name": "lora"})).recipe
    assert default_arguments(bare) == {"learning_rate": lora}
    assert defaults_applied(bare) == {"learning_rate": lora, "source": "strategy lora",
                                      "family": "transformers", "measured": "benchmarks/defaults.py"}
    set_ = _load(tmp_path, {**text_recipe, "strategy": {"name": "lora"}}).recipe
    assert default_arguments(set_) == {} and defaults_applied(set_) is None


def test_freeze_head_only_and_with_layers_get_different_rates():
    freeze = STRATEGIES.all()["freeze"]
    head = freeze.spec_class(train_last_n_layers=0).defaults("transformers").learning_rate
    layers = freeze.spec_class().defaults("transformers").learning_rate  # default: last 2
    assert head == freeze.head_only_learning_rates["transformers"]
    assert layers == freeze.learning_rates["transformers"] and head > layers


def test_run_without_learning_rate_records_the_strategy_default(text_recipe, tmp_path):
    lora = STRATEGIES.all()["lora"].learning_rates["transformers"]
    recipe = _bare(text_recipe, {"name": "lora"})
    recipe["training"].update(num_train_epochs=1, logging_steps=1)
    result = train(_load(tmp_path, recipe))
    info = json.loads((result.run_dir / "run_info.json").read_text())
    assert info["defaults_applied"] == {"learning_rate": lora, "source": "strategy lora",
                                        "family": "transformers",
                                        "measured": "benchmarks/defaults.py"}
    assert info["training_arguments"]["learning_rate"] == lora
    state = json.loads((result.run_dir / "trainer_state.json").read_text())
    first = next(e for e in state["log_history"] if "learning_rate" in e)
    assert 0 < first["learning_rate"] <= lora  # the optimizer ran at it (linear decay)
    text = (result.run_dir / "recipe.yaml").read_text()
    line = next(x for x in text.splitlines() if x.strip().startswith("learning_rate:"))
    assert f"{lora}" in line and "# default of strategy lora" in line
    assert yaml.safe_load(text)["training"]["learning_rate"] == lora
    # the adapter adapts every linear layer outside the head (the measured default targets)
    adapter = json.loads((result.run_dir / "adapter_config.json").read_text())
    assert {n.rsplit(".", 1)[-1] for n in adapter["target_modules"]} == {
        "query", "key", "value", "dense"}  # q k v, attention output, ffn in and out, pooler


def test_a_task_moves_the_default_rate_of_the_strategies_measured_to_follow_it(tmp_path):
    """Token classification declares learning_rate_scale 5 (WNUT17: full fine-tuning at the text
    rate finds no entity); full fine-tuning follows it, freezing and the adapters keep their own
    rate (measured: they do worse at 5x)."""
    from sft_hub.tasks import get_task_class

    token = get_task_class("token-classification")
    assert token.learning_rate_scale == 5.0
    assert get_task_class("text-classification").learning_rate_scale == 1.0
    for name, cls in STRATEGIES.all().items():
        spec = cls.spec_class()
        own = cls.default_learning_rate(spec, "transformers")
        d = spec.defaults("transformers", token)
        assert d.learning_rate == pytest.approx(own * (5.0 if cls.task_scaled else 1.0)), name
        assert (d.source == f"strategy {name} x5 for token-classification") is cls.task_scaled
    assert {n for n, c in STRATEGIES.all().items() if c.task_scaled} == {"full"}

    (tmp_path / "fx").mkdir()
    fixture = FIXTURES["token-classification"]["bert"](tmp_path / "fx")
    recipe = {**fixture.recipe, "strategy": {"name": "full"},
              "training": {"max_steps": 1, "per_device_train_batch_size": 4, "eval_strategy": "no",
                           "save_strategy": "no", "report_to": "none", "disable_tqdm": True},
              "output": {"dir": str(tmp_path / "run")}}
    path = fixture.base_dir / "r.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    result = train(str(path))
    full = STRATEGIES.all()["full"].learning_rates["transformers"] * 5
    assert result.run_info["defaults_applied"]["learning_rate"] == pytest.approx(full)
    assert result.run_info["defaults_applied"]["source"] == "strategy full x5 for token-classification"
    assert result.run_info["training_arguments"]["learning_rate"] == pytest.approx(full)
    line = next(x for x in (result.run_dir / "recipe.yaml").read_text().splitlines()
                if x.strip().startswith("learning_rate:"))
    assert "x5 for token-classification" in line


def test_run_with_learning_rate_records_no_default(text_recipe, tmp_path):
    recipe = copy.deepcopy(text_recipe)
    recipe["training"]["num_train_epochs"] = 1
    result = train(_load(tmp_path, recipe))
    assert result.run_info["defaults_applied"] is None
    assert result.run_info["training_arguments"]["learning_rate"] == 5e-3
    assert "# default" not in (result.run_dir / "recipe.yaml").read_text()


def test_plan_prints_the_effective_defaults(text_recipe, tmp_path):
    from sft_hub.plan import format_plan, plan

    lora = STRATEGIES.all()["lora"].learning_rates["transformers"]
    shown = plan(_load(tmp_path, _bare(text_recipe, {"name": "lora"})))
    assert shown["learning_rate"].startswith(f"{lora:g} (strategy lora default")
    assert shown["r"] == "8 (default)" and "all-linear" in shown["target_modules"]
    text = format_plan(shown)
    assert f"learning_rate: {lora:g} (strategy lora default" in text and "r: 8 (default)" in text
    own = plan(_load(tmp_path, {**text_recipe, "strategy": {"name": "lora", "r": 4}}))
    assert own["learning_rate"].startswith("0.005 (recipe; strategy lora default")
    assert own["r"] == 4 and own["alpha"].endswith(" (default)")


# -- warnings ---------------------------------------------------------------------------------------
def _warnings(result) -> list[str]:
    return json.loads((result.run_dir / "run_info.json").read_text())["warnings"]


def test_learning_rate_far_from_the_strategy_default_warns(text_recipe, tmp_path, capsys):
    full = STRATEGIES.all()["full"].learning_rates["transformers"]
    recipe = {**text_recipe, "strategy": {"name": "lora"},
              "training": {**text_recipe["training"], "learning_rate": full,
                           "num_train_epochs": 1}}
    result = train(_load(tmp_path, recipe))
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.startswith("warning: training.learning_rate")]
    assert len(lines) == 1, err
    assert "strategy lora" in lines[0] and "typical of strategy full" in lines[0]
    assert "remove training.learning_rate" in lines[0]
    assert any(w.startswith("training.learning_rate") for w in _warnings(result))
    # the reverse: full fine-tuning at an adapter's rate (checked without training)
    lora = STRATEGIES.all()["lora"].learning_rates["transformers"]
    reverse = _load(tmp_path, {**recipe, "strategy": {"name": "full"},
                               "training": {**recipe["training"], "learning_rate": lora * 5}})
    (message,) = advice.learning_rate_warnings(reverse.recipe)
    assert "above the default of strategy full" in message
    near = _load(tmp_path, {**recipe, "training": {**recipe["training"], "learning_rate": lora * 2}})
    assert advice.learning_rate_warnings(near.recipe) == []


def test_full_fine_tuning_on_a_small_set_and_a_majority_class_result_warn(text_recipe, tmp_path,
                                                                           capsys):
    rows = make_text_rows(40, seed=3)
    rng = np.random.default_rng(0)
    for row in rows:  # labels unrelated to the text
        row["label"] = "spam" if rng.random() < 0.5 else "ham"
    write_csv(tmp_path / "noise" / "train.csv", rows)
    write_csv(tmp_path / "noise" / "validation.csv",  # one class: nothing beats the majority
              [{"text": r["text"], "label": "ham"} for r in make_text_rows(12, seed=4)])
    recipe = copy.deepcopy(text_recipe)
    recipe["data"]["files"] = {"train": str(tmp_path / "noise" / "train.csv"),
                               "validation": str(tmp_path / "noise" / "validation.csv")}
    recipe["training"].update(num_train_epochs=1)
    result = train(_load(tmp_path, recipe))
    err = capsys.readouterr().err
    small = [x for x in err.splitlines() if x.startswith("warning: strategy full trains all")]
    assert len(small) == 1 and "40 training examples" in small[0] and "lora" in small[0], err
    majority = [x for x in err.splitlines() if "no better than always predicting" in x]
    assert len(majority) == 1, err
    assert "validation accuracy" in majority[0] and "(1.0000)" in majority[0]
    assert "training.num_train_epochs" in majority[0]
    assert len(_warnings(result)) == 3  # the two above and the learning rate (5e-3 for full)


@pytest.mark.parametrize("task,fixture_id", FIXTURE_IDS)
def test_majority_baseline_for_every_task(task, fixture_id, tmp_path, monkeypatch):
    """Per task: the baseline is the task's own metric for a constant prediction; a model scoring
    it gets the warning, a perfect one does not."""
    (tmp_path / "fx").mkdir()
    fixture = FIXTURES[task][fixture_id](tmp_path / "fx")
    seen = {}
    original = RunAdvice.compute_metrics

    def spy(self, eval_pred):
        seen.setdefault("advice", self)
        seen.setdefault("eval_pred", eval_pred)
        return original(self, eval_pred)

    monkeypatch.setattr(RunAdvice, "compute_metrics", spy)
    recipe = {**fixture.recipe, "strategy": {"name": "full"},
              "training": {"max_steps": 1, "per_device_train_batch_size": 4, "learning_rate": 1e-4,
                           "eval_strategy": "no", "save_strategy": "no",
                           "report_to": "none", "disable_tqdm": True},
              "output": {"dir": str(tmp_path / "run")}}
    path = fixture.base_dir / "r.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    train(str(path))
    run_advice, eval_pred = seen["advice"], seen["eval_pred"]
    run_task, metric = run_advice.task, run_advice.task.default_metric
    baseline = run_advice.majority
    assert baseline is not None and metric in baseline
    loaded = load_recipe(str(path)).recipe
    assert majority_warnings(loaded, run_task, baseline, baseline)  # scoring the baseline: warned
    from transformers import EvalPrediction

    predictions = eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) \
        else eval_pred.predictions
    labels = np.asarray(eval_pred.label_ids)
    if predictions.shape == labels.shape:
        perfect = np.where(labels > 0.5, 10.0, -10.0)
    else:
        perfect = np.full(predictions.shape, -10.0)
        idx = np.where(labels >= 0, labels, 0)
        np.put_along_axis(perfect, idx[..., None], 10.0, axis=-1)
    scored = run_task.task_metrics(EvalPrediction(predictions=perfect, label_ids=labels))
    assert scored[metric] > baseline[metric]
    assert majority_warnings(loaded, run_task, scored, baseline) == []
