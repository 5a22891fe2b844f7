"""Geometry core: target mesh, robust affine fit, non-rigid registration, fine detail.

numpy/scipy only (no ``bpy``); everything in **millimetres** in the label frame
(docs/reference/conventions.md). See docs/reference/geometry.md for the algorithms, choices and benchmark figures.

Typical use::

    target = build_target_mesh(xyz, mask, corr, image=image)
    A, inliers, info = fit_affine_ransac(template_mm, canon, target, corr_scale_mm=scale)
    reg = register(apply_affine(A, template_mm), template.faces, canon, target,
                   corr_scale_mm=scale)
    det = detail_field(reg.vertices, template.faces, target,
                       damping=feature_damping(template_mm, template.landmarks_68))
"""

from .affine import apply_affine, corr_pairs, fit_affine_ransac
from .detail import (
    DetailResult,
    detail_field,
    feature_damping,
    polygon_edges,
    subdivide_corner_uvs,
    subdivide_simple,
)
from .laplacian import cotangent_laplacian, lumped_mass, vertex_normals
from .nricp import (
    LANDMARK_DEPTH_PARAMS,
    LANDMARK_PARAMS,
    RegistrationParams,
    RegistrationResult,
    register,
    triangulate,
)
from .target_mesh import TargetMesh, build_target_mesh, image_intensity

__all__ = [
    "DetailResult",
    "LANDMARK_DEPTH_PARAMS",
    "LANDMARK_PARAMS",
    "RegistrationParams",
    "RegistrationResult",
    "TargetMesh",
    "apply_affine",
    "build_target_mesh",
    "corr_pairs",
    "cotangent_laplacian",
    "detail_field",
    "feature_damping",
    "fit_affine_ransac",
    "image_intensity",
    "lumped_mass",
    "polygon_edges",
    "register",
    "subdivide_corner_uvs",
    "subdivide_simple",
    "triangulate",
    "vertex_normals",
]
