"""Atomic file writing (no ``bpy``): a file appears whole under its final name, or not at all.

    with atomic_file(path) as tmp:      # a hidden temporary name in the same folder
        image.save(tmp)                 # any writer that takes a path
    # now ``path`` is the new file; on an exception nothing is left behind

The temporary name keeps the final suffix (so writers that choose the format from it, such as
Pillow or Blender's renderer, write the right format) unless ``keep_suffix=False`` (for files
that readers find by globbing for that suffix, such as dataset shards). The file gets the
permissions a newly created file would get (``0o666`` less the umask), not ``mkstemp``'s 0o600.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["atomic_file", "write_bytes_atomic", "write_json_atomic", "write_text_atomic"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_file(path: str | os.PathLike[str], keep_suffix: bool = True, mode: int = 0o666) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` when the block succeeds.

    The folder must exist. ``mode`` is masked with the process umask."""
    out = Path(path)
    suffix = ".partial" + (out.suffix if keep_suffix else "")
    fd, name = tempfile.mkstemp(prefix=f".{out.stem}.", suffix=suffix, dir=out.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, mode & ~_umask())
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike[str], obj: Any, indent: int | None = 2) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=indent))
