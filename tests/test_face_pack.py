"""The face-model pack shipped with the add-on: what it holds, its sizes, its licence, and that it
equals ICT-FaceKit's ``ict_facekit.npz`` within fp16 rounding (when the npz is on this machine)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from pix2vertex_addon.core import face_model as fm

PACK = fm.default_face_model_path()
NPZ = fm.shared_face_model_path()
needs_npz = pytest.mark.skipif(not NPZ.is_file(), reason=f"{NPZ} not on this machine")


def test_default_is_the_shipped_pack(monkeypatch):
    monkeypatch.delenv(fm.ENV_VAR, raising=False)
    assert fm.resolve_face_model_path(None) == PACK
    assert PACK.parent.name == "pix2vertex_addon" and PACK.is_dir()
    model = fm.load_face_model()
    assert model.path == PACK.resolve()
    assert model.identity_basis.dtype == np.float32 and model.template.n_vertices == 9409


def test_pack_files_are_small_and_carry_the_licence():
    names = {p.name for p in PACK.iterdir()}
    assert names == {*fm.PACK_FILES, "LICENSE-ICT-FaceKit", "README.md"}
    for name in fm.PACK_FILES:
        assert (PACK / name).stat().st_size <= 16 * 2**20
    licence = (PACK / "LICENSE-ICT-FaceKit").read_text()
    assert "MIT" in licence or "Permission is hereby granted" in licence
    assert "ICT-FaceKit" in (PACK / "README.md").read_text()


def test_pack_holds_everything_the_full_head_needs():
    arrays = fm._read_arrays(PACK)
    assert set(arrays) == set(fm._EXPECTED)
    assert arrays["neutral_vertices"].shape == (26719, 3)
    assert arrays["identity_basis"].shape == (100, 26719, 3)
    assert arrays["expression_basis"].shape == (53, 26719, 3)
    assert "M_Teeth" in [str(n) for n in arrays["material_names"]]
    assert {"eyeball_left", "teeth", "head_and_neck"} <= {str(n) for n in arrays["region_names"]}


@needs_npz
def test_pack_equals_the_npz_within_fp16():
    pack, ref = fm._read_arrays(PACK), fm._read_arrays(NPZ)
    for key in fm._EXPECTED:
        if key in fm.PACK_FP16:
            # fp16 rounding: half an ulp, 2**-11 relative, plus subnormal steps near 0
            err = np.abs(pack[key] - ref[key])
            assert (err <= np.abs(ref[key]) * 2.0**-11 + 2.0**-25).all(), key
            assert err.max() > 0, "the bases are stored as fp16"
        else:
            np.testing.assert_array_equal(pack[key], ref[key], err_msg=key)
            assert pack[key].dtype == ref[key].dtype, key


def test_missing_pack_file_is_reported(tmp_path):
    (tmp_path / "mesh.npz").write_bytes((PACK / "mesh.npz").read_bytes())
    with pytest.raises(fm.FaceModelError, match="lacks identity.npz"):
        fm.load_face_model(tmp_path)


@needs_npz
@pytest.mark.slow
def test_build_script_rebuilds_the_shipped_pack(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    try:
        import build_face_pack
    finally:
        sys.path.pop(0)
    out = tmp_path / "pack"
    assert build_face_pack.main(["--source", str(NPZ), "--out", str(out)]) == 0
    built, shipped = fm._read_arrays(out), fm._read_arrays(PACK)
    for key in fm._EXPECTED:
        np.testing.assert_array_equal(built[key], shipped[key], err_msg=key)
    assert build_face_pack.main(["--source", str(tmp_path / "none.npz"), "--out", str(out)]) == 2


def test_synthetic_data_are_rendered_from_the_exact_npz(monkeypatch):
    """The splits (and every figure measured on them) come from ICT-FaceKit's float32 npz where
    it is; the add-on's default, the fp16 pack, would move a few pixels of each sample."""
    from pix2vertex_addon.core import face_model as fm

    monkeypatch.delenv(fm.ENV_VAR, raising=False)
    shared = fm.shared_face_model_path()
    if not shared.is_file():
        pytest.skip("ict_facekit.npz is not next to the checkout")
    assert fm.synth_face_model_path() == shared
    assert fm.resolve_face_model_path() == fm.default_face_model_path()  # the add-on: the pack
    monkeypatch.setenv(fm.ENV_VAR, "/some/other.npz")
    assert str(fm.synth_face_model_path()) == "/some/other.npz"


def _write_facexmodel(folder: Path, arrays: dict, n_identity: int, expressions: list[str],
                      shape_faces: bool = True) -> None:
    """A FaceXModel folder as ICT-FaceKit's release lays it out, from the npz's arrays."""
    import json

    folder.mkdir()
    names = [str(n) for n in arrays["material_names"]]

    def obj(path: Path, verts: np.ndarray, with_faces: bool) -> None:
        lines = [f"v {x:.9g} {y:.9g} {z:.9g}" for x, y, z in verts.tolist()]
        if with_faces:
            lines += [f"vt {u:.9g} {v:.9g}" for u, v in arrays["uvs"].tolist()]
            current = None
            for f, t, m in zip(arrays["faces"].tolist(), arrays["face_uvs"].tolist(), arrays["face_material"]):
                if names[m] != current:
                    current = names[m]
                    lines.append(f"usemtl {current}")
                lines.append("f " + " ".join(f"{a + 1}/{b + 1}" for a, b in zip(f, t) if a >= 0))
        path.write_text("\n".join(lines) + "\n")

    neutral = arrays["neutral_vertices"]
    obj(folder / "generic_neutral_mesh.obj", neutral, True)
    for i in range(n_identity):
        obj(folder / f"identity{i:03d}.obj", neutral + arrays["identity_basis"][i], shape_faces)
    for name in expressions:
        k = [str(e) for e in arrays["expression_names"]].index(name)
        obj(folder / f"{name}.obj", neutral + arrays["expression_basis"][k], shape_faces)
    (folder / "vertex_indices.json").write_text(json.dumps({
        "expressions": expressions, "fitting_expressions": expressions, "incompatibilities": [],
        "idx_to_landmark_verts": arrays["landmarks_68"].tolist(),
        "idx_to_rigid_verts": arrays["rigid_vertices"].tolist()}))


def _converter_and_npz():
    """scripts/facexmodel_to_npz.py as a module, and the shared npz's arrays."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    try:
        import facexmodel_to_npz as conv
    finally:
        sys.path.pop(0)
    with np.load(NPZ) as z:
        return conv, {k: z[k] for k in z.files}


@needs_npz
def test_facexmodel_folder_converts_to_the_npz(tmp_path):
    """scripts/facexmodel_to_npz.py on a FaceXModel folder written from the npz (two identities,
    two expressions) gives back the npz's arrays: the mesh exactly, the bases within float32
    rounding of OBJ text."""
    conv, ref = _converter_and_npz()
    _write_facexmodel(tmp_path / "FaceXModel", ref, 2, ["jawOpen", "eyeBlink_L"])
    out = conv.convert(tmp_path / "FaceXModel")
    for key in ("neutral_vertices", "faces", "uvs", "face_uvs", "landmarks_68", "rigid_vertices", "region_names",
                "region_vertex_ranges"):
        np.testing.assert_array_equal(out[key], ref[key], err_msg=key)
    names_out = out["material_names"][out["face_material"]]
    np.testing.assert_array_equal(names_out, ref["material_names"][ref["face_material"]])
    np.testing.assert_allclose(out["identity_basis"], ref["identity_basis"][:2], atol=2e-6)
    jaw, blink = (list(ref["expression_names"]).index(n) for n in ("jawOpen", "eyeBlink_L"))
    np.testing.assert_allclose(out["expression_basis"], ref["expression_basis"][[jaw, blink]], atol=2e-6)
    assert list(out["identity_names"]) == ["identity000", "identity001"]
    assert out["faces"].dtype == np.int32 and out["face_material"].dtype == np.int16
    (tmp_path / "FaceXModel" / "eyeBlink_L.obj").unlink()
    with pytest.raises(conv.ConvertError, match="eyeBlink_L.obj is missing"):
        conv.convert(tmp_path / "FaceXModel")
    with pytest.raises(conv.ConvertError, match="not ICT-FaceKit's FaceXModel"):
        conv.convert(tmp_path)
    assert conv.main([str(tmp_path), "--out", str(tmp_path / "x.npz")]) == 2
    assert not (tmp_path / "x.npz").exists()


@needs_npz
@pytest.mark.slow
def test_facexmodel_to_npz_makes_a_model_the_addon_loads(tmp_path):
    """The whole release (100 identities, 53 expressions): the script writes an npz that the
    add-on's loader accepts and that equals the shared one."""
    conv, ref = _converter_and_npz()
    _write_facexmodel(tmp_path / "FaceXModel", ref, 100, [str(e) for e in ref["expression_names"]],
                      shape_faces=False)
    assert conv.main([str(tmp_path / "FaceXModel"), "--out", str(tmp_path / "ict.npz")]) == 0
    model = fm.load_face_model(tmp_path / "ict.npz")
    np.testing.assert_allclose(model.identity_basis, ref["identity_basis"], atol=2e-6)
    np.testing.assert_allclose(model.expression_basis, ref["expression_basis"], atol=2e-6)
