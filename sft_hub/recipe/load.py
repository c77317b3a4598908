"""Load a recipe: read YAML, follow ``extends:``, apply ``key.sub=value`` overrides, validate.

Every leaf value remembers the file it came from (or ``command line``), so an error names the file
that holds the mistake, and a relative path is resolved against the directory of the file that
wrote it.
"""
from __future__ import annotations

import copy
import difflib
import os
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Union

from ..errors import RecipeError
from ..hub_refs import HubRef, fetch_recipe, is_hub_ref, parse_hf_ref
from .schema import HUB_ANY, HUB_PER_KEY, RecipeBase, field_hub_policy, hub_policy_problem
from .training_keys import check_training, training_hub_policy
from .yaml_io import LIMITS as YAML_LIMITS
from .yaml_io import dump_yaml, parse_scalar, parse_yaml

COMMAND_LINE = "command line"
# The most recipe files one recipe may be composed of (its `extends` chains): a real recipe has a
# handful; a long chain is a mistake or an attack (each file may be a Hub download).
MAX_EXTENDS_FILES = 32
# Top-level keys starting with this hold YAML anchors to reuse (`x-defaults: &d {...}`, then
# `<<: *d` or `*d` elsewhere), as in Docker Compose; they are not settings and are not kept.
ANCHOR_PREFIX = "x-"
# Recipe fields that hold local paths (dotted prefixes): resolved against the file that set them.
PATH_FIELDS = ("data.files", "model.path")
Origins = dict[tuple, str]


@dataclass
class LoadedRecipe:
    recipe: RecipeBase
    path: str  # the top-level recipe reference as given (file path or hf:// URL)
    base_dir: Path  # directory that relative paths in `resolved` are relative to
    resolved: dict[str, Any]  # the merged, overridden recipe as plain data (what gets saved)
    origins: Origins = field(default_factory=dict)

    @property
    def name(self) -> str:
        stem = self.path.rstrip("/").split("/")[-1].split("@")[0]
        return stem.rsplit(".", 1)[0] if stem.endswith((".yaml", ".yml")) else stem

    def to_dict(self, relative_to: Union[str, os.PathLike, None] = None) -> dict[str, Any]:
        """The validated recipe with every default filled in: exactly what runs.

        ``relative_to``: a directory the recipe will be saved in; local paths are rewritten to stay
        valid from there (a recipe's relative paths are relative to its own file).
        """
        data = self.recipe.model_dump(mode="json", exclude_none=True)
        if relative_to is not None:
            _rebase_paths(data, self.base_dir, Path(relative_to).resolve())
        order = ("task", "model", "data", "strategy", "training", "output", "hub")
        return {k: data[k] for k in sorted(data, key=lambda k: order.index(k) if k in order else 99)}

    def to_yaml(self, relative_to: Union[str, os.PathLike, None] = None) -> str:
        return dump_yaml(self.to_dict(relative_to))


def _read(ref: str) -> tuple[str, str, Path]:
    """(text, display name, base directory) for a local file or an hf:// reference."""
    if is_hub_ref(ref):
        return _read_text(Path(fetch_recipe(ref)), ref), ref, Path.cwd()
    path = Path(ref)
    if not path.is_file():
        raise RecipeError("recipe file not found" if not path.exists() else "recipe path is not a file",
                          file=str(ref), hint="check the path (relative to the current directory)")
    return _read_text(path, str(ref)), str(ref), path.resolve().parent


def _read_text(path: Path, shown: str) -> str:
    """The text of a recipe file, refusing one too big to be a recipe before reading it."""
    try:
        size = path.stat().st_size
        if size > YAML_LIMITS["bytes"]:
            raise RecipeError(f"the recipe is {size:,} bytes; recipes are limited to "
                              f"{YAML_LIMITS['bytes']:,} bytes", file=shown,
                              hint="a recipe holds settings, not data: put data in data.files")
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise RecipeError(f"cannot read recipe: {e}", file=shown) from None


def _deep_merge(base: dict, over: dict, base_origins: Origins, over_origins: Origins,
                prefix: tuple = ()) -> tuple[dict, Origins]:
    out = copy.deepcopy(base)
    origins = dict(base_origins)
    for key, value in over.items():
        path = prefix + (key,)
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key], origins = _deep_merge(out[key], value, origins, over_origins, path)
        else:
            origins = {p: o for p, o in origins.items() if p[:len(path)] != path}
            out[key] = copy.deepcopy(value)
            origins.update({p: o for p, o in over_origins.items() if p[:len(path)] == path})
    return out, origins


def _leaf_origins(data: Any, source: str, prefix: tuple = ()) -> Origins:
    if isinstance(data, dict) and data:
        out: Origins = {}
        for k, v in data.items():
            out.update(_leaf_origins(v, source, prefix + (k,)))
        return out
    return {prefix: source}


def _rebase_paths(data: dict, source_dir: Path, top_dir: Path) -> None:
    """Rewrite relative paths in PATH_FIELDS from ``source_dir`` to be relative to ``top_dir``."""
    if source_dir == top_dir:
        return

    def rebase(v):
        if isinstance(v, str) and v and not os.path.isabs(v) and ":" not in v.split("/")[0]:
            return os.path.relpath(source_dir / v, top_dir)
        return v

    for dotted in PATH_FIELDS:
        *parents, last = dotted.split(".")
        node = data
        for p in parents:
            node = node.get(p) if isinstance(node, dict) else None
        if not isinstance(node, dict) or last not in node:
            continue
        value = node[last]
        if isinstance(value, dict):
            node[last] = {k: ([rebase(x) for x in v] if isinstance(v, list) else rebase(v))
                          for k, v in value.items()}
        elif isinstance(value, list):
            node[last] = [rebase(x) for x in value]
        else:
            node[last] = rebase(value)


def _load_tree(ref: str, top_dir: Path | None, chain: tuple[str, ...],
               as_written: dict[tuple, Any]) -> tuple[dict, Origins, Path]:
    """Read ``ref`` and its ``extends`` chain. ``as_written`` collects the leaves of Hub files
    before their paths are rebased (the Hub-recipe policy judges what the file says)."""
    key = ref if is_hub_ref(ref) else str(Path(ref).resolve())
    if key in chain:
        cycle = " -> ".join([*chain[chain.index(key):], key])
        raise RecipeError(f"extends forms a cycle: {cycle}", file=chain[-1], field="extends",
                          hint="remove one of the extends links")
    files_read = as_written.setdefault(_FILES_READ, [0])
    files_read[0] += 1
    if files_read[0] > MAX_EXTENDS_FILES:
        raise RecipeError(f"the extends chain reads more than {MAX_EXTENDS_FILES} recipe files "
                          f"(stopped at {ref})", file=chain[0] if chain else ref, field="extends",
                          hint="a recipe extends a few base recipes; flatten the chain")
    text, source, base_dir = _read(ref)
    data = parse_yaml(text, source=source)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"a recipe must be a YAML mapping of sections, got {type(data).__name__}",
                          file=source, hint="start the file with `task:`, `model:`, `data:` ...")
    top_dir = top_dir or base_dir
    for key in [k for k in data if isinstance(k, str) and k.startswith(ANCHOR_PREFIX)]:
        del data[key]  # holds YAML anchors for `<<:` merge keys and `*aliases`; not a setting
    parent = data.pop("extends", None)
    if is_hub_ref(source):
        as_written.update({leaf: _value_at(data, leaf) for leaf in _leaf_origins(data, source)})
    _rebase_paths(data, base_dir, top_dir)
    origins = _leaf_origins(data, source)
    if parent is None:
        return data, origins, base_dir
    parents = parent if isinstance(parent, list) else [parent]
    merged: dict = {}
    merged_origins: Origins = {}
    for p in parents:
        if not isinstance(p, str):
            raise RecipeError("extends must be a path (or a list of paths)", file=source,
                              field="extends")
        if is_hub_ref(p):
            p_ref = p
        elif is_hub_ref(ref):
            p_ref = _beside_in_repo(ref, p, source)
        else:
            p_ref = str(base_dir / p)
        base_data, base_origins, _ = _load_tree(p_ref, top_dir, chain + (key,), as_written)
        merged, merged_origins = _deep_merge(merged, base_data, merged_origins, base_origins)
    merged, merged_origins = _deep_merge(merged, data, merged_origins, origins)
    return merged, merged_origins, base_dir


def _beside_in_repo(ref: str, path: str, source: str) -> str:
    """``extends: path`` of the Hub recipe ``ref``: a file of the same repository and revision,
    relative to the recipe's folder; it may not climb out of the repository."""
    hub_ref = parse_hf_ref(ref)
    folder = posixpath.dirname(hub_ref.path)
    inside = posixpath.normpath(posixpath.join(folder, path.replace("\\", "/")))
    if path.startswith("/") or inside == ".." or inside.startswith("../"):
        raise RecipeError(f"extends {path!r} climbs out of the repository {hub_ref.repo_id}",
                          file=source, field="extends",
                          hint="extend a file inside the same repository, or a full hf:// reference")
    return HubRef(hub_ref.repo_id, inside, hub_ref.revision, hub_ref.repo_type).url()


def parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise RecipeError(f"override {item!r} is not of the form key.sub=value", file=COMMAND_LINE,
                          hint="e.g. training.learning_rate=3e-5")
    key, value = item.split("=", 1)
    parts = [p for p in key.strip().split(".")]
    if not all(parts):
        raise RecipeError(f"override key {key!r} is malformed", file=COMMAND_LINE,
                          hint="use dotted section names, e.g. data.max_train_samples=100")
    return parts, parse_scalar(value)


def apply_overrides(data: dict, origins: Origins, overrides: Iterable[str],
                    top_dir: Path) -> tuple[dict, Origins]:
    for item in overrides:
        parts, value = parse_override(item)
        if value is None:  # key=null unsets the key (back to the schema default)
            node = data
            for p in parts[:-1]:
                node = node.get(p) if isinstance(node, dict) else None
            if isinstance(node, dict):
                node.pop(parts[-1], None)
            origins = {k: o for k, o in origins.items() if k[:len(parts)] != tuple(parts)}
            continue
        over: dict = {}
        node = over
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
        _rebase_paths(over, Path.cwd().resolve(), top_dir)
        data, origins = _deep_merge(data, over, origins, _leaf_origins(over, COMMAND_LINE))
    return data, origins


RecipeModels = Callable[[str], type[RecipeBase]]
_FILES_READ = ("<files read>",)  # key in `as_written` counting the files of one load


def load_recipe(ref: Union[str, os.PathLike], overrides: Iterable[str] = (), *,
                recipe_model: RecipeModels) -> LoadedRecipe:
    """Read, compose and validate a recipe. Raises :class:`RecipeError` with every problem found.

    ``recipe_model(task)`` gives the full schema of a task's recipes; it comes from the composition
    root (:mod:`sft_hub.catalog`, whose ``load_recipe`` is the one to call), since this layer does
    not know which tasks and strategies exist.
    """
    ref = str(ref)
    as_written: dict[tuple, Any] = {}
    data, origins, base_dir = _load_tree(ref, None, (), as_written)
    as_written.pop(_FILES_READ, None)
    data, origins = apply_overrides(data, origins, overrides, base_dir)
    recipe = validate_data(data, origins, source=ref, recipe_model=recipe_model)
    _check_hub_policy(recipe, origins, as_written)
    return LoadedRecipe(recipe=recipe, path=ref, base_dir=base_dir, resolved=data, origins=origins)


def load_variant(loaded: LoadedRecipe, values: dict[str, Any], *, source: str,
                 recipe_model: RecipeModels, drop: Iterable[str] = ()) -> LoadedRecipe:
    """``loaded`` with ``values`` set at dotted keys (a sweep trial, a corner of its space),
    validated like any recipe; ``drop``: top-level sections to remove (``sweep``).

    ``source`` is the file that wrote the values: errors name it, relative paths in them are
    relative to it, and a recipe from the Hub is held to the same rules as for its own keys (a
    value replaces a section or a key; it is not merged into a section).
    """
    data = copy.deepcopy(loaded.resolved)
    for section in drop:
        data.pop(section, None)
    origins = {k: o for k, o in loaded.origins.items() if k[0] not in set(drop)}
    written: dict[tuple, Any] = {}
    for dotted, value in values.items():
        parts = tuple(dotted.split("."))
        over: dict = {}
        node = over
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = copy.deepcopy(value)
        leaves = _leaf_origins(over, source)
        if is_hub_ref(source):
            written.update({leaf: _value_at(over, leaf) for leaf in leaves})
        else:
            _rebase_paths(over, Path(source).resolve().parent, loaded.base_dir.resolve())
        node = data
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        node[parts[-1]] = _value_at(over, parts)
        origins = {k: o for k, o in origins.items() if k[:len(parts)] != parts}
        origins.update(_leaf_origins(_value_at(over, parts), source, parts))
    recipe = validate_data(data, origins, source=loaded.path, recipe_model=recipe_model)
    _check_hub_policy(recipe, {leaf: o for leaf, o in origins.items() if leaf in written}, written)
    return LoadedRecipe(recipe=recipe, path=loaded.path, base_dir=loaded.base_dir, resolved=data,
                        origins=origins)


def _value_at(data: Any, path: tuple) -> Any:
    for part in path:
        data = data.get(part) if isinstance(data, dict) else None
    return data


def _leaf_policy(recipe: RecipeBase, leaf: tuple) -> tuple[str, Any, str]:
    """(policy, default, dotted field) for a recipe leaf, from the schema's ``hub=`` marks."""
    node: Any = recipe
    for depth, part in enumerate(leaf):
        fields = type(node).model_fields if hasattr(type(node), "model_fields") else {}
        info = fields.get(part)
        if info is None:
            break
        dotted = ".".join(map(str, leaf[:depth + 1]))
        policy = field_hub_policy(info)
        if policy == HUB_PER_KEY:  # training: each key is classified on its own
            if len(leaf) == depth + 1:
                return HUB_ANY, None, dotted
            return training_hub_policy(str(leaf[depth + 1])), None, f"{dotted}.{leaf[depth + 1]}"
        if policy is not None:
            return policy, info.get_default(call_default_factory=True), dotted
        node = getattr(node, part, None)
    return HUB_ANY, None, ".".join(map(str, leaf))


def _check_hub_policy(recipe: RecipeBase, origins: Origins, as_written: dict[tuple, Any]) -> None:
    """A recipe from the Hub is data: it may not run code on this machine, delete or write
    outside the run directory, publish, or read outside the current directory. The user can
    still ask for any of that, knowingly, on the command line."""
    problems = []
    for leaf, source in sorted(origins.items(), key=lambda item: item[0]):
        if not is_hub_ref(source):
            continue
        policy, default, dotted = _leaf_policy(recipe, leaf)
        value = as_written.get(leaf, _value_at(recipe.model_dump(), leaf))
        if dotted.startswith("training.") and value in (None, False, "none", "", [], {}):
            continue  # a training key written as its "off" value
        why = hub_policy_problem(policy, value, default)
        if why:
            shown = dotted if dotted == ".".join(map(str, leaf)) else ".".join(map(str, leaf))
            problems.append((source, shown, why))
    if not problems:
        return
    first = problems[0][1]
    hint = (f"if you trust this recipe for that, pass {first}=<value> on the command line (a "
            f"command-line value is yours, not the recipe's), or {first}=null to drop it")
    if len(problems) == 1:
        source, dotted, why = problems[0]
        raise RecipeError(why, file=source, field=dotted, hint=hint)
    error = _combine(problems, "")
    error.hint = ("pass each of these keys on the command line if you trust the recipe for it "
                  "(key=<value>), or key=null to drop it")
    raise error


# -- validation and messages ---------------------------------------------------------------------

def _origin(origins: Origins, loc: tuple, default: str) -> str:
    for n in range(len(loc), 0, -1):
        for p, o in origins.items():
            if p[:n] == loc[:n]:
                return o
    return default


def validate_data(data: dict, origins: Origins, *, source: str,
                  recipe_model: RecipeModels) -> RecipeBase:
    from pydantic import ValidationError

    _refuse_secrets(data, origins, source)
    task = data.get("task")
    sections = [*RecipeBase.model_fields, "strategy"]
    unknown = [k for k in data if k not in sections]
    if task is None or unknown:  # name what was written (`tsak:`, `exetnds:`) before what is missing
        problems = [(_origin(origins, (k,), source), str(k),
                     _unknown_key_message(str(k), [*sections, "extends"], "")) for k in unknown]
        if task is None:
            problems.append((source, "task", "required field is missing (add e.g. "
                             "`task: text-classification`)"))
            raise _combine(problems, source)
    if not isinstance(task, str):
        raise RecipeError(f"must be a task name (got {_shown(task)})",
                          file=_origin(origins, ("task",), source), field="task")
    try:
        model_cls = recipe_model(task)
    except RecipeError as e:
        e.file = _origin(origins, ("task",), source)
        raise
    problems: list[tuple[str, str, str]] = []  # (file, dotted field, message)
    recipe = None
    try:
        recipe = model_cls.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            loc, shown = _display_loc(model_cls, err["loc"])
            if err["type"] in ("union_tag_invalid", "union_tag_not_found"):  # the tag is the field
                loc, shown = loc + ("name",), f"{shown}.name"
            problems.append((_origin(origins, loc, source), shown,
                             _message(model_cls, err, loc, shown)))
    training = data.get("training") or {}
    if isinstance(training, dict):
        for key, msg in check_training(training):
            problems.append((_origin(origins, ("training", key), source), f"training.{key}", msg))
    if problems:
        raise _combine(problems, source)
    return recipe


def _shown(value: Any) -> str:
    """A written value for a message: its type for a list or mapping, else a short repr."""
    if isinstance(value, (list, dict)):
        return f"a {'list' if isinstance(value, list) else 'mapping'} ({len(value)} item(s))"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _unknown_key_message(key: str, valid: list[str], prefix: str) -> str:
    """The message for an unknown key (the error's field already names the key written)."""
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    if close:
        return f"unknown key; did you mean {prefix + '.' if prefix else ''}{close[0]}?"
    return f"unknown key; valid keys here: {', '.join(valid)}" if valid else "unknown key"


# A Hugging Face token (hf_ + 30 or more letters and digits); recipes are shared and pushed.
_TOKEN_PATTERN = re.compile(r"hf_[A-Za-z0-9]{30,}")
SECRET_KEYS = ("hub_token", "token", "api_key", "password", "secret")


def _refuse_secrets(data: Any, origins: Origins, source: str, prefix: tuple = ()) -> None:
    """A recipe never holds a token: it is saved with the run and pushed with the model. The
    value is not repeated in the message."""
    if isinstance(data, dict):
        for k, v in data.items():
            path = prefix + (k,)
            if (isinstance(k, str) and k.lower() in SECRET_KEYS and isinstance(v, str) and v) or (
                    isinstance(v, str) and _TOKEN_PATTERN.search(v)):
                raise RecipeError(
                    "holds a secret (a token); recipes are saved with every run and pushed with the "
                    "model, so secrets are refused (the value is not shown here)",
                    file=_origin(origins, path, source), field=".".join(map(str, path)),
                    hint="remove it from the recipe; sft-hub reads the token from HF_TOKEN or "
                         "`hf auth login`")
            _refuse_secrets(v, origins, source, path)
    elif isinstance(data, list):
        for i, v in enumerate(data):
            if isinstance(v, str) and _TOKEN_PATTERN.search(v):
                raise RecipeError("holds a secret (a token); recipes are saved and pushed, so "
                                  "secrets are refused (the value is not shown here)",
                                  file=_origin(origins, prefix, source),
                                  field=".".join(map(str, prefix)),
                                  hint="remove it; the token comes from HF_TOKEN or `hf auth login`")
            _refuse_secrets(v, origins, source, prefix)


def _combine(problems: list[tuple[str, str, str]], source: str) -> RecipeError:
    if len(problems) == 1:
        file, dotted, msg = problems[0]
        return RecipeError(msg, file=file, field=dotted or None)
    lines = [f"{len(problems)} problems:"]
    for file, dotted, msg in problems:
        where = f"{file}: {dotted}" if file != source else dotted
        lines.append(f"  {where}: {msg}" if where else f"  {msg}")
    return RecipeError("\n".join(lines), file=source)


def _unwrap(tp):
    """The pydantic model classes a field annotation may hold (through Optional/Union/Annotated/list)."""
    from typing import get_args

    from pydantic import BaseModel

    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [tp]
    out = []
    for arg in get_args(tp):
        out.extend(_unwrap(arg))
    return out


def _model_at(model_cls, loc: tuple):
    """Walk ``loc`` through nested models; return (model class or None, loc without union tags)."""
    current = [model_cls]
    clean: list = []
    for part in loc:
        nxt = []
        tag_hit = False
        for m in current:
            if part in m.model_fields:
                nxt.extend(_unwrap(m.model_fields[part].annotation))
            tag_field = m.model_fields.get("name")
            if tag_field is not None and str(part) == str(tag_field.default):
                tag_hit = True
                nxt.append(m)
        if tag_hit and len(current) > 1:
            current = [m for m in current if str(m.model_fields["name"].default) == str(part)]
            continue
        clean.append(part)
        current = nxt
        if not current:
            return None, tuple(clean)
    return (current[0] if len(current) == 1 else None), tuple(clean)


def _display_loc(model_cls, loc: tuple) -> tuple[tuple, str]:
    """Drop pydantic's union/function tags from a location and render it dotted."""
    parts = _raw_parts(loc)
    owner, clean = _model_at(model_cls, parts[:-1]) if parts else (model_cls, ())
    full = clean + parts[-1:] if parts else ()
    return full, ".".join(str(p) for p in full)


def _raw_parts(loc: tuple) -> tuple:
    return tuple(p for p in loc if not (isinstance(p, str) and (p.startswith("function-") or
                                                                "[" in p)))


def _message(model_cls, err: dict, loc: tuple, shown: str) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        owner, _ = _model_at(model_cls, _raw_parts(err["loc"])[:-1])
        valid = list(owner.model_fields) if owner is not None else []
        if not loc[:-1]:
            valid.append("extends")
        return _unknown_key_message(str(loc[-1]), valid, ".".join(str(p) for p in loc[:-1]))
    if kind == "missing":
        return "required field is missing"
    if kind in ("union_tag_invalid", "literal_error"):
        expected = err.get("ctx", {}).get("expected_tags") or err.get("ctx", {}).get("expected")
        got = err.get("ctx", {}).get("tag", err.get("input"))
        close = difflib.get_close_matches(str(got), [t.strip(" '") for t in str(expected).replace(
            " or ", ",").split(",")], n=1) if expected else []
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"{got!r} is not one of {expected}{hint}"
    if kind == "union_tag_not_found":
        written = err.get("input")
        keys = [str(k) for k in written] if isinstance(written, dict) else []
        close = difflib.get_close_matches("name", keys, n=1, cutoff=0.5)
        tags = err.get("ctx", {}).get("expected_tags", "")
        if close:
            return f"needs a `name:`; you wrote {close[0]!r}: did you mean name?"
        return f"needs a `name:` (one of {tags})" if tags else "needs a `name:`"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return (f"must be a mapping of keys (e.g. `{loc[-1] if loc else 'section'}:` followed by "
                f"indented `key: value` lines), got {_shown(err.get('input'))}")
    msg = err["msg"]
    if kind == "value_error":
        msg = msg.removeprefix("Value error, ")
    got = err.get("input")
    if not isinstance(got, (dict, list)) and kind not in ("value_error",):
        return f"{msg} (got {got!r})"
    return msg
