"""The add-on's own temporary folder, for a Reconstruct whose Results setting is empty.

The results are written to ``<system temp>/pix2vertex-<pid>/`` (the texture is packed into the
.blend, so nothing the scene needs stays there) and removed once applied; the folder itself goes
when the add-on is disabled or Blender exits, and folders of Blender processes that no longer run
(killed ones) are removed the next time the add-on is enabled.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import tempfile
from pathlib import Path

PREFIX = "pix2vertex-"
_NAME = re.compile(rf"^{PREFIX}(\d+)$")


def root() -> Path:
    """The temporary folder of this Blender process."""
    return Path(tempfile.gettempdir()) / f"{PREFIX}{os.getpid()}"


def is_scratch(path: str | os.PathLike[str]) -> bool:
    try:
        return Path(path).resolve().is_relative_to(root().resolve())
    except OSError:
        return False


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists (another user's) or cannot tell: leave it
    return True


def remove_own() -> None:
    shutil.rmtree(root(), ignore_errors=True)


def remove_stale() -> list[str]:
    """Remove the temporary folders of pix2vertex processes that are gone; returns their names."""
    removed = []
    try:
        entries = list(Path(tempfile.gettempdir()).iterdir())
    except OSError:
        return removed
    for p in entries:
        m = _NAME.match(p.name)
        if m and p.is_dir() and not p.is_symlink() and not _alive(int(m[1])):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p.name)
    return removed


def register() -> None:
    remove_stale()
    atexit.register(remove_own)


def unregister() -> None:
    remove_own()
    atexit.unregister(remove_own)
