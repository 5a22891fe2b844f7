"""Procedural appearance of synthetic samples: albedo, backgrounds, occluders, camera effects.

Colours are linear RGB in [0, 1] unless a name says sRGB. No ``bpy``.
"""

from __future__ import annotations

import io
import threading
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from . import mesh

__all__ = [
    "background",
    "degrade",
    "noise_bank",
    "occluders",
    "sample_appearance",
    "vertex_albedo",
]


def srgb_to_linear(c):
    c = np.asarray(c, dtype=np.float64)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def _srgb_exact(c):
    return np.where(c <= 0.0031308, c * 12.92, 1.055 * np.power(c, 1 / 2.4) - 0.055)


_LUT_N = 8192
# sRGB curve sampled on a grid finer near 0 (index = sqrt(linear) * (N - 1))
_SRGB_LUT = _srgb_exact((np.arange(_LUT_N, dtype=np.float64) / (_LUT_N - 1)) ** 2).astype(np.float32)


def linear_to_srgb(c):
    """Linear [0, 1] to sRGB [0, 1] (float32, table lookup; clips)."""
    c = np.clip(np.asarray(c, dtype=np.float32), 0.0, 1.0)
    return _SRGB_LUT[(np.sqrt(c) * (_LUT_N - 1) + 0.5).astype(np.int32)]


# Skin tones from very light to very dark (sRGB 0..255), interpolated by a tone t in [0, 1].
_SKIN_SRGB = np.array([
    [247, 224, 208], [236, 196, 170], [222, 172, 140], [198, 145, 108],
    [160, 110, 78], [120, 80, 56], [86, 56, 40], [58, 38, 30],
]) / 255.0
_HAIR_SRGB = np.array([
    [25, 20, 18], [45, 32, 25], [75, 50, 35], [110, 75, 45], [160, 120, 70],
    [200, 170, 120], [130, 60, 30], [150, 150, 150], [210, 210, 205],
]) / 255.0
_HAIR_P = np.array([0.25, 0.2, 0.15, 0.1, 0.06, 0.06, 0.06, 0.07, 0.05])
_IRIS_SRGB = np.array([
    [70, 40, 20], [40, 25, 15], [110, 80, 40], [80, 100, 60], [90, 130, 170], [120, 130, 135],
]) / 255.0
_IRIS_P = np.array([0.35, 0.25, 0.12, 0.08, 0.12, 0.08])


def sample_appearance(rng: np.random.Generator) -> dict:
    """Random appearance parameters (plain floats/lists, stored in the sample's meta)."""
    tone = float(rng.uniform(0.0, 1.0))
    skin = np.array([np.interp(tone * 7, np.arange(8), _SKIN_SRGB[:, k]) for k in range(3)])
    skin = skin * np.exp(rng.normal(0, [0.04, 0.05, 0.07]))  # undertone: redder / yellower
    # hair: a palette colour, brighter or darker, with only a slight change of hue
    hair = _HAIR_SRGB[rng.choice(len(_HAIR_SRGB), p=_HAIR_P)] * np.exp(rng.normal(0, 0.15) + rng.normal(0, 0.03, 3))
    if tone > 0.6 and rng.random() < 0.8:
        hair = _HAIR_SRGB[rng.integers(0, 2)] * np.exp(rng.normal(0, 0.15) + rng.normal(0, 0.03, 3))
    brow_col = hair * rng.uniform(0.6, 1.0) if rng.random() < 0.85 else _HAIR_SRGB[1]
    iris = _IRIS_SRGB[rng.choice(len(_IRIS_SRGB), p=_IRIS_P)] * np.exp(rng.normal(0, 0.12, 3))
    if tone > 0.5:
        iris = _IRIS_SRGB[rng.integers(0, 2)] * np.exp(rng.normal(0, 0.1, 3))
    lipstick = None
    if rng.random() < 0.1:
        lipstick = [[0.6, 0.08, 0.12], [0.75, 0.35, 0.4], [0.35, 0.08, 0.1], [0.55, 0.25, 0.2]][
            rng.integers(4)]
    return {
        "skin_tone": tone,
        "skin_srgb": np.clip(skin, 0, 1).tolist(),
        "hair_srgb": np.clip(hair, 0, 1).tolist(),
        "brow_srgb": np.clip(brow_col, 0, 1).tolist(),
        "iris_srgb": np.clip(iris, 0, 1).tolist(),
        "lipstick_srgb": lipstick,
        "lip_red": float(rng.uniform(0.3, 1.0)),
        "cheek_red": float(rng.uniform(0.0, 0.35)),
        "brow_density": float(rng.uniform(0.4, 1.0)),
        "eye_dark": float(rng.uniform(0.0, 0.6)),
        "beard": float(rng.uniform(0.2, 0.8)) if rng.random() < 0.25 else 0.0,
        "freckles": float(rng.uniform(0.2, 1.0)) if rng.random() < 0.2 else 0.0,
        "bald": bool(rng.random() < 0.08),
        "hairline_cm": float(rng.uniform(3.0, 6.5)),
        "pores": float(rng.uniform(0.01, 0.04)),
        "blotches": float(rng.uniform(0.01, 0.035)),
        "sclera_srgb": (np.array([0.86, 0.8, 0.76]) * rng.uniform(0.75, 0.95)
                        * np.exp(rng.normal(0, [0.01, 0.03, 0.03]))).clip(0, 1).tolist(),
        "teeth_srgb": (np.array([0.9, 0.86, 0.76]) * rng.uniform(0.75, 1.0)).tolist(),
        "pupil": float(rng.uniform(0.25, 0.5)),
        "noise_offset": rng.integers(0, 256, size=4).tolist(),
    }


def paint_eyes(alb: np.ndarray, neu: np.ndarray, centres: np.ndarray, app: dict) -> np.ndarray:
    """Iris, pupil and limbus on eyeball pixels, from their neutral positions (P, 3) cm."""
    left = neu[:, 0] > 0
    d = neu - np.where(left[:, None], centres[0], centres[1])
    dist = np.sqrt(d[:, 0] * d[:, 0] + d[:, 1] * d[:, 1] + d[:, 2] * d[:, 2])
    cos_t = d[:, 2] / (dist + 1e-9)
    r = np.arccos(np.clip(cos_t, -1, 1)) / IRIS_HALF_ANGLE  # 1 at the limbus
    ic = srgb_to_linear(app["iris_srgb"]).astype(np.float32)
    iris = ic * (0.6 + 0.7 * r[:, None])
    out = np.where((r < 1.0)[:, None], iris, alb)
    limbus = np.clip(1 - np.abs(r - 1.0) / 0.12, 0, 1)[:, None]
    out = out * (1 - 0.6 * limbus)
    out = np.where((r < app["pupil"])[:, None], 0.01, out)
    # the upper lid and the socket shade the eyeball (its top and sides most)
    rad = dist + 1e-9
    up = np.clip(d[:, 1] / rad, 0, 1)
    side = 1 - np.clip(cos_t, 0, 1)
    out = out * (1 - 0.45 * up - 0.4 * side)[:, None]
    return out.astype(np.float32)


IRIS_HALF_ANGLE = 0.5  # radians: iris radius ~6 mm on a ~12 mm eyeball


def vertex_albedo(rm: mesh.RenderMesh, app: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-vertex linear albedo (V, 3), specular strength (V,) and hair weight (V,), float32."""
    mk = rm.masks
    nv, ns = rm.n_vertices, rm.n_skin_vertices  # skin and head are the prefix [0, ns)
    f32 = np.float32
    skin = srgb_to_linear(app["skin_srgb"]).astype(f32)
    hair = srgb_to_linear(app["hair_srgb"]).astype(f32)
    brow = srgb_to_linear(app["brow_srgb"]).astype(f32)
    sk = {k: mk[k][:ns, None] for k in ("lips", "cheeks", "nose", "eyes", "brow", "beard")}
    # Lips: redder and darker; cheeks: blush; eye surroundings and lash lines: darker.
    lip_col = skin * (np.array([0.85, 0.55, 0.58]) ** (1 + app["lip_red"])).astype(f32)
    if app["lipstick_srgb"] is not None:
        lip_col = 0.3 * lip_col + 0.7 * srgb_to_linear(app["lipstick_srgb"]).astype(f32)
    a = skin + sk["lips"] * (lip_col - skin)
    shade = 1 - (sk["cheeks"] * app["cheek_red"] + sk["nose"] * (0.6 * app["cheek_red"])) * \
        np.array([0.0, 0.25, 0.25], dtype=f32)
    shade = shade * (1 - sk["eyes"] * (app["eye_dark"] * np.array([0.3, 0.35, 0.3], dtype=f32)))
    shade = shade * (1 - 0.8 * mk["lash_up"][:ns, None] - 0.3 * mk["lash_lo"][:ns, None])
    a = a * shade
    b = sk["brow"] * f32(app["brow_density"])
    a = a + b * (brow - a)
    if app["beard"] > 0:
        bd = sk["beard"] * f32(app["beard"] * 0.35)
        a = a + bd * (hair - a)
    hair_w = np.zeros(nv, dtype=f32)
    if not app["bald"]:
        # Scalp hair above a hairline (lower behind the ears).
        h0 = app["hairline_cm"]
        line = h0 - mk["behind"][:ns] * (h0 + 3.0)
        hair_w[:ns] = 1 / (1 + np.exp(np.clip(-(mk["height"][:ns] - line) / 0.35, -50, 50)))
        a = a + hair_w[:ns, None] * (hair - a)
    alb = np.empty((nv, 3), dtype=f32)
    alb[:ns] = a
    part = rm.part
    alb[ns:] = mk["inner_colour"][ns:]
    alb[part == mesh.TEETH] = srgb_to_linear(app["teeth_srgb"])
    alb[part == mesh.SCLERA] = srgb_to_linear(app["sclera_srgb"])
    alb[ns:] *= mk["inner_ao"][ns:, None]
    spec = mk["spec_base"].copy()
    spec[:ns] = np.where(hair_w[:ns] > 0.5, f32(0.15), spec[:ns])
    return alb, spec, hair_w


# -- noise ------------------------------------------------------------------------------------
_bank: dict | None = None
_bank_lock = threading.Lock()


def _blurred_noise(rng, n, sigma):
    img = Image.fromarray(((rng.random((n, n)) * 255)).astype(np.uint8))
    a = np.asarray(img.filter(ImageFilter.GaussianBlur(sigma)), dtype=np.float32)
    return (a - a.mean()) / (a.std() + 1e-6)


def noise_bank() -> dict:
    """Fixed 256x256 zero-mean unit-variance noise textures (same in every process)."""
    global _bank
    with _bank_lock:
        if _bank is None:
            rng = np.random.default_rng(20170)
            _bank = {
                "fine": _blurred_noise(rng, 256, 0.6),
                "mid": _blurred_noise(rng, 256, 3.0),
                "coarse": _blurred_noise(rng, 256, 10.0),
                "strand": np.asarray(
                    Image.fromarray(((rng.random((256, 256))) * 255).astype(np.uint8)).resize(
                        (256, 16)).resize((256, 256), Image.Resampling.BILINEAR), dtype=np.float32) / 128 - 1,
            }
        return _bank


def lookup(tex: np.ndarray, uv: np.ndarray, offset=(0, 0), bilinear: bool = True) -> np.ndarray:
    """Bilinear (or nearest), wrapping lookup of a (S, S) texture at texel coordinates uv (P, 2)."""
    s = tex.shape[0]
    if not bilinear:
        i = (uv[:, 1].astype(np.int64) + offset[1]) % s
        j = (uv[:, 0].astype(np.int64) + offset[0]) % s
        return tex[i, j]
    fu = np.floor(uv[:, 0])
    fv = np.floor(uv[:, 1])
    wu = (uv[:, 0] - fu).astype(np.float32)
    wv = (uv[:, 1] - fv).astype(np.float32)
    j0 = (fu.astype(np.int64) + offset[0]) % s
    i0 = (fv.astype(np.int64) + offset[1]) % s
    j1 = (j0 + 1) % s
    i1 = (i0 + 1) % s
    top = tex[i0, j0] * (1 - wu) + tex[i0, j1] * wu
    bot = tex[i1, j0] * (1 - wu) + tex[i1, j1] * wu
    return top * (1 - wv) + bot * wv


# -- backgrounds ------------------------------------------------------------------------------
def _fractal(rng, R, octaves=5, base=4):
    """Fractal value noise in [0, 1], (R, R) float32: built at <= 128 px, resized once."""
    S = min(R, 128)
    out = np.zeros((S, S), dtype=np.float32)
    amp, tot = 1.0, 0.0
    for o in range(octaves):
        n = min(base * 2 ** o, S)
        small = Image.fromarray((rng.random((n, n)) * 255).astype(np.uint8))
        out += amp * np.asarray(small.resize((S, S), Image.Resampling.BICUBIC), dtype=np.float32) / 255.0
        tot += amp
        amp *= rng.uniform(0.4, 0.7)
    out = (out - out.min()) / (np.ptp(out) + 1e-6)
    if S != R:
        out = np.asarray(Image.fromarray(out, mode="F").resize((R, R), Image.Resampling.BICUBIC))
    return out


def _palette(rng, k, skin=None):
    cols = rng.random((k, 3)) ** rng.uniform(0.6, 2.0)
    if skin is not None and rng.random() < 0.3:
        cols[rng.integers(k)] = np.clip(np.asarray(skin) * rng.uniform(0.8, 1.2), 0, 1)
    return cols


PHOTO_BACKGROUND_P = 0.5  # share of natural-image backgrounds (when photos are available)


def background(rng: np.random.Generator, R: int, skin_srgb) -> tuple[np.ndarray, dict]:
    """(R, R, 3) float32 sRGB background in [0, 1] (not trivially separable from a face) and
    what it is: ``{"kind": "photo", "source": stem, ...}`` or ``{"kind": "procedural"}``.

    Half the time a random crop of a natural image (:mod:`.photos`, when scikit-image or
    matplotlib is installed), otherwise procedural, drawn at no more than 128 px and resized.
    """
    if rng.random() < PHOTO_BACKGROUND_P:
        from .photos import photo_background

        got = photo_background(rng, R)
        if got is not None:
            return got
    return _procedural_background(rng, R, skin_srgb), {"kind": "procedural"}


def _procedural_background(rng: np.random.Generator, R: int, skin_srgb) -> np.ndarray:
    if R > 128:
        small = _procedural_background(rng, 128, skin_srgb)
        big = Image.fromarray((small * 255 + 0.5).astype(np.uint8)).resize((R, R), Image.Resampling.BILINEAR)
        return np.asarray(big, dtype=np.float32) / 255.0
    skin = np.asarray(skin_srgb)
    kind = rng.choice(5, p=[0.15, 0.3, 0.15, 0.25, 0.15])
    yy, xx = np.mgrid[0:R, 0:R].astype(np.float32) / R
    if kind == 0:  # gradient
        a = rng.uniform(0, 2 * np.pi)
        t = np.cos(a) * xx + np.sin(a) * yy
        t = (t - t.min()) / (np.ptp(t) + 1e-6)
        c = _palette(rng, 2, skin)
        img = c[0] * (1 - t[..., None]) + c[1] * t[..., None]
    elif kind == 1:  # fractal noise mapped to a palette
        t = _fractal(rng, R, octaves=int(rng.integers(3, 7)), base=int(rng.integers(2, 6)))
        c = _palette(rng, 3, skin)
        t = t[..., None]
        img = np.where(t < 0.5, c[0] * (1 - 2 * t) + c[1] * 2 * t, c[1] * (2 - 2 * t) + c[2] * (2 * t - 1))
    elif kind == 2:  # stripes / checker
        a = rng.uniform(0, np.pi)
        f = rng.uniform(3, 25)
        u = np.cos(a) * xx + np.sin(a) * yy
        v = -np.sin(a) * xx + np.cos(a) * yy
        s = np.sin(2 * np.pi * f * u)
        if rng.random() < 0.5:
            s = s * np.sin(2 * np.pi * f * v)
        t = (s > 0).astype(np.float32)[..., None]
        c = _palette(rng, 2, skin)
        img = c[0] * (1 - t) + c[1] * t
        img = np.asarray(Image.fromarray((img * 255).astype(np.uint8)).filter(
            ImageFilter.GaussianBlur(rng.uniform(0, 2) * R / 256)), dtype=np.float32) / 255
    else:  # clutter of shapes over a noisy base ("indoor scene")
        t = _fractal(rng, R, 4, 2)[..., None]
        c = _palette(rng, 2, skin)
        img = c[0] * (1 - t) + c[1] * t
        canvas = Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8))
        d = ImageDraw.Draw(canvas)
        for _ in range(int(rng.integers(5, 30))):
            col = tuple(int(x) for x in (_palette(rng, 1, skin)[0] * 255))
            x0, y0 = rng.uniform(-0.2, 1.0, 2) * R
            w, h = rng.uniform(0.05, 0.6, 2) * R
            if rng.random() < 0.5:
                d.rectangle([x0, y0, x0 + w, y0 + h], fill=col)
            else:
                d.ellipse([x0, y0, x0 + w, y0 + h], fill=col)
        if kind == 4:
            canvas = canvas.filter(ImageFilter.GaussianBlur(rng.uniform(1, 6) * R / 256))
        img = np.asarray(canvas, dtype=np.float32) / 255
    if rng.random() < 0.5:  # shading over the background
        t = _fractal(rng, R, 2, 2)[..., None]
        img = img * (0.6 + 0.6 * t)
    return np.clip(img, 0, 1).astype(np.float32)


def torso(rng: np.random.Generator, R: int, img: np.ndarray, neck_xy, neck_w_px: float, skin_srgb):
    """Draw clothing/shoulders below the neck into the (R, R, 3) sRGB background, in place."""
    pil = Image.fromarray((img * 255).astype(np.uint8))
    d = ImageDraw.Draw(pil)
    cx, cy = neck_xy
    col = tuple(int(x) for x in (_palette(rng, 1, skin_srgb)[0] * 255))
    w = neck_w_px * rng.uniform(3.0, 4.5)
    top = cy + neck_w_px * rng.uniform(0.2, 0.8)
    d.ellipse([cx - w, top, cx + w, top + 2.5 * w], fill=col)
    skin = tuple(int(x) for x in np.clip(np.asarray(skin_srgb) * 0.7 * 255, 0, 255))
    d.rectangle([cx - neck_w_px * 0.5, cy - neck_w_px, cx + neck_w_px * 0.5, top + 0.1 * w], fill=skin)
    img[:] = np.asarray(pil, dtype=np.float32) / 255


# -- occluders --------------------------------------------------------------------------------
def occluders(rng: np.random.Generator, R: int, lm2d: np.ndarray, app: dict,
              enabled: bool = True) -> tuple[np.ndarray | None, dict]:
    """An RGBA (R, R, 4) float32 layer of occluders in front of the face, or None.

    Hair strands over the forehead, a hand-like blob, glasses frames. The draws are made even
    when ``enabled`` is false, so the other streams do not shift.
    """
    p = rng.random(3)
    info = {"hair": bool(p[0] < 0.2), "hand": bool(p[1] < 0.1), "glasses": bool(p[2] < 0.15)}
    if not enabled or not any(info.values()):
        return None, {k: False for k in info}
    ss = 2  # supersampling for antialiased edges
    S = R * ss
    layer = Image.new("RGBA", (S, S), (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    lm = lm2d * ss
    face_w = np.ptp(lm[:, 0])
    scale = face_w / 150.0
    if info["glasses"]:
        col = tuple(int(x) for x in (rng.random(3) * rng.uniform(0.05, 0.8) * 255)) + (255,)
        wd = max(1, int(rng.uniform(1.5, 5) * scale * 4))
        tint = rng.random() < 0.3
        rims = []
        for a, b in ((36, 42), (42, 48)):
            c = lm[a:b].mean(axis=0)
            ew = np.ptp(lm[a:b, 0])
            hw, hh = ew * rng.uniform(0.8, 1.1), ew * rng.uniform(0.5, 0.75)
            box = [c[0] - hw, c[1] - hh * 0.9, c[0] + hw, c[1] + hh * 1.1]
            rims.append(box)
            if tint:
                d.ellipse(box, fill=tuple(int(x) for x in rng.random(3) * 120) + (70,))
            if rng.random() < 0.5:
                d.ellipse(box, outline=col, width=wd)
            else:
                d.rounded_rectangle(box, radius=hh * 0.5, outline=col, width=wd)
        (l0, t0, r0, b0), (l1, t1, r1, b1) = rims
        d.line([(r0, t0 + (b0 - t0) * 0.3), (l1, t1 + (b1 - t1) * 0.3)], fill=col, width=wd)
        d.line([(l0, t0 + (b0 - t0) * 0.3), tuple(lm[0] + [0, -0.02 * face_w])], fill=col, width=wd)
        d.line([(r1, t1 + (b1 - t1) * 0.3), tuple(lm[16] + [0, -0.02 * face_w])], fill=col, width=wd)
    if info["hair"]:
        hair = np.asarray(app["hair_srgb"]) * 255
        brow_y = lm[17:27, 1].mean()
        x_lo, x_hi = lm[17, 0] - 0.1 * face_w, lm[26, 0] + 0.1 * face_w
        # a fringe: many thin strands combed from the top to one side, ending near the brows
        n = int(rng.integers(40, 200))
        side = rng.uniform(-1, 1)
        top = brow_y - rng.uniform(0.5, 0.9) * face_w
        reach = rng.uniform(-0.15, 0.3)
        lock = rng.normal(0, 1, 2)
        # the draws, strand by strand, then the curves of all strands at once
        draws = np.array([(rng.uniform(x_lo, x_hi), rng.normal(0, 0.06), rng.normal(0, 0.04),
                           rng.normal(0, 0.02), rng.uniform(0.5, 1.6), rng.uniform(1.0, 3.0))
                          for _ in range(n)])
        x0 = draws[:, 0]
        y1 = brow_y + (reach + draws[:, 1]) * face_w
        x1 = x0 + (side * 0.3 + draws[:, 2]) * face_w
        cx = 0.5 * (x0 + x1) + (lock[0] * 0.05 + draws[:, 3]) * face_w
        t = np.linspace(0, 1, 10)[:, None]
        p0 = np.stack([x0, np.full(n, top)], axis=1)[:, None]
        p1 = np.stack([cx, 0.5 * (top + y1)], axis=1)[:, None]
        p2 = np.stack([x1, y1], axis=1)[:, None]
        pts = ((1 - t) ** 2) * p0 + 2 * t * (1 - t) * p1 + t ** 2 * p2  # (n, 10, 2)
        cols = np.clip(hair * draws[:, 4:5] + 8, 0, 255).astype(np.int64)
        for k in range(n):
            d.line(pts[k].ravel().tolist(), fill=(*cols[k].tolist(), 255),
                   width=max(1, int(draws[k, 5] * R / 256)))
    if info["hand"]:
        # a hand-like silhouette (palm, four fingers, thumb), shaded across by a gradient
        hand = Image.new("L", (S, S), 0)
        hd = ImageDraw.Draw(hand)
        anchor = lm[rng.choice([3, 5, 8, 11, 13, 48, 54, 30])]
        ang = rng.uniform(0, 2 * np.pi)
        palm = rng.uniform(0.18, 0.3) * face_w
        c = anchor + np.array([np.cos(ang), np.sin(ang)]) * palm * rng.uniform(0.9, 1.6)
        hd.ellipse([c[0] - palm, c[1] - palm * 0.85, c[0] + palm, c[1] + palm * 0.85], fill=255)
        fdir = -np.array([np.cos(ang), np.sin(ang)])
        perp = np.array([-fdir[1], fdir[0]])
        spread = rng.uniform(0.0, 0.25)
        for k in range(4):
            base = c + perp * (k - 1.5) * palm * 0.42 + fdir * palm * 0.5
            fd = fdir + perp * (k - 1.5) * spread
            fd /= np.linalg.norm(fd)
            tip = base + fd * palm * rng.uniform(0.9, 1.3) * (1.0 - 0.1 * abs(k - 1.5))
            wdt = palm * 0.32
            hd.line([tuple(base), tuple(tip)], fill=255, width=int(wdt))
            hd.ellipse([tip[0] - wdt / 2, tip[1] - wdt / 2, tip[0] + wdt / 2, tip[1] + wdt / 2], fill=255)
        side = 1 if rng.random() < 0.5 else -1
        tb = c + perp * side * palm * 0.9
        tt = tb + (fdir * 0.6 + perp * side * 0.8) * palm * 0.9
        hd.line([tuple(tb), tuple(tt)], fill=255, width=int(palm * 0.36))
        g_ang = rng.uniform(0, 2 * np.pi)
        skin = srgb_to_linear(np.asarray(app["skin_srgb"]) * rng.uniform(0.8, 1.1))
        gain = rng.uniform(0.6, 1.2)
        hbox = hand.getbbox()
        if hbox is not None:
            hx0, hy0, hx1, hy1 = hbox
            m = np.asarray(hand.crop(hbox), dtype=np.float32) / 255.0
            yy, xx = np.mgrid[hy0:hy1, hx0:hx1].astype(np.float32)
            g = ((xx - c[0]) * np.cos(g_ang) + (yy - c[1]) * np.sin(g_ang)) / (2.5 * palm)
            shade = np.clip(0.85 + 0.6 * g, 0.3, 1.3)
            col = linear_to_srgb(skin[None, None, :] * shade[..., None] * gain) * 255
            rgba = np.concatenate([col, m[..., None] * 255], axis=2).astype(np.uint8)
            patch = Image.alpha_composite(layer.crop(hbox), Image.fromarray(rgba, "RGBA"))
            layer.paste(patch, (hx0, hy0))
    out = np.zeros((R, R, 4), dtype=np.float32)
    bbox = layer.getbbox()
    if bbox is not None:
        # downsample only the drawn part: the 2 x 2 boxes are aligned to the full image's, so
        # this is exactly the full image's BOX reduction there (and zero elsewhere)
        bx0, by0 = bbox[0] // ss, bbox[1] // ss
        bx1, by1 = -(-bbox[2] // ss), -(-bbox[3] // ss)
        part = layer.crop((bx0 * ss, by0 * ss, bx1 * ss, by1 * ss)).resize((bx1 - bx0, by1 - by0), Image.Resampling.BOX)
        out[by0:by1, bx0:bx1] = np.asarray(part, dtype=np.float32) / 255.0
    return out, info


_noise_tile: np.ndarray | None = None


def _sensor_noise(seed: int, R: int) -> np.ndarray:
    """(R, R, 3) float32 unit Gaussian noise: a window of a fixed 512 px tile (cheap), chosen and
    flipped by ``seed``; drawn afresh for larger images."""
    global _noise_tile
    if R > 512:
        return np.random.default_rng(seed).standard_normal((R, R, 3), dtype=np.float32)
    with _bank_lock:
        if _noise_tile is None:
            _noise_tile = np.random.default_rng(31337).standard_normal((512, 512, 3), dtype=np.float32)
    y, x, flip = seed % (513 - R), (seed // 1024) % (513 - R), (seed >> 20) % 4
    n = _noise_tile[y:y + R, x:x + R]
    if flip & 1:
        n = n[::-1]
    if flip & 2:
        n = n[:, ::-1]
    return n


# -- camera degradations ----------------------------------------------------------------------
def degrade(rng: np.random.Generator, img: np.ndarray, enabled: bool = True) -> tuple[np.ndarray, dict]:
    """Colour cast, vignetting, blur, rescale, noise, JPEG on an (R, R, 3) sRGB float image.

    Returns the uint8 image and what was applied.
    """
    R = img.shape[0]
    u = rng.random(6)
    gains = np.exp(rng.normal(0, 0.07, 3))
    blur = rng.uniform(0.3, 1.5)
    down = rng.uniform(0.35, 0.8)
    sigma = rng.uniform(1, 8)
    quality = int(rng.integers(30, 96))
    vig = rng.uniform(0.1, 0.5)
    noise_seed = int(rng.integers(2**31))
    info: dict[str, Any] = {"cast": bool(u[0] < 0.6), "vignette": bool(u[1] < 0.3), "blur": bool(u[2] < 0.3),
            "rescale": bool(u[3] < 0.2), "noise": bool(u[4] < 0.7), "jpeg": bool(u[5] < 0.6)}
    if not enabled:
        info = {k: False for k in info}
        return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8), info
    if info["cast"]:
        img = img * gains
    if info["vignette"]:
        yy, xx = np.mgrid[0:R, 0:R].astype(np.float32) / R - 0.5
        img = img * (1 - vig * (xx * xx + yy * yy) * 2)[..., None]
    x = np.clip(img, 0, 1)
    x *= 255
    x += 0.5
    pil = Image.fromarray(x.astype(np.uint8))
    if info["blur"]:
        pil = pil.filter(ImageFilter.GaussianBlur(blur * R / 256))
    if info["rescale"]:
        s = max(16, int(R * down))
        pil = pil.resize((s, s), Image.Resampling.BILINEAR).resize((R, R), Image.Resampling.BILINEAR)
    out = np.asarray(pil, dtype=np.float32)
    if info["noise"]:
        out = out + _sensor_noise(noise_seed, R) * np.float32(sigma)
    out = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    if info["jpeg"]:
        buf = io.BytesIO()
        Image.fromarray(out).save(buf, format="JPEG", quality=quality)
        buf.seek(0)
        out = np.asarray(Image.open(buf).convert("RGB"))
    info.update({"gains": gains.tolist(), "blur_px": blur * R / 256, "noise_sigma": sigma,
                 "jpeg_quality": quality})
    return out, info
