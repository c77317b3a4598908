"""Safe YAML reading and writing for recipes.

The loader is ``yaml.SafeLoader`` (recipes are data, never code) with three fixes users expect:
``3e-5`` is a float (YAML 1.1 wants ``3.0e-5``), ``no``/``yes``/``on``/``off`` are strings (only
``true``/``false`` are booleans, as in YAML 1.2), and a key repeated in one mapping is an error
instead of silently keeping the last value.
"""
from __future__ import annotations

import re
from typing import Any

import yaml

from ..errors import RecipeError


class RecipeLoader(yaml.SafeLoader):
    pass


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


def _construct_mapping(loader: RecipeLoader, node: yaml.MappingNode, deep: bool = False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise _DuplicateKey(key, key_node.start_mark)
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


RecipeLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def parse_yaml(text: str, *, source: str) -> Any:
    """Parse YAML text; errors name the source and line."""
    try:
        return yaml.load(text, Loader=RecipeLoader)  # noqa: S506 - RecipeLoader is a SafeLoader
    except _DuplicateKey as e:
        raise RecipeError(f"key {e.key!r} appears twice in the same mapping (line {e.mark.line + 1})",
                          file=source, hint="keep one of the two") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise RecipeError(f"not valid YAML{where}: {problem}", file=source,
                          hint="check indentation and quoting around that line") from None


def parse_scalar(text: str) -> Any:
    """Type a command-line override value the way YAML would (``3e-5`` -> float, ``true`` -> bool)."""
    if text == "":
        return ""
    return parse_yaml(text, source="command line")


def dump_yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False)
