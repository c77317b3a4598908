"""``sft-hub export`` and the ONNX Runtime path of ``predict`` / ``eval``, on tiny models.

Every registered task's contract fixture (tests/contract_fixtures.py: text, multi-label, token,
image with a transformers ViT and with timm) is trained for two steps through the real pipeline,
exported, checked for parity, and predicted / evaluated from the export folder; the predictions
must equal the PyTorch run's. Adapter runs (saved as an adapter, merged into the base at export;
saved merged) are exported too. A fresh process checks that the ONNX path imports neither torch
nor transformers.
"""
from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sft_hub.cli import main
from sft_hub.export import EXPORT_INFO, export_run
from sft_hub.onnx_predictor import INT8_FILE, MODEL_FILE, load_export

from .conftest import REPO
from .contract_fixtures import FIXTURES

TRAINING = {"max_steps": 2, "per_device_train_batch_size": 4, "per_device_eval_batch_size": 4,
            "learning_rate": 1e-2, "seed": 0, "eval_strategy": "no", "save_strategy": "no",
            "logging_strategy": "no", "load_best_model_at_end": False, "disable_tqdm": True}

# (task, fixture id, strategy section): every task fixture fully fine-tuned, plus adapter runs.
CASES = [(task, fid, {"name": "full"}) for task in FIXTURES for fid in FIXTURES[task]] + [
    ("text-classification", "bert", {"name": "lora", "r": 4, "alpha": 8, "save": "adapter"}),
    ("token-classification", "bert", {"name": "lora", "r": 4, "alpha": 8, "save": "merged"}),
    ("image-classification", "timm", {"name": "lora", "r": 4, "alpha": 8, "save": "adapter"}),
]


def _case_id(case) -> str:
    task, fid, strategy = case
    return f"{task}-{fid}-{strategy['name']}" + (f"-{strategy['save']}" if "save" in strategy
                                                  else "")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return tmp_path_factory.mktemp("export")


_RUNS: dict[str, Path] = {}


def trained_run(workspace: Path, case) -> Path:
    """The run of ``case`` (trained once per module)."""
    from sft_hub.training import train

    key = _case_id(case)
    if key not in _RUNS:
        task, fid, strategy = case
        fixture = FIXTURES[task][fid](workspace)
        recipe = {**fixture.recipe, "strategy": strategy, "training": TRAINING,
                  "output": {"dir": str(workspace / "runs" / key)}}
        path = fixture.base_dir / f"{key}.yaml"
        path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
        _RUNS[key] = train(str(path)).run_dir
    return _RUNS[key]


_EXPORTS: dict[tuple[str, str], Path] = {}


def exported(workspace: Path, case, quantize=None) -> Path:
    """The export of ``case``'s run (made once per module; tests only read it)."""
    key = (_case_id(case), quantize or "float")
    if key not in _EXPORTS:
        out = workspace / "exports" / "-".join(key)
        export_run(trained_run(workspace, case), out, quantize=quantize)
        _EXPORTS[key] = out
    return _EXPORTS[key]


def _input_rows(run_dir: Path) -> tuple[list[str], list[dict]]:
    """(input columns, rows) for predict: the run's validation examples as unlabelled input."""
    from sft_hub.inference import load_model

    model = load_model(run_dir, device="cpu")
    task = model.task
    split = task.load_data()["validation"]
    columns = task.input_columns()
    rows = []
    for row in split:
        if all(c in row for c in columns):
            values = {c: row[c]["path"] if isinstance(row[c], dict) else row[c] for c in columns}
        else:
            values = {columns[0]: task.example_text(row)}
        rows.append(values)
    return columns, rows


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def _predictions(rows: list[dict]) -> list:
    """The prediction of each output row (label or entities, scores to 4 decimals)."""
    out = []
    for r in rows:
        if "entities" in r:
            out.append([(e["type"], e["start"], e["end"], round(e["score"], 4))
                        for e in r["entities"]])
        elif "labels" in r:
            out.append(r["labels"])
        else:
            out.append((r["label"], round(r["score"], 4)))
    return out


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_export_parity_and_predict_equal_pytorch(case, workspace, tmp_path):
    from sft_hub.predict import predict

    run_dir = trained_run(workspace, case)
    quantize = "int8" if case[2]["name"] == "full" and case[1] in ("bert", "timm") else None
    out = exported(workspace, case, quantize)
    info = json.loads((out / EXPORT_INFO).read_text())

    # the folder: model, processor, config with id2label, export_info
    for name in (MODEL_FILE, "config.json", "recipe.yaml", EXPORT_INFO):
        assert (out / name).is_file(), name
    assert (out / "tokenizer.json").is_file() or (out / "preprocessor_config.json").is_file() \
        or info["preprocessing"]["kind"] == "image"
    config = json.loads((out / "config.json").read_text())
    run_info = json.loads((run_dir / "run_info.json").read_text())
    assert [config["id2label"][str(i)] for i in range(len(config["id2label"]))] == \
        run_info["labels"]
    assert info["source_run"] == str(run_dir.resolve())
    assert info["opset"] >= 13 and info["versions"]["onnxruntime"]
    assert not list(out.parent.glob(".export*")), "no staging folder left behind"

    # dynamic axes: batch everywhere, sequence for token inputs
    for name, axes in info["inputs"].items():
        assert axes[0] == "batch"
        if name in ("input_ids", "attention_mask"):
            assert axes[1] == "sequence"

    # parity at export time, recorded
    parity = info["parity"]
    assert 0 < parity["examples"] <= 32
    assert 0 <= parity["max_abs_logit_diff"] <= 1e-4
    assert parity["preprocessing"]["examples"] == parity["examples"]
    if "predict_max_abs_logit_diff" in parity["preprocessing"]:
        assert parity["preprocessing"]["predict_max_abs_logit_diff"] <= 1e-3

    # validation figures (float, and int8 with agreement)
    best = run_info["task_contract"]["best_metric"]
    assert best in info["validation"]["float"]
    if quantize:
        assert (out / INT8_FILE).is_file()
        assert best in info["validation"]["int8"]
        assert 0.0 <= info["validation"]["agreement"] <= 1.0
        assert info["validation"]["int8_quantized_ops"] == ["MatMul", "Gather"]
        import onnx

        ops = {n.op_type for n in onnx.load(str(out / INT8_FILE)).graph.node}
        assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops and "ConvInteger" not in ops, ops
        assert info["sizes_bytes"]["int8"] < info["sizes_bytes"]["float"]
        assert info["default_model"] == "int8"

    # predict from the export (ONNX Runtime, float) equals predict from the run (PyTorch)
    columns, rows = _input_rows(run_dir)
    inputs = _write_jsonl(tmp_path / "inputs.jsonl", rows)
    predict(run_dir, inputs, tmp_path / "torch.jsonl", device="cpu", progress=False)
    # the float model: pass its file (the folder alone runs the int8 one when there is one)
    predict(str(out / MODEL_FILE), inputs, tmp_path / "onnx.jsonl", progress=False)
    assert _predictions(_read_jsonl(tmp_path / "onnx.jsonl")) == \
        _predictions(_read_jsonl(tmp_path / "torch.jsonl"))


def test_eval_on_export_equals_the_run(workspace, tmp_path):
    from sft_hub.evaluation import evaluate

    case = CASES[0]
    run_dir = trained_run(workspace, case)
    out = exported(workspace, case)
    data = run_dir.parent.parent / "text" / "validation.jsonl"
    from_run = evaluate(run_dir, str(data), out_dir=tmp_path / "eval-run", device="cpu")
    from_export = evaluate(out, str(data), out_dir=tmp_path / "eval-export")
    for key, value in from_run.metrics.items():
        assert from_export.metrics[key] == pytest.approx(value, abs=1e-5), key


@pytest.mark.parametrize("case", [CASES[0], next(c for c in CASES if c[1] == "timm")],
                         ids=_case_id)
def test_onnx_path_imports_neither_torch_nor_transformers(case, workspace, tmp_path):
    """``sft-hub predict`` and ``sft-hub eval`` on an export folder, in a fresh process."""
    run_dir = trained_run(workspace, case)
    out = exported(workspace, case, "int8")
    columns, rows = _input_rows(run_dir)
    inputs = _write_jsonl(tmp_path / "inputs.jsonl", rows)
    task = case[0]
    data = {"text-classification": run_dir.parent.parent / "text" / "validation.jsonl",
            "image-classification": run_dir.parent.parent / "images"}[task]
    script = f"""
import sys
from sft_hub.cli import main
assert main(["predict", {str(out)!r}, "--input", {str(inputs)!r}, "--output",
             {str(tmp_path / 'preds.jsonl')!r}, "--quiet"]) == 0
assert main(["eval", {str(out)!r}, "--data", {str(data)!r}, "--output-dir",
             {str(tmp_path / 'eval')!r}]) == 0
loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith(("torch.", "transformers")))
print("LOADED", loaded)
assert not loaded, loaded
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert len(_read_jsonl(tmp_path / "preds.jsonl")) == len(rows)


# -- errors -------------------------------------------------------------------------------------------

def test_unsupported_model_is_one_clear_error_and_no_folder(workspace, tmp_path, monkeypatch,
                                                           capsys):
    """A model whose forward uses an operation no exporter knows (a custom op, as custom code
    brings): exit 2, one error naming the model class, nothing written."""
    import torch

    import sft_hub.export as export

    run_dir = trained_run(workspace, CASES[0])
    lib = torch.library.Library("sfthub_test", "DEF")
    lib.define("mystery(Tensor x) -> Tensor")
    lib.impl("mystery", lambda x: x * 2, "CPU")
    real = export.load_run

    def load_with_custom_op(path):
        run = real(path)
        inner = run.model.forward

        @functools.wraps(inner)  # the same signature: export finds the inputs by name
        def forward(*args, **kwargs):
            out = inner(*args, **kwargs)
            out.logits = torch.ops.sfthub_test.mystery(out.logits)
            return out

        run.model.forward = forward
        return run

    monkeypatch.setattr(export, "load_run", load_with_custom_op)
    out = tmp_path / "export"
    code = main(["export", str(run_dir), "--output", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "BertForSequenceClassification" in lines[0], err
    assert "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob(".export*"))


def test_parity_failure_exits_2_and_leaves_nothing(workspace, tmp_path, monkeypatch, capsys):
    import sft_hub.export as export

    run_dir = trained_run(workspace, CASES[0])
    real = export.parity
    monkeypatch.setattr(export, "parity", lambda *a: {**real(*a), "max_abs_logit_diff": 3e-3})
    out = tmp_path / "export"
    assert main(["export", str(run_dir), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "max |logit difference| 0.003" in err and "limit 0.0001" in err
    assert not out.exists() and not list(tmp_path.glob(".export*"))


def test_missing_extra_names_it(workspace, tmp_path, monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    code = main(["export", str(tmp_path), "--output", str(tmp_path / "out")])
    assert code == 2
    assert 'pip install "sft-hub[export]"' in capsys.readouterr().err


def test_output_folder_rules(workspace, tmp_path, capsys):
    run_dir = trained_run(workspace, CASES[0])
    other = tmp_path / "someone-else"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    assert main(["export", str(run_dir), "--output", str(other)]) == 2
    assert "not an sft-hub export" in capsys.readouterr().err
    assert (other / "notes.txt").read_text() == "keep me"

    out = tmp_path / "export"
    shutil.copytree(exported(workspace, CASES[0]), out)
    (out / "stale.txt").write_text("from the earlier export")
    assert main(["export", str(run_dir), "--output", str(out)]) == 2  # no --overwrite
    assert "already holds an export" in capsys.readouterr().err
    assert (out / "stale.txt").is_file()
    assert main(["export", str(run_dir), "--output", str(out), "--overwrite"]) == 0
    assert (out / MODEL_FILE).is_file() and not (out / "stale.txt").exists()
    assert not list(tmp_path.glob(".export*")), "no staging or old folder left behind"
    assert "parity" in capsys.readouterr().out

    assert main(["export", str(tmp_path / "nope"), "--output", str(tmp_path / "x")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["export", str(run_dir), "--output", str(run_dir / "inside")]) == 2
    assert "run directory" in capsys.readouterr().err


def test_load_export_picks_the_model(workspace):
    out = exported(workspace, CASES[0], "int8")
    assert load_export(out).variant == "int8"  # the folder: the quantised model export made
    assert load_export(out / MODEL_FILE).variant == "float"
    assert load_export(out / INT8_FILE).variant == "int8"
    with pytest.raises(Exception, match="no int8 model"):
        load_export(exported(workspace, CASES[0]), "int8")
