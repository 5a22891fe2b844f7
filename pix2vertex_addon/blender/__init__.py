"""The Blender-facing part of the add-on: preferences, scene settings, operators, panels.

Registration joins each module's ``CLASSES``; everything ``register`` adds, ``unregister``
removes (classes, ``Scene.p2v``, the layout caches' disk folder); it never edits ``sys.path`` (the
extension's wheels are installed by Blender).
"""

from __future__ import annotations

import bpy

from ..core import layout_cache
from . import bytecode, deps, faces, jobs, operators, panels, preferences, preview, properties, scratch

_MODULES = (preferences, properties, operators, faces, panels)


def register() -> None:
    # first: the bundled packages' bytecode, before anything imports them (once per installed pack)
    bytecode.install_pack_for_extension(_extension_user_folder())
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


def _extension_user_folder(path: str = "") -> str | None:
    """The extension's user folder (or a folder in it), created; None when not running as an
    extension or when Blender cannot give one."""
    package = deps.addon_package()
    if not package.startswith("bl_ext."):
        return None
    try:
        return bpy.utils.extension_path_user(package, path=path, create=True) or None
    except Exception:  # noqa: BLE001 - never let registration fail over a cache
        return None


def layout_cache_folder() -> str | None:
    """Where the layout tables are kept between Blender sessions: the extension's user folder
    ``layout-cache`` (``<Blender user resources>/extensions/.user/<repo>/pix2vertex/``, kept
    across updates of the extension); not running as an extension, ``$P2V_LAYOUT_CACHE`` or
    nowhere (each session computes them)."""
    return _extension_user_folder("layout-cache") or layout_cache.env_folder()
