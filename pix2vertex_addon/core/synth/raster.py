"""Z-buffer triangle rasteriser with perspective-correct barycentrics (torch; no ``bpy``).

Camera model (docs/conventions.md): pinhole, OpenCV frame (x right, y down, z forward), square
image of side ``R`` pixels, principal point at the image centre ``(R/2, R/2)``. Pixel coordinates
are *continuous*: pixel ``(row r, col c)`` covers ``[c, c+1) x [r, r+1)`` and its centre is
``(c + 0.5, r + 0.5)``; a camera-frame point ``(x, y, z)`` projects to

    u = f * x / z + R / 2,    v = f * y / z + R / 2.

The same convention is used by :func:`project` and the ``landmarks_2d`` of the generator, so a
vertex that projects to ``(u, v)`` lies in pixel ``(floor(v), floor(u))``.

Every pixel is sampled once, at its centre. A pixel's triangle is the nearest one (smallest
camera depth along the pixel's ray) whose closed screen-space footprint contains the centre;
ties go to the lower triangle index (a centre within 1e-6, in barycentric units, of an edge counts
as inside, so shared edges leave no cracks). The barycentrics are perspective-correct, so
``sum(bary[..., i] * V[tri[tri_id, i]])`` is the 3D point where the ray through the pixel centre
meets the triangle's plane (float32 accuracy), and its depth is the returned ``depth``.

Method: culling and bounding boxes in float64; per triangle, the edge functions and 1/z as
linear forms in float32 relative to the triangle's first pixel centre; per bounding-box row the
exact span of covered pixel centres (scanline); one ``scatter_reduce(amin)`` of packed
(depth, triangle) keys as the z-buffer. The code is plain torch: it runs on the CPU (numpy in, numpy out) and, given CUDA tensors, on
the GPU.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["Raster", "interpolate", "project", "rasterize"]

_KEY_EMPTY = torch.iinfo(torch.int64).max
_NEAR_MM = 1.0


class Raster:
    """Result of :func:`rasterize`; unpacks as ``tri_id, bary, depth``.

    Attributes
    ----------
    tri_id : (R, R) int64, -1 where no triangle covers the pixel centre.
    bary : (R, R, 3) float32 perspective-correct barycentrics (0 where ``tri_id < 0``).
    depth : (R, R) float32 camera depth z (mm, or the unit of the vertices); ``inf`` on empty
        pixels.
    """

    __slots__ = ("tri_id", "bary", "depth")

    def __init__(self, tri_id, bary, depth):
        self.tri_id, self.bary, self.depth = tri_id, bary, depth

    def __iter__(self):
        return iter((self.tri_id, self.bary, self.depth))


def project(points: np.ndarray, focal: float, resolution: int) -> np.ndarray:
    """Project camera-frame points to continuous pixel coordinates.

    Parameters
    ----------
    points : (N, 3) float, camera frame (x right, y down, z forward), z > 0.
    focal : focal length in pixels.
    resolution : image side R; principal point at (R/2, R/2).

    Returns
    -------
    (N, 2) float64 ``(u, v)``: x right, y down; pixel centres at integer + 0.5.
    """
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"points must be (N, 3), got {p.shape}")
    c = resolution / 2.0
    return np.stack([focal * p[:, 0] / p[:, 2] + c, focal * p[:, 1] / p[:, 2] + c], axis=1)


def _as_tensor(a, dtype, device):
    if isinstance(a, torch.Tensor):
        return a.to(device=device, dtype=dtype)
    a = np.asarray(a)
    if not a.flags.writeable or not a.flags.c_contiguous:
        a = np.array(a, order="C")
    return torch.as_tensor(a, dtype=dtype, device=device)


def rasterize(
    vertices_cam,
    triangles,
    focal: float,
    resolution: int,
    *,
    cull_backfaces: bool = False,
    device: str | torch.device | None = None,
    return_numpy: bool = True,
    return_bary: bool = True,
) -> Raster:
    """Rasterise a triangle mesh seen by a centred pinhole camera.

    Parameters
    ----------
    vertices_cam : (N, 3) float array or tensor
        Camera-frame vertices (x right, y down, z forward), z > 0; usually millimetres.
    triangles : (T, 3) int array or tensor of vertex indices.
    focal : float
        Focal length in pixels (at this resolution).
    resolution : int
        Image side R (square image, principal point at R/2).
    cull_backfaces : bool
        Drop triangles whose screen-space winding is clockwise in the x-right/y-down image,
        i.e. whose normal ``(v1 - v0) x (v2 - v0)`` (camera frame) points away from the camera.
    device : torch device for the computation; defaults to the device of ``vertices_cam`` if it
        is a tensor, else the CPU.
    return_numpy : bool
        Return numpy arrays (default) or torch tensors on ``device``.
    return_bary : bool
        False skips the barycentrics (``bary`` is None) and returns the z-buffer's float32 depth
        (shadow maps, visibility).

    Returns
    -------
    Raster(tri_id (R, R) int64, bary (R, R, 3) float32, depth (R, R) float32)
    """
    R = int(resolution)
    if R < 1:
        raise ValueError(f"resolution must be positive, got {resolution}")
    if device is None:
        device = vertices_cam.device if isinstance(vertices_cam, torch.Tensor) else "cpu"
    V = _as_tensor(vertices_cam, torch.float64, device)
    F = _as_tensor(triangles, torch.int64, device)
    if V.ndim != 2 or V.shape[1] != 3:
        raise ValueError(f"vertices_cam must be (N, 3), got {tuple(V.shape)}")
    if F.ndim != 2 or F.shape[1] != 3:
        raise ValueError(f"triangles must be (T, 3), got {tuple(F.shape)}")

    c = R / 2.0
    z = V[:, 2]
    zs = z.clamp(min=1e-9)
    u = focal * V[:, 0] / zs + c
    v = focal * V[:, 1] / zs + c

    # Per-triangle culling and bounding boxes in float64 (contiguous 1-D columns).
    f0, f1, f2 = F.t().contiguous().unbind(0)
    u0, u1, u2 = u[f0], u[f1], u[f2]
    v0, v1, v2 = v[f0], v[f1], v[f2]
    z0, z1, z2 = z[f0], z[f1], z[f2]
    area = (u1 - u0) * (v2 - v0) - (u2 - u0) * (v1 - v0)  # > 0: counter-clockwise on screen
    ok = (z0 > _NEAR_MM) & (z1 > _NEAR_MM) & (z2 > _NEAR_MM) & (area.abs() > 1e-9)
    if cull_backfaces:
        # x right / y down image: a camera-facing triangle with CCW model winding appears with
        # area < 0 here (the y flip mirrors it).
        ok &= area < 0
    umin = torch.minimum(torch.minimum(u0, u1), u2)
    umax = torch.maximum(torch.maximum(u0, u1), u2)
    vmin = torch.minimum(torch.minimum(v0, v1), v2)
    vmax = torch.maximum(torch.maximum(v0, v1), v2)
    ok &= (umax > 0.5) & (umin < R - 0.5) & (vmax > 0.5) & (vmin < R - 0.5)
    keep = torch.nonzero(ok).squeeze(1)  # global ids of the triangles that may cover pixels
    # Pixels whose centre (i + 0.5) lies in [min, max].
    x0 = torch.ceil(umin[keep] - 0.5).clamp(min=0)
    x1 = torch.floor(umax[keep] - 0.5).clamp(max=R - 1)
    y0 = torch.ceil(vmin[keep] - 0.5).clamp(min=0)
    y1 = torch.floor(vmax[keep] - 0.5).clamp(max=R - 1)
    t = torch.nonzero((x1 >= x0) & (y1 >= y0)).squeeze(1)  # local ids with candidate pixels

    # Screen-space linear forms of the barycentrics l0, l1 and of 1/z in float32, in coordinates
    # relative to the first candidate pixel centre (x0 + 0.5, y0 + 0.5) of each triangle, where
    # they are small (the subtraction is done in float64): l = a * dx + b * dy + c.
    xa, ya = x0 + 0.5, y0 + 0.5
    u0, u1, u2 = ((uu[keep] - xa).float() for uu in (u0, u1, u2))
    v0, v1, v2 = ((vv[keep] - ya).float() for vv in (v0, v1, v2))
    iz0, iz1, iz2 = ((1.0 / zz[keep]).float() for zz in (z0, z1, z2))
    area = (u1 - u0) * (v2 - v0) - (u2 - u0) * (v1 - v0)
    a0 = (v1 - v2) / area
    b0 = (u2 - u1) / area
    c0 = (u1 * v2 - u2 * v1) / area
    a1 = (v2 - v0) / area
    b1 = (u0 - u2) / area
    c1 = (u2 * v0 - u0 * v2) / area
    # 1/z = l0/z0 + l1/z1 + (1 - l0 - l1)/z2
    d0, d1 = iz0 - iz2, iz1 - iz2
    aq = a0 * d0 + a1 * d1
    bq = b0 * d0 + b1 * d1
    cq = c0 * d0 + c1 * d1 + iz2
    w_all = x1 - x0 + 1
    xs, ys = x0.float(), y0.float()  # integers < 2**24 are exact in float32
    h = (y1[t] - y0[t] + 1).long()

    tri_id = torch.full((R * R,), -1, dtype=torch.int64, device=device)
    keys = torch.full((R * R,), _KEY_EMPTY, dtype=torch.int64, device=device)
    if t.numel():
        # Scanline spans: for each bounding-box row of each triangle, the range of pixel
        # centres where all three edge functions are >= -eps (l is linear in dx on a row).
        eps = 1e-6
        start = torch.cumsum(h, 0) - h
        ro = torch.repeat_interleave(t, h)  # triangle of each row
        dy = (torch.arange(ro.numel(), device=device) - torch.repeat_interleave(start, h)).float()
        ea0, ea1 = a0[ro], a1[ro]
        k0 = torch.addcmul(c0[ro], b0[ro], dy)
        k1 = torch.addcmul(c1[ro], b1[ro], dy)
        ea2, k2 = -(ea0 + ea1), 1.0 - k0 - k1
        lo = torch.zeros_like(dy)
        hi = (w_all[ro] - 1).float()
        for ea, k in ((ea0, k0), (ea1, k1), (ea2, k2)):
            bound = (-eps - k) / torch.where(ea == 0, torch.ones_like(ea), ea)
            lo = torch.where(ea > 0, torch.maximum(lo, bound), lo)
            hi = torch.where(ea < 0, torch.minimum(hi, bound), hi)
            hi = torch.where((ea == 0) & (k < -eps), torch.full_like(hi, -1.0), hi)
        lo = torch.ceil(lo)
        # A triangle that is degenerate in float32 (zero area) has non-finite bounds: no pixels.
        n = torch.nan_to_num(torch.floor(hi) - lo + 1, nan=0.0, posinf=0.0, neginf=0.0).clamp(min=0).long()
        row = torch.repeat_interleave(torch.arange(ro.numel(), device=device), n)
        if row.numel():
            start2 = torch.cumsum(n, 0) - n
            dx = lo[row] + (torch.arange(row.numel(), device=device) - start2[row]).float()
            dyc = dy[row]
            tc = ro[row]
            iq = torch.addcmul(torch.addcmul(cq[tc], aq[tc], dx), bq[tc], dyc)
            good = torch.nonzero(iq > 0).squeeze(1)
            tc, dx, dyc, iq = tc[good], dx[good], dyc[good], iq[good]
            # Positive float32 bit patterns sort like the floats: pack (depth, triangle).
            key = ((1.0 / iq).view(torch.int32).long() << 32) | tc  # local id
            pix = (ys[tc] + dyc).long() * R + (xs[tc] + dx).long()
            keys.scatter_reduce_(0, pix, key, reduce="amin", include_self=True)
    hit = torch.nonzero(keys != _KEY_EMPTY).squeeze(1)
    tp = keys[hit] & 0xFFFFFFFF  # local ids of the winning triangles
    tri_id[hit] = keep[tp]

    if not return_bary:
        depth = torch.full((R * R,), float("inf"), dtype=torch.float32, device=device)
        depth[hit] = (keys[hit] >> 32).int().view(torch.float32)
        tri_id, depth = tri_id.view(R, R), depth.view(R, R)
        if return_numpy:
            return Raster(tri_id.cpu().numpy(), None, depth.cpu().numpy())
        return Raster(tri_id, None, depth)

    # Perspective-correct barycentrics at the covered pixel centres, from the same linear forms.
    bary = torch.zeros((R * R, 3), dtype=torch.float32, device=device)
    depth = torch.full((R * R,), float("inf"), dtype=torch.float32, device=device)
    if hit.numel():
        dx = ((hit % R) - x0[tp]).float()
        dy = (torch.div(hit, R, rounding_mode="floor") - y0[tp]).float()
        l0 = a0[tp] * dx + b0[tp] * dy + c0[tp]
        l1 = a1[tp] * dx + b1[tp] * dy + c1[tp]
        q0, q1, q2 = l0 * iz0[tp], l1 * iz1[tp], (1.0 - l0 - l1) * iz2[tp]
        s = q0 + q1 + q2
        bary[hit] = torch.stack([q0 / s, q1 / s, q2 / s], dim=1)
        depth[hit] = 1.0 / s
    bary = bary.view(R, R, 3)
    depth = depth.view(R, R)
    tri_id = tri_id.view(R, R)
    if return_numpy:
        return Raster(tri_id.cpu().numpy(), bary.cpu().numpy(), depth.cpu().numpy())
    return Raster(tri_id, bary, depth)


def interpolate(values: np.ndarray, triangles: np.ndarray, tri_id: np.ndarray, bary: np.ndarray,
                fill: float = 0.0) -> np.ndarray:
    """Interpolate per-vertex values over the rasterised triangles.

    Parameters
    ----------
    values : (N, C) per-vertex values.
    triangles : (T, 3) int, the triangles given to :func:`rasterize`.
    tri_id, bary : from :func:`rasterize`, (R, R) and (R, R, 3).
    fill : value of pixels without a triangle.

    Returns
    -------
    (R, R, C) array of ``values``' dtype (float32 at least).
    """
    vals = np.asarray(values)
    dt = np.result_type(vals.dtype, np.float32)
    out = np.full(tri_id.shape + (vals.shape[1],), fill, dtype=dt)
    m = tri_id >= 0
    f = triangles[tri_id[m]]
    b = bary[m]
    out[m] = (vals[f[:, 0]] * b[:, 0:1] + vals[f[:, 1]] * b[:, 1:2] + vals[f[:, 2]] * b[:, 2:3])
    return out
