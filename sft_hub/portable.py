"""What a run publishes holds nothing of the machine it ran on, and its recipe re-runs elsewhere.

- :func:`portable_run_info` (at training time): ``run_info.json`` records paths relative to the
  run directory or to the directory the run was started in (``workdir``), never absolute ones.
- :func:`scrub_text` (at push time): sft-hub's own files (run_info.json, trainer_state.json,
  metrics.json, reports) get every absolute local path rewritten: relative to the run directory
  or the working directory when inside them, else the file name alone.
- :func:`portable_recipe` (at push time): the pushed ``recipe.yaml`` names local data relative to
  the directory the run was started in (the project root, e.g. ``recipes/quickstart/data/...``),
  which is where a recipe from the Hub looks for them (``sft-hub train --from hf://...`` run from
  a clone of the project finds them); ``output:`` is dropped and ``hub:`` describes the repository
  (``private`` as pushed, no ``push``).
- :func:`check_nothing_private`: the last guard before uploading: no pushed text file holds the
  working directory, the run directory or the home directory.
"""
from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any, Optional

from .errors import HubError
from .hub_refs import is_hub_ref

# An absolute POSIX path inside a text: a "/" that does not continue a word, a URL (://) or a
# relative path, then path characters.
_ABSOLUTE = re.compile(r"(?<![\w.:/~-])/[^\s'\"`,;:()\[\]{}<>=|]*")
WORKDIR_KEY = "workdir"  # run_info.json: the directory the run started in, relative to the run


def _relative_inside(path: Path, base: Path) -> Optional[str]:
    try:
        rel = path.relative_to(base)
    except ValueError:
        return None
    return rel.as_posix() or "."


def private_roots(run_dir: Optional[Path] = None) -> list[Path]:
    """Local directories whose absolute paths must not be published, most specific first."""
    roots = [Path(run_dir).resolve()] if run_dir is not None else []
    roots += [Path.cwd().resolve(), Path.home().resolve()]
    return [r for r in roots if len(r.parts) > 1]  # "/" itself is in every path


def local_path_text(text: str, run_dir: Optional[Path] = None) -> str:
    """One absolute path as it may be published: relative to the run directory or the working
    directory when inside one of them, else its last component."""
    path = Path(text)
    for base in ([Path(run_dir).resolve()] if run_dir is not None else []) + [Path.cwd().resolve()]:
        for candidate in (path, _resolved(path)):
            rel = _relative_inside(candidate, base)
            if rel is not None:
                return rel
    if len(path.parts) < 2 or not Path(*path.parts[:2]).exists():
        return text  # not a path of this machine (e.g. a label such as /m/01g317)
    return path.name or "."


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return path


def scrub_text(text: str, run_dir: Optional[Path] = None) -> str:
    """``text`` with every absolute local path rewritten by :func:`local_path_text`."""
    return _ABSOLUTE.sub(lambda m: local_path_text(m.group(0), run_dir), text)


def scrub(value: Any, run_dir: Optional[Path] = None) -> Any:
    """:func:`scrub_text` applied to every string (and key) of JSON-like data."""
    if isinstance(value, str):
        return scrub_text(value, run_dir)
    if isinstance(value, dict):
        return {scrub(k, run_dir): scrub(v, run_dir) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v, run_dir) for v in value]
    return value


def portable_run_info(info: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """run_info.json without absolute paths, plus where the run started relative to the run
    directory (only ``..`` steps, when the run directory is inside it: nothing private)."""
    out = scrub(info, run_dir)
    rel = os.path.relpath(Path.cwd().resolve(), Path(run_dir).resolve())
    out[WORKDIR_KEY] = rel if all(p == ".." for p in Path(rel).parts) else None
    return out


# -- the pushed recipe ---------------------------------------------------------------------------

def _is_local_ref(value: Any) -> bool:
    return isinstance(value, str) and bool(value) and not value.startswith(("pkg:", "hf://"))


def portable_recipe(recipe: dict[str, Any], run_dir: Path, info: dict[str, Any], *,
                    repo_id: str, private: bool, revision: Optional[str],
                    notes: Optional[list[str]] = None) -> dict[str, Any]:
    """The run's recipe as a teammate re-runs it from the Hub (see the module docstring)."""
    run_dir = Path(run_dir).resolve()
    workdir = info.get(WORKDIR_KEY)
    root = (run_dir / workdir).resolve() if isinstance(workdir, str) else Path.cwd().resolve()
    notes = notes if notes is not None else []
    out = copy.deepcopy(recipe)

    def place(value: str, what: str) -> Optional[str]:
        path = Path(value) if os.path.isabs(value) else run_dir / value
        rel = _relative_inside(_resolved(path), root)
        if rel is not None:
            return rel
        notes.append(f"{what} {path.name} is outside the directory the run started in; the "
                     f"pushed recipe names it as {path.name!r} (relative to where it is re-run)")
        return path.name

    data = out.get("data") if isinstance(out.get("data"), dict) else {}
    files = data.get("files")
    if isinstance(files, dict):
        data["files"] = {split: ([place(v, "data file") for v in value] if isinstance(value, list)
                                 else place(value, "data file")) if value else value
                         for split, value in files.items()}
    if _is_local_ref(data.get("label_names")):
        data["label_names"] = place(data["label_names"], "label names file")
    model = out.get("model") if isinstance(out.get("model"), dict) else {}
    for key in ("path", "processor"):
        value = model.get(key)
        if not _is_local_ref(value) or (key == "processor" and not (run_dir / value).exists()):
            continue
        path = _resolved(Path(value) if os.path.isabs(value) else run_dir / value)
        rel = _relative_inside(path, root)
        if rel is not None:
            model[key] = rel
        else:  # weights outside the project: a re-run downloads model.name instead
            del model[key]
            notes.append(f"model.{key} is outside the directory the run started in, so the pushed "
                         f"recipe leaves it out (a re-run loads {model.get('name')!r} from the Hub)")
    out.pop("output", None)
    hub = {k: v for k, v in (out.get("hub") or {}).items() if k not in ("push", "private")}
    hub.update(repo_id=repo_id, private=bool(private))
    if revision and revision != "main":
        hub["revision"] = revision
    else:
        hub.pop("revision", None)
    out["hub"] = hub
    return out


# -- the last guard ------------------------------------------------------------------------------

def check_nothing_private(texts: dict[str, bytes], run_dir: Path) -> None:
    """Refuse to publish a text that holds the working, run or home directory's absolute path."""
    needles = [str(p).encode() for p in private_roots(run_dir)]
    for name, data in texts.items():
        for needle in needles:
            if needle in data:
                raise HubError(f"refusing to push: {name} holds the local path {needle.decode()!r}",
                               hint="remove the path from that file (pushed files hold no local "
                                    "paths), then push again")


# -- the files of a push --------------------------------------------------------------------------

# Text files other libraries write (model, tokenizer, processor, adapter): published as they are,
# apart from the keys below that may hold the local folder the model was loaded from.
THIRD_PARTY_TEXT = {"config.json", "generation_config.json", "tokenizer.json",
                    "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "vocab.json",
                    "merges.txt", "added_tokens.json", "preprocessor_config.json",
                    "adapter_config.json", "chat_template.jinja", "sentencepiece.bpe.model",
                    "spiece.model", "tokenizer.model"}
PATH_KEYS = ("_name_or_path", "name_or_path", "base_model_name_or_path")
TEXT_SUFFIXES = (".json", ".jsonl", ".yaml", ".yml", ".md", ".txt", ".csv", ".tsv", ".log",
                 ".jinja", ".html", ".svg")


def _fix_path_keys(data: Any, model_name: str) -> Any:
    if isinstance(data, dict):
        return {k: (model_name if k in PATH_KEYS and isinstance(v, str) and os.path.isabs(v)
                    else _fix_path_keys(v, model_name)) for k, v in data.items()}
    if isinstance(data, list):
        return [_fix_path_keys(v, model_name) for v in data]
    return data


def publishable_texts(files: dict[str, Path], run_dir: Path,
                      model_name: str) -> tuple[dict[str, Path], dict[str, bytes]]:
    """Split a push's files into those sent as they are and text rewritten without local paths:
    sft-hub's own text files (run_info.json, trainer_state.json, metrics.json, reports) get
    :func:`scrub_text`; other libraries' JSON configs get their path keys set to the model's
    Hub id (``model.name``) when they hold an absolute path."""
    import json

    keep: dict[str, Path] = {}
    rewritten: dict[str, bytes] = {}
    for name, local in files.items():
        base = name.rsplit("/", 1)[-1]
        if not base.endswith(TEXT_SUFFIXES):
            keep[name] = local
            continue
        text = local.read_text(encoding="utf-8", errors="surrogateescape")
        if base in THIRD_PARTY_TEXT:
            if base.endswith(".json") and any(f'"{k}"' in text for k in PATH_KEYS):
                try:
                    fixed = json.dumps(_fix_path_keys(json.loads(text), model_name), indent=2,
                                       ensure_ascii=False) + "\n"
                except ValueError:
                    fixed = text
                if fixed != text and json.loads(fixed) != json.loads(text):
                    rewritten[name] = fixed.encode("utf-8")
                    continue
            keep[name] = local
            continue
        scrubbed = scrub_text(text, run_dir)
        if scrubbed == text:
            keep[name] = local
        else:
            rewritten[name] = scrubbed.encode("utf-8", errors="surrogateescape")
    return keep, rewritten


def guarded_texts(files: dict[str, Path], generated: dict[str, bytes]) -> dict[str, bytes]:
    """Every text file of a push with its content (for :func:`check_nothing_private`)."""
    out = dict(generated)
    for name, local in files.items():
        if name.endswith(TEXT_SUFFIXES) and name not in out:
            out[name] = local.read_bytes()
    return out


def hub_private(loaded) -> bool:
    """``hub.private`` as a push of this run applies it: a value from a recipe fetched from the
    Hub describes that repository; it never makes *your* push public (say so on the command line)."""
    origin = loaded.origins.get(("hub", "private"), "")
    return True if is_hub_ref(origin) else loaded.recipe.hub.private
