"""The extension package: manifest validation, build, and install into Blender from the zip."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import REPO


def _blender_ext() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("bpy")
    assert spec is not None and spec.origin
    path = Path(spec.origin).parent / "5.0" / "scripts" / "addons_core" / "bl_pkg" / "cli" / "blender_ext.py"
    assert path.is_file(), path
    return path


@pytest.fixture(scope="module")
def extension_zip(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    r = subprocess.run(
        [sys.executable, str(_blender_ext()), "build", "--source-dir", str(REPO), "--output-dir", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    zips = list(out.glob("pix2vertex-*.zip"))
    assert len(zips) == 1, r.stdout
    return zips[0]


def test_manifest_validates():
    r = subprocess.run([sys.executable, str(_blender_ext()), "validate", str(REPO)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    import tomllib

    manifest = tomllib.loads((REPO / "blender_manifest.toml").read_text())
    assert manifest["id"] == "pix2vertex" and manifest["blender_version_min"] == "4.2.0"
    assert "files" in manifest["permissions"]
    from pix2vertex_addon import __version__

    assert manifest["version"] == __version__


def test_zip_holds_the_addon_and_nothing_else(extension_zip):
    names = zipfile.ZipFile(extension_zip).namelist()
    assert "blender_manifest.toml" in names and "__init__.py" in names
    assert "pix2vertex_addon/core/face_model.py" in names
    assert "pix2vertex_addon/blender/operators.py" in names
    for banned in ("tests/", "docs/", "scripts/", ".ci/", ".venv/", "vendor_install.py", ".git/", "locks/",
                   "pix2vertex_addon/training/"):
        assert not any(n.startswith(banned) for n in names), banned
    assert ".git" not in names, "a git worktree's .git file"
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    assert not any(n.endswith(".npz") and "/" not in n for n in names), "ict_facekit.npz never ships"
    assert "pix2vertex_addon/face_model_pack/identity.npz" in names, "the face-model pack ships"
    assert "pix2vertex_addon/face_model_pack/LICENSE-ICT-FaceKit" in names


# -- what ships imports nothing that does not ship ----------------------------------------------
def _imports(source: str, package: tuple[str, ...]) -> list[str]:
    """Every module an import statement of ``source`` may load (those inside functions too), as
    dotted names from the extension's top: relative imports resolved against ``package`` (the file's
    folder, ``()`` at the top); ``from M import n`` gives ``M`` and ``M.n``, which may be a module."""
    out: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                base = node.module or ""
            elif node.level - 1 > len(package):
                base = "<above the top>"
            else:
                top = package[: len(package) - node.level + 1]
                base = ".".join([*top, *([node.module] if node.module else [])])
            out += [base] + [f"{base}.{a.name}".lstrip(".") for a in node.names]
    return out


def _package_of(rel: str) -> tuple[str, ...]:
    return tuple(rel.split("/")[:-1])


def _module_of(rel: str) -> str:
    parts = rel[: -len(".py")].split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _training_imports(sources: dict[str, str]) -> dict[str, list[str]]:
    """Imports of ``pix2vertex_addon.training`` in ``sources`` (path relative to the top: text)."""
    hits = {rel: [m for m in _imports(text, _package_of(rel))
                  if m == "pix2vertex_addon.training" or m.startswith("pix2vertex_addon.training.")]
            for rel, text in sources.items()}
    return {rel: sorted(set(h)) for rel, h in hits.items() if h}


def _unresolved(sources: dict[str, str], source_modules: set[str]) -> dict[str, list[str]]:
    """Per file of ``sources`` (a zip's .py files), the imports of the add-on's own modules (those
    of ``source_modules``, the checkout's) that the same files do not provide."""
    present = {_module_of(rel) for rel in sources}
    out = {}
    for rel, text in sources.items():
        own = [m for m in _imports(text, _package_of(rel))
               if m == "<above the top>" or (m.split(".")[0] == "pix2vertex_addon" and m in source_modules)
               or m.startswith("pix2vertex_addon.training")]
        if missing := sorted({m for m in own if m not in present}):
            out[rel] = missing
    return out


def _checkout_sources() -> dict[str, str]:
    files = [REPO / "__init__.py", *sorted((REPO / "pix2vertex_addon").rglob("*.py"))]
    return {p.relative_to(REPO).as_posix(): p.read_text(encoding="utf-8") for p in files}


def test_nothing_that_ships_imports_the_training_code():
    """Static: no ``from ..training`` / ``pix2vertex_addon.training`` import outside training/,
    scripts/ and tests/ (the core and the Blender part run in Blender; training/ is not in the zip)."""
    shipped = {rel: text for rel, text in _checkout_sources().items()
               if not rel.startswith("pix2vertex_addon/training/")}
    assert "pix2vertex_addon/core/pipeline.py" in shipped and "pix2vertex_addon/blender/operators.py" in shipped
    assert _training_imports(shipped) == {}
    # the check sees the ways such an import is written
    bad = {"pix2vertex_addon/core/bad.py": "def f():\n    from ..training.synth import generate_sample\n",
           "pix2vertex_addon/core/geometry/bad.py": "from ... import training\n",
           "pix2vertex_addon/blender/bad.py": "import pix2vertex_addon.training.losses\n"}
    assert _training_imports(bad) == {
        "pix2vertex_addon/core/bad.py": ["pix2vertex_addon.training.synth",
                                         "pix2vertex_addon.training.synth.generate_sample"],
        "pix2vertex_addon/core/geometry/bad.py": ["pix2vertex_addon.training"],
        "pix2vertex_addon/blender/bad.py": ["pix2vertex_addon.training.losses"],
    }


def test_zip_carries_no_training_code_and_its_imports_resolve_inside_it(extension_zip):
    z = zipfile.ZipFile(extension_zip)
    names = z.namelist()
    assert not [n for n in names if n.startswith("pix2vertex_addon/training")
                or "/synth/" in n or n.endswith(("/losses.py", "/raster.py"))]
    sources = {n: z.read(n).decode("utf-8") for n in names if n.endswith(".py") and not n.startswith("wheels/")}
    assert len(sources) >= 40 and "pix2vertex_addon/core/raster_np.py" in sources
    checkout_modules = {_module_of(rel) for rel in _checkout_sources()}
    assert _unresolved(sources, checkout_modules) == {}
    # the check is not vacuous: without the numpy rasteriser, its importers are reported
    without = {n: t for n, t in sources.items() if n != "pix2vertex_addon/core/raster_np.py"}
    missing = _unresolved(without, checkout_modules)
    assert "pix2vertex_addon/core/projection.py" in missing
    assert all(v == ["pix2vertex_addon.core.raster_np"] for v in missing.values()), missing


def test_build_script_refuses_a_zip_with_training_code(tmp_path):
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import build_extension
    finally:
        sys.path.pop(0)
    good, bad = tmp_path / "good.zip", tmp_path / "bad.zip"
    for path, extra in ((good, "pix2vertex_addon/core/raster_np.py"),
                        (bad, "pix2vertex_addon/training/synth/raster.py")):
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("blender_manifest.toml", "")
            z.writestr(extra, "")
    build_extension.check_zip(good)
    with pytest.raises(SystemExit, match="carries pix2vertex_addon/training/"):
        build_extension.check_zip(bad)


_INSTALL_SCRIPT = r"""
import json, sys
import bpy
import addon_utils
zip_path = sys.argv[1]
result = {}
bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default", enable_on_install=True)
mod = "bl_ext.user_default.pix2vertex"
result["enabled"] = mod in bpy.context.preferences.addons
# a fresh install has no face model path: the user sets it in the preferences
bpy.context.preferences.addons[mod].preferences.face_model_path = sys.argv[2]
result["add_template"] = sorted(bpy.ops.p2v.add_template())
obj = bpy.context.active_object
result["vertices"] = len(obj.data.vertices)
result["uv_layers"] = obj.data.uv_layers.keys()
addon_utils.disable(mod, default_set=True)
result["disabled_clean"] = not hasattr(bpy.types.Scene, "p2v") and "VIEW3D_PT_p2v_reconstruct" not in dir(bpy.types)
bpy.ops.extensions.package_uninstall(repo_index=1, pkg_id="pix2vertex")
print("RESULT" + json.dumps(result))
"""


def test_zip_installs_and_enables_in_blender(extension_zip, tmp_path):
    env = {**os.environ, "BLENDER_USER_RESOURCES": str(tmp_path / "blender-user")}
    from pix2vertex_addon.core.face_model import default_face_model_path

    env.pop("P2V_FACE_MODEL", None)
    model = str(default_face_model_path())
    r = subprocess.run([sys.executable, "-c", _INSTALL_SCRIPT, str(extension_zip), model], env=env,
                       capture_output=True, text=True, timeout=300)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT")]
    assert r.returncode == 0 and lines, r.stdout[-3000:] + r.stderr[-3000:]
    result = json.loads(lines[-1][len("RESULT"):])
    assert result == {
        "enabled": True,
        "add_template": ["FINISHED"],
        "vertices": 9409,
        "uv_layers": ["UVMap"],
        "disabled_clean": True,
    }
    installed = tmp_path / "blender-user" / "extensions" / "user_default" / "pix2vertex"
    assert not installed.exists(), "uninstall removed the files"


def _build_extension_for_bytecode():
    """scripts/build_extension.py as a module; skips the test unless this is Blender's Python
    (the only one the zips' bytecode is built for)."""
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import build_extension
    finally:
        sys.path.pop(0)
    if sys.version_info[:2] != build_extension.BLENDER_PYTHON:
        pytest.skip("bytecode is built for Blender's Python only")
    return build_extension


def test_staged_extension_carries_checked_hash_bytecode(tmp_path):
    """Blender never writes bytecode, so the built zip carries the add-on's modules compiled:
    checked-hash .pyc (valid whatever the unzipped files' times), beside every source."""
    build_extension = _build_extension_for_bytecode()
    src = build_extension.stage(["linux-x64"], {"linux-x64": []}, tmp_path)
    import importlib.util

    sources = sorted((src / "pix2vertex_addon").rglob("*.py"))
    assert len(sources) > 30
    for py in sources:
        pyc = Path(importlib.util.cache_from_source(str(py)))
        assert pyc.is_file(), py
        flags = int.from_bytes(pyc.read_bytes()[4:8], "little")
        assert flags == 0b11, (py, flags)  # hash-based, checked against the source
    assert '"__pycache__/"' not in (src / "blender_manifest.toml").read_text()


def test_wheel_bytecode_is_compiled_from_the_wheels_own_sources(tmp_path):
    """The pack holds checked-hash .pyc of the wanted modules of each wheel, compiled from the
    source inside the wheel (so they match what Blender unpacks), laid out as in site-packages;
    stage() writes it with an id that changes with its content."""
    build_extension = _build_extension_for_bytecode()
    import importlib.util

    whl = tmp_path / "demo-1.0-py3-none-any.whl"
    src = {"demo/__init__.py": b"X = 1\n", "demo/sub/mod.py": b"Y = 2\n", "demo/unused.py": b"Z = 3\n",
           "demo/broken.py": b"def (:\n"}
    with zipfile.ZipFile(whl, "w") as z:
        for name, data in src.items():
            z.writestr(name, data)
    pyc = build_extension.wheel_bytecode([whl], {"demo/__init__.py", "demo/sub/mod.py", "demo/broken.py"})
    assert sorted(pyc) == sorted(importlib.util.cache_from_source(n) for n in ("demo/__init__.py", "demo/sub/mod.py"))
    for name in ("demo/__init__.py", "demo/sub/mod.py"):
        data = pyc[importlib.util.cache_from_source(name)]
        assert int.from_bytes(data[4:8], "little") == 0b11  # hash-based, checked
        assert data[8:16] == importlib.util.source_hash(src[name])
    staged = build_extension.stage(["linux-x64"], {"linux-x64": []}, tmp_path / "a", bytecode=pyc)
    pack = staged / build_extension.WHEEL_BYTECODE
    assert (pack / "demo" / "sub" / "__pycache__").is_dir()
    one = (pack / "PACK_ID").read_text()
    pyc2 = dict(pyc)
    pyc2.pop(importlib.util.cache_from_source("demo/sub/mod.py"))
    other = build_extension.stage(["linux-x64"], {"linux-x64": []}, tmp_path / "b", bytecode=pyc2)
    assert (other / build_extension.WHEEL_BYTECODE / "PACK_ID").read_text() != one
