"""Bytecode for the packages the extension bundles.

Blender runs Python with ``sys.dont_write_bytecode``, so a session compiles the sources of every
package it imports that has no ``.pyc`` yet: MediaPipe, SciPy, onnxruntime... about 2 s of the
first Reconstruct after installing (docs/reference/benchmarks.md). Two things supply it:

* the zip carries **the pack**, ``pix2vertex_addon/wheel_bytecode/``: checked-hash ``.pyc`` of the
  bundled wheels' modules that a reconstruction imports, compiled at build time from the wheels'
  own sources (``scripts/build_extension.py``) and laid out as in ``site-packages``.
  :func:`install_pack` (called by ``register()``) puts each one into the ``__pycache__`` beside
  its source in Blender's extension wheel folder, once per pack: a checked-hash ``.pyc`` is used
  only while its source is unchanged, so one that does not match is never installed, and never
  used if its source changes later;
* after the first finished job, :func:`cache_later` writes the ``.pyc`` of any module still
  without one (imported from the wheel folder, ``extensions/.local``), once per session, in a
  background thread; later sessions read them.
"""

from __future__ import annotations

import importlib.util
import os
import py_compile
import sys
import threading
from pathlib import Path

from ..core.atomic import write_bytes_atomic, write_text_atomic

PACK = Path(__file__).resolve().parents[1] / "wheel_bytecode"
PACK_ID = "PACK_ID"  # in the pack: a digest of its files; beside the marker, the pack last installed

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


def install_pack(pack: Path, site_packages: Path, marker: Path | None = None) -> dict[str, int]:
    """Copy the pack's ``.pyc`` files (``<pack>/<package>/__pycache__/<module>.<tag>.pyc``) into
    ``site_packages`` where the module's source is there, its hash is the one the ``.pyc`` was
    compiled from and the interpreter's cache tag matches; files already identical are left.

    marker : a file holding the id of the pack last installed (``<pack>/PACK_ID``): when it
        matches, nothing is read or written; it is written after an install.
    Returns counts: ``installed``, ``present`` (already there), ``skipped`` (no source, another
    source, another Python), ``failed`` (not writable).
    """
    counts = {"installed": 0, "present": 0, "skipped": 0, "failed": 0}
    id_file = pack / PACK_ID
    if not id_file.is_file() or not site_packages.is_dir():
        return counts
    pack_id = id_file.read_text().strip()
    if marker is not None and marker.is_file() and marker.read_text().strip() == pack_id:
        return counts
    tag = sys.implementation.cache_tag
    for root, _, names in os.walk(pack):
        for name in names:
            if not name.endswith(".pyc"):
                continue
            rel = Path(root, name).relative_to(pack)
            if tag is None or not name.endswith(f".{tag}.pyc"):
                counts["skipped"] += 1
                continue
            target = site_packages / rel
            source = Path(importlib.util.source_from_cache(str(target)))
            data = Path(root, name).read_bytes()
            try:
                if not source.is_file() or importlib.util.source_hash(source.read_bytes()) != data[8:16]:
                    counts["skipped"] += 1
                    continue
                if target.is_file() and target.read_bytes() == data:
                    counts["present"] += 1
                    continue
                target.parent.mkdir(exist_ok=True)
                write_bytes_atomic(target, data)
                counts["installed"] += 1
            except OSError:
                counts["failed"] += 1
    if marker is not None and counts["failed"] == 0:
        try:
            marker.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(marker, pack_id + "\n")
        except OSError:
            pass
    return counts


def wheel_site_packages() -> Path:
    """Blender's folder of the extensions' wheels (``<user extensions>/.local/lib/pythonX.Y/site-packages``)."""
    import bpy

    v = sys.version_info
    return Path(bpy.utils.user_resource("EXTENSIONS")) / ".local" / "lib" / f"python{v[0]}.{v[1]}" / "site-packages"


def install_pack_for_extension(marker_folder: str | None) -> dict[str, int]:
    """:func:`install_pack` of the zip's pack into Blender's wheel folder (nothing when not
    running from a built extension, which has no pack); never raises."""
    try:
        marker = Path(marker_folder) / "bytecode-pack" if marker_folder else None
        return install_pack(PACK, wheel_site_packages(), marker)
    except Exception:  # noqa: BLE001 - registration never fails over bytecode
        return {}
