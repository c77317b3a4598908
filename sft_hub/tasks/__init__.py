"""Tasks: one module per task, registered by name (``text-classification``, ...)."""
from __future__ import annotations

from ..registry import Registry
from .base import Task

TASKS: Registry[Task] = Registry(__name__, "task")


def get_task_class(name: str) -> type[Task]:
    return TASKS.get(name, field="task")
