"""The console: start banner, compact evaluation tables, -q / -v, --version, NO_COLOR, no control
characters when the output is not a terminal, and the one-line checkpoint loading report."""
from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys

import pytest

from sft_hub import console
from sft_hub._version import __version__
from sft_hub.cli import main

CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # anything but tab and newline (ESC, \r...)


@pytest.fixture(autouse=True)
def _normal_console():
    console.configure(console.NORMAL)
    yield
    console.configure(console.NORMAL)


def _train(capsys, path, *flags):
    code = main(["train", str(path), *flags])
    out, err = capsys.readouterr()
    return code, out, err


def test_banner_tables_and_summary(capsys, write_recipe, text_recipe, tmp_path):
    text_recipe["training"].pop("disable_tqdm")
    code, out, err = _train(capsys, write_recipe(text_recipe))
    assert code == 0, err
    text = out + err
    assert f"sft-hub {__version__}" in out
    banner = out[out.index("sft-hub"):]
    for field, expected in (("task", "text-classification (2 labels: ham, spam)"),
                            ("model", "tiny-bert (transformers), weights from"),
                            ("strategy", "full:"), ("data", "train 60 · validation 21 · test 21"),
                            ("device", "cpu, single process"),
                            ("batch", "8 effective = 8 per device × 1 process(es)"),
                            ("output", str(tmp_path / "run"))):
        line = next((ln for ln in banner.splitlines() if ln.strip().startswith(field + " ")), "")
        assert expected in line, (field, line)
    assert "parameters trainable (100.00%)" in banner
    # one compact table per evaluation (2 epochs), not a dict
    assert "{'eval_loss'" not in text and "'eval_accuracy'" not in text
    eval_rows = [ln for ln in out.splitlines() if ln.strip().startswith("validation ")]
    assert len(eval_rows) >= 3  # two epochs + the final summary
    header = next(ln for ln in out.splitlines() if "accuracy" in ln and "loss" in ln)
    assert "f1_macro" in header
    assert f"run directory: {tmp_path / 'run'}" in out
    # captured output is not a terminal: no colours, no carriage returns, no progress bars
    found = CONTROL.search(text)
    assert found is None, repr(text[max(found.start() - 200, 0):found.start() + 50])
    assert "it/s]" not in text and "s/it]" not in text


def test_quiet_prints_the_summary_only(capsys, write_recipe, text_recipe):
    code, out, err = _train(capsys, write_recipe(text_recipe), "-q")
    assert code == 0, err
    assert "sft-hub " not in out  # no banner
    assert "epoch" not in out  # no evaluation tables
    assert "run directory:" in out and "test" in out and "accuracy" in out
    assert err.strip() == ""


def test_verbose_shows_every_metric(capsys, write_recipe, text_recipe):
    code, out, err = _train(capsys, write_recipe(text_recipe), "-v")
    assert code == 0, err
    assert "precision_macro" in out  # every metric of an evaluation, one row each
    assert re.search(r"validation at epoch 1(\.0)? \(step \d+\)", out), out


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"sft-hub {__version__}"


def test_log_file_has_no_control_characters(write_recipe, text_recipe, tmp_path):
    """A real process writing to a file: libraries' bars and colours must not leak either."""
    text_recipe["training"].pop("disable_tqdm")
    path = write_recipe(text_recipe)
    env = {k: v for k, v in os.environ.items() if k != "DISABLE_TQDM"}
    log = tmp_path / "train.log"
    with open(log, "w") as f:
        proc = subprocess.run([sys.executable, "-m", "sft_hub", "train", str(path)],
                              stdout=f, stderr=subprocess.STDOUT, env=env, timeout=600)
    text = log.read_text()
    assert proc.returncode == 0, text[-2000:]
    found = CONTROL.search(text)
    assert found is None, repr(text[max(found.start() - 200, 0):found.start() + 50])
    assert "sft-hub" in text and "run directory:" in text
    assert re.search(r"step \d+/\d+", text) or "validation" in text
    assert "LOAD REPORT" not in text and "MISSING" not in text  # transformers' table is silenced


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_colours_on_a_terminal_unless_no_color(monkeypatch):
    table = console.table(["split", "accuracy"], [["test", 0.5]], title="t")
    terminal = _Terminal()
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert "\x1b[" in console.render(_bold("x"), terminal)
    monkeypatch.setenv("NO_COLOR", "1")
    assert "\x1b[" not in console.render(_bold("x"), terminal)
    assert "\x1b[" not in console.render(table, io.StringIO())
    assert "0.5000" in console.render(table, io.StringIO())


def _bold(text):
    from rich.text import Text

    return Text(text, style="bold")


def test_evaluation_table_is_compact():
    logs = {"eval_loss": 0.25, "eval_accuracy": 0.9, "eval_f1_macro": 0.8,
            **{f"eval_f1_class{i}": 0.5 for i in range(30)}, "eval_runtime": 1.0, "epoch": 1.0}
    text = console.render(console.evaluation_table(logs, ("accuracy", "f1_macro"), epoch=1.0,
                                                   step=10), io.StringIO())
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert len(lines) <= 3 and "f1_class3" not in text and "runtime" not in text
    assert "0.9000" in text and "0.2500" in text


def test_loading_report_one_line_per_real_problem():
    class Model:
        base_model_prefix = "bert"

    info = {"missing_keys": {"classifier.weight", "classifier.bias", "bert.pooler.dense.weight"},
            "unexpected_keys": {"cls.predictions.bias"},
            "mismatched_keys": {("classifier.weight", (1000, 32), (2, 32))}}
    lines = console.loading_report(Model(), info, "ckpt")
    assert lines == [
        "warning: the checkpoint's head does not match this task (classifier.weight: "
        "[1000, 32] in ckpt, [2, 32] here); 1 head weight(s) re-initialised",
        "warning: 1 weight(s) outside the head are missing from ckpt and start from random "
        "values: bert.pooler.dense.weight"]
    assert console.loading_report(Model(), {"missing_keys": {"classifier.weight"}}, "c") == []
    console.configure(console.VERBOSE)
    assert any("unused" in line for line in console.loading_report(Model(), info, "ckpt"))


def test_only_the_main_process_prints(monkeypatch, capsys):
    monkeypatch.setenv("RANK", "1")
    console.summary(console.Path("run"), {"test": {"loss": 0.1}}, ())
    console.note("x")
    assert capsys.readouterr() == ("", "")


def test_run_info_records_the_checkpoints(write_recipe, text_recipe, tmp_path, capsys):
    code, _, err = _train(capsys, write_recipe(text_recipe), "-q")
    assert code == 0, err
    info = json.loads((tmp_path / "run" / "run_info.json").read_text())
    assert info["checkpoints"]["kept"] is False
    assert info["checkpoints"]["best"]["metric"] == "accuracy"
