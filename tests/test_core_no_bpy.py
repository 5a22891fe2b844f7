"""The core (geometry, networks, images, face model) never imports bpy."""

from __future__ import annotations

import ast
import subprocess
import sys

from conftest import REPO

BPY_FREE = [REPO / "pix2vertex_addon" / "core", REPO / "pix2vertex_addon" / "training"]


def _bpy_imports(path):
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            hits += [a.name for a in node.names if a.name.split(".")[0] in ("bpy", "bpy_extras", "mathutils", "bmesh")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] in ("bpy", "bpy_extras", "mathutils", "bmesh"):
                hits.append(node.module)
        elif isinstance(node, ast.ImportFrom) and node.level > 0 and node.module and "blender" in node.module.split("."):
            hits.append("." * node.level + node.module)
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "__import__":
            if node.args and isinstance(node.args[0], ast.Constant) and str(node.args[0].value).startswith("bpy"):
                hits.append(node.args[0].value)
    return hits


def test_no_bpy_import_anywhere_in_core_source():
    files = [p for d in BPY_FREE if d.exists() for p in d.rglob("*.py")]
    assert len(files) >= 3
    offenders = {str(p.relative_to(REPO)): h for p in files if (h := _bpy_imports(p))}
    assert offenders == {}, f"core modules import Blender modules: {offenders}"


def test_static_check_catches_a_bpy_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from bpy import data\n    import bmesh\n")
    assert _bpy_imports(bad) == ["bpy", "bmesh"]


def test_importing_every_core_module_leaves_bpy_unloaded():
    code = (
        "import importlib, pkgutil, sys\n"
        "import pix2vertex_addon, pix2vertex_addon.core as core\n"
        "names = [m.name for m in pkgutil.walk_packages(core.__path__, 'pix2vertex_addon.core.')]\n"
        "for n in names:\n"
        "    importlib.import_module(n)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('bpy', 'mathutils', 'bmesh'))\n"
        "print(len(names), bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
