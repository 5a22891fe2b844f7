"""Several faces in one photo: an overview with each face's box and index, and the
user's pick (``PipelineOptions.face_index``) is reconstructed by the pipeline (no ``bpy``).

Indices follow :meth:`.detect.FaceDetector.detect` with ``all_faces``: largest face first, so
index 0 is the face a plain reconstruction takes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .detect import DetectedFace

__all__ = ["face_boxes_overlay"]

SELECTED = (255, 210, 0)
OTHER = (255, 255, 255)


def face_boxes_overlay(rgb: np.ndarray, faces: Sequence[DetectedFace], selected: int = 0,
                       max_side: int = 512) -> np.ndarray:
    """(h, w, 3) uint8 thumbnail (longest side ``max_side``) of the photo with every face's box and
    index drawn, the selected one in yellow."""
    from PIL import Image, ImageDraw, ImageFont

    img = Image.fromarray(np.asarray(rgb, dtype=np.uint8))
    scale = min(1.0, max_side / max(img.size))
    if scale < 1.0:
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.Resampling.LANCZOS)
    d = ImageDraw.Draw(img)
    width = max(2, round(max(img.size) / 170))
    try:
        font: ImageFont.ImageFont | ImageFont.FreeTypeFont = ImageFont.load_default(size=max(12, max(img.size) // 18))
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    for i, face in enumerate(faces):
        x0, y0, x1, y1 = (np.asarray(face.box, dtype=np.float64) * scale).tolist()
        colour = SELECTED if i == selected else OTHER
        d.rectangle([x0, y0, x1, y1], outline=(0, 0, 0), width=width + 2)
        d.rectangle([x0, y0, x1, y1], outline=colour, width=width)
        label = str(i)
        tx, ty = x0 + width + 2, y0 + width + 1
        bbox = d.textbbox((tx, ty), label, font=font)
        d.rectangle([bbox[0] - 2, bbox[1] - 2, bbox[2] + 2, bbox[3] + 2], fill=(0, 0, 0))
        d.text((tx, ty), label, fill=colour, font=font)
    return np.asarray(img)
