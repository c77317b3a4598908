"""Files written whole or not at all: through a temporary sibling, renamed over the target.

The temporary name carries the process id, so several processes writing the same file (sweep
workers finishing together) never rename each other's half-written copy; the last rename wins,
and a reader only ever sees a complete file.
"""
from __future__ import annotations

import os
from pathlib import Path


def temporary_sibling(path: Path) -> Path:
    """A hidden name beside ``path`` that only this process writes."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def write_text_atomic(path: Path, text: str) -> None:
    tmp = temporary_sibling(path)
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
