"""The numpy rasteriser (result writing and texture baking without torch) equals the torch one."""

from __future__ import annotations

import numpy as np
import pytest

from pix2vertex_addon.core.raster_np import rasterize_np
from pix2vertex_addon.training.synth.raster import rasterize


@pytest.mark.parametrize("resolution", [64, 257])
def test_numpy_rasteriser_equals_torch_on_the_template(face_model, resolution):
    t = face_model.template
    v = t.vertices_cm * 10.0 * np.array([1.0, -1.0, -1.0]) + np.array([3.0, -5.0, 600.0])
    tri = t.triangles()
    a = rasterize(v, tri, 2.1 * resolution, resolution)
    tid, bary, depth = rasterize_np(v, tri, 2.1 * resolution, resolution)
    assert 0.3 < (tid >= 0).mean() < 0.7
    np.testing.assert_array_equal(tid, a.tri_id)
    np.testing.assert_array_equal(bary, a.bary)
    np.testing.assert_array_equal(depth, a.depth)


def test_numpy_rasteriser_equals_torch_on_a_tangle():
    """Overlapping, clipped, edge-on and behind-the-camera triangles: same z-buffer and ties."""
    rng = np.random.default_rng(3)
    v = rng.uniform(-60, 60, (400, 3)) + np.array([0.0, 0.0, 40.0])
    tri = rng.integers(0, 400, (900, 3))
    tri[:10, 2] = tri[:10, 1]  # degenerate
    for cull in (False, True):
        a = rasterize(v, tri, 90.0, 48, cull_backfaces=cull)
        tid, bary, depth = rasterize_np(v, tri, 90.0, 48, cull_backfaces=cull)
        assert (tid >= 0).any() and (v[:, 2] < 1.0).any()
        np.testing.assert_array_equal(tid, a.tri_id)
        np.testing.assert_array_equal(bary, a.bary)
        np.testing.assert_array_equal(depth, a.depth)
    assert (rasterize_np(v, tri, 90.0, 48)[0] != tid).any()  # the flag does cull
    with pytest.raises(ValueError, match="triangles"):
        rasterize_np(v, tri[:, :2], 90.0, 48)


def _flat_layout(tri_uv: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The z-buffer raster of a UV layout seen flat (the reference for :func:`uv_raster`)."""
    p = np.empty((tri_uv.shape[0] * 3, 3))
    p[:, 0] = tri_uv[..., 0].ravel() * size - size / 2.0
    p[:, 1] = (1.0 - tri_uv[..., 1].ravel()) * size - size / 2.0
    p[:, 2] = 10.0
    tid, bary, _ = rasterize_np(p, np.arange(len(p)).reshape(-1, 3), 10.0, size)
    return tid, bary


@pytest.mark.parametrize(("size", "same_share"), [(128, 0.25), (512, 0.7)])
def test_uv_raster_bakes_the_same_field_as_the_z_buffer(face_model, size, same_share):
    """The fast UV raster: every texel whose centre a triangle holds is covered, with that
    triangle's exact barycentrics wherever it picked the same triangle (most texels, unless the
    triangles are about a texel wide); elsewhere (texels an edge crosses) the baked point lies
    within about a texel of the texel's centre (99 %; all within 2.5), so a field baked through it is the z-buffer raster's
    up to a sub-texel shift at the triangles' borders."""
    from pix2vertex_addon.core.projection import uv_raster

    t = face_model.template
    poly = np.asarray(t.faces)
    quad = poly[:, 3] >= 0
    tri_poly = np.concatenate([np.arange(len(poly)), np.flatnonzero(quad)])
    tri_corner = np.concatenate([np.tile([0, 1, 2], (len(poly), 1)), np.tile([0, 2, 3], (int(quad.sum()), 1))])
    tri_uv = np.asarray(t.uvs, dtype=np.float64)[tri_poly[:, None], tri_corner]
    tri_vert = poly[tri_poly[:, None], tri_corner]
    tid, bary = uv_raster(tri_uv, size)
    ref_tid, ref_bary = _flat_layout(tri_uv, size)
    assert tid.dtype == np.int64 and bary.dtype == np.float32
    m = tid >= 0
    assert ((ref_tid >= 0) <= m).all()  # covers every texel the reference covers
    assert m.mean() < (ref_tid >= 0).mean() + 8.0 / size  # and about a texel more at the outline
    same = (tid == ref_tid) & m
    assert same.mean() > same_share * (ref_tid >= 0).mean()
    np.testing.assert_allclose(bary[same], ref_bary[same], atol=2e-4)
    assert np.all(bary >= 0) and np.allclose(bary.sum(-1)[m], 1.0, atol=1e-5)
    # the UV of each texel's baked point against the texel's centre, in texels
    j, i = np.meshgrid(np.arange(size), np.arange(size))
    centre = np.stack([(j + 0.5) / size, 1.0 - (i + 0.5) / size], -1)[m]
    off = np.abs(np.einsum("nk,nkc->nc", bary[m], tri_uv[tid[m]]) - centre).max(axis=1) * size
    assert np.percentile(off, 50) < 1e-3 if size >= 512 else np.percentile(off, 50) < 0.3
    assert np.percentile(off, 99) < 1.0 and off.max() < 2.5
    v = t.vertices_cm * 10.0
    both = m & (ref_tid >= 0)
    a = np.einsum("nk,nkc->nc", bary[both], v[tri_vert[tid[both]]])
    b = np.einsum("nk,nkc->nc", ref_bary[both], v[tri_vert[ref_tid[both]]])
    if size >= 512:
        assert np.median(np.linalg.norm(a - b, axis=1)) < 1e-3  # mm


def test_uv_raster_of_a_square_is_exact_inside():
    """Two triangles of a square: each texel's barycentrics reproduce the UV of its centre."""
    from pix2vertex_addon.core.projection import uv_raster

    sq = np.array([[0.1, 0.1], [0.9, 0.1], [0.9, 0.9], [0.1, 0.9]])
    tri_uv = np.stack([sq[[0, 1, 2]], sq[[0, 2, 3]], sq[[0, 0, 1]]])  # the last one degenerate
    size = 64
    tid, bary = uv_raster(tri_uv, size)
    assert set(np.unique(tid)) == {-1, 0, 1}
    j, i = np.meshgrid(np.arange(size), np.arange(size))
    centre = np.stack([(j + 0.5) / size, 1.0 - (i + 0.5) / size], -1)
    m = tid >= 0
    uv = np.einsum("nk,nkc->nc", bary[m], tri_uv[tid[m]])
    inner = (np.abs(centre[m] - 0.5) < 0.4 - 1.0 / size).all(1)
    np.testing.assert_allclose(uv[inner], centre[m][inner], atol=1e-5)
    assert np.abs(uv - centre[m]).max() < 1.0 / size  # border texels: clipped by under a texel
    assert m.sum() >= (np.abs(centre - 0.5) < 0.4).all(-1).sum()


def test_bleed_sources_are_the_nearest_island_texels():
    """The band search finds the texels a full distance transform finds, at the same distance."""
    from scipy import ndimage

    from pix2vertex_addon.core.projection import bleed_sources

    rng = np.random.default_rng(1)
    inside = ndimage.binary_opening(rng.random((160, 160)) < 0.7, iterations=3)
    for bleed in (1, 2, 4):
        grown, source = bleed_sources(inside, bleed)
        _, (ir, ic) = ndimage.distance_transform_edt(~inside, return_indices=True)
        ref = np.flatnonzero((ndimage.binary_dilation(inside, iterations=bleed) & ~inside).ravel())
        np.testing.assert_array_equal(grown, ref)
        assert inside.ravel()[source].all()
        dist = np.hypot(*(np.array(np.divmod(source, 160)) - np.array(np.divmod(grown, 160))))
        ref_dist = np.hypot(*(np.array(np.divmod((ir * 160 + ic).ravel()[ref], 160)) - np.array(np.divmod(ref, 160))))
        np.testing.assert_allclose(dist, ref_dist)


def test_nearest_texels_are_the_nearest_within_half_a_texel():
    from scipy import ndimage

    from pix2vertex_addon.core.projection import nearest_texels

    rng = np.random.default_rng(2)
    mask = ndimage.binary_opening(rng.random((200, 150)) < 0.8, iterations=2)
    idx = nearest_texels(mask)
    assert mask.ravel()[idx].all()
    np.testing.assert_array_equal(idx[np.flatnonzero(mask.ravel())], np.flatnonzero(mask.ravel()))
    dist, _ = ndimage.distance_transform_edt(~mask, return_indices=True)
    r, c = np.divmod(idx, 150)
    rr, cc = np.divmod(np.arange(mask.size), 150)
    assert np.abs(np.hypot(r - rr, c - cc) - dist.ravel()).max() < 0.5
