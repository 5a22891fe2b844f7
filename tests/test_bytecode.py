"""The add-on writes the bytecode Blender does not (sys.dont_write_bytecode) for the bundled
packages it imported, so later sessions start faster."""

from __future__ import annotations

import importlib.util
import sys
import types

from conftest import addon_module


def test_missing_bytecode_of_bundled_modules_is_written(blender_addon, tmp_path, monkeypatch):
    bytecode = addon_module("blender.bytecode")
    site = tmp_path / "extensions" / ".local" / "lib" / "python3.11" / "site-packages"
    site.mkdir(parents=True)
    src = site / "bundled_pkg.py"
    src.write_text("VALUE = 42\n")
    other = tmp_path / "elsewhere.py"
    other.write_text("VALUE = 1\n")
    for name, f in (("bundled_pkg", src), ("elsewhere_pkg", other)):
        mod = types.ModuleType(name)
        mod.__file__ = str(f)
        monkeypatch.setitem(sys.modules, name, mod)
    assert sys.dont_write_bytecode, "Blender (bpy) writes no bytecode itself"
    missing = bytecode.missing_bytecode()
    assert src in missing and other not in missing
    assert bytecode.write_bytecode([src, tmp_path / "gone.py"]) == 1
    assert (site / "__pycache__").is_dir()
    assert importlib.util.cache_from_source(str(src)) in [str(p) for p in (site / "__pycache__").iterdir()]
    assert src not in bytecode.missing_bytecode()
