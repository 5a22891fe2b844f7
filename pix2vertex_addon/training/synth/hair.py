"""Hair with volume: an RGBA occluder layer around the top and sides of the projected head.

The scalp of the render mesh above a random hairline (lower at the temples, over the ears and at
the nape when the style says so) is pushed outwards along its normals by a random thickness
(more on top), sampled densely (vertices and points inside its triangles) and projected; long
hair adds curtains hanging from the sides and back (along the head's own down axis). A point is kept where it
lies in front of the rendered surface or outside it (z-buffer test), so hair behind the head never
covers the face. The kept points are splatted on a coarse grid, closed by a blur and thresholded
into a smooth silhouette with strand-broken edges; colour, strands radiating from the crown,
Lambert/sheen shading from the sample's lights. Everything is drawn in image space after the
face is shaded, so labels stay exact: the generator removes pixels with alpha >= 0.5 from the
mask. No ``bpy``.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from . import appearance
from .mesh import RenderMesh

__all__ = ["HAIR_STYLES", "hair_layer"]

HAIR_STYLES = {"none": 0.2, "cap": 0.5, "long": 0.3}  # probabilities (bald heads: none)


def _smoothstep(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _blur(a: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of a float [0, 1] grid (through an 8-bit image)."""
    im = Image.fromarray((np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8))
    return np.asarray(im.filter(ImageFilter.GaussianBlur(sigma)), dtype=np.float32) / 255.0


def draw_hair(rng: np.random.Generator) -> dict:
    """The hair layer's random draws, in their order (also used by the batched generator)."""
    names = list(HAIR_STYLES)
    d: dict = {"style": names[int(rng.choice(len(names), p=list(HAIR_STYLES.values())))]}
    d["thick"] = float(np.exp(rng.uniform(np.log(4.0), np.log(45.0))))  # mm on top of the head
    d["front"] = float(rng.uniform(-1.5, 1.0))  # cm: hairline above (+) / below (-) the painted one
    d["cover_ears"] = bool(rng.random() < 0.5)
    d["drop"] = float(rng.uniform(2.5, 6.0) if d["cover_ears"] else rng.uniform(0.0, 2.0))  # cm, sides
    d["nape"] = float(rng.uniform(0.0, 5.0))  # cm further down at the back
    d["length"] = float(rng.uniform(60.0, 320.0))  # mm below the lowest scalp point (long hair)
    d["flare"] = float(rng.uniform(-0.05, 0.35))
    d["phase"] = rng.uniform(0, 2 * np.pi, 3)
    d["freq"] = rng.normal(0, 0.5, (3, 3))
    d["wave"] = (float(rng.uniform(0.0, 0.06)), float(rng.uniform(8.0, 30.0)))
    d["n_turns"] = float(rng.uniform(1.0, 3.0))
    d["colour_jit"] = np.exp(rng.normal(0, 0.08, 3))
    d["sheen"] = float(rng.uniform(0.05, 0.35))
    return d


def hair_layer(rng: np.random.Generator, rm: RenderMesh, X: np.ndarray, normals: np.ndarray,
               rotation: np.ndarray, f: float, R: int, covered: np.ndarray, depth: np.ndarray, app: dict, light: dict,
               exposure: float, enabled: bool = True) -> tuple[np.ndarray | None, dict]:
    """RGBA (R, R, 4) float32 sRGB hair layer (alpha in [0, 1]) or None, and its description.

    Parameters
    ----------
    rng : the sample's "hair" stream (all draws are made even when disabled).
    rm : render mesh; X : (V, 3) posed vertices, camera frame, mm; normals : (V, 3) unit.
    rotation : (3, 3) model-to-camera rotation of the head (``meta["rotation"]``).
    f : focal length, px; R : resolution.
    covered : (R, R) bool, pixels with a rendered surface; depth : (R, R) their depth, mm.
    app, light : the sample's appearance and light parameters.
    exposure : linear gain the face received (so hair and skin share one exposure).
    """
    d = draw_hair(rng)
    style, thick, front, cover_ears, drop, nape = (d[k] for k in ("style", "thick", "front", "cover_ears",
                                                                 "drop", "nape"))
    length, flare, phase, freq, wave = d["length"], d["flare"], d["phase"], d["freq"], d["wave"]
    n_turns, colour_jit, sheen = d["n_turns"], d["colour_jit"], d["sheen"]
    info = {"style": style, "thickness_mm": thick, "cover_ears": cover_ears}
    if not enabled or app["bald"] or style == "none":
        return None, {**info, "style": "none" if not app["bald"] else "bald", "drawn": False}

    ns = rm.n_skin_vertices
    mk = rm.masks
    neu = rm.neutral_cm[:ns]
    ear_z = float(rm.neutral_cm[rm.landmarks_68[0], 2])
    side = np.clip((ear_z - 0.5 - neu[:, 2]) / 1.5, 0.0, 1.0)  # ears and the back of the head
    h0 = app["hairline_cm"] + front
    line = h0 - side * (drop + max(h0, 0.0)) - mk["behind"][:ns] * nape
    w = 1.0 / (1.0 + np.exp(np.clip(-(mk["height"][:ns] - line) / 0.4, -50, 50)))
    tri = rm.skin_triangles
    on = w > 0.5
    tri = tri[on[tri[:, 0]] & on[tri[:, 1]] & on[tri[:, 2]]]
    if len(tri) == 0:
        return None, {**info, "drawn": False}
    used = np.zeros(ns, dtype=bool)
    used[tri.ravel()] = True
    vid = np.flatnonzero(used)  # the scalp vertices of the hair (sorted)
    # thickness: more on top, slow random variation over the head, none at the hairline
    # (computed where it is used: at the hair's vertices)
    sn = np.sin(neu[vid] @ freq + phase)
    var = 1 + 0.25 * (sn[:, 0] + sn[:, 1] + sn[:, 2]) / 3  # = sn.sum(axis=1), faster
    top = np.clip(mk["height"][vid] / 8.0, 0.0, 1.0)
    t_mm = (1.5 + thick * (0.45 + 0.55 * top) * var) * _smoothstep((w[vid] - 0.3) / 0.5)
    Xs = np.zeros((ns, 3))
    Xs[vid] = X[vid] + normals[vid] * t_mm[:, None]
    B = np.array([[1 / 3, 1 / 3, 1 / 3], [2 / 3, 1 / 6, 1 / 6], [1 / 6, 2 / 3, 1 / 6],
                  [1 / 6, 1 / 6, 2 / 3]], dtype=np.float64)
    pts = [Xs[vid]] + [Xs[tri[:, 0]] * b[0] + Xs[tri[:, 1]] * b[1] + Xs[tri[:, 2]] * b[2] for b in B]
    if style == "long":
        # curtains hanging from the lower edge of the hair at the sides and back
        s_ok = vid[side[vid] > 0.5]
        if len(s_ok):
            s_ok = s_ok[:: max(1, len(s_ok) // 250)]
            seeds = Xs[s_ok]
            down, lat = -rotation[:, 1], rotation[:, 0]  # the head's own down and left, camera frame
            lowest = (Xs[vid] @ down).max()
            span = lowest + length - seeds @ down  # mm
            # steps of at most half a grid cell (R / 8 px) along the longest curtain's image
            n_steps = int(np.clip(span.max() * f / seeds[:, 2].min() / (R / 8), 8, 64))
            hang = span[None, :] * np.linspace(0.0, 1.0, n_steps)[:, None]
            out_dir = down[None, :] + (np.sign(neu[s_ok, 0]) * flare)[:, None] * lat[None, :]
            pts.append((seeds[None] + hang[..., None] * out_dir[None]).reshape(-1, 3))
    P = np.concatenate(pts)
    P = P[P[:, 2] > 1.0]
    u = f * P[:, 0] / P[:, 2] + R / 2
    v = f * P[:, 1] / P[:, 2] + R / 2
    inside = (u >= 0) & (u < R) & (v >= 0) & (v < R)
    P, u, v = P[inside], u[inside], v[inside]
    r, c = v.astype(np.int64), u.astype(np.int64)
    keep = ~covered[r, c] | (P[:, 2] < depth[r, c] + 2.0)
    u, v = u[keep], v[keep]
    if len(u) == 0:
        return None, {**info, "drawn": False}

    # silhouette: occupancy on a coarse grid, closed by a blur (grid and blur scale with R)
    G = max(8, R // 4)
    occ = np.zeros((G, G), dtype=np.float32)
    occ[(v * G / R).astype(np.int64), (u * G / R).astype(np.int64)] = 1.0
    D_g = np.clip(_blur(occ, 1.1) * 2.2, 0, 1)
    gys, gxs = np.nonzero(D_g > 0)
    if len(gys) == 0:
        return None, {**info, "drawn": False}
    # the pixel window the hair can reach (grid cells with any density, one cell of margin)
    y0, y1 = max(0, (gys.min() - 1) * R // G), min(R, (gys.max() + 2) * R // G)
    x0, x1 = max(0, (gxs.min() - 1) * R // G), min(R, (gxs.max() + 2) * R // G)
    box = (x0 * G / R, y0 * G / R, x1 * G / R, y1 * G / R)
    win = (x1 - x0, y1 - y0)

    def up(a):  # grid -> the pixel window, bilinear
        return np.asarray(Image.fromarray(np.ascontiguousarray(a, dtype=np.float32), mode="F").resize(
            win, Image.Resampling.BILINEAR, box=box), dtype=np.float32)

    # shading on the grid (smooth): a normal from the silhouette's slope, facing the camera
    # inside and turning sideways at the edges; Lambert + sheen from the sample's lights
    gy, gx = np.gradient(_blur(D_g, 2.5))
    N = np.stack([-gx * 4.0, -gy * 4.0, -np.ones_like(gx)], axis=-1)
    N /= np.sqrt(N[..., 0] * N[..., 0] + N[..., 1] * N[..., 1] + N[..., 2] * N[..., 2])[..., None]
    shade = np.float32(light["ambient"]) * np.asarray(light["ambient_colour"], dtype=np.float32)
    shade = np.broadcast_to(shade, N.shape).copy()
    if light["key"] > 0:
        L = np.asarray(light["key_dir"], dtype=np.float32)
        ndl = N @ L
        kc = np.float32(light["key"]) * np.asarray(light["key_colour"], dtype=np.float32)
        Hv = L + np.array([0, 0, -1], dtype=np.float32)
        Hv /= np.linalg.norm(Hv)
        spec = np.clip(N @ Hv, 0, 1) ** 12 * sheen * (ndl > 0)
        shade += (np.clip(ndl, 0, None) + spec)[..., None] * kc
    if light["fill"] > 0:
        fd = np.asarray(light["fill_dir"], dtype=np.float32)
        shade += np.float32(light["fill"]) * np.clip(N @ fd, 0, None)[..., None]
    alb = appearance.srgb_to_linear(np.asarray(app["hair_srgb"]) * colour_jit).astype(np.float32)
    base = alb * shade * np.float32(exposure) * (0.65 + 0.35 * np.clip(D_g * 1.3, 0, 1))[..., None]
    base = appearance.linear_to_srgb(base)  # (G, G, 3) sRGB

    # per pixel: density, strands radiating from the crown (the topmost hair), wavy
    Dw = up(D_g)
    crown = np.array([u[v < np.percentile(v, 3) + 1].mean(), v.min() - 0.15 * R])
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32) + np.float32(0.5)
    dx, dy = xx - np.float32(crown[0]), yy - np.float32(crown[1])
    rad = np.sqrt(dx * dx + dy * dy)
    ang = np.arctan2(dx, dy) + np.float32(wave[0]) * np.sin(rad * np.float32(256 / (wave[1] * R)))
    bank = appearance.noise_bank()
    uv = np.stack([(ang * np.float32(256 * n_turns / (2 * np.pi))).ravel(),
                   (rad * np.float32(64 / R)).ravel()], axis=1)
    strand = appearance.lookup(bank["strand"], uv, app["noise_offset"][:2], bilinear=False).reshape(Dw.shape)
    coarse = appearance.lookup(bank["mid"], uv * np.float32(0.25), app["noise_offset"][2:],
                      bilinear=False).reshape(Dw.shape)
    alpha = _smoothstep((Dw - 0.3) / 0.3 + 1.2 * strand)
    # texture in sRGB (about the linear factor ** 0.45)
    tex = np.clip(1 + 0.6 * strand, 0.45, None) * np.exp(0.11 * coarse)
    out = np.zeros((R, R, 4), dtype=np.float32)
    for k in range(3):
        out[y0:y1, x0:x1, k] = np.minimum(up(base[..., k]) * tex, 1.0)
    out[y0:y1, x0:x1, 3] = alpha
    return out, {**info, "drawn": True, "coverage": float((alpha >= 0.5).sum() / (R * R))}
