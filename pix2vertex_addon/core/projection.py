"""From a registered face back into the photo: depth map, texture, landmarks (no ``bpy``).

All functions take the registered template in the label frame (mm) and the :class:`CropCamera`
recovered from the maps, and work in the photo's pixels (x right, y down, pixel centres at
integer + 0.5).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .camera import CropCamera
from .raster_np import rasterize_np

__all__ = ["bake_texture", "bake_vertex_field", "crop_depth", "depth_map", "project_landmarks"]

DEPTH_MAX_SIDE = 2048  # px: the depth is rasterised at most this finely, then resampled


def crop_depth(camera: CropCamera, vertices: np.ndarray, triangles: np.ndarray, res: int | None = None) -> np.ndarray:
    """(res, res) float32 camera depth (mm) of the mesh over the crop square, ``inf`` off the mesh.

    ``res`` defaults to the crop's size in photo pixels, at most :data:`DEPTH_MAX_SIDE`.
    """
    if res is None:
        res = int(min(DEPTH_MAX_SIDE, max(64, np.ceil(camera.box[2]))))
    f = camera.focal * res / camera.resolution
    return rasterize_np(camera.to_camera(vertices), triangles, f, res)[2]


def depth_map(camera: CropCamera, depth_crop: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """Depth of the reconstructed surface for every photo pixel.

    Parameters
    ----------
    depth_crop : (res, res) from :func:`crop_depth`.
    image_size : (height, width) of the photo.

    Returns
    -------
    (H, W) float32: distance along the optical axis from the camera, mm (larger is farther);
    NaN where the face is not.
    """
    h, w = image_size
    x0, y0, side = camera.box
    res = depth_crop.shape[0]
    out = np.full((h, w), np.nan, dtype=np.float32)
    # photo pixels inside the crop square
    c0, c1 = max(0, int(np.floor(x0))), min(w, int(np.ceil(x0 + side)))
    r0, r1 = max(0, int(np.floor(y0))), min(h, int(np.ceil(y0 + side)))
    if c1 <= c0 or r1 <= r0:
        return out
    s = res / side
    cols = np.floor((np.arange(c0, c1) + 0.5 - x0) * s).astype(np.int64)
    rows = np.floor((np.arange(r0, r1) + 0.5 - y0) * s).astype(np.int64)
    ok_c = (cols >= 0) & (cols < res)
    ok_r = (rows >= 0) & (rows < res)
    sub = np.full((r1 - r0, c1 - c0), np.inf, dtype=np.float32)
    sub[np.ix_(ok_r, ok_c)] = depth_crop[np.ix_(rows[ok_r], cols[ok_c])]
    sub[~np.isfinite(sub)] = np.nan
    out[r0:r1, c0:c1] = sub
    return out


def project_landmarks(camera: CropCamera, vertices: np.ndarray, landmark_idx: np.ndarray) -> np.ndarray:
    """(68, 2) float photo pixels of the template's landmark vertices."""
    return camera.project_image(np.asarray(vertices)[np.asarray(landmark_idx)])


def _bilinear(img: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Sample (H, W, C) uint8 at continuous pixel positions (N, 2) (centres at +0.5), edge clamp;
    returns (N, C) float32."""
    import cv2

    n = len(xy)
    width = 1024  # OpenCV maps must stay below 32767 rows and columns
    rows = max(1, -(-n // width))
    m = np.zeros((rows * width, 2), dtype=np.float32)
    m[:n] = np.asarray(xy, dtype=np.float32) - 0.5
    m = m.reshape(rows, width, 2)
    out = cv2.remap(np.ascontiguousarray(img), m[..., 0], m[..., 1], interpolation=cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REPLICATE)
    return out.reshape(rows * width, -1)[:n].astype(np.float32)


_UV_CACHE: dict[tuple, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}


def _uv_raster(poly: np.ndarray, uvs: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Triangles (T, 3) of mesh vertex ids and the UV-space raster (tri_id, bary) of a layout;
    the same for every photo, so it is cached per (layout, size)."""
    key = (poly.shape, hash(poly.tobytes()), hash(np.nan_to_num(uvs).tobytes()), size)
    hit = _UV_CACHE.get(key)
    if hit is not None:
        return hit
    quad = poly[:, 3] >= 0
    # triangles as (polygon, corner) pairs: (0 1 2) for all, (0 2 3) for quads
    tri_poly = np.concatenate([np.arange(len(poly)), np.flatnonzero(quad)])
    tri_corner = np.concatenate([np.tile([0, 1, 2], (len(poly), 1)), np.tile([0, 2, 3], (int(quad.sum()), 1))])
    tri_vert = poly[tri_poly[:, None], tri_corner]
    tri_uv = uvs[tri_poly[:, None], tri_corner].astype(np.float64)
    # a flat "camera" view of UV space (v = 1 at the top row, as images are stored)
    zc = 10.0
    p = np.empty((tri_uv.shape[0] * 3, 3))
    p[:, 0] = tri_uv[..., 0].ravel() * size - size / 2.0
    p[:, 1] = (1.0 - tri_uv[..., 1].ravel()) * size - size / 2.0
    p[:, 2] = zc
    tid, bary, _ = rasterize_np(p, np.arange(len(p)).reshape(-1, 3), zc, size)
    for a in (tri_vert, tid, bary):
        a.setflags(write=False)
    if len(_UV_CACHE) > 4:
        _UV_CACHE.clear()
    _UV_CACHE[key] = (tri_vert, tid, bary)
    return tri_vert, tid, bary


def bake_texture(
    photo: np.ndarray,
    camera: CropCamera,
    vertices: np.ndarray,
    polygons: np.ndarray,
    corner_uvs: np.ndarray,
    size: int = 1024,
    depth_tolerance_mm: float = 3.0,
    depth_crop: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Project the photo onto the template's UV layout.

    Parameters
    ----------
    photo : (H, W, 3) uint8.
    vertices : (V, 3) label frame, mm.  polygons : (F, 4) int, -1 padded.
    corner_uvs : (F, 4, 2) float UVs per corner.
    size : texture side in pixels.
    depth_crop : the mesh's depth over the crop (:func:`crop_depth`) for the visibility test;
        rendered from ``vertices`` when not given.

    Returns
    -------
    texture : (size, size, 3) uint8; texels the camera did not see take the colour of the nearest
        seen texel, texels outside every UV island stay mid grey.
    seen : (size, size) bool, texels the photo saw.
    """
    tri_vert, tid, bary = _uv_raster(np.asarray(polygons, dtype=np.int64), np.asarray(corner_uvs), size)
    inside = tid >= 0
    t = tid[inside]
    b = bary[inside].astype(np.float64)
    v = np.asarray(vertices, dtype=np.float64)
    tv = tri_vert[t]
    pts = b[:, :1] * v[tv[:, 0]] + b[:, 1:2] * v[tv[:, 1]] + b[:, 2:3] * v[tv[:, 2]]

    # visibility from the camera: depth test against a render of the mesh in the crop
    vis_depth = crop_depth(camera, vertices, tri_vert) if depth_crop is None else depth_crop
    visibility_res = vis_depth.shape[0]
    crop_xy = camera.project_crop(pts) * (visibility_res / camera.resolution)
    cz = camera.to_camera(pts)[:, 2]
    ci = np.clip(crop_xy.astype(np.int64), 0, visibility_res - 1)
    in_crop = (crop_xy >= 0).all(1) & (crop_xy < visibility_res).all(1)
    seen_pts = in_crop & (cz <= vis_depth[ci[:, 1], ci[:, 0]] + depth_tolerance_mm)
    img_xy = camera.project_image(pts)
    h, w = photo.shape[:2]
    seen_pts &= (img_xy[:, 0] >= 0) & (img_xy[:, 0] < w) & (img_xy[:, 1] >= 0) & (img_xy[:, 1] < h)

    tex = np.full((size, size, 3), 128, dtype=np.uint8)
    seen = np.zeros((size, size), dtype=bool)
    rows, cols = np.nonzero(inside)
    colours = _bilinear(photo, img_xy[seen_pts])
    tex[rows[seen_pts], cols[seen_pts]] = np.clip(colours + 0.5, 0, 255).astype(np.uint8)
    seen[rows[seen_pts], cols[seen_pts]] = True
    if seen.any():
        # unseen texels inside the islands: colour of the nearest seen texel
        _, (ir, ic) = ndimage.distance_transform_edt(~seen, return_indices=True)
        fill = inside & ~seen
        tex[fill] = tex[ir[fill], ic[fill]]
        # a little bleed past island borders so that mip-mapping does not show grey seams
        grown = ndimage.binary_dilation(inside, iterations=2) & ~inside
        tex[grown] = tex[ir[grown], ic[grown]]
    return tex, seen


def bake_vertex_field(values: np.ndarray, polygons: np.ndarray, corner_uvs: np.ndarray, size: int = 1024,
                      bleed: int = 4) -> np.ndarray:
    """Bake a per-vertex scalar field into the UV layout (linear inside each triangle).

    Parameters
    ----------
    values : (V,) float per mesh vertex.  polygons : (F, 3|4) int, -1 padded.
    corner_uvs : (F, 3|4, 2) float.  size : image side.  bleed : texels grown past island borders.

    Returns
    -------
    (size, size) float32, row 0 = v of 1 (top, as images are stored); texels outside every island
    (beyond ``bleed``) are 0.
    """
    poly = np.asarray(polygons, dtype=np.int64)
    uvs = np.asarray(corner_uvs)
    if poly.shape[1] == 3:
        poly = np.concatenate([poly, np.full((len(poly), 1), -1)], axis=1)
        uvs = np.concatenate([uvs, np.full((len(uvs), 1, 2), np.nan)], axis=1)
    vals = np.asarray(values, dtype=np.float64)
    tri_vert, tid, bary = _uv_raster(poly, uvs, size)
    inside = tid >= 0
    out = np.zeros((size, size), dtype=np.float32)
    tv = tri_vert[tid[inside]]
    b = bary[inside].astype(np.float64)
    out[inside] = (b * vals[tv]).sum(axis=1)
    if bleed > 0 and inside.any():
        _, (ir, ic) = ndimage.distance_transform_edt(~inside, return_indices=True)
        grown = ndimage.binary_dilation(inside, iterations=bleed) & ~inside
        out[grown] = out[ir[grown], ic[grown]]
    return out
