"""Add-on preferences: face model path, thread count, one status line (with its fix) per runtime
package, the networks and the face model."""

from __future__ import annotations

import bpy

from . import deps


class P2V_AddonPreferences(bpy.types.AddonPreferences):
    bl_idname = deps.addon_package()

    face_model_path: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Face Model",
        description=(
            "ict_facekit.npz (ICT-FaceKit) or a face-model pack folder. Empty: $P2V_FACE_MODEL, "
            "else the face model that comes with the add-on"
        ),
        subtype="FILE_PATH",
        default="",
    )
    threads: bpy.props.IntProperty(  # type: ignore[valid-type]
        name="CPU Threads",
        description="Threads for the networks and the geometry solver (0: all cores)",
        default=0,
        min=0,
        max=256,
    )

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        layout.prop(self, "face_model_path")
        layout.prop(self, "threads")
        box = layout.box()
        box.label(text="Status")
        for text, ok, fix in deps.status_lines(context):
            row = box.row()
            row.alert = not ok
            row.label(text=text, icon="CHECKMARK" if ok else "ERROR")
            if fix:
                box.label(text=f"    Fix: {fix}")


CLASSES = (P2V_AddonPreferences,)
