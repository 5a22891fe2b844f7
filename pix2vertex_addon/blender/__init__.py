"""The Blender-facing part of the add-on: preferences, scene settings, operators, panels.

Registration joins each module's ``CLASSES``; everything ``register`` adds, ``unregister``
removes (classes, ``Scene.p2v``, the layout caches' disk folder); it never edits ``sys.path`` (the
extension's wheels are installed by Blender).
"""

from __future__ import annotations

import bpy

from ..core import layout_cache
from . import deps, faces, jobs, operators, panels, preferences, preview, properties, scratch

_MODULES = (preferences, properties, operators, faces, panels)


def register() -> None:
    for mod in _MODULES:
        for cls in mod.CLASSES:
            bpy.utils.register_class(cls)
    properties.register_properties()
    bpy.types.VIEW3D_MT_mesh_add.append(operators.menu_add_template)
    scratch.register()
    layout_cache.set_disk_folder(layout_cache_folder())


def unregister() -> None:
    bpy.types.VIEW3D_MT_mesh_add.remove(operators.menu_add_template)
    jobs.release()
    layout_cache.set_disk_folder(None)
    scratch.unregister()
    preview.unregister_previews()
    properties.unregister_properties()
    for mod in reversed(_MODULES):
        for cls in reversed(mod.CLASSES):
            bpy.utils.unregister_class(cls)


def layout_cache_folder() -> str | None:
    """Where the layout tables are kept between Blender sessions: the extension's user folder
    ``layout-cache`` (``<Blender user resources>/extensions/.user/<repo>/pix2vertex/``, kept
    across updates of the extension); not running as an extension, ``$P2V_LAYOUT_CACHE`` or
    nowhere (each session computes them)."""
    package = deps.addon_package()
    if package.startswith("bl_ext."):
        try:
            folder = bpy.utils.extension_path_user(package, path="layout-cache", create=True)
        except Exception:  # noqa: BLE001 - never let registration fail over a cache
            folder = ""
        if folder:
            return folder
    return layout_cache.env_folder()
