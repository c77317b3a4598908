"""How many processes ``datasets.map`` preprocessing uses: one for small data (starting processes
costs more than it saves), several once the data is large. Part of the speed defaults
(``training.speed_defaults: false`` keeps one process); the results are cached by ``datasets``
either way, so a second run of the same recipe does not tokenize again."""
from __future__ import annotations

import os
from typing import Optional

#: Rows each preprocessing process should at least get.
ROWS_PER_PROCESS = 25_000
MAX_PROCESSES = 8


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def map_processes(rows: int, *, enabled: bool = True, cpus: Optional[int] = None) -> Optional[int]:
    """``num_proc`` for ``datasets.map`` over ``rows`` rows (None: one process)."""
    if not enabled:
        return None
    cpus = available_cpus() if cpus is None else cpus
    n = min(cpus, rows // ROWS_PER_PROCESS, MAX_PROCESSES)
    return n if n >= 2 else None
