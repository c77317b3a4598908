"""The package's import graph: layers bottom up, no cycles, and no module that decides by matching
a plugin's name (it asks the plugin's contract instead).

Layers, bottom up (a module may import its own layer and the ones below):

0. ``errors``, ``files``, ``hub_refs``, ``_version``: messages, atomic files, ``hf://`` references
1. ``recipe/``: schema pieces, YAML, ``extends``, overrides (knows no task or strategy)
2. ``registry``, ``metrics``, ``data/``, ``models/``, ``training_controls``: building blocks
3. ``tasks/``, ``strategies/``: the plugins
4. ``catalog``: the full recipe model from the registries (the composition root)
5. the API: ``validation``, ``training``, ``plan``, ``run_dir``, ``distributed``, ``card``, ``hub``...
6. ``cli``, ``__main__`` and the package's ``__init__``
"""
from __future__ import annotations

import ast
from pathlib import Path

from sft_hub.strategies import STRATEGIES
from sft_hub.tasks import TASKS

from .conftest import REPO

PACKAGE = REPO / "sft_hub"
LAYERS = {
    0: ("errors", "files", "hub_refs", "_version"),
    1: ("recipe",),
    2: ("registry", "metrics", "data", "models", "training_controls"),
    3: ("tasks", "strategies"),
    4: ("catalog",),
    6: ("cli", "__main__", ""),
}
API_LAYER = 5


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def layer_of(module: str) -> int:
    top = module.split(".")[0]
    for layer, names in LAYERS.items():
        if top in names:
            return layer
    return API_LAYER


def _type_checking_only(node: ast.AST, parents: dict) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def import_graph() -> dict[str, set[str]]:
    """module -> the sft_hub modules it imports anywhere (deferred imports too, type-only not)."""
    graph: dict[str, set[str]] = {}
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    for path in PACKAGE.rglob("*.py"):
        name = module_name(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        tree = ast.parse(path.read_text(encoding="utf-8"))
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        targets = graph.setdefault(name, set())
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom) or _type_checking_only(node, parents):
                continue
            if node.level:
                base = package.split(".") if package else []
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            elif (node.module or "").startswith("sft_hub"):
                target = node.module[len("sft_hub."):] if node.module != "sft_hub" else ""
            else:
                continue
            for alias in node.names:  # `from . import x` may name a submodule
                sub = f"{target}.{alias.name}" if target else alias.name
                targets.add(sub if sub in modules else target)
        targets.discard(name)
    return graph


def test_no_import_cycles():
    graph = import_graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                cycle = stack[stack.index(target):] + [target]
                raise AssertionError("import cycle: " + " -> ".join(m or "sft_hub" for m in cycle))
            if target not in state:
                visit(target)
        stack.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)


def test_no_upward_imports():
    upward = [f"{m or 'sft_hub'} (layer {layer_of(m)}) imports {t} (layer {layer_of(t)})"
              for m, targets in import_graph().items() for t in targets
              if layer_of(t) > layer_of(m)]
    assert not upward, "\n".join(upward)


def test_no_module_decides_by_matching_a_plugin_name():
    """``x == "lora"`` / ``x in ("full", "freeze")`` outside the plugin's own module is a seam in
    the wrong place: ask the plugin's contract."""
    names = {*TASKS.all(), *STRATEGIES.all()}
    own = {str(Path(__import__(cls.__module__, fromlist=["x"]).__file__).resolve())
           for cls in [*TASKS.all().values(), *STRATEGIES.all().values()]}
    found = []
    for path in PACKAGE.rglob("*.py"):
        if str(path.resolve()) in own:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Compare):
                continue
            for operand in [node.left, *node.comparators]:
                values = operand.elts if isinstance(operand, (ast.Tuple, ast.List, ast.Set)) else [operand]
                hits = [v.value for v in values if isinstance(v, ast.Constant) and v.value in names]
                if hits:
                    found.append(f"{path.relative_to(REPO)}:{node.lineno}: compares with {hits}")
    assert not found, "\n".join(found)
