"""Scene settings (``Scene.p2v``): inputs, detail, batch folders, and the running job's progress."""

from __future__ import annotations

import bpy

from .mesh import has_template_topology


def _poll_template(_self: bpy.types.PropertyGroup, obj: bpy.types.Object) -> bool:
    return has_template_topology(obj)


def _update_detail(self: P2V_SceneSettings, context: bpy.types.Context) -> None:
    from .apply import update_detail_modifiers

    if self.template is not None:
        update_detail_modifiers(self.template, self.use_detail, self.detail_strength)


def _update_preview(self: P2V_SceneSettings, context: bpy.types.Context) -> None:
    from . import faces
    from .operators import warm_up_soon
    from .preview import clear_preview

    clear_preview()
    faces.clear()
    warm_up_soon(context)


def _update_face_index(self: P2V_SceneSettings, _context: bpy.types.Context) -> None:
    from . import faces

    faces.clear()  # the overlay shows the old choice: Find Faces redraws it


class P2V_SceneSettings(bpy.types.PropertyGroup):
    template: bpy.props.PointerProperty(  # type: ignore[valid-type]
        name="Template",
        description="Face mesh with the ICT-FaceKit face-region topology, warped in place",
        type=bpy.types.Object,
        poll=_poll_template,
    )
    image_path: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Photo",
        description="Photo of a face to reconstruct",
        subtype="FILE_PATH",
        update=_update_preview,
    )
    image: bpy.props.PointerProperty(  # type: ignore[valid-type]
        name="Loaded Image",
        description="Use an image already loaded in Blender instead of the file",
        type=bpy.types.Image,
        update=_update_preview,
    )
    use_detail: bpy.props.BoolProperty(  # type: ignore[valid-type]
        name="Fine Detail",
        description="Add the photo's fine detail as a subdivision and displacement modifier stack",
        default=True,
        update=_update_detail,
    )
    detail_strength: bpy.props.FloatProperty(  # type: ignore[valid-type]
        name="Strength",
        description="Scale of the fine-detail displacement (1: as reconstructed)",
        default=1.0,
        min=0.0,
        soft_max=3.0,
        update=_update_detail,
    )
    build: bpy.props.EnumProperty(  # type: ignore[valid-type]
        name="Build",
        description="What Reconstruct makes",
        items=(
            ("HEAD", "Full Head", "A whole head with eyes and teeth: the neutral face as Basis, "
             "'Photo expression' and the ARKit shape keys (the warped template is kept, hidden)"),
            ("FACE", "Face Only", "Only the warped face template (the face mask)"),
        ),
        default="HEAD",
    )
    use_arkit: bpy.props.BoolProperty(  # type: ignore[valid-type]
        name="ARKit Shape Keys",
        description="Give the head ARKit's blendshapes as shape keys (eyeBlinkLeft, jawOpen, ...)",
        default=True,
    )
    face_index: bpy.props.IntProperty(  # type: ignore[valid-type]
        name="Face",
        description="Which face of the photo to reconstruct (0: the largest; Find Faces numbers them)",
        default=0,
        min=0,
        soft_max=9,
        update=_update_face_index,
    )
    add_target_mesh: bpy.props.BoolProperty(  # type: ignore[valid-type]
        name="Add Target Mesh",
        description="Also add the networks' per-pixel mesh as a separate object, for inspection",
        default=False,
    )
    output_dir: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Results",
        description="Folder for the result files (empty: a temporary folder; textures are packed)",
        subtype="DIR_PATH",
    )
    batch_input_dir: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Input Folder", description="Folder of photos for Batch Reconstruct", subtype="DIR_PATH"
    )
    batch_output_dir: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Output Folder", description="Folder for the batch results (one folder per photo)",
        subtype="DIR_PATH",
    )
    batch_overwrite: bpy.props.BoolProperty(  # type: ignore[valid-type]
        name="Overwrite", description="Redo photos that already have results", default=False
    )
    # progress of the running job (drawn by the panel)
    running: bpy.props.BoolProperty(options={"SKIP_SAVE"})  # type: ignore[valid-type]
    progress: bpy.props.FloatProperty(min=0.0, max=1.0, subtype="FACTOR", options={"SKIP_SAVE"})  # type: ignore[valid-type]
    status: bpy.props.StringProperty(options={"SKIP_SAVE"})  # type: ignore[valid-type]


CLASSES = (P2V_SceneSettings,)


def register_properties() -> None:
    bpy.types.Scene.p2v = bpy.props.PointerProperty(type=P2V_SceneSettings)


def unregister_properties() -> None:
    if hasattr(bpy.types.Scene, "p2v"):
        del bpy.types.Scene.p2v
