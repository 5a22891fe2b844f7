"""Texture clean-up and completion in UV space (no ``bpy``).

The photo projected onto the template's UV layout (:func:`.projection.bake_texture`) carries
whatever covered the face: hair over the forehead, glasses, a hand, the background past the
silhouette, and stretched copies of the border where the camera did not see the skin. This
module gives every texel a confidence and replaces the doubtful ones:

1. **confidence** (:func:`texel_confidence`): seen by the camera (depth test, inside the photo),
   facing it (a smooth ramp on the cosine between the surface normal and the view ray) and
   inside the networks' face mask (which excludes hair, glasses, hands and background), the
   mask eroded a little so that the border of an occluder does not bleed in;
2. **completion** (:func:`complete_texture`): the texture is split, in log colour, into a
   low-frequency *shading* layer (a confidence-weighted average on a coarse grid) and the
   *detail* above it. The shading layer is filled over the doubtful texels by a screened
   harmonic (Laplace) fill from the surrounding well-seen skin, so it joins the seen skin without
   a seam whatever the photo's lighting; the detail layer is taken from the mirrored texel
   (the template is left-right symmetric) where that one is well seen, else left out (smooth
   skin). Where no skin at all borders a region (the back of a full head), the screening term
   pulls the fill to the median seen skin colour, so unseen parts get a plausible uniform skin
   rather than a smear.

The same code works for any mesh with the template's UV layout (the face region, or a full head
sharing its UVs): it needs only the mesh's vertices, polygons and per-corner UVs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy import ndimage
from scipy.sparse.linalg import spsolve

from .camera import CropCamera
from .geometry.laplacian import vertex_normals
from .layout_cache import LayoutCache, array_key
from .projection import TexelView, _bilinear, bake_texture, row_blocks, texel_view, texel_weights

__all__ = ["TextureResult", "border_colour_weight", "border_distance", "clean_texture", "complete_texture",
           "layout_tables", "mirror_texels", "seam_distance", "texel_confidence"]

COARSE = 8  # texels per shading cell (a 1024 texture has a 128 x 128 shading grid)
KNOWN = 0.5  # confidence above which a texel (or shading cell) counts as well seen
BORDER_BAND = 0.06  # of the crop side: texels this near the mask's outline get the colour test
SEAM_MM = 15.0  # the texture fades to the skin colour over this distance from the face's outer border
CHROMA_K = 2.0  # the colour test's threshold in chroma deviations (brightness: ``k``, 3)
_BLOCK = 1 << 15  # texels a block of the per-texel passes (a few MB: the processor's cache)
OUTER_MM = 45.0  # texels this near the face's outer border (sides, forehead top, neck) get the colour test
# log colour L = log((c + 4) / 259) of each 8-bit value, single and double precision
_LOG32 = np.log((np.arange(256, dtype=np.float32) + np.float32(4.0)) / np.float32(259.0))
_LOG64 = np.log((np.arange(256, dtype=np.float64) + 4.0) / 259.0)


@dataclass
class TextureResult:
    """texture : completed (S, S, 3) uint8.  raw : the plain projection.  confidence : (S, S)
    float32 in [0, 1].  filled : (S, S) bool texels replaced (confidence below :data:`KNOWN`)."""

    texture: np.ndarray
    raw: np.ndarray
    confidence: np.ndarray
    filled: np.ndarray

    @property
    def filled_fraction(self) -> float:
        return float(self.filled.mean())


def _texel_points(polygons: np.ndarray, corner_uvs: np.ndarray, size: int, values: np.ndarray) -> np.ndarray:
    """Per-vertex values (V, C) interpolated at the texels inside the islands (N, C)."""
    _, w, _, _ = texel_weights(polygons, corner_uvs, size)
    return w @ np.asarray(values, dtype=np.float64)[: w.shape[1]]


def _smoothstep(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``t * t * (3 - 2 t)`` of ``t = clip((x - lo) / (hi - lo), 0, 1)``, in place on two arrays."""
    t = np.subtract(x, lo)
    t /= hi - lo
    np.clip(t, 0.0, 1.0, out=t)
    r = np.multiply(t, 2.0)
    np.subtract(3.0, r, out=r)
    np.multiply(t, t, out=t)
    t *= r
    return t


def texel_confidence(
    camera: CropCamera,
    vertices: np.ndarray,
    polygons: np.ndarray,
    corner_uvs: np.ndarray,
    image_size: tuple[int, int],
    mask: np.ndarray | None = None,
    size: int = 1024,
    depth_crop: np.ndarray | None = None,
    depth_tolerance_mm: float = 3.0,
    facing: tuple[float, float] = (0.15, 0.45),
    mask_erode_px: int | None = None,
    view: TexelView | None = None,
) -> np.ndarray:
    """(size, size) float32 confidence in [0, 1] of each texel's projected colour.

    Parameters
    ----------
    vertices : (V, 3) label frame, mm.  polygons : (F, 4) int, -1 padded.  corner_uvs : (F, 4, 2).
    image_size : (height, width) of the photo.
    mask : (R, R) float, the networks' face-mask probability over the crop (None: not used).
    facing : cosine range over which the confidence ramps from 0 to 1 (grazing texels are
        stretched copies of few photo pixels).
    mask_erode_px : the mask is eroded by this many crop pixels (occluder borders); default 1.2 %
        of the crop side (3 pixels at 256).
    view : the :func:`.projection.texel_view` of this mesh and photo, when already computed.
    """
    if view is None:
        view = texel_view(camera, vertices, polygons, corner_uvs, image_size, size, depth_tolerance_mm, depth_crop)
    v = np.asarray(vertices, dtype=np.float64)
    _, w, _, _ = texel_weights(polygons, corner_uvs, size)
    vn = vertex_normals(v, view.triangles)[: w.shape[1]]
    m8 = None
    if mask is not None:
        m = _close_small_holes(np.asarray(mask, dtype=np.float32))
        erode = max(1, round(0.012 * m.shape[0])) if mask_erode_px is None else mask_erode_px
        if erode > 0:
            m = ndimage.grey_erosion(m, size=(2 * erode + 1, 2 * erode + 1))
        m8 = np.clip(m * 255.0 + 0.5, 0, 255).astype(np.uint8)[..., None]
    # the texels in blocks that stay in the processor's cache (each texel's arithmetic is the one
    # of a single pass over all of them, so the result is the same bit for bit)
    n = len(view.inside)
    bounds = range(0, n, _BLOCK)
    dots, coses = [], []
    n_neg = 0
    for a, b, rows in row_blocks(w, _BLOCK):
        nrm = rows @ vn
        cam = camera.to_camera(view.points[a:b])
        # cosine between the normal and the ray to the camera (-cam)
        dot = -np.einsum("ij,ij->i", nrm, cam)
        n_neg += int(np.count_nonzero(dot < 0))
        seen = view.seen[a:b]
        cos = dot[seen]
        cos /= ((np.sqrt(np.einsum("ij,ij->i", nrm, nrm)) + 1e-12)
                * (np.sqrt(np.einsum("ij,ij->i", cam, cam)) + 1e-12))[seen]
        coses.append(cos)
        dots.append(seen)
    inwards = 2 * n_neg > n  # most normals point inwards: the mesh's winding
    out = np.zeros(size * size, dtype=np.float32)
    r = camera.resolution
    for a, seen, cos in zip(bounds, dots, coses):
        b = min(a + _BLOCK, n)
        conf = np.zeros(b - a)
        if inwards:
            cos = -cos
        conf[seen] = _smoothstep(cos, *facing)
        if m8 is not None:
            # past the crop the networks saw nothing: the mask fades to 0 at the crop's edge (a
            # plain edge clamp would carry the neck's mask onto the collar below the crop)
            live = np.flatnonzero(conf > 0)
            xy = view.crop_xy[a:b][live]
            x, y = xy[:, 0], xy[:, 1]
            edge = np.minimum(np.minimum(x, r - x), np.minimum(y, r - y))
            conf[live] *= (_bilinear(m8, xy)[:, 0] / 255.0) * _smoothstep(edge, 0.0, erode + 1.0)
        out[view.inside[a:b]] = conf
    return out.reshape(size, size)


def _close_small_holes(mask: np.ndarray, max_fraction: float = 0.02, rim: float = 0.95) -> np.ndarray:
    """The mask with its small enclosed holes set to 1: the eyes and an open mouth are holes of
    the face mask but their borders (lids, lips, brows) are skin; occluders reach the mask's
    outline. A hole is closed with its soft rim (the pixels around it below ``rim``, up to 4 % of
    the mask's side away, never past the outline): left in, the rim's grey would spread over the lids and brows with the
    erosion that follows."""
    inner = mask >= 0.5
    solid = ndimage.binary_fill_holes(inner)
    holes = solid & ~inner
    if not holes.any():
        return mask
    lab, n = ndimage.label(holes)
    area = np.bincount(lab.ravel(), minlength=n + 1)
    small = area <= max_fraction * max(int(inner.sum()), 1)
    small[0] = False
    close = small[lab]
    grow = max(1, round(0.04 * mask.shape[0]))
    close = ndimage.binary_dilation(close, iterations=grow, mask=solid & (mask < rim)) | close
    out = mask.copy()
    out[close] = 1.0
    return out


_MIRRORS: LayoutCache[np.ndarray] = LayoutCache("mirror texels", 3)
_SEAMS: LayoutCache[np.ndarray] = LayoutCache("seam distances", 6)


def mirror_texels(rest_vertices: np.ndarray, polygons: np.ndarray, corner_uvs: np.ndarray, size: int = 1024,
                  max_mm: float = 3.0) -> np.ndarray:
    """(size, size) int64: flat index of each texel's mirror image (x -> -x on the rest shape),
    -1 outside the islands or where no texel lies within ``max_mm`` of the mirrored point.

    rest_vertices : (V, 3) the template's rest shape in a frame whose x = 0 plane is its plane of
    symmetry (the model frame), any unit; ``max_mm`` assumes millimetres. Cached per layout.
    """
    poly = np.asarray(polygons, dtype=np.int64)
    rv = np.asarray(rest_vertices, dtype=np.float64)
    uvs = np.asarray(corner_uvs)
    return _MIRRORS.get(array_key(poly, rv, uvs, size, max_mm), lambda: _mirror_texels(rv, poly, uvs, size, max_mm))


def _mirror_texels(rv: np.ndarray, poly: np.ndarray, corner_uvs: np.ndarray, size: int, max_mm: float) -> np.ndarray:
    from scipy.spatial import cKDTree

    flat, _, _, _ = texel_weights(poly, corner_uvs, size)
    pts = _texel_points(poly, corner_uvs, size, rv)
    mirrored = pts * np.array([-1.0, 1.0, 1.0])
    dist, j = cKDTree(pts).query(mirrored, distance_upper_bound=max_mm, workers=-1)
    out = np.full(size * size, -1, dtype=np.int64)
    good = np.isfinite(dist)
    out[flat[good]] = flat[j[good]]
    return out.reshape(size, size)


def seam_distance(rest_vertices: np.ndarray, polygons: np.ndarray, corner_uvs: np.ndarray,
                  size: int = 1024) -> np.ndarray:
    """(size, size) float32: distance (units of ``rest_vertices``, mm) from each texel's point on
    the rest shape to the mesh's outer border (its longest boundary loop: for the face template,
    the seam with the rest of a full head; the eye and mouth openings are not borders here);
    0 outside the islands. Cached per layout."""
    poly = np.asarray(polygons, dtype=np.int64)
    rv = np.asarray(rest_vertices, dtype=np.float64)
    uvs = np.asarray(corner_uvs)
    return _SEAMS.get(array_key("distance", poly, rv, uvs, size), lambda: _seam_distance(rv, poly, uvs, size))


def _seam_distance(rv: np.ndarray, poly: np.ndarray, corner_uvs: np.ndarray, size: int) -> np.ndarray:
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    nxt = np.where(np.roll(poly, -1, axis=1) >= 0, np.roll(poly, -1, axis=1), poly[:, :1])
    ok = poly >= 0
    a, b = np.minimum(poly, nxt)[ok], np.maximum(poly, nxt)[ok]
    edges, count = np.unique(np.stack([a, b], axis=1), axis=0, return_counts=True)
    border = edges[count == 1]
    n = int(poly.max()) + 1
    graph = sp.coo_matrix((np.ones(len(border)), (border[:, 0], border[:, 1])), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    on_border = np.zeros(n, dtype=bool)
    on_border[border.ravel()] = True
    loops, size_of = np.unique(label[on_border], return_counts=True)
    outer = np.flatnonzero(on_border & (label == loops[np.argmax(size_of)]))
    dist_v, _ = cKDTree(rv[outer]).query(rv[:n])
    flat, _, _, _ = texel_weights(poly, corner_uvs, size)
    out = np.zeros(size * size, dtype=np.float32)
    out[flat] = _texel_points(poly, corner_uvs, size, dist_v[:, None])[:, 0]
    return out.reshape(size, size)


def _seam_ramp(rest_vertices: np.ndarray, polygons: np.ndarray, corner_uvs: np.ndarray, size: int, lo_mm: float,
               hi_mm: float) -> np.ndarray:
    """(size, size) float32 smoothstep of :func:`seam_distance` from ``lo_mm`` to ``hi_mm`` (cached)."""
    key = array_key("ramp", np.asarray(polygons, dtype=np.int64), np.asarray(rest_vertices, dtype=np.float64),
                    np.asarray(corner_uvs), size, lo_mm, hi_mm)
    return _SEAMS.get(key, lambda: _smoothstep(seam_distance(rest_vertices, polygons, corner_uvs, size),
                                                lo_mm, hi_mm).astype(np.float32))


def _cells(a: np.ndarray, k: int) -> np.ndarray:
    """Sum over k x k blocks of (H, W[, C]) (H, W divisible by k): rows of a block first, then its
    columns (six times faster than one reduction over both axes)."""
    return a.reshape(a.shape[0] // k, k, a.shape[1] // k, k, *a.shape[2:]).sum(axis=1).sum(axis=2)


def _table_median(codes: np.ndarray, table: np.ndarray) -> float:
    """``np.median(table[codes])`` for integer ``codes`` into a small ``table`` (256 or 65536
    values), from a histogram of the codes instead of a sort of all of them (same result)."""
    return _hist_median(np.bincount(codes, minlength=len(table)), table)


def _hist_median(counts: np.ndarray, table: np.ndarray) -> float:
    """:func:`_table_median` from the codes' histogram ``counts`` (one count per table entry)."""
    counts = np.asarray(counts, dtype=np.int64)
    nz = np.flatnonzero(counts)
    return _sorted_median(counts[nz], np.asarray(table)[nz])


def _sorted_median(counts: np.ndarray, values: np.ndarray) -> float:
    """The median of ``values`` each repeated ``counts`` (> 0) times. Only the codes that occur
    are sorted (a few thousand of the 65,536 chroma pairs): entries of count 0 never move the
    cumulative count, so the pick, and the result, are those of a sort of the whole table."""
    n = int(counts.sum())
    order = np.argsort(values, kind="stable")
    cum = np.cumsum(counts[order])
    pick = order[np.searchsorted(cum, np.array([(n - 1) // 2, n // 2]), side="right")]
    return np.mean(values[pick])


def _known_histograms(raw: np.ndarray, known: np.ndarray) -> list[np.ndarray]:
    """Per channel, the histogram (256 counts) of the 8-bit values of ``raw`` (S, S, 3) at the
    ``known`` (S, S) texels: OpenCV's masked histogram (no copy of the selected texels), NumPy's
    count of the selection where the counts could exceed float32's exact integers."""
    if known.size < 1 << 24:
        import cv2

        img = np.ascontiguousarray(raw)
        m8 = known.view(np.uint8) if known.dtype == bool and known.flags.c_contiguous else known.astype(np.uint8)
        return [np.rint(cv2.calcHist([img], [c], m8, [256], [0, 256]).ravel()).astype(np.int64) for c in range(3)]
    sel = raw[known]
    return [np.bincount(sel[:, c], minlength=256) for c in range(3)]


def _robust_centre(codes: np.ndarray, table: np.ndarray) -> tuple[float, float]:
    """(median, MAD) of ``table[codes]`` (one histogram of the codes for both)."""
    counts = np.bincount(codes, minlength=len(table))
    nz = np.flatnonzero(counts)
    c, values = counts[nz], np.asarray(table)[nz]
    med = _sorted_median(c, values)
    return med, _sorted_median(c, np.abs(values - med))


def _screened_fill(values: np.ndarray, known: np.ndarray, domain: np.ndarray, anchor: np.ndarray,
                   screen: float = 1e-3) -> np.ndarray:
    """Fill ``values`` (N, N, C) over ``domain & ~known`` by the harmonic interpolant of the known
    cells (4-neighbour Laplacian inside ``domain``, free borders), with a weak pull of strength
    ``screen`` towards ``anchor`` (C,) so that regions without known neighbours are defined."""
    out = values.copy()
    unknown = domain & ~known
    n_u = int(unknown.sum())
    if n_u == 0:
        return out
    idx = np.full(unknown.shape, -1, dtype=np.int64)
    idx[unknown] = np.arange(n_u)
    r, c = np.nonzero(unknown)
    rows, cols = [], []
    diag = np.full(n_u, screen)
    rhs = np.tile(screen * anchor, (n_u, 1)).astype(np.float64)
    n = unknown.shape[0]
    for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        rr, cc = r + dr, c + dc
        ok = (rr >= 0) & (rr < n) & (cc >= 0) & (cc < unknown.shape[1])
        ok[ok] &= domain[rr[ok], cc[ok]]
        diag += ok
        i_ok = np.flatnonzero(ok)
        nb_unknown = idx[rr[ok], cc[ok]]
        u = nb_unknown >= 0
        rows.append(i_ok[u])
        cols.append(nb_unknown[u])
        kn = ~u
        rhs[i_ok[kn]] += values[rr[ok][kn], cc[ok][kn]]
    off_r, off_c = np.concatenate(rows), np.concatenate(cols)
    a = sp.csc_matrix((np.r_[diag, -np.ones(len(off_r))], (np.r_[np.arange(n_u), off_r], np.r_[np.arange(n_u), off_c])),
                      shape=(n_u, n_u))
    sol = spsolve(a, rhs)
    out[unknown] = np.asarray(sol).reshape(n_u, -1)
    return out


def complete_texture(raw: np.ndarray, confidence: np.ndarray, inside: np.ndarray, mirror: np.ndarray | None,
                     coarse: int = COARSE, bleed: int = 2,
                     bleed_index: tuple[np.ndarray, np.ndarray] | None = None,
                     seam: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Replace the low-confidence texels of ``raw`` (S, S, 3) uint8 (see the module notes).

    inside : (S, S) bool texels inside the UV islands.  mirror : from :func:`mirror_texels` or None.
    bleed_index : (grown, source) flat texel indices of the bleed past the islands
        (:func:`.projection.texel_weights`), computed from ``inside`` and ``bleed`` when not given.
    seam : (S, S) weight in [0, 1] of the completed colour against the median seen skin colour
        (1: unchanged; 0 on the border where a full head's skin joins the texture).
    Returns (completed (S, S, 3) uint8, filled (S, S) bool).
    """
    s = raw.shape[0]
    if s % coarse:
        raise ValueError(f"texture side {s} is not a multiple of {coarse}")
    conf = np.where(inside, np.clip(confidence, 0.0, 1.0), 0.0).astype(np.float32)
    known = conf >= KNOWN
    if not known.any():
        return raw.copy(), inside.copy()
    # shading layer: confidence-weighted cell means, filled where cells are not well seen; the
    # products in bands of cell rows (the same sums as over the whole texture, in the cache)
    wsum = _cells(conf, coarse)
    band = coarse * max(1, _BLOCK // (coarse * s))
    cell_sum = np.concatenate([_cells(_LOG32[raw[r:r + band]] * conf[r:r + band, :, None], coarse)
                               for r in range(0, s, band)])
    cell_mean = cell_sum / np.maximum(wsum, 1e-9)[..., None]
    cell_known = wsum / coarse**2 >= 0.4
    cell_domain = _cells(inside.astype(np.float64), coarse) > 0
    anchor = np.array([_hist_median(h, _LOG32) for h in _known_histograms(raw, known)], dtype=np.float32)
    base_c = _screened_fill(np.where(cell_known[..., None], cell_mean, 0.0), cell_known, cell_domain, anchor)
    base_c = np.where(cell_domain[..., None], base_c, anchor)
    import cv2

    base_c = cv2.GaussianBlur(base_c.astype(np.float32), (0, 0), 1.0)
    base = cv2.resize(base_c, (s, s), interpolation=cv2.INTER_LINEAR).reshape(-1, 3)
    # only the texels below full weight change (alpha < 1); the others keep their raw colour
    cf, rf = conf.ravel(), raw.reshape(-1, 3)
    fade = None if seam is None else np.asarray(seam, dtype=np.float32).ravel()
    todo = np.flatnonzero(inside.ravel() & ((cf < 0.8) if fade is None else ((cf < 0.8) | (fade < 1.0))))
    mirror_flat = None if mirror is None else np.asarray(mirror).ravel()
    out = raw.copy()
    out_flat = out.reshape(-1, 3)
    for i in range(0, len(todo), _BLOCK):  # texel by texel: in blocks that stay in the cache
        t = todo[i:i + _BLOCK]
        filled_lg: np.ndarray = base[t]
        if mirror_flat is not None:
            m = mirror_flat[t]
            good = (m >= 0) & (cf[np.maximum(m, 0)] >= 0.8)
            mg = m[good]
            filled_lg[good] += _LOG32[rf[mg]] - base[mg]  # the mirror's detail
        ct = cf[t]
        blend = np.flatnonzero(ct > 0.2)  # alpha > 0: a part of the photo's own colour
        alpha = _smoothstep(ct[blend], 0.2, 0.8)[:, None]
        filled_lg[blend] += alpha * (_LOG32[rf[t[blend]]] - filled_lg[blend])
        if fade is not None:  # towards the skin colour at the seam with a full head
            ft = fade[t]
            near = np.flatnonzero(ft < 1.0)
            filled_lg[near] = anchor + ft[near, None] * (filled_lg[near] - anchor)
        c = np.exp(filled_lg, out=filled_lg)  # back to 8 bits: exp(L) * 259 - 4 + 0.5, in place
        c *= np.float32(259.0)
        c -= np.float32(3.5)
        out_flat[t] = np.clip(c, 0, 255, out=c)  # the assignment truncates, as astype(uint8)
    if bleed_index is None and bleed > 0:
        _, (ir, ic) = ndimage.distance_transform_edt(~inside, return_indices=True)
        g = ndimage.binary_dilation(inside, iterations=bleed) & ~inside
        bleed_index = (np.flatnonzero(g.ravel()), (ir * s + ic).ravel()[g.ravel()])
    if bleed_index is not None:
        flat = out.reshape(-1, 3)
        flat[bleed_index[0]] = flat[bleed_index[1]]
    return out, inside & ~known


def border_distance(view: TexelView, mask: np.ndarray) -> np.ndarray:
    """(size, size) float32: distance (crop pixels) of each texel's image point to the outline of
    the face mask (its small holes closed) or the crop's edge; 0 outside the mask and the islands."""
    closed = _close_small_holes(np.asarray(mask, dtype=np.float32)) >= 0.5
    dist = ndimage.distance_transform_edt(np.pad(closed, 1))[1:-1, 1:-1].astype(np.float32)  # the crop's edge too
    r = dist.shape[0]
    ij = np.clip(view.crop_xy.astype(np.int64), 0, r - 1)
    out = np.zeros(view.size * view.size, dtype=np.float32)
    out[view.inside] = dist[ij[:, 1], ij[:, 0]]
    return out.reshape(view.size, view.size)


# chroma (log R - log G, log G - log B) of every pair of 8-bit values, indexed by 256 a + b
_CHROMA = (_LOG64[:, None] - _LOG64[None, :]).ravel()


def _chroma_codes(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(R, G) and (G, B) pair codes into :data:`_CHROMA` of (N, 3) uint8 colours."""
    c = rgb.astype(np.int64)
    return c[:, 0] * 256 + c[:, 1], c[:, 1] * 256 + c[:, 2]


def border_colour_weight(raw: np.ndarray, confidence: np.ndarray, border: np.ndarray, near_px: float,
                         k: float = 3.0, outer: np.ndarray | None = None) -> np.ndarray:
    """(S, S) weight in [0, 1] that removes, within ``near_px`` of the mask's outline, texels whose
    colour is far (more than ``k`` robust deviations, in log colour or in chroma) from the well-seen skin: the
    fringe of hair, a hat's brim or a collar the mask let through. Away from the outline (eyes,
    brows, lips) every colour is kept; so is every texel whose confidence is already 0.

    outer : (S, S) in [0, 1], texels tested as if on the outline whatever the mask says (the face's
        outer band, :data:`OUTER_MM`: a white collar on the neck, hair on the sides); they are
        left out of the skin statistics."""
    near_all = 1.0 - _smoothstep(border.ravel(), 0.5 * near_px, near_px)
    if outer is not None:
        near_all = np.maximum(near_all, np.asarray(outer, dtype=np.float64).ravel())
    good = ((confidence.ravel() >= 0.8) & (near_all == 0)).reshape(confidence.shape)
    out = np.ones(confidence.shape, dtype=np.float32)
    if good.sum() < 100:
        return out
    raw_good = raw[good]
    band = np.flatnonzero((near_all > 0) & (confidence.ravel() > 0))
    raw_band = raw.reshape(-1, 3)[band]
    # in log colour per channel, and in chroma, which shading and wrinkles hardly move: a white
    # collar or a blue background is far from skin there even when the skin's brightness varies
    z = np.zeros(len(band))
    for c in range(3):
        med, mad = _robust_centre(raw_good[:, c], _LOG64)
        z = np.maximum(z, np.abs(_LOG64[raw_band[:, c]] - med) / (1.4826 * mad + 0.02))
    for good_codes, band_codes in zip(_chroma_codes(raw_good), _chroma_codes(raw_band)):
        med, mad = _robust_centre(good_codes, _CHROMA)
        z = np.maximum(z, np.abs(_CHROMA[band_codes] - med) / (1.4826 * mad + 0.02) * (k / CHROMA_K))
    outlier = 1.0 - _smoothstep(z, k, 1.5 * k)
    out.ravel()[band] = 1.0 - near_all[band] * (1.0 - outlier)
    return out


def layout_tables(rest_vertices: np.ndarray, polygons: np.ndarray, corner_uvs: np.ndarray,
                  size: int = 1024) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What :func:`clean_texture` needs of the layout alone (computed once per layout, then
    cached): the mirror look-up, the ramp of the border fade (0 on the seam to 1 at
    :data:`SEAM_MM`) and that of the outer band of the colour test (:data:`OUTER_MM`)."""
    return (mirror_texels(rest_vertices, polygons, corner_uvs, size),
            _seam_ramp(rest_vertices, polygons, corner_uvs, size, 0.0, SEAM_MM),
            _seam_ramp(rest_vertices, polygons, corner_uvs, size, 0.5 * OUTER_MM, OUTER_MM))


def clean_texture(photo: np.ndarray, camera: CropCamera, vertices: np.ndarray, rest_vertices: np.ndarray,
                  polygons: np.ndarray, corner_uvs: np.ndarray, mask: np.ndarray | None = None, size: int = 1024,
                  depth_crop: np.ndarray | None = None) -> TextureResult:
    """Project the photo (:func:`.projection.bake_texture`), score each texel and complete it.

    vertices : (V, 3) the registered mesh, label frame mm.  rest_vertices : (V, 3) the template's
    symmetric rest shape (model frame, mm) for the mirror look-up.  mask : the networks' mask.
    """
    view = texel_view(camera, vertices, polygons, corner_uvs, (photo.shape[0], photo.shape[1]), size,
                      depth_crop=depth_crop)
    raw, _ = bake_texture(photo, camera, vertices, polygons, corner_uvs, size=size, view=view)
    conf = texel_confidence(camera, vertices, polygons, corner_uvs, (photo.shape[0], photo.shape[1]), mask=mask,
                            size=size, view=view)
    flat_inside, _, grown, source = texel_weights(polygons, corner_uvs, size)
    inside = np.zeros(size * size, dtype=bool)
    inside[flat_inside] = True
    mirror, seam, outer_ramp = layout_tables(rest_vertices, polygons, corner_uvs, size)
    if mask is not None:
        conf *= border_colour_weight(raw, conf, border_distance(view, mask), near_px=BORDER_BAND * camera.resolution,
                                     outer=1.0 - outer_ramp)
    tex, filled = complete_texture(raw, conf, inside.reshape(size, size), mirror, bleed_index=(grown, source),
                                   seam=seam)
    return TextureResult(texture=tex, raw=raw, confidence=conf, filled=filled)
