"""Reconstruct, Apply Detail, Batch, cancel and errors inside real Blender (bpy module), with the
oracle detector/networks so the results are known exactly (test_real_photos.py uses the weights)."""

from __future__ import annotations

import os
import time
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from conftest import ADDON_MODULE, addon_module
from oracle import oracle_pipeline


@pytest.fixture(scope="module")
def sample():
    from pix2vertex_addon.training.synth import generate_sample

    return generate_sample(21, 256, clean=True)


@pytest.fixture(scope="module")
def photo(sample, tmp_path_factory):
    p = tmp_path_factory.mktemp("photos") / "synthetic face.png"
    Image.fromarray(sample["image"]).save(p)
    return p


@pytest.fixture
def oracle(blender_addon, sample, face_model):
    """Make the add-on's pipeline cache hand out the oracle pipeline."""
    import bpy

    deps, jobs = addon_module("blender.deps"), addon_module("blender.jobs")
    key = (deps.face_model_path(bpy.context), os.cpu_count() or 2)
    model = addon_module("core.face_model").load_face_model(key[0])
    pipe = oracle_pipeline(sample, model, package=f"{ADDON_MODULE}.pix2vertex_addon")
    jobs.wait_for_warm_up()  # a warm-up started by an earlier test must not replace it
    jobs._pipelines[key] = pipe
    yield pipe
    jobs._pipelines.pop(key, None)


@pytest.fixture
def scene_with_template(empty_scene, photo, tmp_path):
    import bpy

    bpy.ops.p2v.add_template()
    s = empty_scene.p2v
    s.image_path = str(photo)
    s.output_dir = str(tmp_path / "results")
    s.build = "FACE"  # the face-only result; the full head: test_head_blender.py
    return empty_scene


def _evaluated_vertices(obj):
    import bpy

    dg = bpy.context.evaluated_depsgraph_get()
    ev = obj.evaluated_get(dg)
    me = ev.to_mesh()
    co = np.empty(len(me.vertices) * 3, np.float32)
    me.vertices.foreach_get("co", co)
    ev.to_mesh_clear()
    return co.reshape(-1, 3)


def test_reconstruct_warps_the_template_in_place(scene_with_template, oracle, photo, face_model):
    import bpy

    from pix2vertex_addon.blender.apply import DISPLACE_MOD, SHAPE_KEY, SUBDIV_MOD, model_mm_to_blender
    from pix2vertex_addon.core.images import load_image

    s = scene_with_template.p2v
    obj = s.template
    name_before, n_obj = obj.name, len(bpy.data.objects)
    uv_before = np.empty(len(obj.data.loops) * 2, np.float32)
    obj.data.uv_layers[0].data.foreach_get("uv", uv_before)
    neutral = np.empty(len(obj.data.vertices) * 3, np.float32)
    obj.data.vertices.foreach_get("co", neutral)

    assert bpy.ops.p2v.reconstruct() == {"FINISHED"}
    assert s.template is obj and len(bpy.data.objects) == n_obj, "same object, nothing else added"
    assert name_before != obj.name == obj.data.name == "synthetic face", "named after the photo"
    assert len(obj.data.vertices) == 9409 and len(obj.data.polygons) == 9230
    uv_after = np.empty_like(uv_before)
    obj.data.uv_layers[0].data.foreach_get("uv", uv_after)
    np.testing.assert_array_equal(uv_after, uv_before)
    # shape keys: Basis = the neutral template, the reconstruction at value 1
    keys = obj.data.shape_keys.key_blocks
    assert [k.name for k in keys] == ["Basis", SHAPE_KEY] and keys[SHAPE_KEY].value == 1.0
    basis = np.empty(len(neutral), np.float32)
    keys["Basis"].data.foreach_get("co", basis)
    np.testing.assert_allclose(basis, neutral)
    recon = np.empty(len(neutral), np.float32)
    keys[SHAPE_KEY].data.foreach_get("co", recon)
    # ... equal to what the core pipeline returns for the same photo
    rgb, _ = load_image(photo)
    expected = model_mm_to_blender(oracle.reconstruct(rgb)[0].vertices_model)
    np.testing.assert_allclose(recon.reshape(-1, 3), expected, atol=1e-6)
    assert np.abs(recon - neutral).max() > 0.002, "the vertices moved (by millimetres at least)"
    # material with the projected texture, map images, detail modifiers
    mat = obj.active_material
    assert mat is not None and mat.name.startswith("p2v Face")
    tex_nodes = [n for n in mat.node_tree.nodes if n.type == "TEX_IMAGE"]
    assert tex_nodes and tex_nodes[0].image.packed_file is not None and tex_nodes[0].image.size[0] == 1024
    assert bpy.data.images.get("p2v Depth synthetic face") is not None
    assert bpy.data.images.get("p2v Correspondence synthetic face") is not None
    assert [m.name for m in obj.modifiers] == [SUBDIV_MOD, DISPLACE_MOD]
    assert obj.modifiers[SUBDIV_MOD].subdivision_type == "SIMPLE"


@pytest.mark.slow
def test_detail_modifier_reproduces_the_detail_field_and_strength_scales_it(scene_with_template, oracle, photo):
    import bpy

    from pix2vertex_addon.blender.apply import model_mm_to_blender
    from pix2vertex_addon.core.images import load_image

    s = scene_with_template.p2v
    assert bpy.ops.p2v.reconstruct() == {"FINISHED"}
    obj = s.template
    rec = oracle.reconstruct(load_image(photo)[0])[0]
    d = rec.detail
    # the subdivided, displaced mesh of the core, in Blender's frame
    disp_label = d.vertices + d.displacement[:, None] * d.normals
    core = model_mm_to_blender(rec.to_model(disp_label))
    flat = model_mm_to_blender(rec.to_model(d.vertices))
    ev = _evaluated_vertices(obj)
    assert ev.shape == core.shape
    # Blender's Simple subdivision puts vertices where the core's does (its edge vertices come in
    # Blender's own edge order: match them by position; the template's vertices come first)
    from scipy.spatial import cKDTree

    s.detail_strength = 0.0
    flat_blender = _evaluated_vertices(obj)
    dist, order = cKDTree(flat_blender).query(flat)
    assert dist.max() < 2e-5 and len(np.unique(order)) == len(flat)
    np.testing.assert_array_equal(order[:9409], np.arange(9409))
    # ... and the Displace modifier moves them by the core's field (to a fraction of the detail)
    s.detail_strength = 1.0
    moved_core = np.linalg.norm(core - flat, axis=1)
    moved_blender = np.linalg.norm(_evaluated_vertices(obj)[order] - flat, axis=1)
    big = moved_core > np.percentile(moved_core, 90)
    assert np.median(np.abs(moved_blender[big] - moved_core[big])) < 0.25 * np.median(moved_core[big])
    s.detail_strength = 2.0
    moved2 = np.linalg.norm(_evaluated_vertices(obj)[order] - flat, axis=1)
    assert np.median(moved2[big] / np.maximum(moved_blender[big], 1e-9)) == pytest.approx(2.0, rel=0.05)
    s.use_detail = False
    assert len(_evaluated_vertices(obj)) == 9409


def test_apply_detail_bakes_the_stack(scene_with_template, oracle):
    import bpy

    s = scene_with_template.p2v
    assert bpy.ops.p2v.reconstruct() == {"FINISHED"}
    obj = s.template
    before = _evaluated_vertices(obj)
    assert bpy.ops.p2v.apply_detail() == {"FINISHED"}
    assert len(obj.modifiers) == 0 and obj.data.shape_keys is None
    co = np.empty(len(obj.data.vertices) * 3, np.float32)
    obj.data.vertices.foreach_get("co", co)
    np.testing.assert_allclose(co.reshape(-1, 3), before, atol=1e-6)
    assert s.template is None, "no longer the template's topology"
    assert obj.data.uv_layers and obj.active_material is not None


def test_target_mesh_object_on_request(scene_with_template, oracle):
    import bpy

    s = scene_with_template.p2v
    s.add_target_mesh = True
    n = len(bpy.data.objects)
    assert bpy.ops.p2v.reconstruct() == {"FINISHED"}
    assert len(bpy.data.objects) == n + 1
    tgt = next(o for o in bpy.data.objects if o.name.startswith("p2v Target"))
    assert len(tgt.data.vertices) == oracle.reconstruct(oracle.detector and oracle.predictor.sample["image"])[0].target.n_vertices


def test_threaded_job_and_cancel_leave_the_scene_unchanged(scene_with_template, oracle):
    import bpy

    jobs, operators = addon_module("blender.jobs"), addon_module("blender.operators")

    s = scene_with_template.p2v
    obj = s.template
    job, info = operators.start_reconstruct(bpy.context, run_in_thread=True)
    assert jobs.current_job() is job
    with pytest.raises(RuntimeError, match="another reconstruction is running"):
        operators.start_reconstruct(bpy.context, run_in_thread=True)
    job.cancel()
    assert job.wait(120)
    reports = []
    state = operators.finish_reconstruct(bpy.context, job, info, lambda kind, msg: reports.append((kind, msg)))
    assert state == {"CANCELLED"} and "cancelled" in reports[0][1]
    assert obj.data.shape_keys is None and len(obj.modifiers) == 0 and obj.active_material is None
    assert jobs.current_job() is None
    # and a threaded run that is not cancelled applies its result on the main thread
    job, info = operators.start_reconstruct(bpy.context, run_in_thread=True)
    t0 = time.time()
    while not job.done and time.time() - t0 < 120:
        time.sleep(0.05)
    assert operators.finish_reconstruct(bpy.context, job, info, lambda *a: None) == {"FINISHED"}
    assert obj.data.shape_keys is not None


def test_scene_changing_operators_register_an_undo_step(blender_addon):
    import bpy

    # The bpy module has no undo stack in background mode (bpy.ops.ed.undo.poll() is False), so
    # undo itself cannot be exercised here: this checks only that each operator that changes the
    # scene asks Blender for an undo step.
    for op in ("P2V_OT_reconstruct", "P2V_OT_apply_detail", "P2V_OT_add_template"):
        assert "UNDO" in getattr(bpy.types, op).bl_options


class _FakeWindowManager:
    def __init__(self):
        self.timers_removed = 0

    def event_timer_remove(self, _timer):
        self.timers_removed += 1


def test_modal_loop_ticks_progress_esc_cancels_and_the_end_applies(scene_with_template, oracle):
    """The operators' modal loop (_ModalJob.modal) driven by hand: timer events copy the job's
    progress to the panel, Esc cancels the job and is consumed, other events pass through, and the
    timer event after the job ends removes the timer and finishes (cancelled or applied)."""
    import threading

    import bpy

    operators, jobs = addon_module("blender.operators"), addon_module("blender.jobs")
    s = scene_with_template.p2v
    obj = s.template

    class Loop(operators._ModalJob):  # the operators' mixin without a bpy.types.Operator
        def __init__(self, job):
            self._job, self.reports = job, []

        def report(self, kind, msg):
            self.reports.append((kind, msg))

        def _finish(self, context):
            return "finished: cancelled" if self._job.cancel_event.is_set() else "finished: done"

    wm = _FakeWindowManager()
    ctx = SimpleNamespace(scene=bpy.context.scene, window_manager=wm, workspace=None, screen=None)
    timer, esc = SimpleNamespace(type="TIMER", value="NOTHING"), SimpleNamespace(type="ESC", value="PRESS")
    other = SimpleNamespace(type="MOUSEMOVE", value="NOTHING")

    release = threading.Event()

    def work(progress, cancel):
        progress(0.4, "Finding the face")
        release.wait(30)
        return "result"

    job = jobs.Job("modal test", work).start()
    loop = Loop(job)
    try:
        for _ in range(200):  # until the worker has reported its progress
            if job.fraction == 0.4:
                break
            time.sleep(0.01)
        assert loop.modal(ctx, timer) == {"PASS_THROUGH"}
        assert abs(s.progress - 0.4) < 1e-6 and s.status == "Finding the face"
        assert loop.modal(ctx, other) == {"PASS_THROUGH"} and wm.timers_removed == 0
        assert loop.modal(ctx, esc) == {"RUNNING_MODAL"}
        assert job.cancel_event.is_set() and s.status == "Cancelling..."
    finally:
        release.set()
    assert job.wait(30)
    assert loop.modal(ctx, timer) == "finished: cancelled" and wm.timers_removed == 1
    # a job that is not cancelled ends the loop on the next timer event with the real finish
    job, info = operators.start_reconstruct(bpy.context, run_in_thread=True)
    real = Loop(job)
    real._info = info  # the operator's own finish (needs the real context to apply the result)
    real._finish = lambda _ctx: operators.P2V_OT_reconstruct._finish(real, bpy.context)
    assert job.wait(120)
    assert real.modal(ctx, timer) == {"FINISHED"} and obj.data.shape_keys is not None


def test_release_waits_for_the_running_job_before_closing_detectors(blender_addon):
    import threading

    jobs = addon_module("blender.jobs")
    stopped = threading.Event()
    seen = []

    class Detector:
        def close(self):
            seen.append(stopped.is_set())

    def work(progress, cancel):
        while not cancel.is_set():
            time.sleep(0.01)
        time.sleep(0.2)  # the stage in progress finishes before the worker sees the flag
        stopped.set()

    job = jobs.Job("release test", work).start()
    jobs._pipelines[("release test", 1)] = SimpleNamespace(detector=Detector())
    jobs.release()
    assert job.done and seen == [True] and not jobs._pipelines


@pytest.mark.parametrize("case", ["no photo", "no template", "unreadable", "no face", "missing model", "missing packages"])
def test_errors_reach_the_user_and_change_nothing(scene_with_template, oracle, tmp_path, case, monkeypatch):
    import bpy

    deps = addon_module("blender.deps")
    s = scene_with_template.p2v
    obj = s.template
    expected = {
        "no photo": "Choose a photo",
        "no template": "Choose a template face",
        "unreadable": "Cannot read the photo",
        "no face": "No face found",
        "missing model": "Face model not found",
        "missing packages": "Missing runtime packages: torch",
    }[case]
    if case == "no photo":
        s.image_path = ""
    elif case == "no template":
        s.template = None
    elif case == "unreadable":
        bad = tmp_path / "bad.jpg"
        bad.write_text("not an image")
        s.image_path = str(bad)
    elif case == "no face":
        p = tmp_path / "grey.png"
        Image.fromarray(np.full((256, 256, 3), 90, np.uint8)).save(p)
        s.image_path = str(p)
    elif case == "missing model":
        bpy.context.preferences.addons[ADDON_MODULE].preferences.face_model_path = str(tmp_path / "none.npz")
    elif case == "missing packages":
        monkeypatch.setattr(deps, "missing_packages", lambda: ["torch"])
    n_objects, n_images, n_mats = len(bpy.data.objects), len(bpy.data.images), len(bpy.data.materials)
    try:
        with pytest.raises(RuntimeError, match=expected):
            bpy.ops.p2v.reconstruct()
    finally:
        bpy.context.preferences.addons[ADDON_MODULE].preferences.face_model_path = ""
    assert (len(bpy.data.objects), len(bpy.data.images), len(bpy.data.materials)) == (n_objects, n_images, n_mats)
    assert obj.data.shape_keys is None and len(obj.modifiers) == 0


@pytest.mark.slow
def test_batch_over_a_folder_with_a_bad_file(empty_scene, oracle, sample, tmp_path):
    import bpy

    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(sample["image"]).save(src / "a.png")
    Image.fromarray(sample["image"]).save(src / "b.png")
    (src / "broken.jpg").write_text("broken")
    s = empty_scene.p2v
    s.batch_input_dir = str(src)
    s.batch_output_dir = str(tmp_path / "out")
    before = (len(bpy.data.objects), len(bpy.data.meshes), len(bpy.data.images), len(bpy.data.materials))
    assert bpy.ops.p2v.batch_reconstruct() == {"FINISHED"}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a", "b"]
    for name in ("a", "b"):
        assert (tmp_path / "out" / name / "face.obj").exists()
    assert "1 failed" in s.status
    after = (len(bpy.data.objects), len(bpy.data.meshes), len(bpy.data.images), len(bpy.data.materials))
    assert after == before, "the scene is unchanged by a batch"


class _Layout:
    """Records what a panel draws (the bpy module cannot draw the interface in background mode)."""

    def __init__(self, log):
        self.log = log
        self.alert = self.active = False
        self.scale_y = 1.0

    def _child(self, *a, **k):
        return _Layout(self.log)

    column = row = box = _child

    def prop(self, data, name, **k):
        self.log.append(("prop", data, name))

    def operator(self, idname, **k):
        self.log.append(("operator", idname))

    def label(self, **k):
        self.log.append(("label", k.get("text", "")))

    def template_ID(self, data, name, **k):
        self.log.append(("prop", data, name))

    def template_icon(self, **k):
        self.log.append(("icon", k["icon_value"]))

    def progress(self, **k):
        self.log.append(("progress", k.get("factor")))

    def separator(self, **k):
        pass


@pytest.mark.parametrize("running", [False, True])
def test_panels_draw_existing_properties_and_operators(scene_with_template, running):
    import bpy

    s = scene_with_template.p2v
    s.running = running
    for panel in (bpy.types.VIEW3D_PT_p2v_reconstruct, bpy.types.VIEW3D_PT_p2v_batch):
        log = []
        panel.draw(type("P", (), {"layout": _Layout(log)})(), bpy.context)
        for kind, *rest in log:
            if kind == "prop":
                data, name = rest
                assert name in data.bl_rna.properties, name
            elif kind == "operator":
                mod, op = rest[0].split(".")
                assert hasattr(getattr(bpy.ops, mod), op), rest[0]
        ops = {r[0] for k, *r in log if k == "operator"}
        if panel is bpy.types.VIEW3D_PT_p2v_reconstruct:
            assert ("p2v.cancel" in ops) == running and ("p2v.reconstruct" in ops) != running
            assert "p2v.apply_detail" in ops
            assert any(k == "progress" for k, *_ in log) == running
        else:
            assert "p2v.batch_reconstruct" in ops
    s.running = False


def test_choosing_a_photo_warms_the_pipeline_up(oracle, empty_scene, photo, monkeypatch):
    """Choosing a photo starts the one-time work of the first Reconstruct in the background
    (once per face model and thread count); Reconstruct waits for it instead of repeating it."""
    jobs = addon_module("blender.jobs")
    calls = []
    monkeypatch.setattr(oracle, "warm_up", lambda *a, **k: calls.append(k))
    jobs._warm.clear()
    empty_scene.p2v.image_path = str(photo)
    jobs.wait_for_warm_up(60)
    empty_scene.p2v.image_path = ""
    empty_scene.p2v.image_path = str(photo)  # the same pipeline: not again
    jobs.wait_for_warm_up(60)
    assert [t.name for t in jobs._warm.values()] == ["p2v-warm-up"]
    assert calls == [{"detail_texture_sizes": (addon_module("blender.apply").DETAIL_TEXTURE_SIZE,)}]
