"""The extension package: manifest validation, build, and install into Blender from the zip."""

from __future__ import annotations

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
    for banned in ("tests/", "docs/", "scripts/", ".ci/", ".venv/", "vendor_install.py", ".git/",
                   "pix2vertex_addon/training/"):
        assert not any(n.startswith(banned) for n in names), banned
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    assert not any(n.endswith(".npz") and "/" not in n for n in names), "ict_facekit.npz never ships"
    assert "pix2vertex_addon/face_model_pack/identity.npz" in names, "the face-model pack ships"
    assert "pix2vertex_addon/face_model_pack/LICENSE-ICT-FaceKit" in names


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


def test_staged_extension_carries_checked_hash_bytecode(tmp_path):
    """Blender never writes bytecode, so the built zip carries the add-on's modules compiled:
    checked-hash .pyc (valid whatever the unzipped files' times), beside every source."""
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import build_extension
    finally:
        sys.path.pop(0)
    if sys.version_info[:2] != build_extension.BLENDER_PYTHON:
        pytest.skip("bytecode is built for Blender's Python only")
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
