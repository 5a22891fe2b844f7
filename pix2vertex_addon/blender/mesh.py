"""Mesh conversion between the core's arrays and Blender meshes (bulk ``foreach_set``)."""

from __future__ import annotations

import bpy
import numpy as np

from ..core.face_model import FaceModel

TEMPLATE_UV_NAME = "UVMap"
TEMPLATE_PROP = "p2v_template"


def polygon_mesh(name: str, vertices: np.ndarray, faces: np.ndarray, corner_uvs: np.ndarray) -> bpy.types.Mesh:
    """A new smooth-shaded mesh from (V, 3) vertices, (F, 4) polygons (-1 pads triangles) and
    (F, 4, 2) corner UVs."""
    valid = faces >= 0
    sizes = valid.sum(axis=1)
    loop_vertex = faces[valid]
    loop_start = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    mesh = bpy.data.meshes.new(name)
    mesh.vertices.add(len(vertices))
    mesh.loops.add(loop_vertex.size)
    mesh.polygons.add(loop_start.size)
    mesh.vertices.foreach_set("co", np.asarray(vertices, dtype=np.float32).ravel())
    mesh.loops.foreach_set("vertex_index", loop_vertex.astype(np.int32))
    mesh.polygons.foreach_set("loop_start", loop_start.astype(np.int32))
    # ``loop_total`` is derived from ``loop_start`` in Blender >= 4.0 and is read-only.
    uv = mesh.uv_layers.new(name=TEMPLATE_UV_NAME)
    uv.data.foreach_set("uv", np.asarray(corner_uvs[valid], dtype=np.float32).ravel())
    mesh.polygons.foreach_set("use_smooth", np.ones(loop_start.size, dtype=bool))
    mesh.update(calc_edges=True)
    if mesh.validate(verbose=False):
        raise RuntimeError(f"{name}: the arrays produced an invalid mesh")
    return mesh


def template_mesh(model: FaceModel, name: str = "ICT-FaceKit Face") -> bpy.types.Mesh:
    """A new mesh datablock holding the face-region template (metres, Blender frame, UVs)."""
    t = model.template
    return polygon_mesh(name, t.vertices_blender, t.faces, t.uvs)


def has_template_topology(obj: bpy.types.Object | None, model: FaceModel | None = None) -> bool:
    """True for a mesh object with the template's vertex and polygon counts (cheap check)."""
    if obj is None or obj.type != "MESH":
        return False
    me = obj.data
    if model is not None:
        t = model.template
        return len(me.vertices) == t.n_vertices and len(me.polygons) == t.faces.shape[0]
    return len(me.vertices) == TEMPLATE_COUNTS[0] and len(me.polygons) == TEMPLATE_COUNTS[1]


# (vertices, polygons) of the ICT-FaceKit face region; checked against the model in the tests.
TEMPLATE_COUNTS = (9409, 9230)


def vertex_positions(mesh: bpy.types.Mesh) -> np.ndarray:
    """(V, 3) float32 vertex positions (the mesh's local space)."""
    co = np.empty(len(mesh.vertices) * 3, dtype=np.float32)
    mesh.vertices.foreach_get("co", co)
    return co.reshape(-1, 3)
