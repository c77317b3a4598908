"""``training.extra_metrics``: modules of the ``evaluate`` library added to a run's figures.

A local module folder (a metric script written here) works offline; a Hub id while offline is one
error before training (exit code 2), also from ``sft-hub validate``.
"""
from __future__ import annotations

import json
import textwrap

import pytest

from sft_hub.cli import main
from sft_hub.errors import RecipeError
from sft_hub.validation import validate

METRIC_SCRIPT = '''
import datasets
import evaluate


class PositiveRate(evaluate.Metric):
    """Share of predictions that are class 1, agreement count, and a non-scalar result."""

    def _info(self):
        return evaluate.MetricInfo(
            description="share of class-1 predictions", citation="", inputs_description="",
            features=datasets.Features({"predictions": datasets.Value("int64"),
                                        "references": datasets.Value("int64")}))

    def _compute(self, predictions, references):
        return {"positive_rate": sum(p == 1 for p in predictions) / len(predictions),
                "agreements": sum(p == r for p, r in zip(predictions, references)),
                "per_example": [int(p == r) for p, r in zip(predictions, references)]}
'''


@pytest.fixture
def metric_dir(tmp_path):
    folder = tmp_path / "my_metrics" / "positive_rate"
    folder.mkdir(parents=True)
    (folder / "positive_rate.py").write_text(textwrap.dedent(METRIC_SCRIPT), encoding="utf-8")
    return folder


def test_local_module_results_reach_metrics_json_run_info_and_card(
        write_recipe, text_recipe, metric_dir):
    from sft_hub.card import build_card
    from sft_hub.training import train

    text_recipe["training"].update(num_train_epochs=1, extra_metrics=["my_metrics/positive_rate"])
    result = train(write_recipe(text_recipe))
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    for split in ("validation", "test"):
        figures = metrics[split]
        assert 0.0 <= figures["positive_rate"] <= 1.0
        assert figures["positive_rate_agreements"] == round(figures["accuracy"] * 21)
        assert "accuracy" in figures and not any("per_example" in k for k in figures)
    info = json.loads((result.run_dir / "run_info.json").read_text())
    declared = {m["key"]: m for m in info["task_contract"]["metrics"]}
    assert declared["positive_rate"]["type"] == "positive_rate"
    assert any("'per_example' is not a single number" in n for n in info["notes"])

    card = build_card(result.run_dir, repo_id="acme/spam", files=["config.json"])
    assert "| positive_rate (positive_rate, evaluate) |" in card
    # local data: no model-index (the Hub needs a dataset id there); the body carries the figures
    assert "model-index" not in card


def test_hub_id_offline_is_one_error_before_training(write_recipe, text_recipe, monkeypatch,
                                                     capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    text_recipe["training"]["extra_metrics"] = ["matthews_correlation"]
    path = write_recipe(text_recipe)
    with pytest.raises(RecipeError, match="Hub is offline") as caught:
        validate(path)
    assert caught.value.field == "training.extra_metrics[0]"
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert "training.extra_metrics[0]" in err and "fix:" in err
    assert not (path.parent / "run").exists()  # nothing was trained or written


def test_missing_local_module_names_the_entry(write_recipe, text_recipe):
    text_recipe["training"]["extra_metrics"] = ["./metrics/nope"]
    with pytest.raises(RecipeError, match="no evaluate module") as caught:
        validate(write_recipe(text_recipe))
    assert caught.value.field == "training.extra_metrics[0]"


def test_broken_module_fails_before_training(write_recipe, text_recipe, metric_dir):
    from sft_hub.training import train

    (metric_dir / "positive_rate.py").write_text("raise ImportError('broken on purpose')\n")
    text_recipe["training"]["extra_metrics"] = [str(metric_dir)]
    with pytest.raises(RecipeError, match="cannot load evaluate module"):
        train(write_recipe(text_recipe))
