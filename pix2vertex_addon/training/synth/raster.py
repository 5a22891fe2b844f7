"""Z-buffer triangle rasteriser with perspective-correct barycentrics (torch; no ``bpy``).

Camera model (docs/reference/conventions.md): pinhole, OpenCV frame (x right, y down, z forward), square
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
the GPU. Triangles leave the pipeline as soon as they are culled or cover no pixel centre; gathers
use ``index_select``, and on the CPU ``nonzero``/``where`` go through exact shortcuts (about 1.6x
faster in all, the same bits).
"""

from __future__ import annotations

import weakref

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


# On the CPU, torch.where and torch.nonzero branch per element and run several times slower on
# the irregular masks of a mesh than these exact equivalents (same values, same order).
def _nonzero(mask: torch.Tensor) -> torch.Tensor:
    """``torch.nonzero(mask).squeeze(1)`` of a 1-D bool tensor (int64 indices, ascending)."""
    if mask.device.type == "cpu":
        return torch.from_numpy(np.flatnonzero(mask.numpy()))
    return torch.nonzero(mask).squeeze(1)


def _take(a: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``a[index]`` for a 1-D int64 ``index`` (``index_select``: several times faster on the CPU)."""
    return a.index_select(0, index)


def _where(cond: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``torch.where(cond, x, y)`` for float32 tensors of one shape, bit for bit, branch-free
    on the CPU (a select on the bit patterns)."""
    if cond.device.type != "cpu":
        return torch.where(cond, x, y)
    m = cond.to(torch.int32).neg_()  # all bits set where cond
    r = x.view(torch.int32) & m
    r |= y.view(torch.int32) & ~m
    return r.view(torch.float32)


_columns_cache: dict[tuple[int, str], tuple[weakref.ref, tuple]] = {}


def _triangle_columns(triangles, device) -> tuple:
    """The three vertex-index columns of ``triangles`` as contiguous int64 tensors on ``device``.

    Read-only numpy arrays (the render mesh's) are converted once and cached while they live;
    anything else is converted on every call."""
    if isinstance(triangles, np.ndarray) and not triangles.flags.writeable:
        key = (id(triangles), str(device))
        hit = _columns_cache.get(key)
        if hit is not None and hit[0]() is triangles:
            return hit[1]
        cols = _triangle_columns(np.array(triangles), device)
        def forget(_ref: weakref.ref, key: tuple = key) -> None:
            _columns_cache.pop(key, None)

        ref = weakref.ref(triangles, forget)
        _columns_cache[key] = (ref, cols)
        return cols
    F = _as_tensor(triangles, torch.int64, device)
    if F.ndim != 2 or F.shape[1] != 3:
        raise ValueError(f"triangles must be (T, 3), got {tuple(F.shape)}")
    return tuple(F.t().contiguous().unbind(0))


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
        A batch (B, N, 3) of meshes sharing ``triangles`` renders B images in one pass (the
        images stacked into one tall image, each triangle clipped to its own); every image is
        exactly what the single-mesh call gives.
    triangles : (T, 3) int array or tensor of vertex indices.
    focal : float
        Focal length in pixels (at this resolution); for a batch, one per mesh ((B,) array or
        tensor) or one for all.
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
    Raster(tri_id (R, R) int64, bary (R, R, 3) float32, depth (R, R) float32); for a batch,
    (B, R, R), (B, R, R, 3) and (B, R, R), ``tri_id`` indexing ``triangles``.
    """
    R = int(resolution)
    if R < 1:
        raise ValueError(f"resolution must be positive, got {resolution}")
    if device is None:
        device = vertices_cam.device if isinstance(vertices_cam, torch.Tensor) else "cpu"
    V = _as_tensor(vertices_cam, torch.float64, device)
    batched = V.ndim == 3
    if V.ndim not in (2, 3) or V.shape[-1] != 3:
        raise ValueError(f"vertices_cam must be (N, 3) or (B, N, 3), got {tuple(V.shape)}")
    f0, f1, f2 = _triangle_columns(triangles, device)
    B = V.shape[0] if batched else 1
    n_tris = f0.numel()

    c = R / 2.0
    fv: float | torch.Tensor = focal
    if batched:
        fv = _as_tensor(np.asarray(focal, dtype=np.float64) if not isinstance(focal, torch.Tensor)
                        else focal, torch.float64, device).reshape(-1, 1).expand(B, 1)
        # one mesh of B * N vertices and B * T triangles: triangle b * T + t is (b, t)
        base = torch.arange(B, device=device).repeat_interleave(n_tris) * V.shape[1]
        f0, f1, f2 = (fk.repeat(B) + base for fk in (f0, f1, f2))
    z = V[..., 2]
    zs = z.clamp(min=1e-9)
    u = (fv * V[..., 0] / zs + c).reshape(-1)
    v = (fv * V[..., 1] / zs + c).reshape(-1)
    z = z.reshape(-1)

    # Per-triangle culling and bounding boxes in float64 (contiguous 1-D columns). The winding
    # and near-plane tests run on all triangles, the rest only on the triangles that pass them.
    u0, u1, u2 = _take(u, f0), _take(u, f1), _take(u, f2)
    v0, v1, v2 = _take(v, f0), _take(v, f1), _take(v, f2)
    area = (u1 - u0) * (v2 - v0) - (u2 - u0) * (v1 - v0)  # > 0: counter-clockwise on screen
    near = z > _NEAR_MM
    ok = _take(near, f0) & _take(near, f1) & _take(near, f2) & (area.abs() > 1e-9)
    if cull_backfaces:
        # x right / y down image: a camera-facing triangle with CCW model winding appears with
        # area < 0 here (the y flip mirrors it).
        ok &= area < 0
    k1 = _nonzero(ok)
    u0, u1, u2, v0, v1, v2 = (_take(a, k1) for a in (u0, u1, u2, v0, v1, v2))
    umin = torch.minimum(torch.minimum(u0, u1), u2)
    umax = torch.maximum(torch.maximum(u0, u1), u2)
    vmin = torch.minimum(torch.minimum(v0, v1), v2)
    vmax = torch.maximum(torch.maximum(v0, v1), v2)
    ok = (umax > 0.5) & (umin < R - 0.5) & (vmax > 0.5) & (vmin < R - 0.5)
    k2 = _nonzero(ok)
    keep = _take(k1, k2)  # global ids of the triangles that may cover pixels
    u0, u1, u2, v0, v1, v2, umin, umax, vmin, vmax = (
        _take(a, k2) for a in (u0, u1, u2, v0, v1, v2, umin, umax, vmin, vmax))
    # Pixels whose centre (i + 0.5) lies in [min, max].
    x0 = torch.ceil(umin - 0.5).clamp(min=0)
    x1 = torch.floor(umax - 0.5).clamp(max=R - 1)
    y0 = torch.ceil(vmin - 0.5).clamp(min=0)
    y1 = torch.floor(vmax - 0.5).clamp(max=R - 1)
    # Only triangles with candidate pixel centres go on ("local ids" index these).
    k3 = _nonzero((x1 >= x0) & (y1 >= y0))
    keep = _take(keep, k3)
    u0, u1, u2, v0, v1, v2, x0, x1, y0, y1 = (
        _take(a, k3) for a in (u0, u1, u2, v0, v1, v2, x0, x1, y0, y1))
    z0, z1, z2 = (_take(z, _take(fk, keep)) for fk in (f0, f1, f2))
    # image b is rows [b R, (b + 1) R) of one tall image (exact integers in float64/32)
    yoff = torch.div(keep, n_tris, rounding_mode="floor").double() * R if batched else None

    # Screen-space linear forms of the barycentrics l0, l1 and of 1/z in float32, in coordinates
    # relative to the first candidate pixel centre (x0 + 0.5, y0 + 0.5) of each triangle, where
    # they are small (the subtraction is done in float64): l = a * dx + b * dy + c.
    xa, ya = x0 + 0.5, y0 + 0.5
    u0, u1, u2 = ((uu - xa).float() for uu in (u0, u1, u2))
    v0, v1, v2 = ((vv - ya).float() for vv in (v0, v1, v2))
    iz0, iz1, iz2 = ((1.0 / zz).float() for zz in (z0, z1, z2))
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
    xs, ys = x0.float(), (y0 if yoff is None else y0 + yoff).float()  # integers < 2**24: exact
    h = (y1 - y0 + 1).long()

    n_px = B * R * R
    tri_id = torch.full((n_px,), -1, dtype=torch.int64, device=device)
    keys = torch.full((n_px,), _KEY_EMPTY, dtype=torch.int64, device=device)
    if keep.numel():
        # Scanline spans: for each bounding-box row of each triangle, the range of pixel
        # centres where all three edge functions are >= -eps (l is linear in dx on a row).
        eps = 1e-6
        start = torch.cumsum(h, 0) - h
        ro = torch.repeat_interleave(h)  # triangle (local id) of each row
        dy = (torch.arange(ro.numel(), device=device) - torch.repeat_interleave(start, h)).float()
        ea0, ea1 = _take(a0, ro), _take(a1, ro)
        k0 = torch.addcmul(_take(c0, ro), _take(b0, ro), dy)
        k1 = torch.addcmul(_take(c1, ro), _take(b1, ro), dy)
        ea2, k2 = -(ea0 + ea1), 1.0 - k0 - k1
        lo = torch.zeros_like(dy)
        hi = (_take(w_all, ro) - 1).float()
        for ea, k in ((ea0, k0), (ea1, k1), (ea2, k2)):
            flat = ea == 0  # rows parallel to the edge (rare): inside everywhere or nowhere
            any_flat = bool(flat.any())
            bound = (-eps - k) / (_where(flat, torch.ones_like(ea), ea) if any_flat else ea)
            lo = _where(ea > 0, torch.maximum(lo, bound), lo)
            hi = _where(ea < 0, torch.minimum(hi, bound), hi)
            if any_flat:
                hi = _where(flat & (k < -eps), torch.full_like(hi, -1.0), hi)
        lo = torch.ceil(lo)
        # A triangle that is degenerate in float32 (zero area) has non-finite bounds: no pixels.
        n = torch.nan_to_num(torch.floor(hi) - lo + 1, nan=0.0, posinf=0.0, neginf=0.0).clamp(min=0).long()
        row = torch.repeat_interleave(torch.arange(ro.numel(), device=device), n)
        if row.numel():
            start2 = torch.cumsum(n, 0) - n
            dx = _take(lo, row) + (torch.arange(row.numel(), device=device)
                                   - _take(start2, row)).float()
            dyc = _take(dy, row)
            tc = _take(ro, row)
            iq = torch.addcmul(torch.addcmul(_take(cq, tc), _take(aq, tc), dx), _take(bq, tc), dyc)
            good = _nonzero(iq > 0)
            tc, dx, dyc, iq = (_take(a, good) for a in (tc, dx, dyc, iq))
            # Positive float32 bit patterns sort like the floats: pack (depth, triangle).
            key = ((1.0 / iq).view(torch.int32).long() << 32) | tc  # local id
            pix = (_take(ys, tc) + dyc).long() * R + (_take(xs, tc) + dx).long()
            keys.scatter_reduce_(0, pix, key, reduce="amin", include_self=True)
    hit = _nonzero(keys != _KEY_EMPTY)
    kh = _take(keys, hit)
    tp = kh & 0xFFFFFFFF  # local ids of the winning triangles
    tri_id.index_copy_(0, hit, _take(keep, tp) % n_tris if batched else _take(keep, tp))
    shape = (B, R, R) if batched else (R, R)

    if not return_bary:
        depth = torch.full((n_px,), float("inf"), dtype=torch.float32, device=device)
        depth.index_copy_(0, hit, (kh >> 32).int().view(torch.float32))
        tri_id, depth = tri_id.view(shape), depth.view(shape)
        if return_numpy:
            return Raster(tri_id.cpu().numpy(), None, depth.cpu().numpy())
        return Raster(tri_id, None, depth)

    # Perspective-correct barycentrics at the covered pixel centres, from the same linear forms.
    bary = torch.zeros((n_px, 3), dtype=torch.float32, device=device)
    depth = torch.full((n_px,), float("inf"), dtype=torch.float32, device=device)
    if hit.numel():
        # row and column of each pixel; floor(hit / R) in float64 is exact for hit < 2**53 / R
        # and much cheaper than an integer division
        hr = (hit.double() / R).floor_()
        dx = ((hit.double() - hr * R) - _take(x0, tp)).float()
        dy = (hr - _take(y0 if yoff is None else y0 + yoff, tp)).float()
        l0 = _take(a0, tp) * dx + _take(b0, tp) * dy + _take(c0, tp)
        l1 = _take(a1, tp) * dx + _take(b1, tp) * dy + _take(c1, tp)
        q0, q1 = l0 * _take(iz0, tp), l1 * _take(iz1, tp)
        q2 = (1.0 - l0 - l1) * _take(iz2, tp)
        s = q0 + q1 + q2
        bary.index_copy_(0, hit, torch.stack([q0 / s, q1 / s, q2 / s], dim=1))
        depth.index_copy_(0, hit, 1.0 / s)
    bary = bary.view(shape + (3,))
    depth = depth.view(shape)
    tri_id = tri_id.view(shape)
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
    out[m] = interpolate_pixels(vals, triangles[tri_id[m]], bary[m])
    return out


def interpolate_pixels(values: np.ndarray, corners: np.ndarray, bary: np.ndarray) -> np.ndarray:
    """Per-vertex values (V, C) interpolated with barycentrics (P, 3) over triangles (P, 3)."""
    # v0 * b0 + v1 * b1 + v2 * b2, in place (the same operations, fewer temporary arrays)
    out = np.take(values, corners[:, 0], axis=0)
    out *= bary[:, 0:1]
    tmp = np.take(values, corners[:, 1], axis=0)
    tmp *= bary[:, 1:2]
    out += tmp
    np.take(values, corners[:, 2], axis=0, out=tmp)
    tmp *= bary[:, 2:3]
    out += tmp
    return out

