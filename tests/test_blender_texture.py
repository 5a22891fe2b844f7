"""Datablock names and ownership, the normal map in the material, and export round trips, in
real Blender (bpy module) with the oracle pipeline of test_blender_reconstruct."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from test_blender_reconstruct import oracle, sample  # noqa: F401 - fixtures

from conftest import blender_module

SUFFIXED = r"\.\d{3}$"


@pytest.fixture
def two_image_pngs(sample, tmp_path):  # noqa: F811
    """Two different photos, both called image.png, in two folders."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    Image.fromarray(sample["image"]).save(a / "image.png")
    tinted = np.clip(sample["image"].astype(int) * [0.7, 1.0, 1.2], 0, 255).astype(np.uint8)
    Image.fromarray(tinted).save(b / "image.png")
    return a / "image.png", b / "image.png"


def _add_template():
    import bpy

    bpy.ops.p2v.add_template()
    return bpy.context.scene.p2v.template


def _reconstruct(obj, photo, results):
    import bpy

    s = bpy.context.scene.p2v
    s.template, s.image_path, s.output_dir = obj, str(photo), str(results)
    assert bpy.ops.p2v.reconstruct() == {"FINISHED"}


def _texture_pixels(obj) -> np.ndarray:
    img = next(n.image for n in obj.active_material.node_tree.nodes if n.type == "TEX_IMAGE")
    px = np.empty(img.size[0] * img.size[1] * 4, np.float32)
    img.pixels.foreach_get(px)
    return px


def _copies() -> list[str]:
    import re

    import bpy

    return [b.name for coll in (bpy.data.objects, bpy.data.meshes, bpy.data.materials, bpy.data.images,
                                bpy.data.textures) for b in coll if re.search(SUFFIXED, b.name)]


@pytest.mark.slow
def test_same_file_name_two_templates_stay_independent_and_reruns_replace(empty_scene, oracle, two_image_pngs,  # noqa: F811
                                                                        tmp_path):
    import bpy

    first, second = _add_template(), _add_template()
    _reconstruct(first, two_image_pngs[0], tmp_path / "results")
    _reconstruct(second, two_image_pngs[1], tmp_path / "results")
    assert first.name == "image" and second.name.startswith("image-") and len(second.name) == len("image-") + 4
    assert first.data is not second.data and first.active_material is not second.active_material
    assert first["p2v_results"] != second["p2v_results"], "one results folder each"
    t1, t2 = _texture_pixels(first), _texture_pixels(second)
    assert np.abs(t1 - t2).mean() > 0.01, "each object shows its own photo"
    assert _copies() == []
    counts = {k: len(getattr(bpy.data, k)) for k in ("objects", "meshes", "materials", "images", "textures")}
    # re-run both: the datablocks are replaced, nothing is copied or orphaned
    _reconstruct(first, two_image_pngs[0], tmp_path / "results")
    _reconstruct(second, two_image_pngs[1], tmp_path / "results")
    assert _copies() == []
    assert {k: len(getattr(bpy.data, k)) for k in counts} == counts
    assert first.name == "image" and np.array_equal(_texture_pixels(first), t1)
    orphans = [b.name for b in list(bpy.data.images) + list(bpy.data.materials) if b.users == 0]
    assert orphans == []


@pytest.mark.slow
def test_linked_duplicate_gets_its_own_mesh(empty_scene, oracle, two_image_pngs, tmp_path):  # noqa: F811
    import bpy

    first = _add_template()
    dup = first.copy()  # a linked duplicate (Alt+D): same mesh, same custom properties
    bpy.context.collection.objects.link(dup)
    _reconstruct(first, two_image_pngs[0], tmp_path / "r")
    _reconstruct(dup, two_image_pngs[1], tmp_path / "r")
    assert first.data is not dup.data and first.name != dup.name
    assert first.active_material is not dup.active_material


@pytest.mark.slow
def test_material_has_normal_map_and_raw_texture(empty_scene, oracle, two_image_pngs, tmp_path):  # noqa: F811
    import bpy

    from pix2vertex_addon.blender.apply import NORMAL_NODE

    obj = _add_template()
    _reconstruct(obj, two_image_pngs[0], tmp_path / "r")
    nt = obj.active_material.node_tree
    nmap = nt.nodes[NORMAL_NODE]
    bsdf = next(n for n in nt.nodes if n.type == "BSDF_PRINCIPLED")
    assert bsdf.inputs["Normal"].links[0].from_node == nmap
    img = nmap.inputs["Color"].links[0].from_node.image
    assert img.name == "p2v Normal image" and img.colorspace_settings.name == "Non-Color"
    assert bpy.data.images["p2v Texture Raw image"].packed_file is not None
    # the Displace stack and the normal map never shade the detail twice
    s = bpy.context.scene.p2v
    assert s.use_detail and nmap.inputs["Strength"].default_value == 0.0
    s.use_detail = False
    assert nmap.inputs["Strength"].default_value == pytest.approx(s.detail_strength)


def _round_trip(addon: str, export, reimport, photo, tmp_path, build: str = "FACE"):
    """Reconstruct onto a new template (``build``: FACE exports the warped template, HEAD the
    full head), export it with ``export(path)`` (Fine Detail off: the documented export setting),
    re-import it into an empty scene; returns (shape keys before, the imported mesh object, its
    normal-map node)."""
    import bpy

    blender_module("addon_utils").enable(addon, default_set=False)
    obj = _add_template()
    bpy.context.scene.p2v.build = build
    _reconstruct(obj, photo, tmp_path / "r")
    bpy.context.scene.p2v.use_detail = False
    key = "p2v Reconstruction"
    if build == "HEAD":
        obj, key = next(o for o in bpy.data.objects if o.name.startswith("p2v Head")), "Photo expression"
    n_keys = len(obj.data.shape_keys.key_blocks)
    bpy.ops.object.select_all(action="DESELECT")
    obj.select_set(True)
    path = export()
    bpy.ops.wm.read_homefile(use_empty=True)
    reimport(path)
    meshes = [o for o in bpy.context.scene.objects if o.type == "MESH"]
    assert len(meshes) == 1
    got = meshes[0]
    assert key in got.data.shape_keys.key_blocks
    bsdf = next(n for n in got.data.materials[0].node_tree.nodes if n.type == "BSDF_PRINCIPLED")
    base = bsdf.inputs["Base Color"].links[0].from_node
    assert base.type == "TEX_IMAGE" and base.image.size[0] == 1024
    normal = bsdf.inputs["Normal"].links[0].from_node
    assert normal.type == "NORMAL_MAP" and normal.inputs["Color"].links[0].from_node.image is not None
    return n_keys, got, normal


@pytest.mark.slow
@pytest.mark.parametrize("build", ["FACE", "HEAD"])
def test_gltf_round_trip_keeps_material_textures_and_shape_keys(empty_scene, oracle, two_image_pngs, tmp_path,  # noqa: F811
                                                                build):
    import bpy

    out = str(tmp_path / "face.glb")
    n_keys, got, normal = _round_trip(
        "io_scene_gltf2",
        lambda: bpy.ops.export_scene.gltf(filepath=out, export_format="GLB", use_selection=True, export_apply=False,
                                          export_morph=True, export_tangents=True) and out,
        lambda p: bpy.ops.import_scene.gltf(filepath=p), two_image_pngs[0], tmp_path, build)
    assert len(got.data.shape_keys.key_blocks) == n_keys
    assert normal.inputs["Strength"].default_value == pytest.approx(1.0)


@pytest.mark.slow
@pytest.mark.parametrize("build", ["FACE", "HEAD"])
def test_fbx_round_trip_with_the_documented_settings(empty_scene, oracle, two_image_pngs, tmp_path, build):  # noqa: F811
    import bpy

    out = str(tmp_path / "face.fbx")
    _round_trip(
        "io_scene_fbx",
        lambda: bpy.ops.export_scene.fbx(filepath=out, use_selection=True, use_mesh_modifiers=False, path_mode="COPY",
                                         embed_textures=True) and out,
        lambda p: bpy.ops.import_scene.fbx(filepath=p), two_image_pngs[0], tmp_path, build)


@pytest.mark.slow
def test_find_faces_shows_the_overlay_and_a_missing_face_is_a_clear_error(empty_scene, oracle, two_image_pngs,  # noqa: F811
                                                                         tmp_path):
    import bpy

    from conftest import addon_module

    faces = addon_module("blender.faces")
    obj = _add_template()
    s = bpy.context.scene.p2v
    s.template, s.image_path, s.output_dir = obj, str(two_image_pngs[0]), str(tmp_path / "r")
    assert bpy.ops.p2v.find_faces() == {"FINISHED"}
    from pix2vertex_addon.core.picker import SELECTED

    assert faces.faces_found(s) == 1
    thumb = np.asarray(Image.open(faces.overlay_path(s)).convert("RGB"))
    assert (thumb == SELECTED).all(axis=-1).sum() > 100, "the face's box is drawn"
    s.face_index = 1  # the oracle photo has one face
    assert faces.overlay_path(s) is None, "the overlay is redrawn for the new choice"
    with pytest.raises(RuntimeError, match="face 1 was chosen but the photo has 1 face"):
        bpy.ops.p2v.reconstruct()
    assert s.status == "Failed" and "p2v_results" not in obj
    s.face_index = 0
    assert bpy.ops.p2v.reconstruct() == {"FINISHED"}
    assert s.status.startswith("Reconstructed image in ") and s.status.endswith(" s")
