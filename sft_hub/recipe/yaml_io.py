"""Safe YAML reading and writing for recipes.

The loader is ``yaml.SafeLoader`` (recipes are data, never code) with three fixes users expect:
``3e-5`` is a float (YAML 1.1 wants ``3.0e-5``), ``no``/``yes``/``on``/``off`` are strings (only
``true``/``false`` are booleans, as in YAML 1.2), and a key repeated in one mapping is an error
instead of silently keeping the last value. Merge keys (``<<: *defaults``) work.

Recipes come from Hub repositories anyone can write, so reading one is bounded (:data:`LIMITS`):
the text size, the length of one value, the nesting depth and the number of nodes *after* alias
expansion (a "billion laughs" alias bomb is refused while it is being composed, before anything is
built). Mapping keys must be strings (or integers, e.g. label ids); lists, mappings, ``null``,
booleans and floats as keys are errors naming the line.
"""
from __future__ import annotations

import re
from typing import Any

import yaml

from ..errors import RecipeError


# Far above any real recipe (the shipped ones are under 3 KB, 100 nodes, depth 5), far below what
# takes time or memory to read.
LIMITS = {"bytes": 256 * 1024, "scalar_chars": 64 * 1024, "depth": 40, "nodes": 10_000}


class _TooBig(Exception):
    def __init__(self, what: str, mark=None):
        self.what, self.mark = what, mark


class RecipeLoader(yaml.SafeLoader):
    """SafeLoader that counts what it composes: every node, aliases counted at their full size."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0
        self._sizes: dict[int, int] = {}  # id(anchored node) -> nodes it stands for

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            node = self.anchors.get(event.anchor)
            if node is not None:
                self._count(self._sizes.get(id(node), 1), event.start_mark)
            return super().compose_node(parent, index)
        event = self.peek_event()
        self._depth += 1
        if self._depth > LIMITS["depth"]:
            raise _TooBig(f"nested deeper than {LIMITS['depth']} levels", event.start_mark)
        if isinstance(event, yaml.ScalarEvent) and len(event.value) > LIMITS["scalar_chars"]:
            raise _TooBig(f"a value is longer than {LIMITS['scalar_chars']:,} characters",
                          event.start_mark)
        before = self._nodes
        self._count(1, event.start_mark)
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if getattr(event, "anchor", None):
            self._sizes[id(node)] = self._nodes - before
        return node

    def _count(self, n: int, mark) -> None:
        self._nodes += n
        if self._nodes > LIMITS["nodes"]:
            raise _TooBig(f"more than {LIMITS['nodes']:,} values (aliases counted at the size they "
                          "expand to)", mark)


# YAML 1.2 booleans: only true/false. YAML 1.1 also reads yes/no/on/off as booleans, which turns
# `eval_strategy: no` into False; here they stay strings.
RecipeLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                  |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                  |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                  |[-+]?\.(?:inf|Inf|INF)
                  |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


class _DuplicateKey(Exception):
    def __init__(self, key, mark):
        self.key, self.mark = key, mark


class _BadKey(Exception):
    def __init__(self, key, mark):
        self.key, self.mark = key, mark


def _construct_mapping(loader: RecipeLoader, node: yaml.MappingNode, deep: bool = False):
    seen = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # `<<: *defaults`: merged below; the mapping's own keys win
        if not isinstance(key_node, yaml.ScalarNode):
            raise _BadKey("a list" if isinstance(key_node, yaml.SequenceNode) else "a mapping",
                          key_node.start_mark)
        key = loader.construct_object(key_node, deep=deep)
        if not isinstance(key, (str, int)) or isinstance(key, bool):
            raise _BadKey(repr(key), key_node.start_mark)
        if key in seen:
            raise _DuplicateKey(key, key_node.start_mark)
        seen.add(key)
    loader.flatten_mapping(node)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


RecipeLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _line(mark) -> str:
    return f" (line {mark.line + 1})" if mark is not None else ""


def parse_yaml(text: str, *, source: str) -> Any:
    """Parse YAML text within :data:`LIMITS`; errors name the source and line."""
    size = len(text.encode("utf-8", "surrogatepass")) if len(text) * 4 > LIMITS["bytes"] else 0
    if size > LIMITS["bytes"]:
        raise RecipeError(f"the recipe is {size:,} bytes; recipes are limited to "
                          f"{LIMITS['bytes']:,} bytes", file=source,
                          hint="a recipe holds settings, not data: put data in data.files")
    try:
        return yaml.load(text, Loader=RecipeLoader)  # noqa: S506 - RecipeLoader is a SafeLoader
    except _DuplicateKey as e:
        raise RecipeError(f"key {e.key!r} appears twice in the same mapping (line {e.mark.line + 1})",
                          file=source, hint="keep one of the two") from None
    except _BadKey as e:
        raise RecipeError(f"a mapping key is {e.key}{_line(e.mark)}; keys must be names",
                          file=source, hint="write the key as a plain name (quote it if needed)"
                          ) from None
    except _TooBig as e:
        raise RecipeError(f"the recipe is too large to read: {e.what}{_line(e.mark)}", file=source,
                          hint="recipes are small mappings of settings; this one looks generated "
                               "or hostile") from None
    except RecursionError:
        raise RecipeError("the recipe is nested too deeply to read", file=source) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise RecipeError(f"not valid YAML{where}: {problem}", file=source,
                          hint="check indentation and quoting around that line") from None
    except (ValueError, TypeError, AttributeError, OverflowError) as e:  # e.g. `!!int abc`
        raise RecipeError(f"not valid YAML: {type(e).__name__}: {str(e)[:200]}", file=source,
                          hint="check the explicit tags (!!int, !!float, ...) and their values"
                          ) from None


def parse_scalar(text: str) -> Any:
    """Type a command-line override value the way YAML would (``3e-5`` -> float, ``true`` -> bool)."""
    if text == "":
        return ""
    return parse_yaml(text, source="command line")


def dump_yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False)
