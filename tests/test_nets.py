"""Networks, losses and the predictor (fast; tiny resolutions)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from pix2vertex_addon.core.nets import NET_OUTPUTS, define_net, image_to_tensor
from pix2vertex_addon.training.losses import LossWeights, correspondence_loss, geometry_loss, normals_from_xyz
from pix2vertex_addon.training.metrics import depth_errors, mask_iou, ransac_scale_shift, summarize


@pytest.mark.parametrize("name", sorted(NET_OUTPUTS))
def test_define_net_shapes(name):
    net = define_net(name, resolution=32, ngf=8, max_channels=16)
    out = net(torch.zeros(2, 3, 32, 32))
    assert out.shape == (2, NET_OUTPUTS[name], 32, 32)
    assert net.unet.channels == [8, 16, 16, 16, 16]  # log2(32) levels, capped at 16


def test_define_net_unknown_name_raises():
    with pytest.raises(NotImplementedError, match="not recognized"):
        define_net("depth")


def test_define_net_rejects_bad_resolution():
    with pytest.raises(ValueError, match="power of two"):
        define_net("geometry", resolution=100)


def test_paper_architecture_channels_and_dropout():
    net = define_net("geometry", resolution=256, ngf=64, max_channels=512)
    assert net.unet.channels == [64, 128, 256, 512, 512, 512, 512, 512]
    n_dropout = sum(isinstance(m, torch.nn.Dropout) for m in net.modules())
    assert n_dropout == 3
    convs = [m for m in net.head if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 32, 4] and all(c.kernel_size == (1, 1) for c in convs)


def test_image_to_tensor_range_and_checks():
    img = np.zeros((4, 4, 3), np.uint8)
    img[0, 0] = 255
    t = image_to_tensor(img)
    assert t.shape == (1, 3, 4, 4) and t.min() == -1 and t.max() == 1
    with pytest.raises(ValueError):
        image_to_tensor(img.astype(np.float32))


def _plane(r=16, tilt=0.0):
    yy, xx = torch.meshgrid(
        torch.arange(r, dtype=torch.float32), torch.arange(r, dtype=torch.float32), indexing="ij"
    )
    return torch.stack([xx, yy, tilt * xx], 0)[None]


def test_normals_of_fronto_parallel_plane_face_camera():
    n, valid = normals_from_xyz(_plane())
    assert n.shape == (1, 3, 15, 15) and valid.all()
    assert torch.allclose(n[:, 2], torch.full_like(n[:, 2], -1.0))  # towards the camera (-z)


def test_normals_of_tilted_plane():
    n, _ = normals_from_xyz(_plane(tilt=1.0))
    expect = torch.tensor([1.0, 0.0, -1.0]) / math.sqrt(2)  # cross(drow, dcol) for z = x
    assert torch.allclose(n[0, :, 3, 3], expect, atol=1e-6)


def test_geometry_loss_zero_at_truth_and_mask_restricted():
    r = 16
    xyz = _plane(r, tilt=0.5) * 3.0
    mask = torch.zeros(1, 1, r, r)
    mask[..., 4:12, 4:12] = 1
    xyz = xyz * mask
    logit = (mask * 2 - 1) * 50
    pred = torch.cat([xyz / 100.0, logit], 1)
    total, parts = geometry_loss(pred, xyz, mask)
    assert parts["xyz"] < 1e-6 and parts["normals"] < 1e-4 and parts["mask"] < 1e-6  # eps bias
    # changes outside the mask do not matter for xyz / normals
    pred2 = pred.clone()
    pred2[:, :3, :2, :2] += 7.0
    _, parts2 = geometry_loss(pred2, xyz, mask)
    assert parts2["xyz"] < 1e-6 and parts2["normals"] == pytest.approx(parts["normals"])
    # a wrong value inside does, with weight 100 on xyz
    pred3 = pred.clone()
    pred3[:, 2, 6, 6] += 0.64
    total3, parts3 = geometry_loss(pred3, xyz, mask, LossWeights(normals=0.0, mask=0.0))
    assert parts3["xyz"] == pytest.approx(0.64 / (64 * 3), rel=1e-4)
    assert float(total3) == pytest.approx(100 * parts3["xyz"], rel=1e-5)
    assert parts3["normals"] > 0


def test_correspondence_loss_masked():
    c = torch.rand(2, 3, 8, 8)
    m = torch.zeros(2, 1, 8, 8)
    m[:, :, :4] = 1
    p = c.clone()
    p[:, :, 4:] = 0
    total, parts = correspondence_loss(p, c, m)
    assert parts["corr"] == 0
    with pytest.raises(ValueError):
        correspondence_loss(p[:, :2], c, m)


def test_ransac_recovers_scale_shift_despite_outliers():
    rng = np.random.default_rng(0)
    p = rng.uniform(-1, 1, 2000)
    t = 3.0 * p + 5.0
    t[:300] += rng.uniform(5, 20, 300)  # 15 % outliers
    s, sh = ransac_scale_shift(p, t, thresh=0.05)
    assert s == pytest.approx(3.0, abs=1e-6) and sh == pytest.approx(5.0, abs=1e-6)


def test_depth_errors_invariant_to_scale_shift():
    rng = np.random.default_rng(1)
    z = rng.uniform(0, 50, (16, 16))
    m = np.ones((16, 16), bool)
    assert depth_errors(0.5 * z - 7, z, m).max() < 1e-6
    e = depth_errors(z + rng.normal(0, 1, z.shape), z, m)
    assert 0.5 < e.mean() < 3.0  # ~0.8 mm / 50 mm range


def test_summarize_and_iou():
    s = summarize(np.arange(1, 11))
    assert s["mean"] == 5.5 and s["median"] == 5.5 and s["top10"] == 10
    a = np.zeros((4, 4), bool)
    a[:2] = True
    b = np.zeros((4, 4), bool)
    b[1:3] = True
    assert mask_iou(a, b) == pytest.approx(4 / 12)


def _tiny_weights(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    arch = {"resolution": 32, "ngf": 8, "max_channels": 16, "num_downs": None, "norm": "batch"}
    files = {}
    nets = {}
    for name in ("geometry", "correspondence"):
        net = define_net(name, **arch).eval()
        nets[name] = net
        sd = {k: v.half() for k, v in net.state_dict().items() if v.is_floating_point()}
        save_file(sd, str(tmp_path / f"{name}.safetensors"))
        files[name] = f"{name}.safetensors"
    (tmp_path / "config.json").write_text(
        json.dumps({"architecture": arch, "files": files, "xyz_scale_mm": 100.0})
    )
    return nets


def test_predictor_roundtrip(tmp_path):
    from pix2vertex_addon.core.predict import Predictor

    nets = _tiny_weights(tmp_path)
    p = Predictor(tmp_path, threads=1, flip_average=False, rotations=())
    img = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    out = p.predict(img)
    assert (
        out["xyz"].shape == (32, 32, 3) and out["corr"].shape == (32, 32, 3) and out["mask"].shape == (32, 32)
    )
    assert all(v.dtype == np.float32 for v in out.values())
    assert 0 <= out["mask"].min() and out["mask"].max() <= 1
    with torch.inference_mode():
        ref = nets["geometry"].half().float()(image_to_tensor(img))[0].numpy()
    keep = out["mask"] >= 0.5
    np.testing.assert_allclose(
        out["xyz"][keep], (ref[:3].transpose(1, 2, 0) * 100)[keep], rtol=1e-2, atol=1e-2
    )
    assert np.all(out["xyz"][~keep] == 0)
    # apply_mask=False: the networks' values everywhere (for the evaluation), same mask.
    # (move the mask logit's bias so that about half of the pixels fall below the threshold)
    from safetensors.torch import load_file, save_file

    f = tmp_path / "geometry.safetensors"
    sd = load_file(str(f))
    sd["head.5.bias"][3] -= float(np.median(ref[3]))
    save_file(sd, str(f))
    p = Predictor(tmp_path, threads=1, flip_average=False, rotations=())
    out = p.predict(img)
    keep = out["mask"] >= 0.5
    assert (~keep).any() and keep.any()
    assert np.all(out["xyz"][~keep] == 0) and np.all(out["corr"][~keep] == 0)
    raw = p.predict_batch(img[None], apply_mask=False)[0]
    np.testing.assert_array_equal(raw["mask"], out["mask"])
    np.testing.assert_array_equal(raw["xyz"][keep], out["xyz"][keep])
    np.testing.assert_allclose(raw["xyz"], ref[:3].transpose(1, 2, 0) * 100, rtol=1e-2, atol=1e-2)
    assert np.abs(raw["xyz"][~keep]).min() > 0
    big = np.zeros((64, 64, 3), np.uint8)
    assert p.predict(big)["xyz"].shape == (32, 32, 3)  # resized to the network resolution
    with pytest.raises(ValueError, match="uint8"):
        p.predict(img.astype(np.float32))


def test_predictor_flip_average(tmp_path):
    """The default averages each prediction with that of the mirrored crop, mapped back:
    xyz x -> -x and correspondence u -> 1 - u. So mirroring the crop mirrors the result."""
    from pix2vertex_addon.core.predict import Predictor

    nets = _tiny_weights(tmp_path)
    p = Predictor(tmp_path, threads=1, rotations=())
    assert p.flip_average
    img = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    out = p.predict(img)
    # independent reference: both passes through the fp16-rounded networks, averaged by hand
    with torch.inference_mode():
        x, xf = image_to_tensor(img), image_to_tensor(np.ascontiguousarray(img[:, ::-1]))
        g = nets["geometry"].half().float()(x)[0].numpy()
        gf = nets["geometry"](xf)[0].numpy()[:, :, ::-1].copy()
        c = nets["correspondence"].half().float()(x)[0].numpy()
        cf = nets["correspondence"](xf)[0].numpy()[:, :, ::-1].copy()
    gf[0] *= -1
    cf[0] = 1 - cf[0]
    g, c = (g + gf) / 2, (c + cf) / 2
    keep = out["mask"] >= 0.5
    np.testing.assert_allclose(out["mask"], 1 / (1 + np.exp(-g[3])), atol=1e-4)
    np.testing.assert_allclose(out["xyz"][keep], (g[:3].transpose(1, 2, 0) * 100)[keep], atol=1e-2)
    np.testing.assert_allclose(out["corr"][keep], np.clip(c.transpose(1, 2, 0), 0, 1)[keep], atol=1e-4)
    # equivariance: the mirrored crop gives the mirrored maps
    mir = p.predict(np.ascontiguousarray(img[:, ::-1]))
    # (tolerances far below the maps' own variation: a random tiny network varies ~1e-4 in mask)
    assert out["mask"].std() > 2e-5
    np.testing.assert_allclose(mir["mask"], out["mask"][:, ::-1], rtol=0, atol=2e-6)
    np.testing.assert_allclose(mir["xyz"][..., 0], -out["xyz"][:, ::-1, 0], rtol=0, atol=1e-4)
    np.testing.assert_allclose(mir["xyz"][..., 1:], out["xyz"][:, ::-1, 1:], rtol=0, atol=1e-4)
    k = keep[:, ::-1]
    np.testing.assert_allclose(mir["corr"][k, 0], 1 - out["corr"][:, ::-1][k, 0], rtol=0, atol=2e-6)
    # and it differs from the single pass
    single = Predictor(tmp_path, threads=1, flip_average=False, rotations=()).predict(img)
    assert np.abs(single["mask"] - out["mask"]).max() > 1e-4


class _PlaneNet(torch.nn.Module):
    """A stand-in geometry network that ignores its input and returns the label-frame xyz of a
    fronto-parallel plane (x along the columns, y down the rows, z constant) with a constant mask
    logit: the maps a camera rolled about its optical axis sees of that plane are the same maps
    turned, so turning the views back must give the unturned maps exactly (bilinear
    interpolation of a linear map is exact)."""

    def forward(self, x):
        n, _, h, w = x.shape
        c = (torch.arange(w, dtype=torch.float32) - (w - 1) / 2) * 0.01
        r = (torch.arange(h, dtype=torch.float32) - (h - 1) / 2) * 0.01
        out = torch.empty(n, 4, h, w)
        out[:, 0] = c[None, None, :]
        out[:, 1] = r[None, :, None]
        out[:, 2] = 0.5
        out[:, 3] = 2.0
        return out


@pytest.mark.parametrize("flip", [False, True])
def test_predictor_rotated_views_map_back_exactly(tmp_path, flip):
    """Each extra view (the crop turned by a few degrees) is turned back and its xyz vectors turned
    in the image plane; for a plane seen by a rolled camera that reproduces the plane's maps."""
    from pix2vertex_addon.core.predict import Predictor

    _tiny_weights(tmp_path)
    p = Predictor(tmp_path, threads=1, flip_average=flip, rotations=(-7.0, 5.0))
    plane = _PlaneNet()
    p.nets["geometry"] = plane
    img = np.random.default_rng(2).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    out = p.predict_batch(np.stack([img, img[::-1]]), apply_mask=False)
    ref = plane(torch.zeros(1, 3, 32, 32))[0, :3].numpy().transpose(1, 2, 0) * 100
    for o in out:
        np.testing.assert_allclose(o["xyz"], ref, rtol=0, atol=1e-3)
        np.testing.assert_allclose(o["mask"], 1 / (1 + np.exp(-2.0)), rtol=0, atol=1e-6)
    # turning the vectors the other way (a sign slip) would be off by about 2 * 7 degrees * radius
    p2 = Predictor(tmp_path, threads=1, flip_average=flip, rotations=(7.0,))
    p2.nets["geometry"] = plane
    xyz = p2.predict_batch(img[None], apply_mask=False)[0]["xyz"]
    np.testing.assert_allclose(xyz, ref, rtol=0, atol=1e-3)


class _RampNet(torch.nn.Module):
    """A stand-in network that maps each pixel's colour to its outputs by a fixed linear map (a
    1x1 convolution, so it commutes with any resampling). On an image whose colours are linear
    ramps over the crop, every view's maps are linear too, so zooming a view and its maps back
    (bilinear, exact on linear maps) must reproduce the unzoomed maps, values unchanged."""

    def __init__(self, out_channels: int, offset):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, out_channels, 1)
        with torch.no_grad():
            self.conv.weight.zero_()
            for k in range(out_channels):
                self.conv.weight[k, k % 3] = 0.2 + 0.1 * k
            self.conv.bias.copy_(torch.as_tensor(offset, dtype=torch.float32))

    def forward(self, x):
        return self.conv(x)


@pytest.mark.parametrize("flip", [False, True])
def test_predictor_zoomed_views_map_back_exactly(tmp_path, flip):
    """Each zoomed view (the crop magnified about its centre: a longer focal length, same label
    frame) is shrunk back and its values kept; only where it covers the crop does it count."""
    from pix2vertex_addon.core.predict import Predictor

    _tiny_weights(tmp_path)
    r = 32
    ramp = np.arange(r) * 7 + 10  # uint8, linear
    img = np.zeros((r, r, 3), np.uint8)
    img[..., 0] = ramp[None, :]
    img[..., 1] = ramp[:, None]
    img[..., 2] = (np.arange(r)[:, None] + np.arange(r)[None, :]) * 3 + 20

    def predictor(scales):
        p = Predictor(tmp_path, threads=1, flip_average=flip, rotations=(), scales=scales)
        p.nets["geometry"] = _RampNet(4, [0.0, 0.1, 0.5, 1.0])
        p.nets["correspondence"] = _RampNet(3, [0.5, 0.5, 0.5])
        return p

    ref = predictor(()).predict_batch(img[None], apply_mask=False)[0]
    p = predictor((0.9, 1.3))  # 1.3: a band of about 4 px it does not cover
    assert p.views == ((0.0, 1.0), (0.0, 0.9), (0.0, 1.3))
    out = p.predict_batch(img[None], apply_mask=False)[0]
    inner = (slice(2, -2), slice(2, -2))  # the zoomed-out view's edge pixels sample its padding
    # the maps do vary (with mirroring, x of this mirror-blind stand-in averages to 0)
    assert ref["xyz"][inner][..., 1:].std(axis=(0, 1)).min() > 1.0 and ref["mask"].std() > 0.01
    for k in ("xyz", "mask", "corr"):
        np.testing.assert_allclose(out[k][inner], ref[k][inner], rtol=0, atol=2e-3)
    with pytest.raises(ValueError, match="magnifications"):
        Predictor(tmp_path, threads=1, scales=(2.0,))


def test_predictor_rotations_default_and_validation(tmp_path):
    from pix2vertex_addon.core.predict import DEFAULT_ROTATIONS, Predictor

    _tiny_weights(tmp_path)
    assert Predictor(tmp_path, threads=1).rotations == DEFAULT_ROTATIONS == (-5.0, 5.0)
    with pytest.raises(ValueError, match="small in-plane angles"):
        Predictor(tmp_path, threads=1, rotations=(90.0,))
    # extra views change a real (non-equivariant) network's output, and only the views in use count
    img = np.random.default_rng(3).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    a = Predictor(tmp_path, threads=1, rotations=()).predict(img)
    b = Predictor(tmp_path, threads=1, rotations=(0.0,)).predict(img)
    c = Predictor(tmp_path, threads=1).predict(img)
    np.testing.assert_array_equal(a["mask"], b["mask"])
    assert np.abs(a["mask"] - c["mask"]).max() > 1e-5


def test_predictor_missing_weights_says_how_to_fix(tmp_path):
    from pix2vertex_addon.core.predict import Predictor

    with pytest.raises(FileNotFoundError, match="export"):
        Predictor(tmp_path)


def test_predictor_weights_of_another_network_say_so(tmp_path):
    """A weights file that does not fit config.json's architecture: a clear ValueError, not a
    torch traceback."""
    from pix2vertex_addon.core.predict import Predictor

    _tiny_weights(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["architecture"]["max_channels"] = 8  # other shapes, same names
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="does not match the network"):
        Predictor(tmp_path, threads=1)
    cfg["architecture"].update(max_channels=16, resolution=64)  # one level more: other names
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="does not match the network"):
        Predictor(tmp_path, threads=1)
