"""The z-buffer rasteriser of ``training/synth/raster.py`` (torch) in numpy (no torch, no ``bpy``).

Same camera model, coverage rule, tie-break and perspective-correct barycentrics as
its ``rasterize`` (whose docstring has them); the add-on's result writing and
texture baking use this one, so they run in Blender without torch. A test checks that both give
the same triangles and barycentrics.
"""

from __future__ import annotations

import numpy as np

__all__ = ["rasterize_np"]

_KEY_EMPTY = np.iinfo(np.int64).max
_NEAR_MM = 1.0
_EPS = np.float32(1e-6)


def rasterize_np(vertices_cam, triangles, focal: float, resolution: int,
                 cull_backfaces: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tri_id (R, R) int64, bary (R, R, 3) float32, depth (R, R) float32) of a triangle mesh seen
    by a centred pinhole camera; ``vertices_cam`` (N, 3) camera frame, z > 0. ``cull_backfaces``
    drops triangles that turn their back to the camera (the torch rasteriser's rule)."""
    R = int(resolution)
    if R < 1:
        raise ValueError(f"resolution must be positive, got {resolution}")
    V = np.asarray(vertices_cam, dtype=np.float64)
    F = np.asarray(triangles, dtype=np.int64)
    if V.ndim != 2 or V.shape[1] != 3:
        raise ValueError(f"vertices_cam must be (N, 3), got {V.shape}")
    if F.ndim != 2 or F.shape[1] != 3:
        raise ValueError(f"triangles must be (T, 3), got {F.shape}")
    c = R / 2.0
    z = V[:, 2]
    zs = np.maximum(z, 1e-9)
    u = focal * V[:, 0] / zs + c
    v = focal * V[:, 1] / zs + c
    uu, vv = u[F], v[F]  # (T, 3)
    area = (uu[:, 1] - uu[:, 0]) * (vv[:, 2] - vv[:, 0]) - (uu[:, 2] - uu[:, 0]) * (vv[:, 1] - vv[:, 0])
    near = z > _NEAR_MM
    ok = near[F].all(axis=1) & (np.abs(area) > 1e-9)
    if cull_backfaces:  # x right / y down: a camera-facing CCW triangle has area < 0 here
        ok &= area < 0
    umin, umax = uu.min(axis=1), uu.max(axis=1)
    vmin, vmax = vv.min(axis=1), vv.max(axis=1)
    ok &= (umax > 0.5) & (umin < R - 0.5) & (vmax > 0.5) & (vmin < R - 0.5)
    x0 = np.maximum(np.ceil(umin - 0.5), 0)
    x1 = np.minimum(np.floor(umax - 0.5), R - 1)
    y0 = np.maximum(np.ceil(vmin - 0.5), 0)
    y1 = np.minimum(np.floor(vmax - 0.5), R - 1)
    ok &= (x1 >= x0) & (y1 >= y0)
    keep = np.flatnonzero(ok)
    uu, vv, x0, x1, y0, y1 = uu[keep], vv[keep], x0[keep], x1[keep], y0[keep], y1[keep]
    zt = z[F[keep]]

    # linear forms in float32 relative to each triangle's first candidate pixel centre
    u0, u1, u2 = ((uu[:, k] - (x0 + 0.5)).astype(np.float32) for k in range(3))
    v0, v1, v2 = ((vv[:, k] - (y0 + 0.5)).astype(np.float32) for k in range(3))
    iz0, iz1, iz2 = ((1.0 / zt[:, k]).astype(np.float32) for k in range(3))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ar = (u1 - u0) * (v2 - v0) - (u2 - u0) * (v1 - v0)
        a0, b0, c0 = (v1 - v2) / ar, (u2 - u1) / ar, (u1 * v2 - u2 * v1) / ar
        a1, b1, c1 = (v2 - v0) / ar, (u0 - u2) / ar, (u2 * v0 - u0 * v2) / ar
        d0, d1 = iz0 - iz2, iz1 - iz2
        aq, bq, cq = a0 * d0 + a1 * d1, b0 * d0 + b1 * d1, c0 * d0 + c1 * d1 + iz2
        h = (y1 - y0 + 1).astype(np.int64)
        keys = np.full(R * R, _KEY_EMPTY, dtype=np.int64)
        if keep.size:
            start = np.cumsum(h) - h
            ro = np.repeat(np.arange(keep.size), h)
            dy = (np.arange(ro.size) - np.repeat(start, h)).astype(np.float32)
            ea0, ea1 = a0[ro], a1[ro]
            k0 = c0[ro] + b0[ro] * dy
            k1 = c1[ro] + b1[ro] * dy
            ea2, k2 = -(ea0 + ea1), np.float32(1.0) - k0 - k1
            lo = np.zeros_like(dy)
            hi = (x1 - x0)[ro].astype(np.float32)
            for ea, k in ((ea0, k0), (ea1, k1), (ea2, k2)):
                flat = ea == 0
                bound = (-_EPS - k) / np.where(flat, np.float32(1.0), ea)
                lo = np.where(ea > 0, np.maximum(lo, bound), lo)
                hi = np.where(ea < 0, np.minimum(hi, bound), hi)
                hi = np.where(flat & (k < -_EPS), np.float32(-1.0), hi)
            lo = np.ceil(lo)
            n = np.nan_to_num(np.floor(hi) - lo + 1, nan=0.0, posinf=0.0, neginf=0.0)
            n = np.maximum(n, 0).astype(np.int64)
            row = np.repeat(np.arange(ro.size), n)
            if row.size:
                start2 = np.cumsum(n) - n
                dx = lo[row] + (np.arange(row.size) - start2[row]).astype(np.float32)
                dyc = dy[row]
                tc = ro[row]
                iq = cq[tc] + aq[tc] * dx + bq[tc] * dyc
                good = iq > 0
                tc, dx, dyc, iq = tc[good], dx[good], dyc[good], iq[good]
                depth_bits = (np.float32(1.0) / iq).view(np.int32).astype(np.int64)
                key = (depth_bits << 32) | tc
                pix = (y0[tc] + dyc).astype(np.int64) * R + (x0[tc] + dx).astype(np.int64)
                np.minimum.at(keys, pix, key)
        hit = np.flatnonzero(keys != _KEY_EMPTY)
        tp = keys[hit] & 0xFFFFFFFF
        tri_id = np.full(R * R, -1, dtype=np.int64)
        tri_id[hit] = keep[tp]
        bary = np.zeros((R * R, 3), dtype=np.float32)
        depth = np.full(R * R, np.inf, dtype=np.float32)
        if hit.size:
            hr = np.floor(hit / R)
            dxp = ((hit - hr * R) - x0[tp]).astype(np.float32)
            dyp = (hr - y0[tp]).astype(np.float32)
            l0 = a0[tp] * dxp + b0[tp] * dyp + c0[tp]
            l1 = a1[tp] * dxp + b1[tp] * dyp + c1[tp]
            q0, q1 = l0 * iz0[tp], l1 * iz1[tp]
            q2 = (np.float32(1.0) - l0 - l1) * iz2[tp]
            s = q0 + q1 + q2
            bary[hit] = np.stack([q0 / s, q1 / s, q2 / s], axis=1)
            depth[hit] = np.float32(1.0) / s
    return tri_id.reshape(R, R), bary.reshape(R, R, 3), depth.reshape(R, R)
