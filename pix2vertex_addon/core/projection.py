"""From a registered face back into the photo: depth map, texture, landmarks (no ``bpy``).

All functions take the registered template in the label frame (mm) and the :class:`CropCamera`
recovered from the maps, and work in the photo's pixels (x right, y down, pixel centres at
integer + 0.5).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy import ndimage

from .camera import CropCamera
from .layout_cache import LayoutCache, array_key
from .raster_np import rasterize_np

__all__ = ["bake_texture", "bake_vertex_field", "crop_depth", "depth_map", "project_landmarks", "texel_view",
           "texel_weights", "TexelView", "bleed_sources", "nearest_texels", "row_blocks", "uv_raster"]

DEPTH_MAX_SIDE = 2048  # px: the depth is rasterised at most this finely, then resampled
_BLOCK = 1 << 15  # texels a block of the per-texel products (a few MB: the processor's cache)


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
    return _bilinear_u8(img, xy).astype(np.float32)


def _bilinear_u8(img: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """:func:`_bilinear` as OpenCV gives it, (N, C) uint8 (its interpolation rounds to the
    nearest level: the float32 of :func:`_bilinear` holds the same integers)."""
    import cv2

    n = len(xy)
    width = 1024  # OpenCV maps must stay below 32767 rows and columns
    rows = max(1, -(-n // width))
    m = np.zeros((rows * width, 2), dtype=np.float32)
    m[:n] = xy
    m[:n] -= np.float32(0.5)
    m = m.reshape(rows, width, 2)
    out = cv2.remap(np.ascontiguousarray(img), m[..., 0], m[..., 1], interpolation=cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REPLICATE)
    return out.reshape(rows * width, -1)[:n]


_UV_SHIFT = 8  # fractional bits of the vertex coordinates given to OpenCV's polygon filler


def uv_raster(tri_uv: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(tri_id (size, size) int64, bary (size, size, 3) float32) of triangles (T, 3, 2) laid out
    in UV space (row 0 = v of 1, as images are stored); -1 and 0 off every triangle.

    UV islands do not overlap, so there is no depth to resolve: each triangle is filled by
    OpenCV's convex-polygon filler, which takes the pixels whose centres it holds and those its
    edges cross; smaller triangles first, so that a larger neighbour keeps a shared border pixel.
    The barycentrics of each pixel centre in its triangle are exact, clipped into the triangle
    where the centre lies just outside it (a border pixel: the baked point moves by about a
    pixel at most, two at a sliver), so a vertex field baked through them stays within the
    triangle's values. Where both have a
    triangle, this raster and :func:`.raster_np.rasterize_np`'s (the triangle holding the centre)
    give the same field up to that sub-pixel clipping; the filler also takes the pixels its
    island's outer border crosses. About ten times faster than the z-buffer rasteriser.
    Degenerate triangles are skipped.
    """
    import cv2

    t = np.asarray(tri_uv, dtype=np.float64)
    px = np.empty_like(t)
    px[..., 0] = t[..., 0] * size
    px[..., 1] = (1.0 - t[..., 1]) * size
    e1, e2 = px[:, 1] - px[:, 0], px[:, 2] - px[:, 0]
    area = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    ok = np.isfinite(area) & (np.abs(area) > 1e-9)
    order = np.flatnonzero(ok)[np.argsort(np.abs(area[ok]), kind="stable")]
    # OpenCV's pixel (i, j) has its centre at integer coordinates; ours at integer + 0.5
    fixed = np.clip(np.round((np.nan_to_num(px) - 0.5) * (1 << _UV_SHIFT)), -(2**30), 2**30).astype(np.int32)
    img = np.full((size, size), -1, dtype=np.int32)
    fill = cv2.fillConvexPoly
    for i in order.tolist():
        fill(img, fixed[i], i, lineType=cv2.LINE_8, shift=_UV_SHIFT)
    # b1, b2 as affine functions of the pixel centre relative to the triangle's first corner
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = np.where(ok, 1.0 / np.where(ok, area, 1.0), 0.0)
    coef = np.stack([e2[:, 1] * inv, -e2[:, 0] * inv, -e1[:, 1] * inv, e1[:, 0] * inv, px[:, 0, 0], px[:, 0, 1]],
                    axis=1)
    c = coef.astype(np.float32)[np.maximum(img, 0)]  # (S, S, 6); offsets of a few pixels: float32 suffices
    centres = np.arange(size, dtype=np.float32) + np.float32(0.5)
    dx = centres[None, :] - c[..., 4]
    dy = centres[:, None] - c[..., 5]
    bary = np.empty((size, size, 3), dtype=np.float32)
    bary[..., 1] = c[..., 0] * dx + c[..., 1] * dy
    bary[..., 2] = c[..., 2] * dx + c[..., 3] * dy
    bary[..., 0] = np.float32(1.0) - bary[..., 1] - bary[..., 2]
    np.maximum(bary, np.float32(0.0), out=bary)
    bary /= bary.sum(axis=2, keepdims=True)
    bary[img < 0] = 0.0
    return img.astype(np.int64), bary


# Only the texel weights read the rasters, and those are kept on disk: the rasters (about 100 MB
# for the default options) stay in memory.
_RASTERS: LayoutCache[tuple[np.ndarray, np.ndarray]] = LayoutCache("UV rasters", 6, persist=False)


def _triangles(poly: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The triangles of (F, 4) polygons as (polygon, corner) pairs, (0 1 2) for all and (0 2 3)
    for quads: (tri_poly (T,), tri_corner (T, 3), tri_vert (T, 3) mesh vertex ids)."""
    quad = poly[:, 3] >= 0
    tri_poly = np.concatenate([np.arange(len(poly)), np.flatnonzero(quad)])
    tri_corner = np.concatenate([np.tile([0, 1, 2], (len(poly), 1)), np.tile([0, 2, 3], (int(quad.sum()), 1))])
    return tri_poly, tri_corner, poly[tri_poly[:, None], tri_corner]


def _uv_raster(poly: np.ndarray, uvs: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Triangles (T, 3) of mesh vertex ids and the UV-space raster (tri_id, bary) of a layout;
    the raster is the same for every photo, so it is cached per (UVs, quad pattern, size): a mesh
    and its "one vertex per corner" copy share it."""
    quad = poly[:, 3] >= 0
    tri_poly, tri_corner, tri_vert = _triangles(poly)
    tid, bary = _RASTERS.get(array_key(quad, np.asarray(uvs), size),
                             lambda: uv_raster(uvs[tri_poly[:, None], tri_corner].astype(np.float64), size))
    return tri_vert, tid, bary


def nearest_texels(mask: np.ndarray) -> np.ndarray:
    """(S*S,) flat index of the nearest ``True`` texel of ``mask`` (S, S) for every texel (itself
    where ``True``): OpenCV's labelled distance transform (5 times faster than SciPy's; within
    half a texel of the exact nearest distance), SciPy's exact one if OpenCV's labels are not in
    the scan order of the ``True`` texels as expected."""
    import cv2

    m = np.asarray(mask, dtype=bool)
    ones = np.flatnonzero(m.ravel())
    if ones.size and m.shape[0] < 2**15 and m.shape[1] < 2**15:
        _, lab = cv2.distanceTransformWithLabels((~m).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE,
                                                 labelType=cv2.DIST_LABEL_PIXEL)
        lab = lab.ravel()
        if lab.min() >= 1 and lab.max() == ones.size and (lab[ones] == np.arange(1, ones.size + 1)).all():
            return ones[lab - 1]
    _, (ir, ic) = ndimage.distance_transform_edt(~m, return_indices=True)
    return (ir * m.shape[1] + ic).ravel()


def bleed_sources(inside: np.ndarray, bleed: int) -> tuple[np.ndarray, np.ndarray]:
    """(grown, source) flat indices: the texels outside ``inside`` (S, S) bool within ``bleed``
    steps of it (4-connected, as ``ndimage.binary_dilation``) and, for each, its nearest inside
    texel (Euclidean, within ``bleed``): the same as a full distance transform gives, searched only
    in the thin band around the islands."""
    s0, s1 = inside.shape
    ring = ndimage.binary_dilation(inside, iterations=bleed) & ~inside
    grown = np.flatnonzero(ring.ravel())
    r, c = np.divmod(grown, s1)
    source = np.full(len(grown), -1, dtype=np.int64)
    offsets = [(dy, dx) for dy in range(-bleed, bleed + 1) for dx in range(-bleed, bleed + 1)
               if 0 < dy * dy + dx * dx <= bleed * bleed]
    offsets.sort(key=lambda o: (o[0] * o[0] + o[1] * o[1], o))
    todo = np.arange(len(grown))
    for dy, dx in offsets:
        if not todo.size:
            break
        rr, cc = r[todo] + dy, c[todo] + dx
        ok = (rr >= 0) & (rr < s0) & (cc >= 0) & (cc < s1)
        ok[ok] = inside[rr[ok], cc[ok]]
        source[todo[ok]] = rr[ok] * s1 + cc[ok]
        todo = todo[~ok]
    return grown, source


def row_blocks(w: sp.csr_matrix, block: int = _BLOCK) -> list[tuple[int, int, sp.csr_matrix]]:
    """``(start, stop, rows)`` for consecutive blocks of ``block`` rows of the CSR matrix ``w``,
    ``rows`` a CSR matrix over ``w``'s own arrays; ``rows @ x`` is row for row
    ``(w @ x)[start:stop]``. Building the blocks costs about a millisecond each (SciPy's checks),
    so they are remembered per matrix object: for matrices that are never changed, such as the
    layout caches' texel weights (:func:`texel_weights`)."""
    key = (id(w), block)
    hit = _ROW_BLOCKS.get(key)
    if hit is not None and hit[0]() is w:
        return hit[1]
    indptr = w.indptr
    n = w.shape[0]
    out = []
    for a in range(0, n, block):
        b = min(a + block, n)
        p0, p1 = int(indptr[a]), int(indptr[b])
        out.append((a, b, sp.csr_matrix((w.data[p0:p1], w.indices[p0:p1], indptr[a:b + 1] - p0),
                                        shape=(b - a, w.shape[1]), copy=False)))
    if len(_ROW_BLOCKS) >= 16:
        _ROW_BLOCKS.clear()
    _ROW_BLOCKS[key] = (weakref.ref(w), out)
    return out


_ROW_BLOCKS: dict[tuple[int, int], tuple[weakref.ref, list[tuple[int, int, sp.csr_matrix]]]] = {}


_WEIGHTS: LayoutCache[tuple[np.ndarray, sp.csr_matrix, np.ndarray, np.ndarray]] = LayoutCache("texel weights", 5)


def texel_weights(polygons: np.ndarray, corner_uvs: np.ndarray, size: int,
                  bleed: int = 2) -> tuple[np.ndarray, sp.csr_matrix, np.ndarray, np.ndarray]:
    """The UV raster of a layout as a linear map, cached per (layout, size, bleed).

    Returns
    -------
    inside : (N,) flat indices of the texels inside the islands.
    weights : (N, V) sparse, three barycentric weights per row: ``weights @ per_vertex`` is a
        vertex field at those texels (V = the largest vertex id + 1).
    grown, source : flat indices of the texels within ``bleed`` of an island and, for each, the
        nearest inside texel (the bleed that keeps mip-maps free of seams).
    """
    poly = np.asarray(polygons, dtype=np.int64)
    uvs = np.asarray(corner_uvs)
    return _WEIGHTS.get(array_key(poly, uvs, size, bleed), lambda: _texel_weights(poly, uvs, size, bleed))


def _texel_weights(poly: np.ndarray, uvs: np.ndarray, size: int,
                   bleed: int) -> tuple[np.ndarray, sp.csr_matrix, np.ndarray, np.ndarray]:
    tri_vert, tid, bary = _uv_raster(poly, uvs, size)
    inside_img = tid >= 0
    inside = np.flatnonzero(inside_img.ravel())
    tv = tri_vert[tid.ravel()[inside]]
    n = len(inside)
    # three entries per row, already in row order: the CSR arrays directly (no sort)
    w = sp.csr_matrix((bary.reshape(-1, 3)[inside].astype(np.float64).ravel(), tv.ravel(),
                       np.arange(0, 3 * n + 1, 3)), shape=(n, int(poly.max()) + 1))
    grown = source = np.zeros(0, dtype=np.int64)
    if bleed > 0 and n:
        grown, source = bleed_sources(inside_img, bleed)
    return inside, w, grown, source


@dataclass
class TexelView:
    """Where the camera sees each texel inside the UV islands (the N texels of ``inside``).

    inside : (N,) flat texel indices.  points : (N, 3) label frame, mm.  crop_xy : (N, 2) crop
    pixels.  image_xy : (N, 2) photo pixels.  seen : (N,) bool, inside the photo and passing the
    depth test.  triangles : (T, 3) the layout's triangles (mesh vertex ids).  size : texture side.
    """

    inside: np.ndarray
    points: np.ndarray
    crop_xy: np.ndarray
    image_xy: np.ndarray
    seen: np.ndarray
    triangles: np.ndarray
    size: int


def texel_view(camera: CropCamera, vertices: np.ndarray, polygons: np.ndarray, corner_uvs: np.ndarray,
               image_size: tuple[int, int], size: int = 1024, depth_tolerance_mm: float = 3.0,
               depth_crop: np.ndarray | None = None) -> TexelView:
    """:class:`TexelView` of a mesh with the layout ``polygons``/``corner_uvs`` (see
    :func:`bake_texture` for the parameters)."""
    tri_vert = _triangles(np.asarray(polygons, dtype=np.int64))[2]  # the triangles, not the raster
    flat_inside, weights, _, _ = texel_weights(polygons, corner_uvs, size)
    v = np.asarray(vertices, dtype=np.float64)[: weights.shape[1]]
    # visibility from the camera: depth test against a render of the mesh in the crop
    vis_depth = crop_depth(camera, vertices, tri_vert) if depth_crop is None else depth_crop
    visibility_res = vis_depth.shape[0]
    n = len(flat_inside)
    pts = np.empty((n, 3))
    crop_xy = np.empty((n, 2))
    img_xy = np.empty((n, 2))
    seen = np.empty(n, dtype=bool)
    for a, b, rows in row_blocks(weights):  # in blocks that stay in the cache (the same values)
        p = pts[a:b] = rows @ v
        c = crop_xy[a:b] = camera.project_crop(p)
        im = img_xy[a:b]
        for k in (0, 1):  # crop_xy * image_scale + box[:2], column by column (no (N, 2) temporaries)
            np.multiply(c[:, k], camera.image_scale, out=im[:, k])
            im[:, k] += camera.box[k]
        cz = p[:, 2] + camera.z_ref
        sn = cz <= np.inf  # NaN points are never seen
        ci = []
        for k, lim in enumerate(image_size[::-1]):  # per column: (N, 2).all(1) is slow
            vis = c[:, k] * (visibility_res / camera.resolution)
            sn &= (vis >= 0) & (vis < visibility_res) & (im[:, k] >= 0) & (im[:, k] < lim)
            ci.append(np.clip(vis.astype(np.int64), 0, visibility_res - 1))
        sn &= cz <= vis_depth[ci[1], ci[0]] + depth_tolerance_mm
        seen[a:b] = sn
    return TexelView(flat_inside, pts, crop_xy, img_xy, seen, tri_vert, size)


def bake_texture(
    photo: np.ndarray,
    camera: CropCamera,
    vertices: np.ndarray,
    polygons: np.ndarray,
    corner_uvs: np.ndarray,
    size: int = 1024,
    depth_tolerance_mm: float = 3.0,
    depth_crop: np.ndarray | None = None,
    view: TexelView | None = None,
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
    view : a :func:`texel_view` of the same mesh and photo (then the arguments above it are
        not used again).

    Returns
    -------
    texture : (size, size, 3) uint8; texels the camera did not see take the colour of the nearest
        seen texel, texels outside every UV island stay mid grey.
    seen : (size, size) bool, texels the photo saw.
    """
    if view is None:
        view = texel_view(camera, vertices, polygons, corner_uvs, (photo.shape[0], photo.shape[1]), size,
                          depth_tolerance_mm, depth_crop)
    _, _, grown, source = texel_weights(polygons, corner_uvs, size, bleed=2)
    tex = np.full((size * size, 3), 128, dtype=np.uint8)
    seen = np.zeros(size * size, dtype=bool)
    hit = view.inside[view.seen]
    # OpenCV's uint8 interpolation directly (the same levels as rounding its float32 copy)
    xy = view.image_xy[view.seen]  # one remap: OpenCV splits it over its threads
    tex[hit] = _bilinear_u8(photo, xy) if photo.dtype == np.uint8 else np.clip(_bilinear(photo, xy) + 0.5, 0, 255)
    seen[hit] = True
    tex = tex.reshape(size, size, 3)
    seen = seen.reshape(size, size)
    if hit.size:
        # unseen texels inside the islands: colour of the nearest seen texel
        fill = view.inside[~view.seen]
        flat = tex.reshape(-1, 3)
        flat[fill] = flat[nearest_texels(seen)[fill]]
        # a little bleed past island borders so that mip-mapping does not show grey seams
        flat[grown] = flat[source]
    return tex, seen


def bake_vertex_field(values: np.ndarray, polygons: np.ndarray, corner_uvs: np.ndarray, size: int = 1024,
                      bleed: int = 4) -> np.ndarray:
    """Bake a per-vertex scalar field into the UV layout (linear inside each triangle).

    Parameters
    ----------
    values : (V,) or (V, C) float per mesh vertex.  polygons : (F, 3|4) int, -1 padded.
    corner_uvs : (F, 3|4, 2) float.  size : image side.  bleed : texels grown past island borders.

    Returns
    -------
    (size, size) or (size, size, C) float32, row 0 = v of 1 (top, as images are stored); texels outside every island
    (beyond ``bleed``) are 0.
    """
    poly = np.asarray(polygons, dtype=np.int64)
    uvs = np.asarray(corner_uvs)
    if poly.shape[1] == 3:
        poly = np.concatenate([poly, np.full((len(poly), 1), -1)], axis=1)
        uvs = np.concatenate([uvs, np.full((len(uvs), 1, 2), np.nan)], axis=1)
    vals = np.asarray(values, dtype=np.float64)
    inside, w, grown, source = texel_weights(poly, uvs, size, bleed)
    out = np.zeros((size * size,) + vals.shape[1:], dtype=np.float32)
    vals = vals[: w.shape[1]]
    for a, b, rows in row_blocks(w):  # in blocks of texel rows (the same sums, in the cache)
        out[inside[a:b]] = rows @ vals
    out[grown] = out[source]
    out = out.reshape((size, size) + vals.shape[1:])
    return out
