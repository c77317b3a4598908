"""A small name -> class registry filled by importing every module of a package.

Adding a task or a strategy is one module with a ``@REGISTRY.register`` class: this finds it.
Modules must stay cheap to import (no torch at module level) so that ``sft-hub validate`` is fast.
"""
from __future__ import annotations

import difflib
import importlib
import pkgutil
from typing import Callable, Generic, Optional, TypeVar

from .errors import RecipeError

T = TypeVar("T")


class Registry(Generic[T]):
    """``check`` (optional) is called with every class at registration and raises ``TypeError``
    when the class lacks a declared piece of its plugin contract: a plugin that is incomplete fails
    when its module is imported, not when some later command first asks it a question."""

    def __init__(self, package: str, kind: str,
                 check: Optional[Callable[[type[T]], None]] = None):
        self.package = package
        self.kind = kind
        self.check = check
        self._items: dict[str, type[T]] = {}
        self._loaded = False

    def register(self, cls: type[T]) -> type[T]:
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            raise TypeError(f"{self.kind} class {cls.__qualname__} has no name")
        if name in self._items and self._items[name] is not cls:
            raise TypeError(f"{self.kind} {name!r} is registered twice "
                            f"({self._items[name].__qualname__} and {cls.__qualname__})")
        if self.check is not None:
            self.check(cls)
        self._items[name] = cls
        return cls

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        pkg = importlib.import_module(self.package)
        for info in pkgutil.iter_modules(pkg.__path__):
            if not info.name.startswith("_") and info.name != "base":
                importlib.import_module(f"{self.package}.{info.name}")

    def all(self) -> dict[str, type[T]]:
        self._load()
        return dict(sorted(self._items.items()))

    def get(self, name: str, *, field: str) -> type[T]:
        items = self.all()
        if name not in items:
            close = difflib.get_close_matches(str(name), items, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise RecipeError(f"unknown {self.kind} {name!r}", field=field,
                              hint=f"{hint}known {self.kind}s: {', '.join(items)}")
        return items[name]
