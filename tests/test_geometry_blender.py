"""The fine-detail subdivision reproduces Blender's Simple Subdivision Surface (level 1)."""

from __future__ import annotations

import numpy as np
import pytest

from pix2vertex_addon.core.face_model import load_face_model
from pix2vertex_addon.core.geometry import subdivide_simple

bpy = pytest.importorskip("bpy")


def test_simple_subdivision_vertex_layout_matches_blender():
    T = load_face_model().template
    v = T.vertices_cm.astype(np.float64)
    me = bpy.data.meshes.new("p2v_subdiv_check")
    me.from_pydata(v.tolist(), [], [list(f[f >= 0]) for f in T.faces])
    me.update()
    edges = np.array([tuple(e.vertices) for e in me.edges], dtype=np.int64)
    ob = bpy.data.objects.new("p2v_subdiv_check", me)
    bpy.context.scene.collection.objects.link(ob)
    try:
        mod = ob.modifiers.new("subdiv", "SUBSURF")
        mod.subdivision_type = "SIMPLE"
        mod.levels = 1
        ev = ob.evaluated_get(bpy.context.evaluated_depsgraph_get())
        sub = ev.to_mesh()
        co = np.empty(len(sub.vertices) * 3)
        sub.vertices.foreach_get("co", co)
        ev.to_mesh_clear()
    finally:
        bpy.data.objects.remove(ob)
        bpy.data.meshes.remove(me)
    S, _ = subdivide_simple(len(v), T.faces, edges=edges)
    ours = S @ v
    assert ours.shape == (len(co) // 3, 3)
    np.testing.assert_allclose(ours, co.reshape(-1, 3), atol=1e-5)
