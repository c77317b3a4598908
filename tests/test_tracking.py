"""training.report_to: tracker logs go to <run dir>/logs/ and are pushed with the run
(tensorboard); trackio runs offline in local mode with its database there too."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import pytest

from sft_hub.card import build_card
from sft_hub.hub import plan_files
from sft_hub.training import train


def test_tensorboard_logs_in_the_run_and_pushed(write_recipe, text_recipe, tmp_path):
    pytest.importorskip("tensorboard")  # the `tensorboard` extra (installed by the dev extra)
    text_recipe["training"].update(report_to="tensorboard", logging_steps=2)
    run = train(write_recipe(text_recipe)).run_dir
    events = sorted((run / "logs" / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    assert not (run / "checkpoints").exists()  # not under checkpoints/runs, and kept lean
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(events[0].parent))
    accumulator.Reload()
    assert {"train/loss", "eval/accuracy"} <= set(accumulator.Tags()["scalars"])
    pushed = plan_files(run, "model")
    assert any(p.startswith("logs/tensorboard/events.out.tfevents.") for p in pushed)
    card = build_card(run, repo_id="acme/x", files=list(pushed))
    assert "- tensorboard" in card.split("---")[1]


def test_trackio_offline_local_mode(write_recipe, text_recipe, tmp_path):
    pytest.importorskip("trackio")
    text_recipe["training"].update(report_to="trackio", logging_steps=2)
    path = write_recipe(text_recipe)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKIO_")}
    env.update(HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-m", "sft_hub", "train", str(path), "-q"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    databases = list((tmp_path / "run" / "logs" / "trackio").glob("*.db"))
    assert databases, sorted(p.name for p in (tmp_path / "run" / "logs").rglob("*"))
    with sqlite3.connect(databases[0]) as db:
        tables = {row[0] for row in db.execute("select name from sqlite_master where type='table'")}
        assert "metrics" in tables
        assert db.execute("select count(*) from metrics").fetchone()[0] > 0
