"""Face model access: loading, validation, template, sampling, errors."""

from __future__ import annotations

import numpy as np
import pytest

from pix2vertex_addon.core import face_model as fm
from pix2vertex_addon.core.crop import crop_box_from_landmarks


def test_arrays_and_regions(face_model):
    assert face_model.neutral_vertices.shape == (26719, 3)
    assert face_model.region_slice("face") == slice(0, 9409)
    assert face_model.region_slice("head_and_neck") == slice(9409, 11248)
    assert len(face_model.expression_names) == 53 and "jawOpen" in face_model.expression_names
    with pytest.raises(KeyError, match="unknown region"):
        face_model.region_slice("tail")


def test_template_is_the_face_region_in_metres(face_model):
    t = face_model.template
    assert t.n_vertices == 9409
    assert t.faces.shape == (9230, 4)
    assert t.faces.max() == 9408 and t.faces[t.faces >= 0].min() == 0
    # every template vertex is used by some polygon
    assert np.unique(t.faces[t.faces >= 0]).size == 9409
    np.testing.assert_allclose(t.vertices_m, face_model.neutral_vertices[:9409] / 100.0, rtol=1e-6)
    height = np.ptp(t.vertices_m[:, 1])
    assert 0.2 < height < 0.35, "a human face region is 20-35 cm tall"
    # Blender frame: z up, face looking along -y (the nose tip is the most negative y)
    vb = t.vertices_blender
    nose = t.landmarks_68[30]
    assert vb[nose, 1] == pytest.approx(vb[:, 1].min(), abs=0.01)
    np.testing.assert_allclose(vb[:, 2], t.vertices_m[:, 1])
    # loops and UVs agree in length, UVs are finite in [0, 1]
    loop_vertex, loop_start, loop_total = t.loops()
    assert loop_vertex.size == loop_total.sum() == t.loop_uvs().shape[0]
    uv = t.loop_uvs()
    assert np.isfinite(uv).all() and uv.min() >= 0 and uv.max() <= 1
    assert t.triangles().shape == (int((loop_total - 2).sum()), 3)


def test_template_is_read_only_and_cached(face_model):
    assert fm.load_face_model() is face_model
    with pytest.raises(ValueError):
        face_model.template.vertices_cm[0, 0] = 1.0


def test_sample_face_is_linear_in_the_weights(face_model):
    neutral = face_model.sample_face(region="face")
    np.testing.assert_allclose(neutral, face_model.template.vertices_cm)
    ident = np.zeros(100)
    ident[3] = 1.5
    a = face_model.sample_face(identity=ident, region="face")
    np.testing.assert_allclose(a - neutral, 1.5 * face_model.identity_basis[3, :9409], atol=1e-5)
    b = face_model.sample_face(expression={"jawOpen": 1.0})
    j = face_model.expression_names.index("jawOpen")
    np.testing.assert_allclose(b - face_model.neutral_vertices, face_model.expression_basis[j], atol=1e-5)
    assert np.abs(b[face_model.landmarks_68[8]] - face_model.neutral_vertices[face_model.landmarks_68[8]]).max() > 0.5
    with pytest.raises(KeyError):
        face_model.sample_face(expression={"smile": 1.0})
    with pytest.raises(ValueError):
        face_model.sample_face(identity=np.zeros(101))


def test_missing_model_names_the_path_and_the_fix(tmp_path):
    missing = tmp_path / "nope.npz"
    with pytest.raises(fm.FaceModelError) as err:
        fm.load_face_model(missing)
    assert str(missing) in str(err.value) and "P2V_FACE_MODEL" in str(err.value)


def test_corrupt_model_is_reported(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 this is not a zip file")
    with pytest.raises(fm.FaceModelError, match="unreadable or corrupt"):
        fm.load_face_model(bad)
    text = tmp_path / "text.npz"
    text.write_text("hello")
    with pytest.raises(fm.FaceModelError):
        fm.load_face_model(text)


def test_wrong_model_is_reported(tmp_path, face_model):
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, neutral_vertices=np.zeros((10, 3), np.float32))
    with pytest.raises(fm.FaceModelError, match="missing arrays"):
        fm.load_face_model(wrong)
    arrays = fm._read_arrays(face_model.path)
    arrays["identity_basis"] = arrays["identity_basis"][:50]
    short = tmp_path / "short.npz"
    np.savez(short, **arrays)
    with pytest.raises(fm.FaceModelError, match="identity_basis"):
        fm.load_face_model(short)


def test_path_resolution_order(monkeypatch, tmp_path):
    monkeypatch.delenv(fm.ENV_VAR, raising=False)
    assert fm.resolve_face_model_path(None) == fm.default_face_model_path()
    monkeypatch.setenv(fm.ENV_VAR, str(tmp_path / "env.npz"))
    assert fm.resolve_face_model_path(None) == tmp_path / "env.npz"
    assert fm.resolve_face_model_path(tmp_path / "arg.npz") == tmp_path / "arg.npz"


def test_crop_box_convention():
    pts = np.array([[100.0, 200.0], [200.0, 200.0], [150.0, 320.0]])
    x0, y0, side = crop_box_from_landmarks(pts)
    assert side == pytest.approx(1.6 * 120)
    assert x0 + side / 2 == pytest.approx(150.0)
    assert y0 + side / 2 == pytest.approx(260.0 - 0.06 * side)
    with pytest.raises(ValueError):
        crop_box_from_landmarks(np.zeros((68, 3)))
    with pytest.raises(ValueError):
        crop_box_from_landmarks(np.zeros((68, 2)))
