"""The ONNX export of the networks and its onnxruntime backend give torch's maps.

Tolerance, measured on the shipped weights on the detector's crops of the three real photos
(astronaut, Grace Hopper, cameraman; fp16 weights in the export): largest difference 0.0093 mm in
xyz, 4.4e-4 in the mask probability, 1.2e-4 in the correspondence, no mask pixel flipped. The test
allows 0.05 mm, 0.005 and 0.001 (docs/reference/onnx_runtime.md).
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from test_nets import _tiny_weights

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

TOL = {"xyz": 0.05, "mask": 0.005, "corr": 0.001}


def _export(weights_dir, **kw):
    from pix2vertex_addon.core.ensemble import export_onnx
    from pix2vertex_addon.core.onnx_backend import onnx_path
    from pix2vertex_addon.core.predict import Predictor

    p = Predictor(weights_dir, threads=1, backend="torch", **kw)
    export_onnx(p, onnx_path(weights_dir))
    return p


def _assert_close(a: dict, b: dict, tol: dict) -> None:
    for k, t in tol.items():
        assert np.abs(a[k] - b[k]).max() <= t, k
    flips = ((a["mask"] >= 0.5) != (b["mask"] >= 0.5)).mean()
    assert flips <= 1e-3


def test_onnx_backend_matches_torch_on_a_stand_in_network(tmp_path):
    from pix2vertex_addon.core.predict import Predictor

    _tiny_weights(tmp_path)
    pt = _export(tmp_path)
    po = Predictor(tmp_path, threads=1, backend="onnx")
    assert po.nets == {} and po.views == pt.views == ((0.0, 1.0), (-5.0, 1.0), (5.0, 1.0))
    rng = np.random.default_rng(1)
    crops = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    for a, b in zip(pt.predict_batch(crops, apply_mask=False), po.predict_batch(crops, apply_mask=False)):
        _assert_close(a, b, {"xyz": 0.05, "mask": 0.005, "corr": 0.001})
        assert np.abs(a["xyz"]).max() > 1.0, "the stand-in network gives non-trivial maps"
    # the masked outputs and a crop of another size go the same way
    a, b = pt.predict(crops[0].repeat(2, 0).repeat(2, 1)), po.predict(crops[0].repeat(2, 0).repeat(2, 1))
    _assert_close(a, b, TOL)


def test_onnx_export_for_other_views_or_weights_is_refused(tmp_path):
    import json

    from pix2vertex_addon.core.onnx_backend import OnnxModelError, onnx_path
    from pix2vertex_addon.core.predict import Predictor

    _tiny_weights(tmp_path)
    with pytest.raises(OnnxModelError, match="not found.*export"):
        Predictor(tmp_path, threads=1, backend="onnx")
    _export(tmp_path)
    with pytest.raises(OnnxModelError, match="other weights or views"):
        Predictor(tmp_path, threads=1, backend="onnx", rotations=())
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["sha256"] = {"geometry": "0" * 64, "correspondence": "0" * 64}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(OnnxModelError, match="other weights"):
        Predictor(tmp_path, threads=1, backend="onnx")
    onnx_path(tmp_path).write_bytes(b"not an onnx model")
    with pytest.raises(OnnxModelError, match="unreadable"):
        Predictor(tmp_path, threads=1, backend="onnx")
    with pytest.raises(ValueError, match="backend"):
        Predictor(tmp_path, threads=1, backend="tensorflow")


@pytest.mark.slow
def test_onnx_backend_matches_torch_on_real_crops(tmp_path):
    from pix2vertex_addon.core.detect import FaceDetector, square_window
    from pix2vertex_addon.core.images import load_image
    from pix2vertex_addon.core.predict import Predictor, default_weights_dir

    from photos import photo_paths

    src = default_weights_dir()
    for f in src.iterdir():
        if f.suffix in (".json", ".safetensors"):
            shutil.copy(f, tmp_path / f.name)
    pt = _export(tmp_path)
    po = Predictor(tmp_path, threads=2, backend="onnx")
    det = FaceDetector()
    for path in photo_paths().values():
        rgb, _ = load_image(path)
        x0, y0, side = det.detect(rgb)[0].crop
        crop = square_window(rgb, x0 + side / 2, y0 + side / 2, side, pt.resolution)[0]
        a = pt.predict_batch(crop[None], apply_mask=False)[0]
        b = po.predict_batch(crop[None], apply_mask=False)[0]
        _assert_close(a, b, TOL)
