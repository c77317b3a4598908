"""Shipped recipes and accelerate configs: `sft-hub recipes list / show / copy`, from the source
tree and from a built wheel installed into a fresh virtual environment."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from sft_hub.cli import main
from sft_hub.shipped import ShippedError, catalog, copy_shipped, find
from sft_hub.validation import validate

from .conftest import REPO


def test_catalog_lists_recipes_and_configs(capsys):
    names = {s.name for s in catalog()}
    assert {"quickstart/sms-spam-minilm-full", "image-classification/digits-efficientnet_lite0-full",
            "accelerate/multi_gpu", "accelerate/cpu_2proc"} <= names
    assert not any("/data/" in n or "/models/" in n for n in names)
    assert main(["recipes", "list"]) == 0
    out = capsys.readouterr().out
    assert "quickstart/sms-spam-minilm-full" in out and "Quickstart: fine-tune" in out
    assert "accelerate/multi_gpu" in out


def test_find_by_short_name_and_errors():
    assert find("sms-spam-minilm-full").name == "quickstart/sms-spam-minilm-full"
    assert find("quickstart/sms-spam-minilm-full.yaml").name == "quickstart/sms-spam-minilm-full"
    assert find("multi_gpu").kind == "accelerate config"
    with pytest.raises(ShippedError, match="did you mean"):
        find("sms-spam-minilm-ful")


def test_show_prints_the_file(capsys):
    assert main(["recipes", "show", "accelerate/multi_gpu"]) == 0
    assert capsys.readouterr().out.strip() == \
        (REPO / "accelerate_configs" / "multi_gpu.yaml").read_text().strip()


def test_copied_offline_recipes_validate_elsewhere(tmp_path, monkeypatch, capsys):
    dest = tmp_path / "mine"
    assert main(["recipes", "copy", "sms-spam-minilm-bitfit", str(dest)]) == 0
    assert "next: sft-hub validate" in capsys.readouterr().out
    assert (dest / "sms-spam-minilm-bitfit.yaml").is_file()
    assert (dest / "sms-spam-minilm-full.yaml").is_file()  # what it extends
    assert (dest / "data" / "sms_spam" / "train.csv").is_file()
    assert (dest / "data" / "sms_spam" / "README.md").is_file()  # the data's licence travels
    written = copy_shipped("digits-efficientnet_lite0-freeze", tmp_path / "img" / "probe.yaml")
    assert (tmp_path / "img" / "models" / "efficientnet_lite0" / "model.safetensors").is_file()
    monkeypatch.chdir(tmp_path / "img")  # elsewhere: the copies read their own data and weights
    for recipe in (dest / "sms-spam-minilm-bitfit.yaml", written[0]):
        loaded = validate(recipe)
        assert str(REPO) not in str(loaded.resolved)
    head = (dest / "sms-spam-minilm-bitfit.yaml").read_text().splitlines()[0]
    assert head.startswith("# yaml-language-server: $schema=file://")
    assert head.endswith("recipe.schema.json")
    # a second copy never overwrites silently
    assert main(["recipes", "copy", "sms-spam-minilm-bitfit", str(dest)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["recipes", "copy", "sms-spam-minilm-bitfit", str(dest), "--force"]) == 0


def test_copy_an_accelerate_config(tmp_path):
    written = copy_shipped("accelerate/fsdp", tmp_path)
    assert [p.name for p in written] == ["fsdp.yaml"]


def _site_packages(venv: Path) -> Path:
    return Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))


@pytest.mark.slow
def test_wheel_ships_recipes_and_configs(tmp_path):
    """Build the wheel, install it (no dependencies downloaded: they come from this environment)
    into a fresh venv, list, copy, validate the copy."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md"):
        shutil.copy2(REPO / name, src / name)
    for name in ("sft_hub", "recipes", "accelerate_configs"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", str(src), "-w", str(dist)], check=True, cwd=src,
                   stdout=subprocess.DEVNULL)
    wheel = next(dist.glob("sft_hub-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "sft_hub/_shipped/recipes/quickstart/sms-spam-minilm-full.yaml" in names
    assert "sft_hub/_shipped/recipes/quickstart/data/sms_spam/train.csv" in names
    assert "sft_hub/_shipped/recipes/recipe.schema.json" in names
    assert "sft_hub/_shipped/accelerate_configs/multi_gpu.yaml" in names

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    # the dependencies come from this environment (not this checkout's editable sft_hub)
    (_site_packages(venv) / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"),
                    "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True)
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def run(*args: str) -> str:
        proc = subprocess.run([str(venv / "bin" / "sft-hub"), *args], cwd=work, env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout

    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import sft_hub.shipped as s; "
                            "print(s.shipped_dir('recipes'))"], cwd=work, env=env,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert where == str(_site_packages(venv) / "sft_hub" / "_shipped" / "recipes")
    listing = run("recipes", "list")
    assert "quickstart/sms-spam-minilm-full" in listing and "accelerate/multi_gpu" in listing
    run("recipes", "copy", "sms-spam-minilm-full", "mine")
    run("recipes", "copy", "accelerate/cpu_2proc")
    assert (work / "mine" / "data" / "sms_spam" / "train.csv").is_file()
    assert (work / "cpu_2proc.yaml").is_file()
    head = (work / "mine" / "sms-spam-minilm-full.yaml").read_text().splitlines()[0]
    assert str(_site_packages(venv)) in head  # the installed schema file
    proc = subprocess.run([str(venv / "bin" / "sft-hub"), "validate", "-q",
                           "mine/sms-spam-minilm-full.yaml"], cwd=work, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "is valid" in proc.stderr
