"""Caches of what a mesh layout alone determines (no ``bpy``), per process and, optionally, on disk.

UV rasters, texel weights, mirror look-ups, tangent groups, the OBJ's face lines... are the same
for every reconstruction onto one template, so each is computed once per process and kept in a
:class:`LayoutCache`. Every cache registers itself, so that a warm-up can be checked to have
left no layout work for the first photo (:func:`all_caches`).

With a disk folder (:func:`set_disk_folder`; in Blender the extension's user folder, headless
``$P2V_LAYOUT_CACHE``; off when neither is set) a later process loads the tables instead of
computing them: on a memory miss :meth:`LayoutCache.get` reads ``<cache>-<digest>.npz`` from the
folder, else computes the value and writes that file. The digest covers the cache's name, the
key (arrays by a BLAKE2b digest of their bytes, stable across processes), the file format, the
add-on's version, the core's source files and the NumPy, SciPy and OpenCV versions, so a file
made by other code is never read. Files are uncompressed ``.npz`` (arrays stored in a narrower
dtype or as a range where that is exact), written atomically and loaded with
``allow_pickle=False``; a missing, unreadable, truncated or inconsistent file, a read-only folder
or a full disk only means computing (and rewriting the file where possible), never an error. The
folder is kept under :data:`DISK_LIMIT_BYTES` by removing the least recently used files.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np

from .atomic import atomic_file

__all__ = ["DISK_LIMIT_BYTES", "ENV_VAR", "LayoutCache", "all_caches", "array_key", "clear_disk", "clear_key_memo",
           "disk_folder", "disk_usage", "env_folder", "set_disk_folder"]

T = TypeVar("T")
_ALL: list[LayoutCache] = []
_log = logging.getLogger(__name__)

ENV_VAR = "P2V_LAYOUT_CACHE"
DISK_LIMIT_BYTES = 512 << 20
"""Default bound of the disk folder (512 MiB): the tables of Blender's warm-up take about 160 MB,
so it holds those of three face models (or add-on versions); beyond it the least recently used
files go."""
FORMAT = 1  # of the files; bump when the encoding changes
_FILE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*-[0-9a-f]{32}\.npz$")
_PARTIAL = re.compile(r"^\..*\.partial\.npz$")  # atomic_file's temporary names
_STALE_PARTIAL_S = 3600.0  # a temporary file this old belongs to a process that died writing it


def _digest(data: bytes | np.ndarray) -> str:
    """32 hex digits of BLAKE2b (of a C-contiguous array: its bytes, without a copy where it can)."""
    buf: Any = data
    if isinstance(data, np.ndarray):
        try:
            buf = memoryview(data).cast("B")  # type: ignore[arg-type]
        except (TypeError, ValueError):  # empty, or a format memoryview cannot cast
            buf = data.tobytes()
    return hashlib.blake2b(buf, digest_size=16).hexdigest()


def array_key(*parts: object) -> tuple:
    """A hashable key of ``parts``, the same in every process: arrays by shape, dtype and a
    BLAKE2b digest of their bytes (NaN read as 0), NumPy scalars as Python numbers, anything else
    as it is. The digest of a read-only array (a template's, a cached value's, or a view of one)
    is remembered (:func:`_frozen_part`): the caches' keys then cost nothing on the next call."""
    out: list[object] = []
    for p in parts:
        if isinstance(p, np.ndarray):
            out.append(_frozen_part(p))
        elif isinstance(p, np.generic):
            out.append(p.item())
        else:
            out.append(p)
    return tuple(out)


def _array_part(p: np.ndarray) -> tuple:
    a = np.nan_to_num(p) if p.dtype.kind == "f" else p
    a = np.ascontiguousarray(a)
    return (a.shape, a.dtype.str, _digest(a))


def _frozen_owner(a: np.ndarray) -> np.ndarray | None:
    """The array that owns ``a``'s memory when ``a`` and every array between them are read-only
    (and the owner holds its memory itself or views a ``bytes`` object); None otherwise
    (writable, or memory of another object, such as a ``bytearray``, that could change)."""
    x = a
    for _ in range(64):
        if x.flags.writeable:
            return None
        b = x.base
        if b is None:
            return x if x.flags.owndata else None
        if type(b) is bytes:  # immutable memory (an unpickled array's)
            return x
        if not isinstance(b, np.ndarray):
            return None
        x = b
    return None


_MEMO: dict[int, tuple[Any, dict[tuple, tuple]]] = {}  # id(owner) -> (weak reference, {view: key part})
_MEMO_LOCK = threading.Lock()


def _forget(owner_id: int, ref: Any) -> None:
    with _MEMO_LOCK:
        entry = _MEMO.get(owner_id)
        if entry is not None and entry[0] is ref:
            del _MEMO[owner_id]


def _frozen_part(p: np.ndarray) -> tuple:
    """:func:`array_key`'s part of one array, remembered per read-only array: by its owner's
    identity (a weak reference, so a new array at the same address is not taken for it) and the
    view's place in its memory (address, shape, strides, dtype). A read-only array is taken not to
    change while anyone holds it: arrays the caches return and the template's are made read-only
    once filled and never written (NumPy lets an owner be made writable again; code that did so
    and wrote into it would have to clear the memo, :func:`clear_key_memo`)."""
    owner = _frozen_owner(p)
    if owner is None:
        return _array_part(p)
    import weakref

    view = (p.__array_interface__["data"][0], p.shape, p.strides, p.dtype.str)
    oid = id(owner)
    entry = _MEMO.get(oid)
    if entry is not None and entry[0]() is owner:
        hit = entry[1].get(view)
        if hit is not None:
            return hit
    part = _array_part(p)
    with _MEMO_LOCK:
        entry = _MEMO.get(oid)
        if entry is None or entry[0]() is not owner:
            ref = weakref.ref(owner, functools.partial(_forget, oid))
            entry = _MEMO[oid] = (ref, {})
        if len(entry[1]) < 64:  # a few views of each array are asked for (reshapes, the whole)
            entry[1][view] = part
    return part


def clear_key_memo() -> None:
    """Forget the remembered digests of read-only arrays (:func:`array_key`)."""
    with _MEMO_LOCK:
        _MEMO.clear()


def _freeze(value: object) -> None:
    """Make the arrays of a cached value (or of a tuple of them) read-only."""
    for v in value if isinstance(value, tuple) else (value,):
        if isinstance(v, np.ndarray):
            v.setflags(write=False)


# -- the disk folder -------------------------------------------------------------------------------

def env_folder() -> str | None:
    """``$P2V_LAYOUT_CACHE`` as it was when this module was imported (None when unset or empty)."""
    return _ENV_FOLDER


_ENV_FOLDER: str | None = os.environ.get(ENV_VAR) or None
_disk: dict[str, Any] = {"folder": _ENV_FOLDER, "limit": DISK_LIMIT_BYTES}
_warned: set[str] = set()
_stamp_lock = threading.Lock()
_stamp_value: list[str] = []


def set_disk_folder(path: str | os.PathLike[str] | None, limit_bytes: int = DISK_LIMIT_BYTES) -> None:
    """Keep the caches' values in ``path`` too (created when first written), at most
    ``limit_bytes`` of them; ``None`` turns the disk off (memory only). The memory caches stay."""
    _disk["folder"] = None if path is None else os.fspath(path)
    _disk["limit"] = int(limit_bytes)


def disk_folder() -> Path | None:
    """The disk folder in use, or None."""
    f = _disk["folder"]
    return None if f is None else Path(f)


def _entries(folder: Path) -> list[tuple[Path, int, float]]:
    """(path, bytes, mtime) of the cache files in ``folder`` (nothing else there counts)."""
    out: list[tuple[Path, int, float]] = []
    try:
        it = list(os.scandir(folder))
    except OSError:
        return out
    for e in it:
        if _FILE.match(e.name):
            try:
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue
            out.append((Path(e.path), st.st_size, st.st_mtime))
    return out


def disk_usage() -> tuple[int, int]:
    """(files, bytes) of the cache files in the disk folder; (0, 0) when off or absent."""
    folder = disk_folder()
    if folder is None:
        return 0, 0
    entries = _entries(folder)
    return len(entries), sum(n for _, n, _ in entries)


def clear_disk() -> int:
    """Remove the cache files from the disk folder (nothing else in it); returns how many went.
    The memory caches stay."""
    folder = disk_folder()
    removed = 0
    for p, _, _ in [] if folder is None else _entries(folder):
        try:
            p.unlink()
            removed += 1
        except OSError:
            pass
    return removed


def _bound(folder: Path, keep: Path) -> None:
    """Remove least recently used cache files (their times are touched when read) until the folder
    holds at most the limit, never ``keep``; and temporary files left by a killed writer."""
    entries = sorted(_entries(folder), key=lambda e: e[2])
    total = sum(n for _, n, _ in entries)
    for p, n, _ in entries:
        if total <= _disk["limit"]:
            break
        if p == keep:
            continue
        try:
            p.unlink()
            total -= n
        except OSError:
            pass
    now = time.time()
    try:
        stale = [e for e in os.scandir(folder) if _PARTIAL.match(e.name)]
    except OSError:
        return
    for e in stale:
        try:
            if now - e.stat(follow_symlinks=False).st_mtime > _STALE_PARTIAL_S:
                os.unlink(e.path)
        except OSError:
            pass


def _stamp() -> str:
    """What else the values depend on: the file format, the add-on's version, the core's sources
    and the NumPy, SciPy and OpenCV versions (computed once)."""
    with _stamp_lock:
        if not _stamp_value:
            import importlib.util

            import scipy

            from .. import __version__

            h = hashlib.blake2b(digest_size=16)
            for part in (f"format {FORMAT}", f"pix2vertex {__version__}", f"numpy {np.__version__}",
                         f"scipy {scipy.__version__}"):
                h.update(part.encode() + b"\0")
            for src in sorted(Path(__file__).resolve().parent.glob("*.py")):
                h.update(src.name.encode() + b"\0")
                try:
                    h.update(src.read_bytes())
                except OSError:
                    h.update(b"unreadable")
            try:  # OpenCV's version without importing it (its package holds version.py)
                spec = importlib.util.find_spec("cv2")
                locs = list(spec.submodule_search_locations or []) if spec else []
                h.update((Path(locs[0]) / "version.py").read_bytes() if locs else b"no cv2")
            except (ImportError, ValueError, OSError):
                h.update(b"cv2 unknown")
            _stamp_value.append(h.hexdigest())
        return _stamp_value[0]


def _stable(key: object) -> bool:
    """Whether ``repr(key)`` is the same in every process (plain values and tuples of them)."""
    if isinstance(key, tuple):
        return all(_stable(k) for k in key)
    return key is None or type(key) in (bool, int, float, str, bytes)


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "cache"


# -- values <-> arrays -----------------------------------------------------------------------------

class _Unsupported(TypeError):
    pass


_NARROW_INTS = [(np.dtype(t), int(np.iinfo(t).min), int(np.iinfo(t).max))
                for t in (np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32)]


def _range(start: int, step: int, n: int, dtype: np.dtype) -> np.ndarray:
    if step == 0:
        return np.full(n, start, dtype=dtype)
    return np.arange(start, start + step * n, step, dtype=dtype)


def _encode_array(a: np.ndarray, arrays: dict[str, np.ndarray]) -> dict:
    """A node for ``a`` (its dtype and shape) whose stored array is the smallest exact form: an
    arithmetic range, a narrower integer dtype, float32 for float64 values it holds exactly."""
    if a.dtype.kind not in "biuf" or a.dtype.byteorder not in "=|":
        raise _Unsupported(f"array of dtype {a.dtype}")
    node: dict[str, Any] = {"t": "array", "dtype": a.dtype.str, "shape": list(a.shape)}
    stored = a
    if a.dtype.kind in "iu" and a.size:
        lo, hi = int(a.min()), int(a.max())
        if a.ndim == 1 and a.size > 1:
            start, step = int(a[0]), int(a[1]) - int(a[0])
            is_range = int(a[-1]) == start + step * (a.size - 1)  # the cheap test first
            try:
                is_range = is_range and np.array_equal(a, _range(start, step, a.size, a.dtype))
            except (OverflowError, ValueError):
                is_range = False
            if is_range:
                node.update(enc="range", start=start, step=step)
                return node
        for t, t_min, t_max in _NARROW_INTS:
            if t.itemsize < a.dtype.itemsize and t_min <= lo and hi <= t_max:
                stored = a.astype(t)
                break
    elif a.dtype == np.float64 and a.size:
        with np.errstate(over="ignore", invalid="ignore"):  # values float32 cannot hold: kept as they are
            f32 = a.astype(np.float32)
        # equal values are equal bits here (the cast keeps the sign of zero); NaN keeps float64
        if np.array_equal(f32, a):
            stored = f32
    name = f"a{len(arrays)}"
    arrays[name] = stored
    node.update(enc="stored", name=name, stored=stored.dtype.str)
    return node


def _decode_array(node: dict, z: Any) -> np.ndarray:
    dtype, shape = np.dtype(node["dtype"]), tuple(int(s) for s in node["shape"])
    if dtype.kind not in "biuf":
        raise ValueError(f"dtype {dtype}")
    if node["enc"] == "range":
        if len(shape) != 1:
            raise ValueError("range of more than one axis")
        a = _range(int(node["start"]), int(node["step"]), shape[0], dtype)
        if a.shape != shape:
            raise ValueError("range length")
        return a
    stored = z[node["name"]]
    if stored.dtype.str != node["stored"] or stored.shape != shape:
        raise ValueError(f"{node['name']}: {stored.dtype}{stored.shape}, expected {node['stored']}{shape}")
    return stored if stored.dtype == dtype else stored.astype(dtype)


def _encode(value: object, arrays: dict[str, np.ndarray]) -> dict:
    if isinstance(value, np.ndarray):
        return _encode_array(value, arrays)
    if isinstance(value, tuple):
        return {"t": "tuple", "items": [_encode(v, arrays) for v in value]}
    if type(value) is int:
        return {"t": "int", "value": value}
    if type(value) is str:
        name = f"a{len(arrays)}"
        arrays[name] = np.frombuffer(value.encode("utf-8"), dtype=np.uint8)
        return {"t": "str", "name": name}
    import scipy.sparse as sp

    if type(value) is sp.csr_matrix:
        m: Any = value
        return {"t": "csr", "shape": [int(s) for s in m.shape],
                "parts": [_encode_array(np.asarray(x), arrays) for x in (m.data, m.indices, m.indptr)]}
    raise _Unsupported(type(value).__name__)


def _decode(node: dict, z: Any) -> object:
    t = node["t"]
    if t == "array":
        return _decode_array(node, z)
    if t == "tuple":
        return tuple(_decode(n, z) for n in node["items"])
    if t == "int":
        if type(node["value"]) is not int:
            raise ValueError("int")
        return node["value"]
    if t == "str":
        b = z[node["name"]]
        if b.dtype != np.uint8 or b.ndim != 1:
            raise ValueError("str")
        return b.tobytes().decode("utf-8")
    if t == "csr":
        import scipy.sparse as sp

        rows, cols = (int(s) for s in node["shape"])
        data, indices, indptr = (_decode_array(n, z) for n in node["parts"])
        # the checks SciPy's kernels rely on (an index out of range would read out of bounds)
        if (data.ndim != 1 or indices.ndim != 1 or indptr.shape != (rows + 1,) or indices.dtype.kind != "i"
                or indptr.dtype.kind != "i" or len(data) != len(indices) or int(indptr[0]) != 0
                or int(indptr[-1]) != len(indices) or (indptr.size > 1 and bool((np.diff(indptr) < 0).any()))
                or (indices.size and (int(indices.min()) < 0 or int(indices.max()) >= cols))):
            raise ValueError("inconsistent CSR matrix")
        m = sp.csr_matrix((data, indices, indptr), shape=(rows, cols))
        if m.indices.dtype != indices.dtype or m.indptr.dtype != indptr.dtype:
            m.indices, m.indptr = indices, indptr  # the dtypes the computed matrix had
        return m
    raise ValueError(f"node type {t!r}")


def _meta_array(meta: dict) -> np.ndarray:
    return np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)


def _note(folder: Path, what: str, err: BaseException) -> None:
    """Say once per folder (and kind) that the disk cache could not be used; never raise."""
    tag = f"{folder}:{what}"
    if tag not in _warned:
        _warned.add(tag)
        _log.warning("pix2vertex layout cache: %s in %s (%s); computing instead", what, folder, err)


# -- the cache ------------------------------------------------------------------------------------

class LayoutCache(Generic[T]):
    """At most ``limit`` values by key in memory; full, it starts again empty (a process
    reconstructs onto one or two templates, so eviction order does not matter). Arrays in the
    values are made read-only. With ``persist`` (values made of arrays of numbers, ints, strings,
    tuples and CSR matrices) and a disk folder set, values are also kept on disk for later
    processes; ``loads`` and ``computes`` count where the memory misses were served from."""

    def __init__(self, name: str, limit: int = 4, persist: bool = True):
        self.name = name
        self.limit = int(limit)
        self.persist = bool(persist)
        self.loads = 0
        self.computes = 0
        self._values: dict[tuple, T] = {}
        self._busy: dict[tuple, threading.Event] = {}  # keys being loaded or computed
        self._lock = threading.Lock()
        _ALL.append(self)

    def get(self, key: tuple, compute: Callable[[], T]) -> T:
        """The value of ``key``: from memory, else from the disk folder, else ``compute()``d
        (and written there). Thread-safe: a thread asking for a value another thread is loading
        or computing waits for it instead of doing the same work beside it (the warm-up and the
        first Reconstruct share the work this way)."""
        hit = self._values.get(key)
        if hit is not None:
            return hit
        with self._lock:
            hit = self._values.get(key)
            if hit is not None:
                return hit
            busy = self._busy.get(key)
            mine = busy is None
            if busy is None:
                busy = self._busy[key] = threading.Event()
        if not mine:
            busy.wait()
            hit = self._values.get(key)
            # None: the other thread failed (or the table was emptied since): try again
            return hit if hit is not None else self.get(key, compute)
        store = None
        try:
            path, digest = self._file(key)
            if path is not None:
                hit = self._load(path, digest)
            if hit is None:
                hit = compute()
                self.computes += 1
                store = path
            else:
                self.loads += 1
            _freeze(hit)
            with self._lock:
                if len(self._values) >= self.limit:
                    self._values.clear()
                self._values[key] = hit
        finally:
            with self._lock:
                del self._busy[key]
            busy.set()
        if store is not None:  # after the waiting threads have the value
            self._store(store, digest, hit)
        return hit

    def snapshot(self) -> dict[tuple, T]:
        """The cached values by key (a copy of the table; the values themselves)."""
        return dict(self._values)

    def clear(self) -> None:
        """Forget the values in memory (the disk folder's files stay: :func:`clear_disk`)."""
        self._values.clear()

    def _file(self, key: tuple) -> tuple[Path | None, str]:
        folder = disk_folder()
        if folder is None or not self.persist or not _stable(key):
            return None, ""
        try:
            digest = _digest(repr((self.name, key, _stamp())).encode("utf-8"))
        except Exception as err:  # noqa: BLE001 - cannot tell what the values depend on: memory only
            _note(folder, "no version stamp", err)
            return None, ""
        return folder / f"{_slug(self.name)}-{digest}.npz", digest

    def _load(self, path: Path, digest: str) -> T | None:
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(z["__meta__"].tobytes().decode("utf-8"))
                if meta.get("format") != FORMAT or meta.get("key") != digest or meta.get("cache") != self.name:
                    raise ValueError("another key or format")
                value = _decode(meta["value"], z)
        except FileNotFoundError:
            return None
        except Exception as err:  # noqa: BLE001 - unreadable, truncated, corrupt: compute instead
            _log.info("pix2vertex layout cache: ignoring %s (%s)", path.name, err)
            return None
        try:
            os.utime(path)  # recently used: the size bound removes the others first
        except OSError:
            pass
        return value  # type: ignore[return-value]

    def _store(self, path: Path, digest: str, value: T) -> None:
        arrays: dict[str, np.ndarray] = {}
        try:
            node = _encode(value, arrays)
        except Exception as err:  # noqa: BLE001 - _Unsupported, or no memory for a narrowed copy
            _log.info("pix2vertex layout cache: %s value not stored (%s)", self.name, err)
            return
        arrays["__meta__"] = _meta_array({"format": FORMAT, "cache": self.name, "key": digest, "value": node})
        folder = path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with atomic_file(path) as tmp, open(tmp, "wb") as fh:
                np.savez(fh, **arrays)
        except Exception as err:  # noqa: BLE001 - read-only folder, full disk...: memory only
            _note(folder, "cannot write", err)
            return
        _bound(folder, path)


def all_caches() -> list[LayoutCache]:
    """Every layout cache of the process, in creation order."""
    return list(_ALL)
