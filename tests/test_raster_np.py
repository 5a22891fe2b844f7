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
