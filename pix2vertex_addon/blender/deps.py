"""Runtime packages (torch, scipy, numpy) and where the add-on finds them.

``vendor_install.py`` installs torch and scipy into the extension's own user folder
(``bpy.utils.extension_path_user(<addon>, path="site-packages")``) so a Blender user never touches
their system Python; on enable the add-on puts that folder on ``sys.path``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import bpy

RUNTIME_PACKAGES = ("numpy", "scipy", "torch")
CONFIG_NAME = "p2v_config.json"

_added_paths: list[str] = []


def addon_package() -> str:
    """Module name of the add-on (``bl_ext.<repo>.pix2vertex`` when installed as an extension)."""
    base = __package__.rsplit(".", 2)[0]  # strip ".pix2vertex_addon.blender"
    return base if base.startswith("bl_ext.") else "pix2vertex_addon"


def _user_dir(create: bool = False) -> Path | None:
    pkg = addon_package()
    if not pkg.startswith("bl_ext."):
        return None
    return Path(bpy.utils.extension_path_user(pkg, create=create))


def vendor_dir() -> Path | None:
    """The folder ``vendor_install.py`` fills with runtime packages (None outside an extension)."""
    user = _user_dir()
    return None if user is None else user / "site-packages"


def add_vendor_path() -> None:
    d = vendor_dir()
    if d is not None and d.is_dir() and str(d) not in sys.path:
        sys.path.insert(0, str(d))
        _added_paths.append(str(d))


def remove_vendor_path() -> None:
    while _added_paths:
        p = _added_paths.pop()
        while p in sys.path:
            sys.path.remove(p)


def missing_packages() -> list[str]:
    """Runtime packages that cannot be imported (empty when all are present)."""
    return [name for name in RUNTIME_PACKAGES if importlib.util.find_spec(name) is None]


def configured_face_model_path() -> str:
    """Face model path written by ``vendor_install.py`` into the add-on's user folder, or ''."""
    user = _user_dir()
    if user is None:
        return ""
    try:
        data = json.loads((user / CONFIG_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    path = data.get("face_model", "")
    return path if isinstance(path, str) else ""


def face_model_path(context: bpy.types.Context | None = None) -> str:
    """The face model path in force: preferences, then vendor_install's record, then the core's
    resolution (``$P2V_FACE_MODEL``, then ``../shared/face-model`` next to the repository)."""
    from ..core.face_model import resolve_face_model_path
    from . import preferences

    prefs = preferences.get(context)
    if prefs is not None and prefs.face_model_path:
        return bpy.path.abspath(prefs.face_model_path)
    recorded = configured_face_model_path()
    if recorded and not os.environ.get("P2V_FACE_MODEL"):
        return recorded
    return str(resolve_face_model_path(None))
