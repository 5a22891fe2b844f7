"""The add-on inside real Blender (the bpy module): enable, Add Template Face, errors, disable, the
layout cache's folder and its preferences line."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ADDON_MODULE, addon_module, blender_module


def _p2v_classes(bpy):
    return sorted(n for n in dir(bpy.types) if "p2v" in n.lower() or n.startswith("P2V_"))


def test_enabled_addon_registers_its_parts(blender_addon):
    import bpy

    assert hasattr(bpy.types.Scene, "p2v")
    assert hasattr(bpy.ops.p2v, "add_template")
    assert "VIEW3D_PT_p2v_reconstruct" in dir(bpy.types)
    panel = bpy.types.VIEW3D_PT_p2v_reconstruct
    assert panel.bl_label == "Reconstruct from Image" and panel.bl_category == "Face"
    prefs = bpy.context.preferences.addons[ADDON_MODULE].preferences
    assert prefs.face_model_path == "" and prefs.threads == 0


def test_add_template_face(empty_scene, face_model):
    import bpy

    from pix2vertex_addon.blender.mesh import TEMPLATE_COUNTS, has_template_topology, vertex_positions

    bpy.context.scene.cursor.location = (0.5, -1.0, 2.0)
    assert bpy.ops.p2v.add_template() == {"FINISHED"}
    obj = bpy.context.active_object
    assert obj.name.startswith("ICT-FaceKit Face") and obj.select_get()
    assert empty_scene.p2v.template == obj
    me = obj.data
    t = face_model.template
    assert (len(me.vertices), len(me.polygons)) == (t.n_vertices, t.faces.shape[0]) == TEMPLATE_COUNTS
    np.testing.assert_allclose(vertex_positions(me), t.vertices_blender, atol=1e-6)
    np.testing.assert_allclose(obj.location, (0.5, -1.0, 2.0))
    assert 0.2 < obj.dimensions.z < 0.35, "metres, real-world size"
    # polygons and their corners in the template's order, with its UVs
    loop_vertex, _, loop_total = t.loops()
    lv = np.empty(len(me.loops), dtype=np.int32)
    me.loops.foreach_get("vertex_index", lv)
    np.testing.assert_array_equal(lv, loop_vertex)
    lt = np.empty(len(me.polygons), dtype=np.int32)
    me.polygons.foreach_get("loop_total", lt)
    np.testing.assert_array_equal(lt, loop_total)
    assert me.uv_layers.keys() == ["UVMap"]
    uv = np.empty(len(me.loops) * 2, dtype=np.float32)
    me.uv_layers["UVMap"].data.foreach_get("uv", uv)
    np.testing.assert_allclose(uv.reshape(-1, 2), t.loop_uvs(), atol=1e-6)
    assert has_template_topology(obj)
    bpy.ops.mesh.primitive_cube_add()
    assert not has_template_topology(bpy.context.active_object)


def test_template_pointer_poll_rejects_other_meshes(empty_scene):
    import bpy

    from pix2vertex_addon.blender.properties import _poll_template

    bpy.ops.mesh.primitive_monkey_add()
    monkey = bpy.context.active_object
    bpy.ops.p2v.add_template()
    face = bpy.context.active_object
    assert not _poll_template(empty_scene.p2v, monkey)
    assert _poll_template(empty_scene.p2v, face)


def test_missing_face_model_reports_and_changes_nothing(empty_scene, tmp_path):
    import bpy

    prefs = bpy.context.preferences.addons[ADDON_MODULE].preferences
    prefs.face_model_path = str(tmp_path / "missing.npz")
    try:
        n_objects, n_meshes = len(bpy.data.objects), len(bpy.data.meshes)
        with pytest.raises(RuntimeError, match="Face model not found"):
            bpy.ops.p2v.add_template()
        assert (len(bpy.data.objects), len(bpy.data.meshes)) == (n_objects, n_meshes)
    finally:
        prefs.face_model_path = ""


def test_add_template_is_undoable(empty_scene):
    import bpy

    assert "UNDO" in bpy.types.P2V_OT_add_template.bl_options
    assert "REGISTER" in bpy.types.P2V_OT_add_template.bl_options


def test_disable_leaves_nothing_behind(blender_addon):
    import bpy

    addon_utils = blender_module("addon_utils")

    from pix2vertex_addon.blender import operators

    vendor = bpy.utils.extension_path_user(ADDON_MODULE, path="site-packages", create=True)
    addon_utils.disable(ADDON_MODULE, default_set=True)
    try:
        before_path = list(sys.path)
        before_classes = _p2v_classes(bpy)
        assert before_classes == []
        assert not hasattr(bpy.types.Scene, "p2v")
        addon_utils.enable(ADDON_MODULE, default_set=True)
        assert sys.path == before_path, "the add-on never edits sys.path"
        assert _p2v_classes(bpy) != []
        addon_utils.disable(ADDON_MODULE, default_set=True)
        assert _p2v_classes(bpy) == []
        assert not hasattr(bpy.types.Scene, "p2v")
        assert bpy.types.Operator.bl_rna_get_subclass_py("P2V_OT_add_template") is None
        assert vendor not in sys.path and sys.path == before_path
        draw_funcs = bpy.types.VIEW3D_MT_mesh_add._dyn_ui_initialize()
        assert all(getattr(f, "__name__", "") != operators.menu_add_template.__name__ for f in draw_funcs)
        assert ADDON_MODULE not in bpy.context.preferences.addons
    finally:
        addon_utils.enable(ADDON_MODULE, default_set=True)


class _Recorder:
    """Records what a ``draw`` puts in its layout (background mode draws nothing)."""

    def __init__(self, log):
        self.log, self.enabled, self.alert = log, True, False

    def row(self, *a, **k):
        return _Recorder(self.log)

    box = column = row

    def prop(self, data, name, **k):
        self.log.append(("prop", name))

    def label(self, **k):
        self.log.append(("label", k.get("text", "")))

    def operator(self, idname, **k):
        self.log.append(("operator", idname))


def test_layout_cache_in_the_extension_user_folder(blender_addon):
    """Enabled, the add-on keeps its layout tables in its extension user folder; the preferences
    show their size and Clear removes them; disabled, the disk cache is off."""
    import bpy

    addon_utils = blender_module("addon_utils")
    lc = addon_module("core.layout_cache")
    folder = Path(bpy.utils.extension_path_user(ADDON_MODULE, path="layout-cache"))
    assert lc.disk_folder() == folder and folder.is_dir()
    (folder / f"test-cache-{'0' * 32}.npz").write_bytes(b"x" * 2_000_000)
    files, size = lc.disk_usage()
    assert files >= 1 and size >= 2_000_000
    prefs = bpy.context.preferences.addons[ADDON_MODULE].preferences
    log = []
    type(prefs).draw(type("P", (), {"layout": _Recorder(log)})(), bpy.context)
    assert ("label", f"Layout cache: {size / 1e6:.0f} MB in {files} files") in log
    assert ("operator", "p2v.clear_layout_cache") in log
    assert bpy.ops.p2v.clear_layout_cache() == {"FINISHED"}
    assert lc.disk_usage() == (0, 0) and folder.is_dir()
    addon_utils.disable(ADDON_MODULE, default_set=True)
    try:
        assert lc.disk_folder() is None
    finally:
        addon_utils.enable(ADDON_MODULE, default_set=True)
    assert addon_module("core.layout_cache").disk_folder() == folder
