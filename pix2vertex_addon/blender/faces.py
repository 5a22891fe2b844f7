"""The faces found in the chosen photo: Find Faces, the overlay thumbnail, the chosen index."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import bpy

from . import preview

OVERLAY_KEY = "p2v faces overlay"

_state: dict = {"key": None, "icon": 0, "n": 0, "path": None}
def photo_key(settings) -> str:
    """Identity of the chosen photo (an image datablock or a file path)."""
    if settings.image is not None:
        return f"image:{settings.image.name}"
    return f"file:{bpy.path.abspath(settings.image_path)}" if settings.image_path else ""


def overlay_icon(settings) -> int:
    """Icon of the overlay for the chosen photo and face, 0 when Find Faces has not run on it."""
    return int(_state["icon"]) if _state["key"] == (photo_key(settings), settings.face_index) else 0


def overlay_path(settings) -> Path | None:
    """The overlay thumbnail's PNG for the chosen photo and face (None: Find Faces has not run)."""
    return _state["path"] if _state["key"] == (photo_key(settings), settings.face_index) else None


def faces_found(settings) -> int:
    return int(_state["n"]) if _state["key"] is not None and _state["key"][0] == photo_key(settings) else 0


def clear() -> None:
    pcoll = preview.collection_if_open()
    if pcoll is not None and OVERLAY_KEY in pcoll:
        del pcoll[OVERLAY_KEY]  # releases the icon
    _state.update(key=None, icon=0, n=0, path=None)


def show_faces(settings, rgb, faces) -> int:
    """Draw the boxes on a thumbnail, load it as the panel's overlay; returns its icon id."""
    from ..core.images import save_png_atomic
    from ..core.picker import face_boxes_overlay

    idx = min(settings.face_index, len(faces) - 1)
    thumb = face_boxes_overlay(rgb, faces, idx)
    clear()
    pcoll = preview.collection()
    path = Path(tempfile.gettempdir()) / f"p2v-faces-{os.getpid()}.png"
    save_png_atomic(path, thumb)
    key = (photo_key(settings), idx)
    thumb_preview = pcoll.load(OVERLAY_KEY, str(path), "IMAGE", force_reload=True)
    _state.update(key=key, icon=thumb_preview.icon_id, n=len(faces), path=path)
    return thumb_preview.icon_id


class P2V_OT_find_faces(bpy.types.Operator):
    """Find the faces in the photo and show them numbered on the preview (pick one with Face)"""

    bl_idname = "p2v.find_faces"
    bl_label = "Find Faces"
    bl_options = {"REGISTER"}

    def execute(self, context):
        from ..core.detect import NoFaceError
        from ..core.images import ImageError, load_image
        from . import jobs
        from .operators import InputError, _check_runtime, _image_source, _threads

        s = context.scene.p2v
        try:
            _, source = _image_source(s)
            model_path = _check_runtime(context)
            rgb = load_image(source)[0] if isinstance(source, str) else source
            faces = jobs.get_pipeline(model_path, _threads(context)).detector.detect(rgb, all_faces=True)
        except (InputError, ImageError, NoFaceError) as exc:
            clear()
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        if s.face_index >= len(faces):
            s.face_index = 0
        show_faces(s, rgb, faces)
        self.report({"INFO"}, f"{len(faces)} face{'s' if len(faces) != 1 else ''} found"
                    + (f"; face {s.face_index} will be reconstructed" if len(faces) > 1 else ""))
        return {"FINISHED"}


CLASSES = (P2V_OT_find_faces,)
