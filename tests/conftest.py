"""Test set-up shared by every test.

Blender's user folders point at a temporary directory (before anything imports ``bpy``), so the
tests never touch the developer's own Blender configuration. The checkout is linked into that
folder's ``user_default`` extension repository, exactly as a developer links an add-on under
development, so the ``blender_addon`` fixture enables it the way Blender does:
``bl_ext.user_default.pix2vertex``. Core tests never import ``bpy``.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ADDON_MODULE = "bl_ext.user_default.pix2vertex"

_USER_RESOURCES = Path(tempfile.mkdtemp(prefix="p2v-blender-user-"))
atexit.register(shutil.rmtree, _USER_RESOURCES, True)
os.environ["BLENDER_USER_RESOURCES"] = str(_USER_RESOURCES)
(_USER_RESOURCES / "extensions" / "user_default").mkdir(parents=True)
(_USER_RESOURCES / "extensions" / "user_default" / "pix2vertex").symlink_to(REPO, target_is_directory=True)

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


@pytest.fixture(scope="session")
def face_model():
    from pix2vertex_addon.core.face_model import load_face_model

    return load_face_model()


@pytest.fixture(scope="session")
def blender_addon():
    """The add-on enabled in the bpy module (once per session), as Blender enables extensions."""
    addon_utils = blender_module("addon_utils")

    mod = addon_utils.enable(ADDON_MODULE, default_set=True, handle_error=_raise)
    assert mod is not None, "the add-on did not enable"
    yield mod
    addon_utils.disable(ADDON_MODULE, default_set=True)


def addon_module(name: str):
    """A module of the *enabled* add-on, e.g. ``addon_module("blender.jobs")``: the same source
    imported as ``pix2vertex_addon...`` is another module object with its own state."""
    import importlib

    return importlib.import_module(f"{ADDON_MODULE}.pix2vertex_addon.{name}")


def blender_module(name: str):
    """Import one of Blender's own Python modules (``addon_utils``, ...): ``bpy`` must come first,
    it puts them on ``sys.path``."""
    import importlib

    import bpy  # noqa: F401

    return importlib.import_module(name)


def _raise(exc: BaseException) -> None:
    raise exc


@pytest.fixture
def empty_scene(blender_addon):
    """A fresh, empty scene for each Blender test (the add-on stays enabled)."""
    import bpy

    bpy.ops.wm.read_homefile(use_empty=True)
    yield bpy.context.scene
