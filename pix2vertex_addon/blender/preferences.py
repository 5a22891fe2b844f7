"""Add-on preferences: face model path, thread count, one status line (with its fix) per runtime
package, the networks and the face model; the layout cache's size with a Clear button."""

from __future__ import annotations

import bpy

from ..core import layout_cache
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
        row = layout.row()
        files, size = layout_cache.disk_usage()
        if layout_cache.disk_folder() is None:
            row.label(text="Layout cache: off (each session computes the layout tables)", icon="FILE_CACHE")
        else:
            row.label(text=f"Layout cache: {size / 1e6:.0f} MB in {files} files", icon="FILE_CACHE")
            sub = row.row()
            sub.enabled = files > 0
            sub.operator(P2V_OT_clear_layout_cache.bl_idname, text="Clear")


class P2V_OT_clear_layout_cache(bpy.types.Operator):
    """Remove the layout tables kept on disk; the next session's warm-up computes and writes them again"""

    bl_idname = "p2v.clear_layout_cache"
    bl_label = "Clear Layout Cache"
    bl_options = {"INTERNAL"}

    def execute(self, context: bpy.types.Context) -> set[str]:
        removed = layout_cache.clear_disk()
        self.report({"INFO"}, f"Layout cache: removed {removed} files")
        return {"FINISHED"}


CLASSES = (P2V_AddonPreferences, P2V_OT_clear_layout_cache)
