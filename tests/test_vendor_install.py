"""vendor_install.py: pins, idempotency, Blender target folder, face model errors."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

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


def test_blender_target_is_blender_own_modules_folder(vi):
    import bpy

    assert vi.blender_modules_dir() == Path(bpy.utils.user_resource("SCRIPTS", path="modules"))
    assert str(vi.blender_user_dir() / "extensions" / ".user" / "user_default" / "pix2vertex") == (
        bpy.utils.extension_path_user(ADDON_MODULE))


def test_second_run_is_a_no_op():
    if not (REPO / ".venv" / ".p2v-requirements.sha256").exists():
        pytest.skip("the development environment was not made by vendor_install.py")
    r = subprocess.run([sys.executable, str(REPO / "vendor_install.py")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "up to date" in r.stdout and "pip install" not in r.stdout


def test_blender_mode_dry_run_names_target_and_packages(tmp_path):
    r = subprocess.run(
        [sys.executable, str(REPO / "vendor_install.py"), "--blender-python", sys.executable,
         "--target", str(tmp_path / "mods"), "--dry-run"],
        capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"--target {tmp_path / 'mods'}" in r.stdout and "--require-hashes" in r.stdout
    installs = r.stdout.split("would install:")[1].split()
    assert "torch==2.13.0+cpu" in installs and "safetensors==0.8.0" in installs
    assert not any(p.startswith(("bpy", "numpy", "scipy", "setuptools", "pip==")) for p in installs)
    assert not (tmp_path / "mods").exists(), "a dry run writes nothing"


def test_the_lock_pins_every_package_with_a_hash(vi):
    lines = vi.lock_lines()
    names = [ln.split("==")[0] for ln in lines]
    assert len(names) == len(set(names))
    for ln in lines:
        assert re.fullmatch(r"[a-z0-9.-]+==[^ ]+ --hash=sha256:[0-9a-f]{64}", ln), ln
    locked = dict(ln.split(" ")[0].split("==") for ln in lines)
    for req in vi.RUNTIME + vi.NO_DEPS + vi.DEVELOPMENT:
        name, version = req.split("==")
        key = re.sub(r"[-_.]+", "-", name.lower())
        found = {re.sub(r"[-_.]+", "-", k): v for k, v in locked.items()}[key]
        assert found.split("+")[0] == version, name
    assert locked["torch"] == "2.13.0+cpu", "the CPU build on Linux"
    assert "nvidia-cudnn-cu12" not in locked and "jax" not in locked


def test_unreachable_registry_is_one_line_and_exit_3(tmp_path):
    """pip with no index it can reach (a closed local port, no local wheel folders): one line, no
    traceback, exit 3, nothing written."""
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_FIND_LINKS": "", "PIP_RETRIES": "0",
           "PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_TIMEOUT": "2"}
    r = subprocess.run([sys.executable, str(REPO / "vendor_install.py"), "--blender-python", sys.executable,
                        "--target", str(tmp_path / "mods")], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 3, r.stdout + r.stderr
    assert "cannot reach the package registry" in r.stdout and "Traceback" not in r.stdout + r.stderr
    assert not list((tmp_path / "mods").glob("torch*"))


def test_missing_face_model_is_a_clear_error(tmp_path):
    missing = tmp_path / "missing.npz"
    r = subprocess.run([sys.executable, str(REPO / "vendor_install.py"), "--face-model", str(missing)],
                       capture_output=True, text=True, timeout=300)
    if "up to date" not in r.stdout:
        pytest.skip("the development environment is not set up")
    assert r.returncode == 2
    assert str(missing) in r.stdout and "--face-model" in r.stdout


@pytest.mark.slow
def test_blender_mode_second_run_installs_nothing(tmp_path):
    """torch for Blender: the first run installs the locked files into the target, the second
    finds them and runs no pip."""
    cmd = [sys.executable, str(REPO / "vendor_install.py"), "--blender-python", sys.executable,
           "--target", str(tmp_path / "mods")]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    assert (tmp_path / "mods" / "torch").is_dir() and (tmp_path / "mods" / "safetensors").is_dir()
    assert not (tmp_path / "mods" / "numpy").exists(), "Blender's own numpy stays in force"
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "up to date; nothing to install" in second.stdout and "pip" not in second.stdout.split("up to date")[0]
