"""The full head inside real Blender (bpy module): Reconstruct builds a head object with eyes and
teeth, a neutral Basis, ``Photo expression`` and the ARKit keys; glTF export and import keep every
morph target and the vertex count; the core's own .glb imports into Blender."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from conftest import ADDON_MODULE, addon_module
from oracle import oracle_pipeline


@pytest.fixture(scope="module")
def sample():
    from pix2vertex_addon.training.synth import generate_sample

    return generate_sample(12, 256, clean=True)  # training split, jawOpen and a smile


@pytest.fixture
def oracle_template(empty_scene, blender_addon, sample, tmp_path):
    """The add-on's pipeline cache hands out the oracle pipeline; the scene has the template and
    the sample's photo chosen."""
    import bpy

    deps, jobs = addon_module("blender.deps"), addon_module("blender.jobs")
    key = (deps.face_model_path(bpy.context), os.cpu_count() or 2)
    model = addon_module("core.face_model").load_face_model(key[0])
    jobs.wait_for_warm_up()  # a warm-up started by an earlier test must not replace it
    jobs._pipelines[key] = oracle_pipeline(sample, model, package=f"{ADDON_MODULE}.pix2vertex_addon")
    photo = tmp_path / "synthetic face.png"
    Image.fromarray(sample["image"]).save(photo)
    bpy.ops.p2v.add_template()
    s = empty_scene.p2v
    s.image_path = str(photo)
    s.output_dir = str(tmp_path / "results")
    yield empty_scene
    jobs._pipelines.pop(key, None)


@pytest.fixture
def head_scene(oracle_template, tmp_path):
    """Reconstruct with the defaults (Build = Full Head); yields (scene, result dir)."""
    import bpy

    s = oracle_template.p2v
    assert s.build == "HEAD" and s.use_arkit, "the full head with ARKit keys is the default"
    assert bpy.ops.p2v.reconstruct() == {"FINISHED"}
    (folder,) = (tmp_path / "results").iterdir()
    return oracle_template, folder


def _head_object():
    import bpy

    heads = [o for o in bpy.data.objects if "p2v_head" in o]
    assert len(heads) == 1
    return heads[0]


def _key_co(key) -> np.ndarray:
    co = np.empty(len(key.data) * 3, np.float32)
    key.data.foreach_get("co", co)
    return co.reshape(-1, 3)


@pytest.mark.slow
def test_reconstruct_builds_a_rigged_head(head_scene, face_model):
    import bpy

    from pix2vertex_addon.core.head import ARKIT_NAMES, HEAD_MATERIALS, PHOTO_EXPRESSION

    scene, folder = head_scene
    apply = addon_module("blender.apply")
    head = _head_object()
    template = scene.p2v.template
    assert template.hide_render and template.hide_get(), "the face-only template is hidden"
    assert len(head.data.vertices) == face_model.regions["eyeball_right"][1]
    mats = [m.name.split(" ")[1].lower() for m in head.data.materials[1:]]
    assert mats == list(HEAD_MATERIALS[1:])
    face = head.data.materials[0]  # a copy of the template's photo material, normal map always on
    assert face.name.startswith("p2v Head Face") and face is not template.active_material
    images = {n.image for n in face.node_tree.nodes if n.type == "TEX_IMAGE"}
    assert images == {n.image for n in template.active_material.node_tree.nodes if n.type == "TEX_IMAGE"}
    assert not face.node_tree.nodes[apply.NORMAL_NODE].mute
    used = np.zeros(len(head.data.polygons), np.int32)
    head.data.polygons.foreach_get("material_index", used)
    assert set(np.unique(used)) == set(range(len(HEAD_MATERIALS))), "eyes, iris, teeth... all present"
    assert head.data.materials[0].node_tree.nodes.get("Image Texture") is not None, "the photo texture"
    keys = head.data.shape_keys.key_blocks
    assert [k.name for k in keys] == ["Basis", PHOTO_EXPRESSION, *ARKIT_NAMES]
    assert keys[PHOTO_EXPRESSION].value == 1.0 and all(keys[n].value == 0.0 for n in ARKIT_NAMES)
    # Photo expression = the reconstruction (the template's shape key) on the face region ...
    nf = face_model.template.n_vertices
    recon = _key_co(template.data.shape_keys.key_blocks[apply.SHAPE_KEY])
    np.testing.assert_allclose(_key_co(keys[PHOTO_EXPRESSION])[:nf], recon, atol=2e-6)
    # ... and Basis is not: the photo's expression (jawOpen, smile) was taken out
    moved = np.linalg.norm(_key_co(keys["Basis"])[:nf] - recon, axis=1)
    assert moved.max() > 0.003, "the neutral Basis differs from the photo's expression by millimetres"
    # jawOpen moves the lower teeth in Blender too
    teeth = slice(*face_model.regions["teeth"])
    jaw = _key_co(keys["jawOpen"])[teeth] - _key_co(keys["Basis"])[teeth]
    assert np.linalg.norm(jaw, axis=1).max() > 0.01
    for f in ("head.obj", "head.mtl", "head.glb", "head.json"):
        assert (folder / f).is_file(), f
    # Reconstruct again: the head is replaced, not added
    n_objects, n_meshes = len(bpy.data.objects), len(bpy.data.meshes)
    assert bpy.ops.p2v.reconstruct() == {"FINISHED"}
    assert (len(bpy.data.objects), len(bpy.data.meshes)) == (n_objects, n_meshes)
    _head_object()


@pytest.mark.slow
def test_gltf_export_and_import_keep_every_morph_target(head_scene, tmp_path):
    import bpy

    head = _head_object()
    names = [k.name for k in head.data.shape_keys.key_blocks][1:]
    n_vertices = len(head.data.vertices)
    bpy.ops.object.select_all(action="DESELECT")
    head.select_set(True)
    bpy.context.view_layer.objects.active = head
    path = tmp_path / "exported.glb"
    assert bpy.ops.export_scene.gltf(filepath=str(path), export_format="GLB", use_selection=True,
                                     export_morph=True, export_morph_normal=False) == {"FINISHED"}
    bpy.ops.wm.read_homefile(use_empty=True)
    assert bpy.ops.import_scene.gltf(filepath=str(path), merge_vertices=True) == {"FINISHED"}
    meshes = [o for o in bpy.data.objects if o.type == "MESH"]
    assert len(meshes) == 1
    got = meshes[0].data
    assert [k.name for k in got.shape_keys.key_blocks][1:] == names
    assert len(got.vertices) == n_vertices


@pytest.mark.slow
def test_the_core_glb_imports_into_blender(head_scene):
    import bpy

    _, folder = head_scene
    head = _head_object()
    names = [k.name for k in head.data.shape_keys.key_blocks][1:]
    n_vertices = len(head.data.vertices)
    keys = head.data.shape_keys.key_blocks
    jaw = np.linalg.norm(_key_co(keys["jawOpen"]) - _key_co(keys["Basis"]), axis=1)
    bpy.ops.wm.read_homefile(use_empty=True)
    assert bpy.ops.import_scene.gltf(filepath=str(folder / "head.glb"), merge_vertices=True) == {"FINISHED"}
    got = next(o for o in bpy.data.objects if o.type == "MESH").data
    assert [k.name for k in got.shape_keys.key_blocks][1:] == names
    assert len(got.vertices) == n_vertices
    # the morph targets carry the shapes (vertex order may differ after the import: compare sorted)
    kb = got.shape_keys.key_blocks
    jaw_got = np.linalg.norm(_key_co(kb["jawOpen"]) - _key_co(kb[0]), axis=1)
    np.testing.assert_allclose(np.sort(jaw_got), np.sort(jaw), atol=2e-6)
    from pix2vertex_addon.core.head import HEAD_MATERIALS

    assert [m.name for m in got.materials] == list(HEAD_MATERIALS), "every part, the scalp included"
    assert got.materials[0].node_tree.nodes.get("Image Texture") is not None


@pytest.mark.slow
def test_face_only_and_no_arkit_options(oracle_template, tmp_path):
    import bpy

    from pix2vertex_addon.core.head import PHOTO_EXPRESSION

    s = oracle_template.p2v
    s.use_arkit = False
    assert bpy.ops.p2v.reconstruct() == {"FINISHED"}
    head = _head_object()
    assert [k.name for k in head.data.shape_keys.key_blocks] == ["Basis", PHOTO_EXPRESSION]
    bpy.data.objects.remove(head)
    s.template.hide_set(False)
    s.build = "FACE"
    n = len(bpy.data.objects)
    assert bpy.ops.p2v.reconstruct() == {"FINISHED"}
    assert len(bpy.data.objects) == n and not s.template.hide_get()
    assert not list((tmp_path / "results").glob("*/head.glb")), "face only: the result has no head files"


@pytest.mark.slow
def test_reconstruct_a_real_photo_into_a_head(empty_scene, tmp_path):
    """The shipped networks on a real photo (as test_real_photos.py), Build = Full Head."""
    import bpy

    from pix2vertex_addon.core.head import ARKIT_NAMES, PHOTO_EXPRESSION

    from photos import photo_paths

    bpy.ops.p2v.add_template()
    s = empty_scene.p2v
    s.image_path = str(photo_paths()["astronaut"])
    s.output_dir = str(tmp_path)
    assert bpy.ops.p2v.reconstruct() == {"FINISHED"}
    head = _head_object()
    names = [k.name for k in head.data.shape_keys.key_blocks]
    assert names[:2] == ["Basis", PHOTO_EXPRESSION] and set(ARKIT_NAMES) <= set(names)
    mats = {m.name.split(" ")[1].lower() for m in head.data.materials}
    assert {"sclera", "iris", "pupil", "teeth"} <= mats
