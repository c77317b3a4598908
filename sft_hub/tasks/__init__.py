"""Tasks: one module per task, registered by name (``text-classification``, ...); registration
checks that the class declares its whole contract (:meth:`Task.check_contract`)."""
from __future__ import annotations

from ..registry import Registry
from .base import Task

TASKS: Registry[Task] = Registry(__name__, "task", check=lambda cls: cls.check_contract())


def get_task_class(name: str) -> type[Task]:
    return TASKS.get(name, field="task")
