"""OpenBLAS thread pools while the pipeline runs two threads of numerical work (no ``bpy``).

NumPy and SciPy each carry an OpenBLAS whose pool has a thread per core. The pipeline itself runs
two threads at once (a Reconstruct beside the warm-up; the full head's fit beside writing the
files), next to onnxruntime's and MediaPipe's own threads. Oversubscribed like this, a threaded
OpenBLAS call waits for its pool: on a 2-core machine a batch of 4 x 4 solves that takes 1 ms
alone took 1 to 3 s beside another thread's matrix products, and the template fit's first
solve waited 1.2 s behind the warm-up in Blender (docs/reference/extension.md). So while any
:func:`shared_cores` block is open, each OpenBLAS pool gets half the cores (one on 2 cores); the
pools' sizes are restored when the last block closes.

The libraries are found next to the packages (``numpy.libs``, ``scipy.libs``, ``.dylibs``) and
driven through their exported ``openblas_set_num_threads`` functions (``ctypes``); without them
(another BLAS, such as Accelerate) nothing changes.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["openblas_pools", "shared_cores"]

# (set, get) symbol names by library: NumPy's 64-bit-integer OpenBLAS, SciPy's scipy-openblas
_SYMBOLS = (("openblas_set_num_threads64_", "openblas_get_num_threads64_"),
            ("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
            ("scipy_openblas_set_num_threads", "scipy_openblas_get_num_threads"),
            ("openblas_set_num_threads", "openblas_get_num_threads"))

_lock = threading.Lock()
_depth = 0
_saved: list[tuple[object, int]] = []
_pools: list[tuple[object, object]] | None = None


def _library_files() -> list[Path]:
    import numpy

    files = []
    for pkg in (numpy, _scipy()):
        if pkg is None or not getattr(pkg, "__file__", None):
            continue
        root = Path(str(pkg.__file__)).parent
        for folder in (root.parent / f"{root.name}.libs", root / ".dylibs"):
            if folder.is_dir():
                files += sorted(p for p in folder.iterdir() if "openblas" in p.name.lower())
    return files


def _scipy():
    try:
        import scipy
    except ImportError:
        return None
    return scipy


def openblas_pools() -> list[tuple[object, object]]:
    """(set_num_threads, get_num_threads) of each OpenBLAS found (found once)."""
    global _pools
    if _pools is None:
        found = []
        for f in _library_files():
            try:
                lib = ctypes.CDLL(str(f))
            except OSError:
                continue
            for set_name, get_name in _SYMBOLS:
                setter, getter = getattr(lib, set_name, None), getattr(lib, get_name, None)
                if setter is not None and getter is not None:
                    setter.argtypes, setter.restype = [ctypes.c_int], None
                    getter.argtypes, getter.restype = [], ctypes.c_int
                    found.append((setter, getter))
                    break
        _pools = found
    return _pools


@contextmanager
def shared_cores() -> Iterator[None]:
    """Within the block (and any overlapping one in another thread) each OpenBLAS pool uses
    half the cores, at least one; never raises for want of OpenBLAS."""
    global _depth
    with _lock:
        if _depth == 0:
            _saved.clear()
            try:
                share = max(1, (os.cpu_count() or 2) // 2)
                for setter, getter in openblas_pools():
                    before = int(getter())  # type: ignore[operator]
                    _saved.append((setter, before))
                    if before > share:
                        setter(share)  # type: ignore[operator]
            except Exception:  # noqa: BLE001 - a speed setting, never a failure
                pass
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                for setter, before in _saved:
                    try:
                        setter(before)  # type: ignore[operator]
                    except Exception:  # noqa: BLE001
                        pass
                _saved.clear()
