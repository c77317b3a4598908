"""`sft-hub eval` and `sft-hub predict` on tiny offline runs: eval reproduces the run's test
figures, predictions equal transformers' pipeline for text, token, image and adapter runs, the
report's pictures are real PNGs, bad inputs exit 2 naming the problem, and no output is ever
half-written."""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from sft_hub.cli import main
from sft_hub.evaluation import bootstrap_interval, calibration, evaluate
from sft_hub.predict import predict

from .conftest import make_text_rows, write_csv
from .contract_fixtures import (image_classification_timm, image_classification_vit,
                               multi_label_text_classification, token_classification)
from .hub_server import hub_server  # noqa: F401  (pytest fixture)

TRAINING = {"num_train_epochs": 2, "per_device_train_batch_size": 8, "learning_rate": 5e-3,
            "seed": 0, "logging_steps": 2, "disable_tqdm": True, "use_cpu": True,
            "per_device_eval_batch_size": 8}


def _train(recipe: dict, folder: Path) -> Path:
    from sft_hub.training import train

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    return train(str(path)).run_dir


@pytest.fixture(scope="module")
def text_run(tmp_path_factory, tiny_bert_dir) -> Path:
    root = tmp_path_factory.mktemp("text-run")
    data = root / "data"
    write_csv(data / "train.csv", make_text_rows(48, seed=1))
    write_csv(data / "validation.csv", make_text_rows(20, seed=2))
    write_csv(data / "test.csv", make_text_rows(21, seed=3))
    return _train({
        "task": "text-classification",
        "model": {"name": "tiny-bert", "path": str(tiny_bert_dir)},
        "data": {"files": {k: str(data / f"{k}.csv") for k in ("train", "validation", "test")},
                 "max_length": 16},
        "training": TRAINING, "output": {"dir": str(root / "run")}}, root)


@pytest.fixture(scope="module")
def token_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("token-run")
    fixture = token_classification(root)
    return _train({**fixture.recipe, "training": {**TRAINING, "learning_rate": 2e-2,
                                                  "num_train_epochs": 25, "logging_steps": 5},
                   "output": {"dir": str(root / "run")}}, root)


@pytest.fixture(scope="module")
def image_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("image-run")
    fixture = image_classification_vit(root)
    return _train({**fixture.recipe, "training": TRAINING, "output": {"dir": str(root / "run")}},
                  root)


@pytest.fixture(scope="module")
def adapter_run(tmp_path_factory, tiny_bert_dir) -> Path:
    root = tmp_path_factory.mktemp("adapter-run")
    data = root / "data"
    write_csv(data / "train.csv", make_text_rows(40, seed=4))
    return _train({
        "task": "text-classification",
        "model": {"name": str(tiny_bert_dir)},
        "data": {"files": {"train": str(data / "train.csv")}, "max_length": 16},
        "strategy": {"name": "lora", "r": 4},
        "training": {**TRAINING, "learning_rate": 1e-2}, "output": {"dir": str(root / "run")}},
        root)


@pytest.fixture(scope="module")
def multi_label_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("multi-run")
    fixture = multi_label_text_classification(root)
    recipe = {**fixture.recipe, "training": {**TRAINING, "num_train_epochs": 10},
              "output": {"dir": str(root / "run")}}
    recipe["data"] = {**recipe["data"], "tune_thresholds": True}
    return _train(recipe, root)


def _read(path: Path) -> list[dict]:
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _assert_png(path: Path) -> None:
    from PIL import Image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    with Image.open(path) as image:
        image.load()
        pixels = np.asarray(image.convert("L"), dtype=np.float64)
    assert image.width > 100 and image.height > 100, path
    assert pixels.std() > 5 and len(np.unique(pixels)) > 10, f"{path} looks blank"


# -- eval -----------------------------------------------------------------------------------------

def test_eval_reproduces_the_runs_test_metrics_exactly(text_run, capsys):
    recorded = json.loads((text_run / "metrics.json").read_text())["test"]
    assert main(["eval", str(text_run)]) == 0
    printed = capsys.readouterr().out
    report = json.loads((text_run / "eval" / "test" / "metrics.json").read_text())
    assert report["examples"] == 21
    for key, value in recorded.items():
        if key in ("runtime", "samples_per_second", "steps_per_second", "epoch"):
            continue
        if key == "loss":  # float32 sums of the same batches: equal up to rounding
            assert report["metrics"][key] == pytest.approx(value, rel=1e-6)
        else:
            assert report["metrics"][key] == value, key
    assert "accuracy" in printed and "95% CI" in printed


def test_training_writes_the_report_curves_and_card(text_run):
    recorded = json.loads((text_run / "metrics.json").read_text())
    for split in ("validation", "test"):
        folder = text_run / "eval" / split
        report = json.loads((folder / "metrics.json").read_text())
        assert report["metrics"]["accuracy"] == recorded[split]["accuracy"]
        ci = report["confidence_interval"]
        assert ci["metric"] == "accuracy" and ci["resamples"] == 1000
        assert ci["low"] <= ci["value"] <= ci["high"]
        assert 0 <= report["calibration"]["ece"] <= 1
        header = (folder / "per_class.csv").read_text().splitlines()[0]
        assert header == "class,precision,recall,f1,support"
        assert "| class | precision |" in (folder / "per_class.md").read_text()
        rows = list(csv.reader((folder / "confusion_matrix.csv").open()))
        assert rows[0][1:] == ["ham", "spam"] and [r[0] for r in rows[1:]] == ["ham", "spam"]
        counts = np.array([[int(x) for x in r[1:]] for r in rows[1:]])
        assert counts.sum() == report["examples"]
        for line in (folder / "errors.jsonl").read_text().splitlines():
            error = json.loads(line)
            assert error["gold"] != error["predicted"] and error["input"]
        for picture in ("confusion_matrix.png", "reliability_diagram.png"):
            _assert_png(folder / picture)
    _assert_png(text_run / "learning_curves.png")
    card = (text_run / "README.md").read_text()
    assert "![Confusion matrix (test)](eval/test/confusion_matrix.png)" in card
    assert "![Learning curves](learning_curves.png)" in card
    assert "confidence interval" in card


def test_the_run_cards_usage_snippet_runs(text_run, capsys):
    card = (text_run / "README.md").read_text()
    code = re.search(r"## Usage\n\n```python\n(.*?)```", card, re.S).group(1)
    assert str(text_run) in code
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "'label': 'ham'" in out or "'label': 'spam'" in out


def test_eval_on_new_data_with_column_flags(text_run, tmp_path):
    rows = [{"body": r["text"], "y": r["label"]} for r in make_text_rows(12, seed=9)]
    write_csv(tmp_path / "new.csv", rows)
    report = evaluate(text_run, str(tmp_path / "new.csv"), out_dir=tmp_path / "report",
                      columns={"text_column": "body", "label_column": "y"})
    assert report.examples == 12
    assert (tmp_path / "report" / "confusion_matrix.png").is_file()


def test_eval_names_a_label_the_model_does_not_know(text_run, tmp_path, capsys):
    write_csv(tmp_path / "new.csv", [{"text": "free cash now", "label": "spam"},
                                     {"text": "see you later", "label": "maybe"}])
    assert main(["eval", str(text_run), "--data", str(tmp_path / "new.csv")]) == 2
    err = capsys.readouterr().err
    assert "'maybe'" in err and "ham, spam" in err


def test_eval_ner_reports_span_errors_per_type(token_run):
    recorded = json.loads((token_run / "metrics.json").read_text())["validation"]
    report = evaluate(token_run, split="validation")
    for key in ("entity_f1", "entity_precision", "token_accuracy"):
        assert report.metrics[key] == recorded[key], key
    assert report.metrics["loss"] == pytest.approx(recorded["loss"], rel=1e-6)
    folder = token_run / "eval" / "validation"
    table = _read(folder / "span_errors.csv")
    assert {r["entity_type"] for r in table} == {"LOC", "MISC"}
    assert set(table[0]) == {"entity_type", "correct", "wrong_type", "wrong_boundary", "missed",
                             "spurious"}
    assert [r["class"] for r in _read(folder / "per_class.csv")] == ["LOC", "MISC"]
    _assert_png(folder / "confusion_matrix.png")


def test_span_errors_classify_each_entity():
    from sft_hub.tasks.token_classification import span_errors

    gold = {("PER", 0, 1), ("LOC", 4, 4), ("ORG", 6, 7), ("MISC", 9, 9)}
    predicted = {("PER", 0, 1), ("ORG", 4, 4), ("ORG", 6, 6), ("LOC", 11, 11)}
    kinds = {(e["kind"], e["entity_type"]) for e in span_errors(gold, predicted)}
    assert kinds == {("correct", "PER"), ("wrong_type", "LOC"), ("wrong_boundary", "ORG"),
                     ("missed", "MISC"), ("spurious", "LOC")}


def test_bootstrap_is_seeded_and_brackets_the_value():
    rng = np.random.default_rng(1)
    correct = (rng.random(200) < 0.8).astype(float)
    stats = np.stack([correct, np.ones(200)], axis=1)
    ratio = lambda s: s[0] / s[1]  # noqa: E731
    a = bootstrap_interval(stats, ratio, seed=3)
    assert a == bootstrap_interval(stats, ratio, seed=3)
    assert a["low"] < a["value"] < a["high"] and a["value"] == correct.mean()
    assert 0.05 < a["high"] - a["low"] < 0.2


def test_calibration_error_of_a_calibrated_and_an_overconfident_model():
    confidence = np.full(1000, 0.75)
    assert calibration(confidence, np.arange(1000) % 4 != 0)["ece"] == pytest.approx(0.0)
    assert calibration(np.full(100, 0.99), np.zeros(100))["ece"] == pytest.approx(0.99)


# -- predict equals pipeline ----------------------------------------------------------------------

def test_text_predictions_equal_the_pipeline(text_run, tmp_path):
    from transformers import pipeline

    texts = [r["text"] for r in make_text_rows(30, seed=11)]
    texts[3] = "free " * 40  # longer than max_length: truncated like training
    write_csv(tmp_path / "in.csv", [{"id": i, "text": t} for i, t in enumerate(texts)])
    assert main(["predict", str(text_run), "--input", str(tmp_path / "in.csv"), "--output",
                 str(tmp_path / "out.csv"), "--top-k", "2", "--batch-size", "4", "--quiet"]) == 0
    rows = _read(tmp_path / "out.csv")
    classifier = pipeline("text-classification", model=str(text_run), device="cpu")
    expected = classifier(texts, truncation=True, max_length=16)
    assert [r["id"] for r in rows] == [str(i) for i in range(30)]  # input order kept
    for row, exp in zip(rows, expected):
        assert row["label"] == exp["label"] and row["top1_label"] == exp["label"]
        assert float(row["score"]) == pytest.approx(exp["score"], abs=1e-5)
        assert {row["top1_label"], row["top2_label"]} == {"ham", "spam"}


def test_token_predictions_equal_the_pipeline(token_run, tmp_path):
    from transformers import pipeline

    sentences = ["good movie in plot", "bad film not fine plot", "plot in good movie film",
                 "fine", "not bad movie in the plot good"]
    (tmp_path / "sentences.txt").write_text("\n".join(sentences) + "\n", encoding="utf-8")
    assert predict(token_run, tmp_path / "sentences.txt", tmp_path / "entities.jsonl",
                   batch_size=2, progress=False).rows == len(sentences)
    rows = _read(tmp_path / "entities.jsonl")
    ner = pipeline("token-classification", model=str(token_run), aggregation_strategy="simple",
                   device="cpu")
    found = 0
    for row, sentence in zip(rows, sentences):
        assert row["text"] == sentence
        expected = ner(sentence)
        got = row["entities"]
        assert [(e["type"], e["start"], e["end"]) for e in got] == \
            [(e["entity_group"], e["start"], e["end"]) for e in expected]
        for g, e in zip(got, expected):
            assert g["score"] == pytest.approx(float(e["score"]), abs=1e-5)
            assert g["word"] == sentence[g["start"]:g["end"]]
        found += len(got)
    assert found, "the tiny model predicts no entity: the comparison would be empty"


def test_image_predictions_equal_the_pipeline(image_run, tmp_path):
    from PIL import Image
    from transformers import pipeline

    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(5)
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    assert main(["predict", str(image_run), "--input", str(folder), "--output",
                 str(tmp_path / "p.csv"), "--quiet"]) == 0
    rows = _read(tmp_path / "p.csv")
    classify = pipeline("image-classification", model=str(image_run), device="cpu")
    for row in rows:
        best = classify(row["image"], top_k=1)[0]
        assert row["label"] == best["label"]
        assert float(row["score"]) == pytest.approx(best["score"], abs=1e-5)
    # a table of image paths, relative to the table's folder
    write_csv(tmp_path / "photos.csv", [{"image": f"photos/{i}.png"} for i in range(5)])
    assert main(["predict", str(image_run), "--input", str(tmp_path / "photos.csv"),
                 "--output", str(tmp_path / "q.csv"), "--quiet"]) == 0
    assert [r["label"] for r in _read(tmp_path / "q.csv")] == [r["label"] for r in rows]


def test_adapter_predictions_equal_the_pipeline_on_base_plus_adapter(adapter_run, tmp_path):
    from peft import AutoPeftModelForSequenceClassification
    from transformers import AutoTokenizer, pipeline

    assert (adapter_run / "adapter_config.json").is_file()
    assert not (adapter_run / "model.safetensors").exists()
    labels = json.loads((adapter_run / "run_info.json").read_text())["labels"]
    texts = [r["text"] for r in make_text_rows(12, seed=12)]
    (tmp_path / "in.txt").write_text("\n".join(texts), encoding="utf-8")
    result = predict(adapter_run, tmp_path / "in.txt", tmp_path / "out.jsonl", progress=False)
    rows = _read(tmp_path / "out.jsonl")
    model = AutoPeftModelForSequenceClassification.from_pretrained(
        str(adapter_run), id2label=dict(enumerate(labels)),
        label2id={n: i for i, n in enumerate(labels)})
    classifier = pipeline("text-classification", model=model,
                          tokenizer=AutoTokenizer.from_pretrained(str(adapter_run)), device="cpu")
    assert result.rows == len(texts)
    for row, exp in zip(rows, classifier(texts)):
        assert row["label"] == exp["label"]
        assert row["score"] == pytest.approx(exp["score"], abs=1e-5)


# -- bad inputs -----------------------------------------------------------------------------------

def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_an_empty_cell_names_the_row_and_nothing_is_left_behind(text_run, tmp_path, capsys,
                                                                 monkeypatch):
    import sft_hub.predict as predict_module

    monkeypatch.setattr(predict_module, "CHUNK_ROWS", 3)  # the error comes after written chunks
    rows = [{"text": t["text"]} for t in make_text_rows(10, seed=3)]
    rows[7]["text"] = ""
    write_csv(tmp_path / "in.csv", rows)
    out = tmp_path / "out.csv"
    assert main(["predict", str(text_run), "--input", str(tmp_path / "in.csv"), "--output",
                 str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "row 8" in err and "'text'" in err and "--skip-bad" in err
    assert not out.exists() and _leftovers(tmp_path) == []
    assert main(["predict", str(text_run), "--input", str(tmp_path / "in.csv"), "--output",
                 str(out), "--skip-bad", "--quiet"]) == 0
    assert "skipped 1 bad row(s): 8" in capsys.readouterr().out
    assert len(_read(out)) == 9


def test_an_existing_output_is_kept_without_overwrite(text_run, tmp_path, capsys):
    (tmp_path / "in.txt").write_text("free cash now\nsee you later\n", encoding="utf-8")
    out = tmp_path / "out.csv"
    out.write_text("precious\n", encoding="utf-8")
    args = ["predict", str(text_run), "--input", str(tmp_path / "in.txt"), "--output", str(out),
            "--quiet"]
    assert main(args) == 2
    assert "already exists" in capsys.readouterr().err
    assert out.read_text() == "precious\n"
    assert main(args + ["--overwrite"]) == 0
    assert len(_read(out)) == 2


def test_a_corrupt_image_names_the_file(image_run, tmp_path, capsys):
    from PIL import Image

    folder = tmp_path / "photos"
    folder.mkdir()
    Image.new("RGB", (32, 32), "white").save(folder / "good.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    out = tmp_path / "p.csv"
    assert main(["predict", str(image_run), "--input", str(folder), "--output", str(out),
                 "--quiet"]) == 2
    assert "broken.png" in capsys.readouterr().err
    assert not out.exists() and _leftovers(tmp_path) == []
    assert main(["predict", str(image_run), "--input", str(folder), "--output", str(out),
                 "--skip-bad", "--quiet"]) == 0
    assert [Path(r["image"]).name for r in _read(out)] == ["good.png"]


@pytest.mark.parametrize("args, message", [
    (["--input", "missing.csv", "--output", "o.csv"], "input not found"),
    (["--input", "in.txt", "--output", "o.xlsx"], "must end in"),
    (["--input", "in.txt", "--output", "o.csv", "--top-k", "0"], "--top-k"),
    (["--input", "in.txt", "--output", "o.csv", "--image-column", "x"], "read no image column"),
])
def test_bad_predict_arguments_exit_2(text_run, tmp_path, capsys, args, message):
    (tmp_path / "in.txt").write_text("hello\n", encoding="utf-8")
    assert main(["predict", str(text_run), *args, "--quiet"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o.csv").exists()


def test_not_a_run_exits_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["eval", str(tmp_path / "empty")]) == 2
    assert "not an sft-hub run" in capsys.readouterr().err


# -- multi-label and pushed models ------------------------------------------------------------------

def test_multi_label_eval_and_predict(multi_label_run, tmp_path):
    from transformers import pipeline

    recorded = json.loads((multi_label_run / "metrics.json").read_text())["validation"]
    report = evaluate(multi_label_run, split="validation")
    for key in ("f1_micro", "f1_macro", "subset_accuracy"):
        assert report.metrics[key] == recorded[key], key
    assert report.metrics["loss"] == pytest.approx(recorded["loss"], rel=1e-6)
    assert report.interval["metric"] == "f1_micro"
    assert report.interval["value"] == pytest.approx(recorded["f1_micro"], abs=1e-12)
    _assert_png(multi_label_run / "eval" / "validation" / "confusion_matrix.png")

    texts = ["good movie great film", "bad film not movie", "fine", "awful awful plot"]
    (tmp_path / "in.txt").write_text("\n".join(texts), encoding="utf-8")
    predict(multi_label_run, tmp_path / "in.txt", tmp_path / "out.jsonl", top_k=2, progress=False)
    rows = _read(tmp_path / "out.jsonl")
    classifier = pipeline("text-classification", model=str(multi_label_run), top_k=None,
                          device="cpu")
    thresholds = classifier.model.config.label_thresholds
    for row, scores in zip(rows, classifier(texts)):
        expected = [s for s in scores if s["score"] >= thresholds[s["label"]]]
        assert row["labels"] == [s["label"] for s in expected]
        assert row["scores"] == pytest.approx([s["score"] for s in expected], abs=1e-5)
        assert [t["label"] for t in row["top_k"]] == [s["label"] for s in scores[:2]]


def test_eval_and_predict_a_pushed_model(text_run, hub_server, tmp_path, monkeypatch):
    from sft_hub.hub import push_run

    push_run(text_run, repo_id="sft-tester/spam", form="model")
    monkeypatch.chdir(tmp_path)
    rows = make_text_rows(12, seed=21)
    write_csv(tmp_path / "new.csv", rows)
    pushed = evaluate("hf://sft-tester/spam", str(tmp_path / "new.csv"))
    local = evaluate(text_run, str(tmp_path / "new.csv"), out_dir=tmp_path / "local")
    assert pushed.folder == tmp_path / "eval" / "new"
    assert pushed.metrics == local.metrics
    write_csv(tmp_path / "in.csv", [{"text": r["text"]} for r in rows])
    assert main(["predict", "hf://sft-tester/spam", "--input", str(tmp_path / "in.csv"),
                 "--output", str(tmp_path / "p.csv"), "--quiet"]) == 0
    assert len(_read(tmp_path / "p.csv")) == 12


def test_timm_run_eval_and_predictions_equal_the_pipeline(tmp_path_factory, tmp_path):
    from PIL import Image
    from transformers import pipeline

    root = tmp_path_factory.mktemp("timm-run")
    fixture = image_classification_timm(root)
    run = _train({**fixture.recipe, "training": TRAINING, "output": {"dir": str(root / "run")}},
                 root)
    recorded = json.loads((run / "metrics.json").read_text())["validation"]
    assert evaluate(run, split="validation").metrics["accuracy"] == recorded["accuracy"]
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, colour in enumerate(("white", "black", "gray")):
        Image.new("RGB", (36, 30), colour).save(folder / f"{i}.png")
    predict(run, folder, tmp_path / "p.jsonl", progress=False)
    classify = pipeline("image-classification", model=str(run), device="cpu")
    for row in _read(tmp_path / "p.jsonl"):
        best = classify(row["image"], top_k=1)[0]
        assert row["label"] == best["label"]
        assert row["score"] == pytest.approx(best["score"], abs=1e-5)
