"""Result files, written atomically (no ``bpy``).

Each photo's results go to one folder. :class:`AtomicFolder` builds the folder under a hidden
temporary name next to it and renames it into place only when every file is written, so a
crash, a cancel or a full disk never leaves a half-written result where a finished one is
expected; a finished result is only replaced when asked to (``overwrite``).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from .layout_cache import LayoutCache, array_key

__all__ = ["AtomicFolder", "OutputError", "OutputLock", "LockedError", "check_output_folder", "clean_leftovers",
           "write_obj", "write_json", "fixed_rows", "format_obj", "read_obj_vertices", "sha256_file", "LEFTOVER_RE",
           "MIN_FREE_BYTES"]

LEFTOVER_RE = re.compile(r"^\.(?P<name>.+)\.(?P<kind>partial|old)-[0-9a-f]{8}$")
LOCK_NAME = ".p2v.lock"
MIN_FREE_BYTES = 64 * 2**20  # a result is a few MB; refuse to start a batch with less than this free


class OutputError(OSError):
    """The output folder cannot be written (read-only, missing, not a folder...)."""


class LockedError(OutputError):
    """Another run holds the output folder's lock."""


class AtomicFolder:
    """``with AtomicFolder(final_dir, overwrite) as tmp:`` write files into ``tmp``; on success the
    folder appears as ``final_dir`` in one rename; on an exception nothing is left behind."""

    def __init__(self, final: str | os.PathLike[str], overwrite: bool = False):
        self.final = Path(final)
        self.overwrite = overwrite
        tag = uuid.uuid4().hex[:8]
        self.tmp = self.final.parent / f".{self.final.name}.partial-{tag}"
        self._old = self.final.parent / f".{self.final.name}.old-{tag}"

    def __enter__(self) -> Path:
        parent = self.final.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create the output folder {parent}: {exc.strerror or exc}") from exc
        if not os.access(parent, os.W_OK | os.X_OK):
            raise OutputError(f"the output folder {parent} is not writable")
        if self.final.exists() and not self.overwrite:
            raise FileExistsError(f"{self.final} exists (use overwrite to replace it)")
        try:
            self.tmp.mkdir()
        except OSError as exc:
            raise OutputError(f"cannot write in {parent}: {exc.strerror or exc}") from exc
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        try:
            if self.final.exists():
                os.replace(self.final, self._old)
            os.replace(self.tmp, self.final)
        except OSError as e:
            shutil.rmtree(self.tmp, ignore_errors=True)
            if self._old.exists() and not self.final.exists():
                os.replace(self._old, self.final)
            raise OutputError(f"cannot move the result into {self.final}: {e.strerror or e}") from e
        shutil.rmtree(self._old, ignore_errors=True)


class OutputLock:
    """An exclusive lock on an output folder, held by one batch (or one Blender Reconstruct) at a
    time: ``with OutputLock(folder, wait_s=0):``.

    The lock is an OS file lock on ``<folder>/.p2v.lock`` (``flock``; ``msvcrt`` on Windows), so the
    system releases it when the holder dies, even by SIGKILL: a lock file left by a killed run is
    recognised as stale simply because nobody holds it. The file records the holder's process id,
    host and start time for the message a second run gets; it is removed on release.
    """

    def __init__(self, folder: str | os.PathLike[str], wait_s: float = 0.0, poll_s: float = 0.2):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.wait_s = wait_s
        self.poll_s = poll_s
        self._fd: int | None = None

    def _holder(self) -> str:
        try:
            info = json.loads(self.path.read_text(encoding="utf-8"))
            return f"process {info['pid']} on {info['host']}, since {info['started']}"
        except (OSError, ValueError, KeyError, TypeError):
            return "another process"

    def acquire(self) -> OutputLock:
        deadline = time.monotonic() + self.wait_s
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise OutputError(f"cannot write in the output folder {self.folder}: {exc.strerror or exc}") from exc
            if _try_lock(fd):
                try:
                    same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
                except OSError:
                    same = False
                if same:  # not a file that its last holder removed after we opened it
                    break
            os.close(fd)
            if time.monotonic() >= deadline:
                raise LockedError(f"the output folder {self.folder} is in use by {self._holder()}; "
                                  "wait for that run to finish or choose another output folder")
            time.sleep(self.poll_s)
        self._fd = fd
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(info).encode())
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink()
        except OSError:
            pass
        os.close(self._fd)  # closing releases the lock
        self._fd = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, exc_type, exc, tb) -> None:
        self.release()


def _try_lock(fd: int) -> bool:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
        except OSError:
            return False
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def clean_leftovers(folder: str | os.PathLike[str]) -> list[str]:
    """Remove what killed runs left in ``folder``: hidden ``.<name>.partial-*`` folders (a result
    that was being written) and ``.<name>.old-*`` folders (a replaced result); an ``old`` folder
    whose result is missing (killed between the two renames) is put back. Call it only while
    holding :class:`OutputLock`. Returns the names removed or restored."""
    folder = Path(folder)
    done: list[str] = []
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return done
    for p in entries:
        m = LEFTOVER_RE.match(p.name)
        if m is None or not p.is_dir() or p.is_symlink():
            continue
        final = folder / m["name"]
        if m["kind"] == "old" and not final.exists():
            try:
                os.replace(p, final)
                done.append(p.name)
                continue
            except OSError:
                pass
        shutil.rmtree(p, ignore_errors=True)
        done.append(p.name)
    return done


def check_output_folder(folder: str | os.PathLike[str], need_bytes: int = MIN_FREE_BYTES,
                        longest_name: str = "") -> Path:
    """Fail before any work when ``folder`` cannot take results: it is created if missing, must
    accept a new file, have ``need_bytes`` free, and hold ``longest_name`` (a result folder name)
    with a result file inside without exceeding the system's name and path limits.
    Raises :class:`OutputError` with the reason."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the output folder {folder}: {exc.strerror or exc}") from exc
    if not folder.is_dir():
        raise OutputError(f"the output path {folder} is not a folder")
    probe = folder / f".p2v-probe-{uuid.uuid4().hex[:8]}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutputError(f"the output folder {folder} is not writable: {exc.strerror or exc}") from exc
    free = shutil.disk_usage(folder).free
    if free < need_bytes:
        raise OutputError(f"the output folder {folder} has only {free / 2**20:.0f} MB free "
                          f"(need at least {need_bytes / 2**20:.0f} MB)")
    if longest_name:
        name_max, path_max = _limits(folder)
        tmp_name = f".{longest_name}.partial-00000000"
        if len(os.fsencode(tmp_name)) > name_max:
            raise OutputError(f"the result name {longest_name!r} is too long for the file system "
                              f"({name_max} bytes a name)")
        deepest = folder.resolve() / tmp_name / "face_base.mtl"
        if len(os.fsencode(str(deepest))) >= path_max:
            raise OutputError(f"the output folder path {folder.resolve()} is too long: results in it would exceed "
                              f"the system's limit of {path_max} bytes a path; choose a shorter one")
    return folder


def _limits(folder: Path) -> tuple[int, int]:
    """(longest file name, longest path) in bytes on ``folder``'s file system."""
    try:
        return os.pathconf(folder, "PC_NAME_MAX"), os.pathconf(folder, "PC_PATH_MAX")
    except (OSError, ValueError, AttributeError):  # Windows: no pathconf
        return 255, 260


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes (read in blocks); OSError when it cannot be read."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    """JSON with NumPy scalars and arrays converted."""

    def default(o: Any) -> Any:
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, Path):
            return str(o)
        raise TypeError(f"not JSON serialisable: {type(o).__name__}")

    Path(path).write_text(json.dumps(data, indent=2, default=default) + "\n", encoding="utf-8")


def read_obj_vertices(path: str | os.PathLike[str]) -> np.ndarray:
    """(V, 3) the ``v`` lines of an OBJ file, in file order."""
    rows = [line.split()[1:4] for line in Path(path).read_text(encoding="utf-8").splitlines()
            if line.startswith("v ")]
    return np.asarray(rows, dtype=np.float64)


def _rows(buf: io.StringIO, fmt: str, a: np.ndarray) -> None:
    """Write one formatted line per row of ``a`` (one C-level % per block: fast)."""
    a = np.asarray(a)
    flat = a.ravel().tolist()
    block = 20000
    per = a.shape[1]
    for i in range(0, len(a), block):
        n = min(block, len(a) - i)
        buf.write(((fmt + "\n") * n) % tuple(flat[i * per:(i + n) * per]))


_MAX_EXACT = float(1 << 52)
# the three ASCII digits of 0..999 (and a fourth byte), read as one 32-bit word per number
_DIGITS3 = np.array([list(f"{i:03d}".encode("ascii")) + [0] for i in range(1000)], dtype=np.uint8).view(np.uint32)


def _digit_chars(x: np.ndarray, n_digits: int) -> np.ndarray:
    """(N, n_digits) uint8 ASCII decimal digits of non-negative int64 ``x`` (zero padded; in
    groups of three through a table, dividing by scalars: NumPy's fast integer division)."""
    groups = []
    for _ in range(-(-n_digits // 3)):
        hi = x // 1000
        groups.append(_DIGITS3.ravel()[x - hi * 1000].view(np.uint8).reshape(-1, 4)[:, :3])
        x = hi
    return np.concatenate(groups[::-1], axis=1)[:, -n_digits:]


def fixed_rows(prefix: str, a: np.ndarray, decimals: int = 6) -> str:
    """The lines ``prefix`` + the row's values as ``%.{decimals}f``, space separated, of (N, K)
    ``a``: the same text as Python's formatting, built as bytes by NumPy (five times faster). Rows
    with a value the fast path cannot round with certainty (within two units in the last place of
    a rounding boundary), and arrays with non-finite or huge values, are formatted by Python."""
    a = np.asarray(a, dtype=np.float64)
    n, k = a.shape
    if n == 0:
        return ""
    fmt = prefix + " ".join([f"%.{decimals}f"] * k)
    s = a * float(10 ** decimals)
    if not np.isfinite(s).all() or np.abs(s).max() >= _MAX_EXACT:
        return ((fmt + "\n") * n) % tuple(a.ravel().tolist())
    q = np.abs(np.rint(s)).astype(np.int64).ravel()
    ip = q // (10 ** decimals)
    fp = q - ip * (10 ** decimals)
    d = len(str(int(ip.max())))  # integer digits of the widest value
    w = d + decimals + 3  # sign, digits, point, separator
    cell = np.zeros((n * k, w), dtype=np.uint8)
    cell[:, 0] = np.signbit(a).ravel() * np.uint8(ord("-"))
    cell[:, 1:1 + d] = _digit_chars(ip, d)
    if d > 1:  # leading zeros of the integer part are left out (one digit stays)
        cell[:, 1:d] *= ip[:, None] >= 10 ** np.arange(d - 1, 0, -1, dtype=np.int64)
    cell[:, 1 + d] = ord(".")
    cell[:, 2 + d:2 + d + decimals] = _digit_chars(fp, decimals)
    cell[:, -1] = ord(" ")
    out = np.empty((n, len(prefix) + k * w), dtype=np.uint8)
    out[:, : len(prefix)] = np.frombuffer(prefix.encode("ascii"), dtype=np.uint8)
    out[:, len(prefix):] = cell.reshape(n, k * w)
    out[:, -1] = ord("\n")
    flat = out.ravel()
    text = flat[flat != 0].tobytes().decode("ascii")
    # s is a * 10**decimals rounded: within two units in its last place of a half (a rounding
    # boundary) the exact product may lie on the other side; Python formats those rows
    near = np.abs(s - np.floor(s) - 0.5) <= 2.0 * np.spacing(np.abs(s))
    if near.any():
        lines = text.split("\n")
        for i in np.flatnonzero(near.any(axis=1)).tolist():
            lines[i] = fmt % tuple(a[i].tolist())
        text = "\n".join(lines)
    return text


def _unique_rows_2d(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(a, axis=0, return_inverse=True)`` for (N, 2) values on a 1e-7 grid, through one
    int64 key per row (a 1-D sort: ten times faster than the row sort)."""
    q = np.rint(a * 1e7).astype(np.int64)
    q -= q.min(axis=0)
    if q[:, 1].max(initial=0) >= 1 << 31 or q[:, 0].max(initial=0) >= 1 << 31:
        uniq, inv = np.unique(a, axis=0, return_inverse=True)
        return uniq, inv.ravel()
    _, first, inv = np.unique((q[:, 0] << 31) | q[:, 1], return_index=True, return_inverse=True)
    return a[first], inv.ravel()


def format_obj(
    vertices_m: np.ndarray,
    faces: np.ndarray,
    corner_uvs: np.ndarray | None = None,
    mtl_file: str | None = None,
    material: str = "face",
    name: str = "face",
    header: str = "",
) -> str:
    """Wavefront OBJ text.

    Parameters
    ----------
    vertices_m : (V, 3) float, metres, OBJ convention (+y up, +z towards the viewer).
    faces : (F, k) int, 0-based polygon corners, -1 pads shorter polygons (k = 3 or 4).
    corner_uvs : (F, k, 2) float UV per corner (NaN on padding), optional.
    """
    v = np.asarray(vertices_m, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    if v.ndim != 2 or v.shape[1] != 3:
        raise ValueError(f"vertices must be (V, 3), got {v.shape}")
    if f.ndim != 2 or f.shape[1] not in (3, 4) or f.max() >= len(v) or (f[:, :3] < 0).any():
        raise ValueError(f"faces must be (F, 3|4) 0-based indices into {len(v)} vertices")
    buf = io.StringIO()
    for line in header.splitlines():
        buf.write(f"# {line}\n")
    if mtl_file:
        buf.write(f"mtllib {mtl_file}\n")
    buf.write(f"o {name}\n")
    buf.write(fixed_rows("v ", v))
    buf.write(_obj_layout_text(f, corner_uvs, mtl_file, material))
    return buf.getvalue()


_LAYOUT_TEXT: LayoutCache[str] = LayoutCache("OBJ layout lines", 6)


def _obj_layout_text(f: np.ndarray, corner_uvs: np.ndarray | None, mtl_file: str | None, material: str) -> str:
    """The ``vt``, ``usemtl`` and ``f`` lines of a layout: the same for every reconstruction onto
    one template, so they are formatted once per layout and kept (a few MB)."""
    uv = None if corner_uvs is None else np.asarray(corner_uvs, dtype=np.float64)
    if uv is not None and uv.shape != f.shape + (2,):
        raise ValueError(f"corner_uvs must be {f.shape + (2,)}, got {uv.shape}")
    return _LAYOUT_TEXT.get(array_key(f, uv, bool(mtl_file), material),
                            lambda: _format_layout(f, uv, mtl_file, material))


def _format_layout(f: np.ndarray, uv: np.ndarray | None, mtl_file: str | None, material: str) -> str:
    buf = io.StringIO()
    valid = f >= 0
    if uv is not None:
        uniq, inv = _unique_rows_2d(np.round(uv[valid], 7))
        _rows(buf, "vt %.7f %.7f", uniq)
        vt = np.full(f.shape, -1, dtype=np.int64)
        vt[valid] = inv.ravel()
    if mtl_file:
        buf.write(f"usemtl {material}\n")
    buf.write("s 1\n")
    for k in (3, 4):
        rows = valid.sum(1) == k
        if not rows.any():
            continue
        fi = f[rows][:, :k] + 1
        if uv is not None:
            ti = vt[rows][:, :k] + 1
            cols = np.stack([fi, ti], axis=2).reshape(len(fi), 2 * k)
            fmt = "f " + " ".join(["%d/%d"] * k)
        else:
            cols = fi
            fmt = "f " + " ".join(["%d"] * k)
        _rows(buf, fmt, cols)
    return buf.getvalue()


def write_obj(
    folder: str | os.PathLike[str],
    vertices_m: np.ndarray,
    faces: np.ndarray,
    corner_uvs: np.ndarray | None,
    texture: str | None = "texture.png",
    stem: str = "face",
    header: str = "",
    normal_map: str | None = None,
) -> tuple[Path, Path | None]:
    """Write ``<stem>.obj`` (and ``<stem>.mtl`` naming ``texture`` and, as ``map_Bump``, the
    tangent-space ``normal_map``: Blender's importer reads it as a normal map) into ``folder``."""
    folder = Path(folder)
    mtl = f"{stem}.mtl" if texture else None
    text = format_obj(vertices_m, faces, corner_uvs, mtl_file=mtl, header=header)
    obj_path = folder / f"{stem}.obj"
    obj_path.write_text(text, encoding="utf-8")
    mtl_path = None
    if mtl:
        mtl_path = folder / mtl
        mtl_path.write_text(
            "newmtl face\nKa 1 1 1\nKd 1 1 1\nKs 0 0 0\nNs 10\nillum 1\n"
            f"map_Kd {texture}\n" + (f"map_Bump {normal_map}\n" if normal_map else ""),
            encoding="utf-8",
        )
    return obj_path, mtl_path
