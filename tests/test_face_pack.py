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
