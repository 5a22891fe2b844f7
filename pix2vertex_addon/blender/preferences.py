"""Add-on preferences: face model path, thread count, dependency status."""

from __future__ import annotations

import bpy

from . import deps


class P2V_AddonPreferences(bpy.types.AddonPreferences):
    bl_idname = deps.addon_package()

    face_model_path: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Face Model",
        description=(
            "Path to ict_facekit.npz (ICT-FaceKit). Empty: $P2V_FACE_MODEL, the path recorded by "
            "vendor_install.py, or ../shared/face-model next to the add-on"
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
        from pathlib import Path

        path = deps.face_model_path(context)
        row = layout.row()
        if Path(path).is_file():
            row.label(text=f"Using {path}", icon="CHECKMARK")
        else:
            row.alert = True
            row.label(text=f"Face model not found: {path}", icon="ERROR")
        layout.prop(self, "threads")
        box = layout.box()
        box.label(text="Runtime packages")
        missing = deps.missing_packages()
        for name in deps.RUNTIME_PACKAGES:
            ok = name not in missing
            box.label(text=f"{name}: {'installed' if ok else 'missing'}", icon="CHECKMARK" if ok else "ERROR")
        if missing:
            box.label(text="Install them with: blender -b -P vendor_install.py (see the README)")
        vd = deps.vendor_dir()
        if vd is not None:
            box.label(text=f"Vendored packages: {vd}")


def get(context: bpy.types.Context | None = None) -> P2V_AddonPreferences | None:
    """This add-on's preferences, or None when it is registered without being enabled."""
    ctx = context or bpy.context
    addon = ctx.preferences.addons.get(deps.addon_package())
    return None if addon is None else addon.preferences  # type: ignore[return-value]


CLASSES = (P2V_AddonPreferences,)
