"""The 3D viewport sidebar panel (tab "Face")."""

from __future__ import annotations

import bpy

from .operators import P2V_OT_add_template


class VIEW3D_PT_p2v_reconstruct(bpy.types.Panel):
    bl_label = "Reconstruct from Image"
    bl_idname = "VIEW3D_PT_p2v_reconstruct"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Face"

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        settings = context.scene.p2v
        layout.prop(settings, "template")
        if settings.template is None:
            layout.operator(P2V_OT_add_template.bl_idname, icon="ADD")


CLASSES = (VIEW3D_PT_p2v_reconstruct,)
