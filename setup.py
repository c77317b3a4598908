"""Build hook (all metadata is in pyproject.toml): the wheel ships the repository's ``recipes/``
and ``accelerate_configs/`` inside the package, as ``sft_hub/_shipped/<folder>``, where
``sft-hub recipes list|show|copy`` finds them (sft_hub/shipped.py). A source checkout and an
editable install read the top-level folders directly, so they live in one place only."""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SHIPPED = ("recipes", "accelerate_configs")
ROOT = Path(__file__).resolve().parent


class BuildPyWithShipped(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        for name in SHIPPED:
            target = Path(self.build_lib) / "sft_hub" / "_shipped" / name
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(ROOT / name, target,
                            ignore=shutil.ignore_patterns("__pycache__", "*.py[cod]", ".*"))


setup(cmdclass={"build_py": BuildPyWithShipped})
