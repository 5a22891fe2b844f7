"""vendor_install.py: pins, idempotency, Blender target folder, face model errors."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from conftest import ADDON_MODULE, REPO


@pytest.fixture(scope="module")
def vi():
    spec = importlib.util.spec_from_file_location("vendor_install", REPO / "vendor_install.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_package_is_pinned_exactly(vi):
    reqs = vi.RUNTIME + vi.NO_DEPS + vi.DEVELOPMENT
    pins = dict(p.split("==") for p in reqs)
    assert len(pins) == len(reqs), "every requirement uses == and appears once"
    assert pins["torch"] == "2.13.0" and pins["bpy"] == "5.0.1"
    assert int(pins["numpy"].split(".")[0]) < 2
    assert "numpy" not in {p.split("==")[0] for p in vi.RUNTIME}, "Blender bundles numpy"


def test_installed_versions_match_the_pins(vi):
    from importlib.metadata import version

    for req in vi.RUNTIME + vi.NO_DEPS + vi.DEVELOPMENT:
        name, pinned = req.split("==")
        assert version(name).split("+")[0] == pinned, name


def test_blender_target_matches_blender_own_path(vi, tmp_path, monkeypatch):
    import bpy

    expected = bpy.utils.extension_path_user(ADDON_MODULE)
    user = vi.blender_user_dir()
    assert str(user / "extensions" / ".user" / "user_default" / "pix2vertex") == expected


def test_second_run_is_a_no_op():
    if not (REPO / ".venv" / ".p2v-requirements.sha256").exists():
        pytest.skip("the development environment was not made by vendor_install.py")
    r = subprocess.run([sys.executable, str(REPO / "vendor_install.py")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "up to date" in r.stdout and "pip install" not in r.stdout


def test_blender_mode_dry_run_names_target_and_packages(tmp_path):
    r = subprocess.run(
        [sys.executable, str(REPO / "vendor_install.py"), "--blender-python", sys.executable,
         "--target", str(tmp_path / "ext"), "--dry-run"],
        capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"--target {tmp_path / 'ext' / 'site-packages'}" in r.stdout
    assert "torch==2.13.0" in r.stdout and "bpy" not in r.stdout.split("--target")[1]
    assert not (tmp_path / "ext").exists(), "a dry run writes nothing"


def test_missing_face_model_is_a_clear_error(tmp_path):
    missing = tmp_path / "missing.npz"
    r = subprocess.run([sys.executable, str(REPO / "vendor_install.py"), "--face-model", str(missing)],
                       capture_output=True, text=True, timeout=300)
    if "up to date" not in r.stdout:
        pytest.skip("the development environment is not set up")
    assert r.returncode == 2
    assert str(missing) in r.stdout and "--face-model" in r.stdout
