"""Development checks run with the tests: ruff on the repository, mypy on the files pyproject.toml
names (the core, the synthetic data and the losses)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

BIN = Path(sys.executable).parent


def test_ruff_is_clean():
    r = subprocess.run([str(BIN / "ruff"), "check", "."], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-5000:] + r.stderr[-2000:]


@pytest.mark.slow
def test_mypy_core_is_clean():
    r = subprocess.run([sys.executable, "-m", "mypy"], cwd=REPO,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-5000:] + r.stderr[-2000:]


def test_checkout_folder_name_does_not_matter(tmp_path):
    """pytest imports the repository's top-level ``__init__.py`` (Blender's entry point) as a
    plain module when the checkout's folder name is not a package name (``pix2vertex-blender``):
    it must import, and the tests run from such a folder."""
    import shutil

    clone = tmp_path / "pix2vertex-for-blender"
    clone.mkdir()
    for name in ("__init__.py", "pyproject.toml"):
        shutil.copy(REPO / name, clone / name)
    (clone / "pix2vertex_addon").symlink_to(REPO / "pix2vertex_addon")
    (clone / "tests").mkdir()
    for name in ("conftest.py", "test_atomic.py"):
        shutil.copy(REPO / "tests" / name, clone / "tests" / name)
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_atomic.py"],
                       cwd=clone, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
