"""The Blender-facing part of the add-on: preferences, scene settings, operators, panels.

Registration joins each module's ``CLASSES``; everything ``register`` adds, ``unregister``
removes (classes, ``Scene.p2v``); it never edits ``sys.path`` (the extension's wheels are
installed by Blender).
"""

from __future__ import annotations

import bpy

from . import faces, jobs, operators, panels, preferences, preview, properties, scratch

_MODULES = (preferences, properties, operators, faces, panels)


def register() -> None:
    for mod in _MODULES:
        for cls in mod.CLASSES:
            bpy.utils.register_class(cls)
    properties.register_properties()
    bpy.types.VIEW3D_MT_mesh_add.append(operators.menu_add_template)
    scratch.register()


def unregister() -> None:
    bpy.types.VIEW3D_MT_mesh_add.remove(operators.menu_add_template)
    jobs.release()
    scratch.unregister()
    preview.unregister_previews()
    properties.unregister_properties()
    for mod in reversed(_MODULES):
        for cls in reversed(mod.CLASSES):
            bpy.utils.unregister_class(cls)
