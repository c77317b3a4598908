"""The recipes and accelerate configs that ship with sft-hub: ``sft-hub recipes list / show / copy``.

In a source checkout (or an editable install) they are the repository's ``recipes/`` and
``accelerate_configs/`` folders; in an installed wheel, the same folders inside the package
(``sft_hub/_shipped/``, copied there when the wheel is built, see ``setup.py``). A recipe is
named by its path without the extension (``quickstart/sms-spam-minilm-full``) or, when that is
unique, by its file name alone (``sms-spam-minilm-full``); an accelerate config by
``accelerate/<name>`` or its file name.

``copy`` writes the recipe together with what it reads from beside itself (the files and
folders of ``data.files`` and ``model.path``, the recipes it ``extends``), keeping their relative
places, so a copied offline recipe trains where it was copied to. ``pkg:`` weights stay in their
pip package; Hub ids stay Hub ids. The ``yaml-language-server`` schema comment is pointed at the
installed schema file.
"""
from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from .console import render, table
from .errors import SftHubError
from .recipe.load import PATH_FIELDS
from .recipe.yaml_io import parse_yaml

PACKAGE_DIR = Path(__file__).resolve().parent
SHIPPED = "_shipped"  # inside the installed package
RECIPES, CONFIGS = "recipes", "accelerate_configs"
SCHEMA_FILE = "recipe.schema.json"  # in the recipes folder
ACCELERATE = "accelerate"  # name prefix of accelerate configs
SUPPORT_DIRS = ("data", "models")  # folders beside recipes that hold what they read
MODELINE = re.compile(r"^#\s*yaml-language-server:\s*\$schema=(\S+)\s*$", re.MULTILINE)


class ShippedError(SftHubError):
    pass


def shipped_dir(kind: str) -> Path:
    """The folder holding the shipped ``recipes`` or ``accelerate_configs``."""
    for candidate in (PACKAGE_DIR / SHIPPED / kind, PACKAGE_DIR.parent / kind):
        if candidate.is_dir():
            return candidate
    raise ShippedError(f"the shipped {kind} are missing from this installation ({PACKAGE_DIR})",
                       hint="reinstall sft-hub from its repository (pip install <clone or wheel>)")


@dataclass(frozen=True)
class Shipped:
    name: str  # quickstart/sms-spam-minilm-full, accelerate/multi_gpu
    kind: str  # "recipe" or "accelerate config"
    path: Path

    @property
    def description(self) -> str:
        """The first paragraph of the file's header comment, up to its first sentence."""
        words: list[str] = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            if not line.startswith("#") or MODELINE.match(line):
                if words or not line.startswith("#"):
                    break
                continue
            text = line.lstrip("#").strip()
            if not text:
                if words:
                    break
                continue
            words.append(text)
        paragraph = " ".join(words)
        end = paragraph.find(". ")
        return paragraph[:end + 1] if end > 0 else paragraph


def _is_recipe(path: Path, root: Path) -> bool:
    parts = path.relative_to(root).parts
    return path.suffix in (".yaml", ".yml") and not any(p in SUPPORT_DIRS for p in parts[:-1])


def catalog() -> list[Shipped]:
    """Every shipped recipe and accelerate config, sorted by name."""
    recipes_root = shipped_dir(RECIPES)
    out = [Shipped(p.relative_to(recipes_root).with_suffix("").as_posix(), "recipe", p)
           for p in sorted(recipes_root.rglob("*.y*ml")) if _is_recipe(p, recipes_root)]
    configs_root = shipped_dir(CONFIGS)
    out += [Shipped(f"{ACCELERATE}/{p.stem}", "accelerate config", p)
            for p in sorted(configs_root.glob("*.y*ml"))]
    return out


def find(name: str) -> Shipped:
    """The shipped recipe or config called ``name`` (full name, file name, with or without .yaml)."""
    wanted = re.sub(r"\.ya?ml$", "", name.strip().strip("/"))
    items = catalog()
    exact = [s for s in items if s.name == wanted]
    if exact:
        return exact[0]
    by_stem = [s for s in items if s.path.stem == wanted.rsplit("/", 1)[-1]
               and s.name.endswith(wanted)]
    if len(by_stem) == 1:
        return by_stem[0]
    if by_stem:
        raise ShippedError(f"{name!r} names several shipped files: "
                           f"{', '.join(s.name for s in by_stem)}", hint="give the full name")
    import difflib

    close = difflib.get_close_matches(wanted, [s.name for s in items] +
                                      [s.path.stem for s in items], n=1, cutoff=0.5)
    raise ShippedError(f"no shipped recipe or accelerate config named {name!r}"
                       + (f"; did you mean {close[0]!r}?" if close else ""),
                       hint="sft-hub recipes list")


def format_list(items: Optional[list[Shipped]] = None) -> str:
    """The ``recipes list`` table (rich, plain text off a terminal)."""
    items = catalog() if items is None else items
    parts = []
    for kind, title in (("recipe", "Recipes"), ("accelerate config", "Accelerate configs")):
        rows = [[s.name, s.description] for s in items if s.kind == kind]
        if rows:
            parts.append(render(table(["name", "description"], rows, title=title, text=True)))
    return "\n\n".join(parts) + ("\n\nsft-hub recipes show NAME | sft-hub recipes copy NAME [DEST]"
                                 if parts else "")


def _local_refs(recipe: Path) -> list[str]:
    """The relative paths a recipe file reads from beside itself (PATH_FIELDS and extends)."""
    data = parse_yaml(recipe.read_text(encoding="utf-8"), source=str(recipe)) or {}
    refs: list[str] = []
    parents = data.get("extends")
    refs += [p for p in ([parents] if isinstance(parents, str) else parents or [])
             if isinstance(p, str)]
    for dotted in PATH_FIELDS:
        node = data
        for part in dotted.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        values = node.values() if isinstance(node, dict) else [node]
        for v in values:
            refs += [x for x in (v if isinstance(v, list) else [v]) if isinstance(x, str)]
    return [r for r in refs if ":" not in r.split("/")[0] and not Path(r).is_absolute()
            and ".." not in Path(r).parts]


def copy_plan(item: Shipped, dest: Union[str, Path, None] = None) -> dict[Path, Path]:
    """{source: target} for copying ``item`` (recipes: with what they read beside themselves)."""
    dest = Path(dest) if dest is not None else Path(".")
    target = dest if dest.suffix in (".yaml", ".yml") else dest / item.path.name
    plan = {item.path: target}
    if item.kind != "recipe":
        return plan
    todo = [(item.path, target)]
    while todo:
        source, to = todo.pop()
        for ref in _local_refs(source):
            src = source.parent / ref
            if not src.exists():
                continue
            if src.suffix in (".yaml", ".yml") and src.is_file() and src not in plan:  # extends
                plan[src] = to.parent / ref
                todo.append((src, to.parent / ref))
                continue
            # the folder holding the file (its README and licence, sibling splits) when nested
            unit = Path(ref).parent if len(Path(ref).parts) > 1 else Path(ref)
            plan[source.parent / unit] = to.parent / unit
    return plan


def copy_shipped(name: str, dest: Union[str, Path, None] = None, *,
                 force: bool = False) -> list[Path]:
    """Copy a shipped recipe (with its local data and weights) or accelerate config; returns the
    written paths, the recipe or config first. Existing files are kept unless ``force``."""
    item = find(name)
    plan = copy_plan(item, dest)
    clashes = [t for s, t in plan.items() if t.exists() and not force]
    if clashes:
        raise ShippedError(f"{clashes[0]} already exists", hint="choose another destination, or "
                           "pass --force to replace the copied files")
    written = []
    for source, target in plan.items():
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__", ".*"))
        elif source.suffix in (".yaml", ".yml"):
            target.write_text(_point_modeline(source.read_text(encoding="utf-8")),
                              encoding="utf-8")
        else:
            shutil.copy2(source, target)
        written.append(target)
    return written


def _point_modeline(text: str) -> str:
    """The copy's schema comment names the installed schema file (valid wherever it is copied)."""
    schema = shipped_dir(RECIPES) / SCHEMA_FILE
    return MODELINE.sub(f"# yaml-language-server: $schema={schema.as_uri()}", text, count=1)
