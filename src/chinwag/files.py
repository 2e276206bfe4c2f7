"""Files that hold secrets or user data (the SQLite database, the queue, private keys) are made
readable by their owner only, from the moment they exist: created 0600, never chmod-ed later."""

from __future__ import annotations

import os
from pathlib import Path

PRIVATE_MODE = 0o600


def create_private(path: Path) -> None:
    """Create ``path`` empty with mode 0600 if it does not exist (SQLite then gives its -wal
    and -shm files the same mode). An existing file is left as the operator made it."""
    if str(path) in ("", ":memory:") or path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, PRIVATE_MODE)
    except FileExistsError:
        return  # another process created it first
    os.close(descriptor)


def write_private(path: Path, content: bytes) -> None:
    """Write ``content`` through a temporary file created 0600, so neither a half-written file
    nor a readable one is ever seen."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, PRIVATE_MODE)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(content)
    os.replace(temporary, path)


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///`` URL, None for other databases and in-memory ones."""
    for prefix in ("sqlite+pysqlite:///", "sqlite:///"):
        if url.startswith(prefix):
            name = url.removeprefix(prefix).split("?", 1)[0]
            return None if name in ("", ":memory:") else Path(name)
    return None
