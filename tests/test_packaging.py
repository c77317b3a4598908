"""pyproject.toml declares exactly the third-party packages that sft_hub imports."""
from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions

from .conftest import REPO


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def imported_distributions() -> set[str]:
    top_level = set()
    for path in (REPO / "sft_hub").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                top_level |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                top_level.add(node.module.split(".")[0])
    top_level -= set(sys.stdlib_module_names) | {"sft_hub", "__future__"}
    owners = packages_distributions()
    return {_normalise(owners[name][0]) for name in top_level}


# Extras whose packages sft_hub imports (deferred, inside the feature's functions); the CLI names
# the extra when one is missing.
OPTIONAL_FEATURES = ("export",)


def test_export_extra_holds_the_onnx_libraries_and_dev_installs_it():
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"]
    names = {_normalise(re.split(r"[<>=!~\[ ;]", r, maxsplit=1)[0]) for r in extras["export"]}
    assert names == {"onnx", "onnxruntime", "onnxscript"}
    assert any(r.startswith("sft-hub[") and "export" in r for r in extras["dev"])


def test_declared_dependencies_are_the_imported_ones():
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = {_normalise(re.split(r"[<>=!~\[ ;]", req, maxsplit=1)[0])
                for req in project["dependencies"]}
    imported = imported_distributions()
    optional = {_normalise(re.split(r"[<>=!~\[ ;]", req, maxsplit=1)[0])
                for extra in OPTIONAL_FEATURES for req in project["optional-dependencies"][extra]}
    assert imported - declared - optional == set(), "imported but not declared"
    assert declared - imported == set(), "declared but never imported"
