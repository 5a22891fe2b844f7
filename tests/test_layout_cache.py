"""The layout caches' disk folder (``core/layout_cache.py``): every value type comes back exactly,
a later process (another hash seed) loads instead of computing, bad files and unwritable folders
only mean computing, the folder stays under its bound, and a warm-up's tables all load."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from pix2vertex_addon.core import layout_cache
from pix2vertex_addon.core.layout_cache import LayoutCache, array_key

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def disk(tmp_path):
    """A disk folder for the test (the previous setting restored after); the test's caches are
    unregistered after it."""
    before, registered = dict(layout_cache._disk), list(layout_cache._ALL)
    folder = tmp_path / "layout-cache"
    layout_cache.set_disk_folder(folder)
    yield folder
    layout_cache._disk.update(before)
    layout_cache._ALL[:] = registered


class Counted:
    """A compute function that counts its calls."""

    def __init__(self, value):
        self.value, self.calls = value, 0

    def __call__(self):
        self.calls += 1
        return self.value


def _csr(rows=50, cols=20, index_dtype=np.int32, seed=0):
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, cols, 3 * rows).astype(index_dtype)  # three per row, unsorted
    data = rng.random(3 * rows).astype(np.float32).astype(np.float64)
    indptr = np.arange(0, 3 * rows + 1, 3, dtype=index_dtype)
    m = sp.csr_matrix((data, indices, indptr), shape=(rows, cols))
    if m.indices.dtype != index_dtype:  # SciPy narrows int64 indices it can: force them
        m.indices, m.indptr = indices, indptr
    return m


def _values():
    """One value of every kind the add-on's caches hold, and arrays of each encoding."""
    rng = np.random.default_rng(1)
    return {
        "int64 narrow": rng.integers(-1, 30000, (64, 64)),
        "int64 range": np.arange(5, 5 + 7 * 100, 7, dtype=np.int64),
        "int64 constant": np.full(10, -3, dtype=np.int64),
        "int64 wide": np.array([-(2**40), 0, 2**40], dtype=np.int64),
        "float64 exact in float32": rng.random(100).astype(np.float32).astype(np.float64),
        "float64 exact, signed zeros": np.array([0.5, -0.0, 0.0, np.inf, -np.inf, 2.0**-140]),
        "float64": np.array([0.1, -0.0, np.nan, np.inf, 1e300]),
        "float32": rng.random((8, 8, 3)).astype(np.float32),
        "bool": rng.random(33) > 0.5,
        "empty": np.zeros((0, 3), dtype=np.int64),
        "fortran": np.asfortranarray(rng.random((4, 5))),
        "str": "vt 0.5 0.25\nusemtl visage_é\nf 1/1 2/2 3/3\n",
        "csr": _csr(),
        "csr int64": _csr(index_dtype=np.int64, seed=2),
        "tuple": (np.arange(6, dtype=np.int64) * 3 + 1, 17),
        "texel weights": (np.array([3, 9, 4], dtype=np.int64), _csr(3, 8), np.zeros(0, np.int64),
                          np.zeros(0, np.int64)),
    }


def assert_same(a, b):
    """Equal exactly: types, dtypes, shapes, bits (NaN too), CSR structure."""
    assert type(a) is type(b)
    if isinstance(a, tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    elif isinstance(a, np.ndarray):
        assert (a.dtype, a.shape) == (b.dtype, b.shape)
        assert a.tobytes() == b.tobytes()
    elif sp.issparse(a):
        assert a.shape == b.shape
        for part in ("data", "indices", "indptr"):
            assert_same(getattr(a, part), getattr(b, part))
    else:
        assert a == b


def _files(folder):
    return sorted(p.name for p in folder.glob("*.npz"))


@pytest.mark.parametrize("kind", list(_values()))
def test_each_value_type_comes_back_exactly(disk, kind):
    value = _values()[kind]
    key = array_key(np.arange(4), kind, 3, 1.5, None, True)
    cache = LayoutCache(f"test {kind}")
    first = Counted(value)
    got = cache.get(key, first)
    assert got is value and first.calls == 1 and cache.computes == 1
    assert len(_files(disk)) == 1
    cache.clear()
    again = Counted(None)
    loaded = cache.get(key, again)
    assert again.calls == 0 and cache.loads == 1
    assert_same(loaded, value)
    for v in loaded if isinstance(loaded, tuple) else (loaded,):
        if isinstance(v, np.ndarray):
            assert not v.flags.writeable, "loaded arrays are read-only, as computed ones"


def test_arrays_are_stored_in_their_narrowest_exact_form(disk):
    """Texel weights as the add-on makes them: float32 barycentrics in float64, vertex ids in
    int32 or int64, a range as indptr; the file holds them in about half the bytes."""
    n = 20_000
    rng = np.random.default_rng(3)
    w = _csr(n, 9000)
    value = (np.sort(rng.choice(4 * n, n, replace=False)).astype(np.int64), w)
    raw = value[0].nbytes + w.data.nbytes + w.indices.nbytes + w.indptr.nbytes
    cache = LayoutCache("test narrow")
    cache.get(("narrow",), Counted(value))
    (path,) = disk.glob("*.npz")
    assert path.stat().st_size < 0.5 * raw
    cache.clear()
    assert_same(cache.get(("narrow",), Counted(None)), value)


def test_keys_are_stable_and_name_what_they_cover():
    a = np.arange(12.0).reshape(3, 4)
    assert array_key(a, 2) == array_key(a.copy(), 2)
    assert array_key(a) != array_key(a.astype(np.float32))
    assert array_key(a) != array_key(a.reshape(4, 3))
    b = a.copy()
    b[1, 1] = np.nan
    c = a.copy()
    c[1, 1] = 0.0
    assert array_key(b) == array_key(c), "NaN is read as 0"
    assert array_key(np.int64(3), np.float32(0.5)) == (3, 0.5)
    assert array_key(a[:, ::2]) == array_key(np.ascontiguousarray(a[:, ::2]))
    for odd in (np.zeros((0, 3)), np.array(2.5), np.arange(3, dtype=">f8"), np.zeros(2, dtype=[("x", "<i4")])):
        assert array_key(odd) == array_key(odd.copy())
    assert array_key(np.zeros((0, 3))) != array_key(np.zeros((3, 0)))


def test_unstorable_values_and_caches_stay_in_memory(disk):
    cache = LayoutCache("test unstorable")
    assert cache.get(("list",), lambda: [1, 2]) == [1, 2]
    assert cache.get(("objects",), lambda: np.array([None, 1], dtype=object)) is not None
    assert cache.get(("csc",), lambda: sp.csc_matrix(np.eye(3))) is not None
    memory_only = LayoutCache("test memory only", persist=False)
    memory_only.get(("x",), lambda: np.arange(3))
    assert cache.get((object(),), lambda: np.arange(3)) is not None, "a key without a stable form"
    assert _files(disk) == [] and not any(disk.glob(".*"))
    assert cache.computes == 4 and memory_only.computes == 1


_CHILD = textwrap.dedent(r"""
    import json, sys
    import numpy as np
    import scipy.sparse as sp
    sys.path.insert(0, sys.argv[1])
    from pix2vertex_addon.core import layout_cache
    from pix2vertex_addon.core.layout_cache import LayoutCache, array_key
    layout_cache.set_disk_folder(sys.argv[2])
    rng = np.random.default_rng(7)
    layout = rng.random((500, 4, 2))
    calls = []
    def compute(kind):
        def run():
            calls.append(kind)
            if kind == "csr":
                return sp.csr_matrix(rng.random((40, 30)) > 0.7, dtype=np.float64)
            if kind == "str":
                return "f 1 2 3\n" * 1000
            return (np.flatnonzero(layout[:, 0, 0] > 0.5), 12)
        return run
    out = {}
    for kind in ("csr", "str", "tuple"):
        cache = LayoutCache("test child " + kind)
        v = cache.get(array_key(kind, layout, 1024, 2), compute(kind))
        out[kind] = (repr(v.toarray().tolist()) if kind == "csr" else
                     v if kind == "str" else [v[0].tolist(), v[1], v[0].dtype.str])
    print(json.dumps({"calls": calls, "values": out, "hash": hash(b"layout")}))
""")


def _child(folder: Path, seed: str) -> dict:
    env = dict(os.environ, PYTHONHASHSEED=seed)
    env.pop(layout_cache.ENV_VAR, None)
    out = subprocess.run([sys.executable, "-c", _CHILD, str(REPO), str(folder)], env=env, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_later_process_loads_instead_of_computing(tmp_path):
    folder = tmp_path / "cache"
    first = _child(folder, "1")
    assert first["calls"] == ["csr", "str", "tuple"]
    assert len(_files(folder)) == 3
    second = _child(folder, "2")
    assert second["hash"] != first["hash"], "the processes hash differently"
    assert second["calls"] == [], "nothing computed: every value read from disk"
    assert second["values"] == first["values"]


def _one_file(disk, value=None):
    value = np.arange(1000, dtype=np.int64) * 3 % 7 if value is None else value
    cache = LayoutCache("test damage")
    key = array_key("damage", 1)
    cache.get(key, Counted(value))
    (path,) = disk.glob("*.npz")
    return cache, key, path, value


def _damage_truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _damage_flip(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0xFF  # inside the array's bytes: the zip's CRC no longer matches
    path.write_bytes(bytes(data))


def _damage_garbage(path):
    path.write_bytes(b"not a zip file at all")


def _damage_empty(path):
    path.write_bytes(b"")


def _damage_wrong_shape(path):
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["a0"] = arrays["a0"][:10]  # the description says 1000
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def _damage_wrong_dtype(path):
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["a0"] = arrays["a0"].astype(np.float32)
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def _damage_other_key(path):
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays["__meta__"].tobytes())
    meta["key"] = "0" * 32
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def _damage_directory(path):
    path.unlink()
    path.mkdir()


@pytest.mark.parametrize("damage", [_damage_truncate, _damage_flip, _damage_garbage, _damage_empty,
                                    _damage_wrong_shape, _damage_wrong_dtype, _damage_other_key],
                         ids=lambda f: f.__name__.removeprefix("_damage_"))
def test_a_bad_file_is_recomputed_and_rewritten(disk, damage):
    cache, key, path, value = _one_file(disk)
    damage(path)
    bad = path.read_bytes()
    cache.clear()
    again = Counted(value)
    assert_same(cache.get(key, again), value)
    assert again.calls == 1, "computed, not loaded"
    assert path.read_bytes() != bad, "the bad file is replaced"
    cache.clear()
    later = Counted(None)
    assert_same(cache.get(key, later), value)
    assert later.calls == 0


def test_a_bad_csr_file_is_never_loaded(disk):
    """Index arrays SciPy would read out of bounds with are refused, even in a well-formed file."""
    m = _csr(10, 6)
    cache, key, path, _ = _one_file(disk, value=m)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays["__meta__"].tobytes())
    node = meta["value"]["parts"][1]  # indices
    arrays[node["name"]] = np.full_like(arrays[node["name"]], 6)  # = the column count
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    cache.clear()
    again = Counted(m)
    assert_same(cache.get(key, again), m)
    assert again.calls == 1


def test_a_file_in_the_way_of_the_cache_file_only_means_computing(disk):
    cache, key, path, value = _one_file(disk)
    _damage_directory(path)
    cache.clear()
    assert_same(cache.get(key, Counted(value)), value)
    assert cache.computes == 2


def test_unwritable_folder_missing_folder_and_full_disk(tmp_path, disk, monkeypatch):
    (tmp_path / "a-file").write_text("x")
    layout_cache.set_disk_folder(tmp_path / "a-file" / "cache")  # cannot be created
    cache = LayoutCache("test unwritable")
    assert_same(cache.get(("k",), Counted(np.arange(5))), np.arange(5))
    cache.clear()
    assert_same(cache.get(("k",), Counted(np.arange(5))), np.arange(5))
    assert cache.computes == 2

    missing = tmp_path / "not" / "yet"
    layout_cache.set_disk_folder(missing)
    cache.get(("m",), Counted(np.arange(3)))
    assert len(_files(missing)) == 1, "created when first written"

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    layout_cache.set_disk_folder(disk)
    monkeypatch.setattr(np, "savez", full)
    assert_same(cache.get(("full",), Counted(np.arange(4))), np.arange(4))
    assert _files(disk) == [] and not any(disk.iterdir()), "no partial file left behind"


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder(disk):
    cache = LayoutCache("test read-only")
    cache.get(("r",), Counted(np.arange(3)))
    disk.chmod(0o555)
    try:
        cache.clear()
        reads = Counted(None)
        assert_same(cache.get(("r",), reads), np.arange(3))
        assert reads.calls == 0, "read from the read-only folder"
        assert_same(cache.get(("new",), Counted(np.arange(4))), np.arange(4))
    finally:
        disk.chmod(0o755)


def test_read_only_folder_simulated(disk, monkeypatch):
    """As root (CI containers) a mode of 0o555 does not stop writes: the writes and the time
    touches fail here as they would in a read-only folder."""
    cache = LayoutCache("test read-only simulated")
    cache.get(("r",), Counted(np.arange(3)))

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(layout_cache, "atomic_file", refuse)
    monkeypatch.setattr(os, "utime", refuse)
    cache.clear()
    reads = Counted(None)
    assert_same(cache.get(("r",), reads), np.arange(3))
    assert reads.calls == 0, "read from the read-only folder"
    assert_same(cache.get(("new",), Counted(np.arange(4))), np.arange(4))
    assert len(_files(disk)) == 1


def test_the_size_bound_removes_the_least_recently_used(disk):
    value = np.random.default_rng(0).random(20_000)  # 160 kB
    cache = LayoutCache("test bound", limit=100)
    names = {}

    def put(i):
        before = set(_files(disk))
        cache.get(("k", i), Counted(value + i))
        (names[i],) = set(_files(disk)) - before

    put(0)
    one = layout_cache.disk_usage()[1]
    layout_cache.set_disk_folder(disk, limit_bytes=int(3.5 * one))
    (disk / "notes.txt").write_text("not the cache's")
    (disk / "other.npz").write_bytes(b"not the cache's either")
    put(1)
    put(2)
    for i in range(3):  # k0 the oldest, then k1, k2
        os.utime(disk / names[i], (1_000_000 + i, 1_000_000 + i))
    cache.clear()
    reads = Counted(None)
    cache.get(("k", 0), reads)  # read: now the most recently used
    assert reads.calls == 0
    put(3)  # a fourth file: over the bound
    assert set(_files(disk)) == {names[0], names[2], names[3], "other.npz"}, "the least recently used goes"
    files, total = layout_cache.disk_usage()
    assert files == 3 and total <= 3.5 * one
    assert (disk / "notes.txt").exists(), "only the cache's files go"
    assert layout_cache.clear_disk() == 3
    assert layout_cache.disk_usage() == (0, 0)
    assert sorted(p.name for p in disk.iterdir()) == ["notes.txt", "other.npz"]


def test_stale_partial_files_are_removed(disk):
    cache = LayoutCache("test partial")
    disk.mkdir(parents=True)
    old = disk / ".test-partial-0123.abc.partial.npz"
    new = disk / ".test-partial-4567.def.partial.npz"
    old.write_bytes(b"left by a killed writer")
    new.write_bytes(b"being written by another process")
    os.utime(old, (1_000_000, 1_000_000))
    cache.get(("p",), Counted(np.arange(3)))
    assert not old.exists() and new.exists()


def test_disk_off_by_default_and_env_default():
    env = dict(os.environ)
    env.pop(layout_cache.ENV_VAR, None)
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from pix2vertex_addon.core import layout_cache as c; "
            "print(c.disk_folder(), c.env_folder())")
    off = subprocess.run([sys.executable, "-c", code, str(REPO)], env=env, capture_output=True, text=True, check=True)
    assert off.stdout.split() == ["None", "None"]
    env[layout_cache.ENV_VAR] = "/some/folder"
    on = subprocess.run([sys.executable, "-c", code, str(REPO)], env=env, capture_output=True, text=True, check=True)
    assert on.stdout.split() == ["/some/folder", "/some/folder"]


_PREPARE = textwrap.dedent(r"""
    import json, sys, time
    import numpy as np
    sys.path.insert(0, sys.argv[1])
    from pix2vertex_addon.core import layout_cache
    from pix2vertex_addon.core.face_model import load_face_model
    from pix2vertex_addon.core.geometry import detail_field
    from pix2vertex_addon.core.results import prepare_layouts
    layout_cache.set_disk_folder(sys.argv[2])
    texture, detail_size = int(sys.argv[3]), int(sys.argv[4])
    t = load_face_model().template
    detail = detail_field(t.vertices_cm * 10.0, t.faces, intensity=lambda p: np.zeros(len(p)), levels=1)
    s = time.perf_counter()
    prepare_layouts(t, detail, 1, texture, (detail_size,))
    print(json.dumps({"seconds": time.perf_counter() - s,
                      "caches": {c.name: [c.persist, c.computes, c.loads] for c in layout_cache.all_caches()}}))
""")


def _prepare(folder: Path, seed: str, texture: int = 256, detail_size: int = 512) -> dict:
    env = dict(os.environ, PYTHONHASHSEED=seed)
    env.pop(layout_cache.ENV_VAR, None)
    out = subprocess.run([sys.executable, "-c", _PREPARE, str(REPO), str(folder), str(texture), str(detail_size)],
                         env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_prepare_layouts_in_a_later_process_computes_nothing(tmp_path):
    """The warm-up's tables, written by one process, are all loaded by the next: no cache computes
    (the UV rasters, memory only, are not needed once the texel weights load). Prints both times
    (scripts/bench_layout_cache.py times the full-size warm-up)."""
    folder = tmp_path / "cache"
    first = _prepare(folder, "1")
    second = _prepare(folder, "2")
    computed = {name for name, (persist, computes, _) in first["caches"].items() if computes}
    assert {"texel weights", "mirror texels", "seam distances", "OBJ layout lines",
            "tangent-frame groups"} <= computed
    for name, (persist, computes, loads) in second["caches"].items():
        assert computes == 0, f"{name} computed in the later process"
        if persist and name in computed:
            assert loads > 0, name
    size = sum(p.stat().st_size for p in folder.glob("*.npz"))
    print(f"\nprepare_layouts (texture 256, detail 512): computed {first['seconds']:.2f} s, "
          f"from disk {second['seconds']:.2f} s, folder {size / 1e6:.1f} MB")


def test_threads_asking_for_the_same_value_compute_it_once(disk):
    """The warm-up thread and a job's threads share the work: a thread asking for a value that
    another is computing waits for it and gets the same object; a failed computation lets a
    waiting thread compute it itself."""
    import threading
    import time

    registered = list(layout_cache._ALL)
    try:
        cache: LayoutCache = LayoutCache("test threads", persist=False)
        started, calls = threading.Event(), []

        def slow():
            calls.append(threading.current_thread().name)
            started.set()
            time.sleep(0.3)
            return np.arange(5)

        got: list = []
        first = threading.Thread(target=lambda: got.append(cache.get(("k",), slow)), name="first")
        first.start()
        started.wait(5)
        second = cache.get(("k",), slow)  # while the first thread computes
        first.join(5)
        assert calls == ["first"] and got[0] is second

        started.clear()

        def fails():
            started.set()
            time.sleep(0.2)
            raise RuntimeError("no")

        errors: list = []

        def run_failing():
            try:
                cache.get(("f",), fails)
            except RuntimeError as exc:
                errors.append(exc)

        t = threading.Thread(target=run_failing)
        t.start()
        started.wait(5)
        assert cache.get(("f",), lambda: np.ones(2)).tolist() == [1.0, 1.0]
        t.join(5)
        assert len(errors) == 1
    finally:
        layout_cache._ALL[:] = registered


def test_keys_of_read_only_arrays_are_remembered_and_still_right():
    """``array_key`` remembers the digest of a read-only array (and of views of one), gives the
    same key as a writable copy, and never serves a remembered digest for an array that can still
    change: a writable one, or a read-only view of a writable one."""
    from pix2vertex_addon.core import layout_cache

    a = np.arange(12.0).reshape(4, 3)
    frozen = a.copy()
    frozen.setflags(write=False)
    key = array_key(frozen)
    assert key == array_key(a)
    calls = []
    real = layout_cache._digest
    layout_cache._digest = lambda data: calls.append(1) or real(data)  # type: ignore[assignment]
    try:
        assert array_key(frozen) == key and array_key(frozen.reshape(-1)) == array_key(a.reshape(-1))
        assert array_key(frozen.reshape(-1)) == array_key(a.reshape(-1))
        n_frozen = len(calls)
        assert n_frozen == 3  # the two writable arrays, the view's first digest; then none
        view = a[1:]
        view.setflags(write=False)  # read-only view, writable owner
        before = array_key(view)
        a[2, 0] = 99.0
        assert array_key(view) != before
    finally:
        layout_cache._digest = real
