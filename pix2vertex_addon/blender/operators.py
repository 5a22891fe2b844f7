"""Operators: thin wrappers that gather inputs, call the core, report and return."""

from __future__ import annotations

import bpy

from . import deps


class P2V_OT_add_template(bpy.types.Operator):
    """Add the ICT-FaceKit face-region template mesh (metres, with UVs) at the 3D cursor"""

    bl_idname = "p2v.add_template"
    bl_label = "Add Template Face"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context: bpy.types.Context) -> set[str]:
        from bpy_extras import object_utils

        from ..core.face_model import FaceModelError, load_face_model
        from .mesh import TEMPLATE_PROP, template_mesh

        try:
            model = load_face_model(deps.face_model_path(context))
        except FaceModelError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        name = "ICT-FaceKit Face"
        mesh = template_mesh(model, name)
        obj = object_utils.object_data_add(context, mesh, operator=None, name=name)
        obj[TEMPLATE_PROP] = str(model.path.name)
        settings = getattr(context.scene, "p2v", None)
        if settings is not None:
            settings.template = obj
        self.report({"INFO"}, f"Added {name}: {len(mesh.vertices)} vertices")
        return {"FINISHED"}


def menu_add_template(self: bpy.types.Menu, _context: bpy.types.Context) -> None:
    self.layout.operator(P2V_OT_add_template.bl_idname, icon="MONKEY")


CLASSES = (P2V_OT_add_template,)
