"""Bytecode for the packages the extension bundles.

Blender runs Python with ``sys.dont_write_bytecode``, so every session compiles the sources of
every package it imports again: MediaPipe, matplotlib, SciPy... took about 5 s of the first
Reconstruct after enabling (docs/reference/benchmarks.md). After the first finished job, :func:`cache_later`
writes the missing ``.pyc`` of the modules imported from Blender's extension wheel folder
(``extensions/.local``), once per session, in a background thread; later sessions read them.
"""

from __future__ import annotations

import importlib.util
import py_compile
import sys
import threading
from pathlib import Path

_MARK = "extensions/.local/"
_started = threading.Event()


def missing_bytecode() -> list[Path]:
    """Imported ``.py`` files under Blender's extension wheel folder without a cached ``.pyc``."""
    out = []
    for mod in list(sys.modules.values()):
        f = getattr(mod, "__file__", None)
        if not f or not f.endswith(".py") or _MARK not in Path(f).as_posix():
            continue
        if not Path(importlib.util.cache_from_source(f)).exists():
            out.append(Path(f))
    return out


def write_bytecode(files: list[Path]) -> int:
    """Compile ``files`` to their ``__pycache__``; returns how many were written."""
    n = 0
    for f in files:
        try:
            py_compile.compile(str(f), doraise=True)
            n += 1
        except (py_compile.PyCompileError, OSError):
            continue  # a read-only or odd file: it is compiled in memory as before
    return n


def cache_later() -> None:
    """Once per session: write the missing bytecode in a daemon thread."""
    if _started.is_set():
        return
    _started.set()
    files = missing_bytecode()
    if files:
        threading.Thread(target=write_bytecode, args=(files,), name="p2v-bytecode", daemon=True).start()
