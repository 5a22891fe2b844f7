"""Scene settings (``Scene.p2v``)."""

from __future__ import annotations

import bpy

from .mesh import has_template_topology


def _poll_template(_self: bpy.types.PropertyGroup, obj: bpy.types.Object) -> bool:
    return has_template_topology(obj)


class P2V_SceneSettings(bpy.types.PropertyGroup):
    template: bpy.props.PointerProperty(  # type: ignore[valid-type]
        name="Template",
        description="Face mesh with the ICT-FaceKit face-region topology, warped in place",
        type=bpy.types.Object,
        poll=_poll_template,
    )


CLASSES = (P2V_SceneSettings,)


def register_properties() -> None:
    bpy.types.Scene.p2v = bpy.props.PointerProperty(type=P2V_SceneSettings)


def unregister_properties() -> None:
    if hasattr(bpy.types.Scene, "p2v"):
        del bpy.types.Scene.p2v
