"""A small name -> class registry filled by importing every module of a package.

Adding a task or a strategy is one module with a ``@REGISTRY.register`` class: this finds it.
Modules must stay cheap to import (no torch at module level) so that ``sft-hub validate`` is fast.
"""
from __future__ import annotations

import difflib
import importlib
import pkgutil
from typing import Generic, TypeVar

from .errors import RecipeError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, package: str, kind: str):
        self.package = package
        self.kind = kind
        self._items: dict[str, type[T]] = {}
        self._loaded = False

    def register(self, cls: type[T]) -> type[T]:
        self._items[cls.name] = cls
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
