"""The photo pipeline end to end on a rendered face with exact maps (oracle detector/networks):
stages, camera recovery, result files, cancel, and batches with bad inputs."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from PIL import Image

from pix2vertex_addon.core.batch import collect_inputs, output_names, run_batch
from pix2vertex_addon.core.export import read_obj_vertices
from pix2vertex_addon.core.pipeline import STAGES, Cancelled
from pix2vertex_addon.core.results import RESULT_FILES, write_result

from oracle import oracle_pipeline


@pytest.fixture(scope="module")
def sample():
    from pix2vertex_addon.training.synth import generate_sample

    return generate_sample(11, 256, clean=True)


@pytest.fixture(scope="module")
def pipeline(sample, face_model):
    return oracle_pipeline(sample, face_model)


@pytest.fixture(scope="module")
def rec(pipeline, sample):
    return pipeline.reconstruct(sample["image"])[0]


def test_every_stage_runs_and_is_timed(rec):
    assert set(rec.seconds) == set(STAGES)
    assert all(v >= 0 for v in rec.seconds.values())


def test_camera_and_geometry_are_recovered(rec, sample):
    meta = sample["meta"]
    assert rec.camera.focal == pytest.approx(meta["focal_px"], rel=1e-4)
    assert rec.camera.z_ref == pytest.approx(meta["z_ref_mm"], rel=1e-4)
    err = np.linalg.norm(rec.vertices - sample["vertices_cam"], axis=1)
    assert np.median(err) < 1.5, f"median vertex error {np.median(err):.2f} mm with exact maps"
    # pose removal: the model-frame result is the true face in the model frame (up to the fit)
    r, t = rec.pose
    assert np.linalg.det(r) == pytest.approx(1.0)
    np.testing.assert_allclose(rec.to_model(rec.vertices), rec.vertices_model, atol=1e-9)


def test_progress_and_cancel(pipeline, sample):
    seen = []
    pipeline.reconstruct(sample["image"], progress=lambda f, s: seen.append((f, s)))
    fr = [f for f, _ in seen]
    assert fr == sorted(fr) and fr[0] == 0.0 and fr[-1] == 1.0
    stop = threading.Event()

    def cancel_at_registration(f, s):
        if s == "registration":
            stop.set()

    with pytest.raises(Cancelled):
        pipeline.reconstruct(sample["image"], progress=cancel_at_registration, cancel=stop)


def test_result_files(tmp_path, rec, sample, face_model):
    out = write_result(tmp_path / "s11", sample["image"], rec, face_model.template)
    assert sorted(p.name for p in out.iterdir()) == sorted(RESULT_FILES + ("face_base.mtl",))
    base = read_obj_vertices(out / "face_base.obj")
    np.testing.assert_allclose(base, rec.vertices_model / 1000.0, atol=2e-6)  # metres, template order
    det = read_obj_vertices(out / "face.obj")
    assert len(det) > len(base) and len(det) == len(rec.detail.vertices)
    assert np.abs(det[: len(base)] - base).max() < 0.005, "subdivided mesh starts with the template's vertices"
    depth = np.load(out / "depth.npy")
    assert depth.dtype == np.float32 and depth.shape == sample["image"].shape[:2]
    m = sample["mask"]
    true_depth = sample["xyz"][..., 2] + sample["meta"]["z_ref_mm"]
    both = m & np.isfinite(depth)
    assert both.sum() > 0.9 * m.sum()
    assert np.median(np.abs(depth[both] - true_depth[both])) < 2.0
    assert np.isnan(depth[0, 0]) or not m[0, 0]
    lm = np.array(json.loads((out / "landmarks.json").read_text())["landmarks_68"])
    assert lm.shape == (68, 2)
    assert np.median(np.linalg.norm(lm - sample["landmarks_2d"], axis=1)) < 2.0
    tex = np.asarray(Image.open(out / "texture.png"))
    assert tex.shape == (1024, 1024, 3) and tex.std() > 10
    rep = json.loads((out / "report.json").read_text())
    assert set(rep["seconds"]) >= set(STAGES) and rep["versions"]["pix2vertex"]
    assert rep["units"]["depth"].startswith("millimetres")


def _batch_folder(tmp_path, sample):
    d = tmp_path / "photos ü"
    d.mkdir()
    Image.fromarray(sample["image"]).save(d / "face.png")
    Image.fromarray(sample["image"]).save(d / "Gesicht ö.png")
    Image.fromarray(sample["image"]).save(d / "good.jpg", quality=95)
    data = (d / "good.jpg").read_bytes()
    (d / "good.jpg").unlink()
    (d / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (d / "notes.jpg").write_text("not a photo")
    (d / "empty.png").write_bytes(b"")
    Image.fromarray(np.full((16, 16, 3), 100, np.uint8)).save(d / "tiny.png")
    Image.fromarray(np.full((256, 256, 3), 100, np.uint8)).save(d / "noface.png")
    (d / "readme.txt").write_text("ignored: not an image suffix")
    return d


@pytest.mark.slow
def test_batch_goes_on_past_bad_photos(tmp_path, pipeline, sample):
    folder = _batch_folder(tmp_path, sample)
    files, missing = collect_inputs([folder, tmp_path / "nope"])
    assert missing == [(str(tmp_path / "nope"), "no such file or folder")]
    assert len(files) == 7 and all(f.suffix != ".txt" for f in files)
    out = tmp_path / "out"
    events = []
    rep = run_batch(pipeline, files, out, progress=lambda *a: events.append(a))
    assert sorted(p.rsplit("/", 1)[-1] for p, _ in rep.done) == ["Gesicht ö.png", "face.png"]
    reasons = {p.rsplit("/", 1)[-1]: r for p, r in rep.failed}
    assert set(reasons) == {"truncated.jpg", "notes.jpg", "empty.png", "tiny.png", "noface.png"}
    assert "truncated" in reasons["truncated.jpg"] and "not an image" in reasons["notes.jpg"]
    assert "empty" in reasons["empty.png"] and "too small" in reasons["tiny.png"]
    assert "no face" in reasons["noface.png"]
    assert not rep.ok and "FAILED" in rep.summary()
    assert sorted(p.name for p in out.iterdir()) == ["Gesicht ö", "face"], "no partial folders"
    assert events[-1][0] == events[-1][1] == 7
    # a second run skips finished photos; overwrite redoes them
    again = run_batch(pipeline, files, out)
    assert len(again.skipped) == 2 and not again.done
    redo = run_batch(pipeline, [folder / "face.png"], out, overwrite=True)
    assert len(redo.done) == 1


@pytest.mark.slow
def test_cancelled_batch_leaves_only_whole_results(tmp_path, pipeline, sample):
    folder = _batch_folder(tmp_path, sample)
    files, _ = collect_inputs([folder])
    stop = threading.Event()

    def progress(i, total, name, stage):
        if name == "face.png" and stage == "registration":
            stop.set()

    rep = run_batch(pipeline, files, tmp_path / "out", progress=progress, cancel=stop)
    assert rep.cancelled and not rep.ok
    for d in (tmp_path / "out").iterdir():
        assert (d / "report.json").exists(), f"{d} is incomplete"
        assert not d.name.startswith("."), "no temporary folder left behind"


def test_output_names_are_unique():
    from pathlib import Path

    files = [Path("a/x.jpg"), Path("b/x.jpg"), Path("c/x.png"), Path("d/x.jpg")]
    names = output_names(files)
    assert len(set(names)) == 4 and names[2] == "x_png"
    # the name of a photo depends on the set of photos, never on their order
    assert dict(zip(files, names)) == dict(zip(files[::-1], output_names(files[::-1])))
    assert output_names([Path("a/x.jpg")]) == ["x"]


def test_subdivided_corner_uvs(face_model):
    from pix2vertex_addon.core.geometry import subdivide_corner_uvs

    t = face_model.template
    valid = t.faces >= 0
    uv = subdivide_corner_uvs(t.faces, t.uvs)
    assert uv.shape == (valid.sum(), 4, 2)
    # quad k of polygon p starts at p's corner k and meets the others at p's UV centre
    np.testing.assert_allclose(uv[:, 0], t.uvs[valid], atol=1e-6)
    centres = np.repeat(np.nanmean(np.where(valid[..., None], t.uvs, np.nan), axis=1), valid.sum(1), axis=0)
    np.testing.assert_allclose(uv[:, 2], centres, atol=1e-6)
    assert subdivide_corner_uvs(t.faces, t.uvs, 2).shape == (4 * valid.sum(), 4, 2)


@pytest.mark.parametrize("from_disk", [False, True], ids=["computed", "from-disk"])
def test_warm_up_leaves_no_layout_work_for_the_first_result(pipeline, sample, tmp_path, from_disk):
    """After ``Pipeline.warm_up`` the first result (texture, mirror look-up, border ramps, OBJ
    lines, normal map) and Blender's displacement image compute no layout table of their own:
    no layout cache gains or replaces an entry. Also when the warm-up loaded the tables from the
    disk cache (what a later Blender session does), computing none of them."""
    from pix2vertex_addon.core import layout_cache
    from pix2vertex_addon.core.layout_cache import all_caches
    from pix2vertex_addon.core.pipeline import PipelineOptions

    before_folder = layout_cache.disk_folder()
    layout_cache.set_disk_folder(tmp_path / "cache" if from_disk else None)
    try:
        for c in all_caches():
            c.clear()
        pipeline.warm_up(PipelineOptions(detail=True), texture_size=256, detail_texture_sizes=(512,))
        if from_disk:  # a later process: its memory caches empty, the files there
            for c in all_caches():
                c.clear()
            computes = {c.name: c.computes for c in all_caches()}
            pipeline.warm_up(PipelineOptions(detail=True), texture_size=256, detail_texture_sizes=(512,))
            assert {c.name: c.computes for c in all_caches()} == computes, "a table was computed, not loaded"
        _first_result_adds_nothing(pipeline, sample, tmp_path)
    finally:
        layout_cache.set_disk_folder(before_folder)


def _first_result_adds_nothing(pipeline, sample, tmp_path):
    from pix2vertex_addon.core import projection
    from pix2vertex_addon.core.geometry import subdivide_corner_uvs
    from pix2vertex_addon.core.layout_cache import all_caches
    from pix2vertex_addon.core.pipeline import PipelineOptions

    before = {c.name: c.snapshot() for c in all_caches()}
    assert sum(len(v) for v in before.values()) >= 6
    rec = pipeline.reconstruct(sample["image"], PipelineOptions(detail=True))[0]
    write_result(tmp_path / "r", sample["image"], rec, pipeline.model.template, texture_size=256)
    t = pipeline.model.template
    projection.bake_vertex_field(rec.detail.displacement, rec.detail.faces,
                                 subdivide_corner_uvs(t.faces, t.uvs, rec.detail_levels), size=512)
    for c in all_caches():
        after = c.snapshot()
        assert after.keys() == before[c.name].keys(), c.name
        assert all(after[k] is before[c.name][k] for k in after), c.name
