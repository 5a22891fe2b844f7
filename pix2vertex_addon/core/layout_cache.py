"""Per-process caches of what a mesh layout alone determines (no ``bpy``).

UV rasters, texel weights, mirror look-ups, tangent groups, the OBJ's face lines... are the same
for every reconstruction onto one template, so each is computed once per process and kept in a
:class:`LayoutCache`. Every cache registers itself, so that a warm-up can be checked to have
left no layout work for the first photo (:func:`all_caches`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

import numpy as np

__all__ = ["LayoutCache", "all_caches", "array_key"]

T = TypeVar("T")
_ALL: list[LayoutCache] = []


def array_key(*parts: object) -> tuple:
    """A hashable key of ``parts``: arrays by shape, dtype and a hash of their bytes (NaN read
    as 0), anything else as it is."""
    out: list[object] = []
    for p in parts:
        if isinstance(p, np.ndarray):
            a = np.nan_to_num(p) if p.dtype.kind == "f" else p
            out.append((a.shape, a.dtype.str, hash(np.ascontiguousarray(a).tobytes())))
        else:
            out.append(p)
    return tuple(out)


def _freeze(value: object) -> None:
    """Make the arrays of a cached value (or of a tuple of them) read-only."""
    for v in value if isinstance(value, tuple) else (value,):
        if isinstance(v, np.ndarray):
            v.setflags(write=False)


class LayoutCache(Generic[T]):
    """At most ``limit`` values by key; full, it starts again empty (a process reconstructs onto
    one or two templates, so eviction order does not matter). Arrays in the values are made
    read-only."""

    def __init__(self, name: str, limit: int = 4):
        self.name = name
        self.limit = int(limit)
        self._values: dict[tuple, T] = {}
        _ALL.append(self)

    def get(self, key: tuple, compute: Callable[[], T]) -> T:
        hit = self._values.get(key)
        if hit is None:
            hit = compute()
            _freeze(hit)
            if len(self._values) >= self.limit:
                self._values.clear()
            self._values[key] = hit
        return hit

    def snapshot(self) -> dict[tuple, T]:
        """The cached values by key (a copy of the table; the values themselves)."""
        return dict(self._values)

    def clear(self) -> None:
        self._values.clear()


def all_caches() -> list[LayoutCache]:
    """Every layout cache of the process, in creation order."""
    return list(_ALL)
