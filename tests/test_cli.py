"""The CLI: every bad input is one clear message with exit code 2 and no traceback."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from sft_hub.cli import main


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(code, err, *fragments):
    assert code == 2, err
    assert "Traceback" not in err
    assert "error: " in err
    for f in fragments:
        assert f in err, err


def test_validate_prints_resolved_recipe(capsys, write_recipe, text_recipe):
    path = write_recipe(text_recipe)
    code, out, err = run_cli(capsys, "validate", str(path), "training.learning_rate=3e-5")
    assert code == 0, err
    assert "learning_rate: 3.0e-05" in out and "text_column: text" in out
    assert "is valid" in err


def test_unknown_key(capsys, write_recipe, text_recipe):
    text_recipe["data"]["text_colum"] = "text"
    code, _, err = run_cli(capsys, "validate", str(write_recipe(text_recipe)))
    assert_user_error(code, err, "data.text_colum: unknown key; did you mean data.text_column?")


def test_wrong_type(capsys, write_recipe, text_recipe):
    text_recipe["training"]["per_device_train_batch_size"] = "big"
    code, _, err = run_cli(capsys, "validate", str(write_recipe(text_recipe)))
    assert_user_error(code, err, "training.per_device_train_batch_size: expected an integer")


def test_missing_data_file(capsys, write_recipe, text_recipe):
    text_recipe["data"]["files"]["test"] = "nowhere/test.csv"
    path = write_recipe(text_recipe)
    code, _, err = run_cli(capsys, "validate", str(path))
    assert_user_error(code, err, str(path), "data.files.test", "file not found")


def test_missing_column(capsys, write_recipe, text_recipe):
    text_recipe["data"]["text_column"] = "sentence"
    code, _, err = run_cli(capsys, "validate", str(write_recipe(text_recipe)))
    assert_user_error(code, err, "data.text_column", "no column 'sentence'", "columns: text, label")


def test_missing_label_column(capsys, write_recipe, text_recipe):
    text_recipe["data"]["label_column"] = "target"
    code, _, err = run_cli(capsys, "validate", str(write_recipe(text_recipe)))
    assert_user_error(code, err, "data.label_column", "no column 'target'")


def test_unknown_task(capsys, write_recipe, text_recipe):
    text_recipe["task"] = "summarization"
    code, _, err = run_cli(capsys, "validate", str(write_recipe(text_recipe)))
    assert_user_error(code, err, "task: unknown task 'summarization'", "text-classification")


def test_unreadable_yaml(capsys, write_recipe):
    path = write_recipe("task: [\n")
    code, _, err = run_cli(capsys, "validate", str(path))
    assert_user_error(code, err, str(path), "not valid YAML")


def test_label_missing_from_training_data(capsys, write_recipe, text_recipe, text_csv_dir):
    with open(text_csv_dir / "validation.csv", "a") as f:
        f.write("a brand new kind of message,phishing\n")
    code, _, err = run_cli(capsys, "train", str(write_recipe(text_recipe)))
    assert_user_error(code, err, "recipe.yaml: data.label_column:",
                      "validation split has label(s) 'phishing'")


def test_existing_run_directory_is_refused_and_kept(capsys, write_recipe, text_recipe, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "precious.txt").write_text("keep me")
    for extra in ([], ["--overwrite"]):
        code, _, err = run_cli(capsys, "train", str(write_recipe(text_recipe)), *extra)
        assert_user_error(code, err, "output.dir", "not an sft-hub run directory")
        assert "--overwrite" not in err
        assert (run / "precious.txt").read_text() == "keep me"


def test_console_script_exit_code_and_no_traceback(write_recipe, text_recipe):
    text_recipe["data"]["text_colum"] = "x"
    path = write_recipe(text_recipe)
    proc = subprocess.run([sys.executable, "-m", "sft_hub", "validate", str(path)],
                          capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "did you mean data.text_column" in proc.stderr


def test_validate_does_not_import_torch(write_recipe, text_recipe):
    path = write_recipe(text_recipe)
    code = ("import sys; from sft_hub.cli import main; main(['validate', '-q', %r]); "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, "
            "sorted(m for m in sys.modules if m.startswith(('torch', 'transformers')))" % str(path))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("debug_flag", [True])
def test_debug_shows_traceback(write_recipe, debug_flag):
    path = write_recipe("task: nope\nmodel: {name: m}\ndata: {dataset: d}\n")
    proc = subprocess.run([sys.executable, "-m", "sft_hub", "--debug", "validate", str(path)],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "Traceback" in proc.stderr
