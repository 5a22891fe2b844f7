"""Canonical correspondence coordinates of the template (no ``bpy``); see docs/reference/conventions.md."""

from __future__ import annotations

import numpy as np

from .face_model import FaceModel

__all__ = ["MODEL_TO_CAMERA", "canonical_bounds_cm", "canonical_coordinates", "corr_to_mm_scale"]

# Face-model frame (+x face-left, +y up, +z out of the face) -> camera frame (x right, y down,
# z forward) for a frontal, upright face: a 180 degree rotation about x.
MODEL_TO_CAMERA = np.diag([1.0, -1.0, -1.0])


def canonical_bounds_cm(model: FaceModel) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi): (3,) float64 bounding box of the neutral face-region vertices, cm."""
    v = model.template.vertices_cm
    return v.min(axis=0), v.max(axis=0)


def canonical_coordinates(model: FaceModel) -> np.ndarray:
    """(V, 3) float32 canonical coordinates in [0, 1] of the template vertices."""
    lo, hi = canonical_bounds_cm(model)
    return ((model.template.vertices_cm - lo) / (hi - lo)).astype(np.float32)


def corr_to_mm_scale(model: FaceModel) -> np.ndarray:
    """(3,) float64 factor turning a per-axis correspondence difference into millimetres."""
    lo, hi = canonical_bounds_cm(model)
    return (hi - lo) * 10.0
