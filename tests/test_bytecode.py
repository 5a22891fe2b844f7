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


def _pack_with(tmp_path, sources: dict[str, str], compile_from: dict[str, str]):
    """A site-packages holding ``sources`` and a pack compiled (checked-hash) from ``compile_from``."""
    import py_compile

    site, pack, build = tmp_path / "site-packages", tmp_path / "pack", tmp_path / "build"
    for rel, text in sources.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_text(text)
    for rel, text in compile_from.items():
        (build / rel).parent.mkdir(parents=True, exist_ok=True)
        (build / rel).write_text(text)
        pyc = pack / importlib.util.cache_from_source(rel)
        pyc.parent.mkdir(parents=True, exist_ok=True)
        py_compile.compile(str(build / rel), cfile=str(pyc), dfile=rel, doraise=True,
                           invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)
    (pack / "PACK_ID").write_text("pack-1\n")
    return site, pack


def test_pack_installs_only_where_the_source_matches_and_python_uses_it(blender_addon, tmp_path, monkeypatch):
    """install_pack puts each .pyc beside its source when the source's hash is the one it was
    compiled from; another source, a missing one and an unwritable folder are skipped; the import
    system then loads the module from the installed .pyc (Blender writes none itself)."""
    bytecode = addon_module("blender.bytecode")
    site, pack = _pack_with(
        tmp_path,
        sources={"pkg_a/__init__.py": "VALUE = 'a'\n", "pkg_a/mod.py": "VALUE = 'edited'\n"},
        compile_from={"pkg_a/__init__.py": "VALUE = 'a'\n", "pkg_a/mod.py": "VALUE = 'original'\n",
                      "pkg_gone/__init__.py": "VALUE = 1\n"})
    marker = tmp_path / "user" / "bytecode-pack"
    counts = bytecode.install_pack(pack, site, marker)
    assert counts == {"installed": 1, "present": 0, "skipped": 2, "failed": 0}
    installed = site / importlib.util.cache_from_source("pkg_a/__init__.py")
    assert installed.is_file() and not (site / importlib.util.cache_from_source("pkg_a/mod.py")).exists()
    assert marker.read_text().strip() == "pack-1"
    # the marker: the same pack is not read again; a new pack id is, and finds the file in place
    assert bytecode.install_pack(pack, site, marker) == {"installed": 0, "present": 0, "skipped": 0, "failed": 0}
    (pack / "PACK_ID").write_text("pack-2\n")
    assert bytecode.install_pack(pack, site, marker)["present"] == 1
    # Python loads the installed checked-hash .pyc: its code object came from the pack (dfile)
    monkeypatch.syspath_prepend(str(site))
    import pkg_a

    assert pkg_a.VALUE == "a"
    spec = importlib.util.find_spec("pkg_a")
    code = spec.loader.get_code("pkg_a")
    assert spec.cached == str(installed)
    assert code.co_filename == str(site / "pkg_a" / "__init__.py")  # fixed up to the real source
    monkeypatch.delitem(sys.modules, "pkg_a")


def test_pack_install_survives_an_unwritable_cache_folder(blender_addon, tmp_path):
    """A ``__pycache__`` that cannot be made (here a file of that name) counts as failed, raises
    nothing and leaves no marker, so the next registration tries again."""
    bytecode = addon_module("blender.bytecode")
    site, pack = _pack_with(tmp_path, {"pkg_b/__init__.py": "X = 1\n"}, {"pkg_b/__init__.py": "X = 1\n"})
    (site / "pkg_b" / "__pycache__").write_text("not a folder")
    marker = tmp_path / "marker"
    assert bytecode.install_pack(pack, site, marker)["failed"] == 1
    assert not marker.exists()
