"""The 3D viewport sidebar panel (tab "Face"): "Reconstruct from Image"."""

from __future__ import annotations

import bpy

from . import deps
from .operators import (
    P2V_OT_add_template,
    P2V_OT_apply_detail,
    P2V_OT_batch_reconstruct,
    P2V_OT_cancel,
    P2V_OT_reconstruct,
)


def _wrap(text: str, width: int = 48) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width) or [text]


class VIEW3D_PT_p2v_reconstruct(bpy.types.Panel):
    bl_label = "Reconstruct from Image"
    bl_idname = "VIEW3D_PT_p2v_reconstruct"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Face"

    def draw(self, context: bpy.types.Context) -> None:
        from .preview import preview_icon

        layout = self.layout
        s = context.scene.p2v
        reason = deps.blocking_reason(context)
        if not reason:
            from .operators import warm_up_soon

            warm_up_soon(context, checked=True)  # the first Reconstruct then runs like the next ones
        if reason:
            box = layout.box()
            box.alert = True
            for k, line in enumerate(_wrap(reason)):
                box.label(text=line, icon="ERROR" if k == 0 else "BLANK1")
            box.label(text="Details: Edit > Preferences > Add-ons > pix2vertex")

        col = layout.column(align=True)
        col.label(text="Photo")
        col.prop(s, "image_path", text="")
        col.template_ID(s, "image", open="image.open")
        from . import faces

        icon = faces.overlay_icon(s) or preview_icon(s)
        if icon:
            layout.template_icon(icon_value=icon, scale=6.0)
        row = layout.row(align=True)
        row.operator(faces.P2V_OT_find_faces.bl_idname, icon="VIEWZOOM")
        row.prop(s, "face_index")
        if faces.faces_found(s) > 1:
            layout.label(text=f"{faces.faces_found(s)} faces: reconstructing face {s.face_index}", icon="INFO")

        layout.separator()
        layout.prop(s, "template")
        if s.template is None:
            layout.operator(P2V_OT_add_template.bl_idname, icon="ADD")

        layout.row().prop(s, "build", expand=True)
        sub = layout.row()
        sub.active = s.build == "HEAD"
        sub.prop(s, "use_arkit")
        row = layout.row(align=True)
        row.prop(s, "use_detail")
        sub = row.row(align=True)
        sub.active = s.use_detail
        sub.prop(s, "detail_strength", slider=True)
        layout.prop(s, "add_target_mesh")
        layout.prop(s, "output_dir")

        if s.running:
            layout.progress(factor=s.progress, type="BAR", text=s.status or "Working...")
            layout.operator(P2V_OT_cancel.bl_idname, icon="CANCEL")
        else:
            row = layout.row()
            row.scale_y = 1.4
            row.operator(P2V_OT_reconstruct.bl_idname, icon="SHADERFX")
            if s.status:
                layout.label(text=s.status, icon="INFO")
        layout.operator(P2V_OT_apply_detail.bl_idname, icon="CHECKMARK")


class VIEW3D_PT_p2v_batch(bpy.types.Panel):
    bl_label = "Batch"
    bl_idname = "VIEW3D_PT_p2v_batch"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Face"
    bl_parent_id = "VIEW3D_PT_p2v_reconstruct"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        s = context.scene.p2v
        layout.prop(s, "batch_input_dir")
        layout.prop(s, "batch_output_dir")
        layout.prop(s, "batch_overwrite")
        layout.operator(P2V_OT_batch_reconstruct.bl_idname, icon="FILE_FOLDER")


CLASSES = (VIEW3D_PT_p2v_reconstruct, VIEW3D_PT_p2v_batch)
