"""Image-space layers of the batched generator on a torch device: blur, backgrounds (procedural
and photo patches), torso, occluders (glasses, fringe, hand) and camera degradations (colour
cast, vignetting, blur, rescale, sensor noise, JPEG by a DCT quantisation).

Every function takes a batch: images are (B, 3, R, R) float sRGB in [0, 1], per-sample
parameters are (B, ...) tensors drawn on the CPU from each sample's own seed
(:mod:`.batch_synth`), so a sample does not depend on the batch it falls in. The layers follow
the per-sample generator's (``training/synth/appearance.py``) in kind and frequency; their shapes
are drawn with signed distances instead of PIL (docs/reference/batched_synth.md).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "BG_OCTAVES",
    "MAX_SHAPES",
    "blur",
    "compose_background",
    "degrade",
    "draw_background_params",
    "draw_degrade_params",
    "draw_occluder_params",
    "jpeg",
    "occluder_layer",
    "photo_bank",
]

BG_OCTAVES = (4, 8, 16, 32, 64)  # value-noise grid sides of the procedural backgrounds
MAX_SHAPES = 30  # clutter shapes per background
FRINGE_STRANDS = 160
FRINGE_POINTS = 128
RESCALE_STEPS = 6  # rescale factors 0.35 .. 0.8 in this many steps


# -- blur -------------------------------------------------------------------------------------
def blur(x: torch.Tensor, sigma: torch.Tensor, max_sigma: float) -> torch.Tensor:
    """Gaussian blur of (B, C, H, W) with one sigma (px) per sample (0: unchanged), separable,
    edges extended; kernels of radius ceil(3 max_sigma) whatever the batch (so a sample's
    result does not depend on the others, and nothing waits for the device)."""
    B, C, H, W = x.shape
    k = max(1, math.ceil(3.0 * max_sigma))
    t = torch.arange(-k, k + 1, device=x.device, dtype=x.dtype)
    s = sigma.to(x.dtype).clamp(min=1e-3)[:, None]
    w = torch.exp(-0.5 * (t[None] / s) ** 2)
    w = w / w.sum(dim=1, keepdim=True)
    w = torch.where((sigma > 0)[:, None], w, (t == 0).to(x.dtype)[None].expand_as(w))
    wk = w.repeat_interleave(C, dim=0)  # (B * C, 2k + 1)
    y = x.reshape(1, B * C, H, W)
    y = F.conv2d(F.pad(y, (k, k, 0, 0), mode="replicate"), wk[:, None, None, :], groups=B * C)
    y = F.conv2d(F.pad(y, (0, 0, k, k), mode="replicate"), wk[:, None, :, None], groups=B * C)
    return y.reshape(B, C, H, W)


def _grid(B: int, R: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates (x, y), each (1, R, R) (broadcast over the batch)."""
    a = torch.arange(R, device=device, dtype=torch.float32) + 0.5
    return a[None, None, :].expand(1, R, R), a[None, :, None].expand(1, R, R)


def _bcast(v: torch.Tensor) -> torch.Tensor:
    return v.reshape(-1, 1, 1)


# -- backgrounds ------------------------------------------------------------------------------
def draw_background_params(rng: np.random.Generator, skin_srgb, n_photos: int, photo_p: float) -> dict:
    """Per-sample background draws (fixed shapes, so samples stack)."""
    skin = np.asarray(skin_srgb, dtype=np.float64)

    def palette(k):
        cols = rng.random((k, 3)) ** rng.uniform(0.6, 2.0)
        if rng.random() < 0.3:
            cols[rng.integers(k)] = np.clip(skin * rng.uniform(0.8, 1.2), 0, 1)
        return cols

    photo = bool(n_photos > 0 and rng.random() < photo_p)
    kind = int(rng.choice(5, p=[0.15, 0.3, 0.15, 0.25, 0.15]))
    octaves = [rng.random((n, n)).astype(np.float32) for n in BG_OCTAVES]
    amps = np.cumprod(np.concatenate([[1.0], rng.uniform(0.4, 0.7, len(BG_OCTAVES) - 1)]))
    n_oct = int(rng.integers(3, 6))
    shapes = np.zeros((MAX_SHAPES, 8), dtype=np.float32)  # on, ellipse, x0, y0, w, h, rgb...
    n_sh = int(rng.integers(5, MAX_SHAPES + 1))
    shapes[:n_sh, 0] = 1
    shapes[:n_sh, 1] = rng.random(n_sh) < 0.5
    shapes[:n_sh, 2:4] = rng.uniform(-0.2, 1.0, (n_sh, 2))
    shapes[:n_sh, 4:6] = rng.uniform(0.05, 0.6, (n_sh, 2))
    sh_col = np.stack([palette(1)[0] for _ in range(n_sh)])
    p3 = palette(3)
    # photo patch: source, crop (fractions of the shorter side), look
    side = rng.uniform(0.25, 1.0)
    return {
        "bg_photo": np.float32(photo),
        "bg_kind": np.int64(kind),
        "bg_octaves": np.concatenate([o.ravel() for o in octaves]),
        "bg_amps": (amps * (np.arange(len(BG_OCTAVES)) < n_oct)).astype(np.float32),
        "bg_angle": np.float32(rng.uniform(0, 2 * np.pi)),
        "bg_freq": np.float32(rng.uniform(3, 25)),
        "bg_checker": np.float32(rng.random() < 0.5),
        "bg_palette": p3.astype(np.float32),
        "bg_shapes": shapes,
        "bg_shape_col": np.pad(sh_col, ((0, MAX_SHAPES - n_sh), (0, 0))).astype(np.float32),
        "bg_blur": np.float32(rng.uniform(0, 6) if kind >= 2 else 0.0),
        "bg_shade": np.float32(rng.random() < 0.5),
        "ph_index": np.int64(rng.integers(max(n_photos, 1))),
        "ph_box": np.array([side, rng.random(), rng.random()], dtype=np.float32),
        "ph_blur": np.float32(rng.uniform(0.5, 4.0) if rng.random() < 0.4 else 0.0),
        "ph_flip": np.float32(rng.random() < 0.5),
        "ph_perm": rng.permutation(3) if rng.random() < 0.15 else np.arange(3),
        "ph_sat": np.float32(rng.uniform(0.3, 1.3)),
        "ph_duo": np.concatenate([rng.random(3) * 0.5, 0.5 + rng.random(3) * 0.5]).astype(np.float32),
        "ph_contrast": np.float32(rng.uniform(0.6, 1.2)),
        "ph_gains": np.exp(rng.normal(0, 0.3) + rng.normal(0, 0.08, 3)).astype(np.float32),
        "ph_gamma": np.float32(np.exp(rng.normal(0, 0.2))),
        "torso": np.float32(rng.random() < 0.7),
        "torso_col": palette(1)[0].astype(np.float32),
        "torso_wh": np.array([rng.uniform(3.0, 4.5), rng.uniform(0.2, 0.8)], dtype=np.float32),
    }


def photo_bank(device) -> dict | None:
    """The natural photos of ``training/synth/photos.py`` on the device: (P, 3, 512, 512) uint8
    (zero-padded), their sizes (P, 2) and which are grey (P,); None without photos."""
    from .synth.photos import _load, photo_sources

    srcs = photo_sources()
    if not srcs:
        return None
    arrs = [_load(p) for p in srcs]
    S = max(max(a.shape[:2]) for a in arrs)
    bank = torch.zeros((len(arrs), 3, S, S), dtype=torch.uint8)
    for i, a in enumerate(arrs):
        t = torch.from_numpy(np.array(a)).permute(2, 0, 1)
        bank[i, :, : a.shape[0], : a.shape[1]] = t.expand(3, -1, -1)
    sizes = torch.tensor([a.shape[:2] for a in arrs], dtype=torch.float32)
    grey = torch.tensor([a.shape[2] == 1 for a in arrs])
    return {"images": bank.to(device), "sizes": sizes.to(device), "grey": grey.to(device)}


def _fractal(p: dict, R: int) -> torch.Tensor:
    """(B, 1, R, R) fractal value noise in [0, 1] from the per-sample octave grids."""
    oct_ = p["bg_octaves"]
    B = oct_.shape[0]
    S = min(R, 128)
    out = torch.zeros((B, 1, S, S), device=oct_.device)
    pos = 0
    for k, n in enumerate(BG_OCTAVES):
        g = oct_[:, pos:pos + n * n].reshape(B, 1, n, n)
        pos += n * n
        out += _bcast(p["bg_amps"][:, k])[:, None] * F.interpolate(g, size=(S, S), mode="bicubic",
                                                                    align_corners=False)
    lo = out.amin(dim=(2, 3), keepdim=True)
    hi = out.amax(dim=(2, 3), keepdim=True)
    out = (out - lo) / (hi - lo + 1e-6)
    if S != R:
        out = F.interpolate(out, size=(R, R), mode="bilinear", align_corners=False)
    return out


def _procedural(p: dict, R: int) -> torch.Tensor:
    B = p["bg_kind"].shape[0]
    dev = p["bg_kind"].device
    xx, yy = _grid(B, R, dev)
    xx, yy = xx / R, yy / R
    c = p["bg_palette"]  # (B, 3, 3)
    kind = _bcast(p["bg_kind"])[:, None]
    t = _fractal(p, R)  # (B, 1, R, R)
    # 0: gradient
    a = _bcast(p["bg_angle"])
    g = torch.cos(a) * xx + torch.sin(a) * yy
    g = (g - g.amin(dim=(1, 2), keepdim=True)) / (g.amax(dim=(1, 2), keepdim=True)
                                                 - g.amin(dim=(1, 2), keepdim=True) + 1e-6)
    c0, c1, c2 = (c[:, k, :, None, None] for k in range(3))
    grad = c0 * (1 - g[:, None]) + c1 * g[:, None]
    # 1: fractal noise through a 3-colour palette
    frac = torch.where(t < 0.5, c0 * (1 - 2 * t) + c1 * 2 * t, c1 * (2 - 2 * t) + c2 * (2 * t - 1))
    # 2: stripes / checker
    f = _bcast(p["bg_freq"])
    uu, vv = torch.cos(a) * xx + torch.sin(a) * yy, -torch.sin(a) * xx + torch.cos(a) * yy
    s = torch.sin(2 * math.pi * f * uu)
    s = torch.where(_bcast(p["bg_checker"]) > 0, s * torch.sin(2 * math.pi * f * vv), s)
    st = (s > 0).float()[:, None]
    stripes = c0 * (1 - st) + c1 * st
    # 3, 4: shapes over noise
    clutter = c0 * (1 - t) + c1 * t
    X, Y = xx[:, None] * R, yy[:, None] * R
    sh = p["bg_shapes"]
    for k in range(MAX_SHAPES):
        q = sh[:, k]
        x0, y0, w, h = (_bcast(q[:, j])[:, None] * R for j in (2, 3, 4, 5))
        rect = (X >= x0) & (X <= x0 + w) & (Y >= y0) & (Y <= y0 + h)
        ell = ((X - x0 - w / 2) / (w / 2)) ** 2 + ((Y - y0 - h / 2) / (h / 2)) ** 2 <= 1
        inside = torch.where(_bcast(q[:, 1])[:, None] > 0, ell, rect) & (_bcast(q[:, 0])[:, None] > 0)
        clutter = torch.where(inside, p["bg_shape_col"][:, k, :, None, None], clutter)
    img = torch.where(kind == 0, grad, torch.where(kind == 1, frac, torch.where(kind == 2, stripes, clutter)))
    img = blur(img, p["bg_blur"] * R / 256, 6.0 * R / 256)
    shade = 0.6 + 0.6 * _fractal({**p, "bg_amps": p["bg_amps"] * torch.tensor(
        [1.0, 1.0, 0, 0, 0], device=dev)}, R)
    img = torch.where(_bcast(p["bg_shade"])[:, None] > 0, img * shade, img)
    return img.clamp(0, 1)


def _photo(p: dict, bank: dict, R: int) -> torch.Tensor:
    idx = p["ph_index"]
    src = bank["images"].index_select(0, idx).float() / 255.0  # (B, 3, S, S)
    S = src.shape[-1]
    hw = bank["sizes"].index_select(0, idx)  # (B, 2) rows, cols
    side = p["ph_box"][:, 0] * hw.min(dim=1).values
    x0 = p["ph_box"][:, 1] * (hw[:, 1] - side)
    y0 = p["ph_box"][:, 2] * (hw[:, 0] - side)
    a = (torch.arange(R, device=idx.device, dtype=torch.float32) + 0.5) / R
    gx = x0[:, None] + side[:, None] * a[None]  # (B, R) source pixel coordinates
    gy = y0[:, None] + side[:, None] * a[None]
    gx = torch.where(p["ph_flip"][:, None] > 0, gx.flip(1), gx)
    grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1) / S * 2 - 1
    img = F.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=False)
    img = blur(img, p["ph_blur"] * R / 256, 4.0 * R / 256)
    grey = bank["grey"].index_select(0, idx)[:, None, None, None]
    lo, hi = p["ph_duo"][:, :3, None, None], p["ph_duo"][:, 3:, None, None]
    duo = lo + img[:, :1] * (hi - lo)
    perm = torch.gather(img, 1, p["ph_perm"][:, :, None, None].expand_as(img))
    lum = (perm * torch.tensor([0.299, 0.587, 0.114], device=img.device)[None, :, None, None]).sum(1, keepdim=True)
    sat = lum + _bcast(p["ph_sat"])[:, None] * (perm - lum)
    img = torch.where(grey, duo, sat.clamp(0, 1))
    m = img.mean(dim=(1, 2, 3), keepdim=True)
    y = (m + (img - m) * _bcast(p["ph_contrast"])[:, None]) * p["ph_gains"][:, :, None, None]
    return y.clamp(0, 1) ** _bcast(p["ph_gamma"])[:, None]


def compose_background(p: dict, bank: dict | None, R: int, chin: torch.Tensor, neck_w: torch.Tensor,
                       skin_srgb: torch.Tensor) -> torch.Tensor:
    """(B, 3, R, R) sRGB background with the torso below the chin (``chin`` (B, 2) px,
    ``neck_w`` (B,) px)."""
    img = _procedural(p, R)
    if bank is not None:
        img = torch.where(_bcast(p["bg_photo"])[:, None] > 0, _photo(p, bank, R), img)
    xx, yy = _grid(chin.shape[0], R, chin.device)
    cx, cy, nw = _bcast(chin[:, 0]), _bcast(chin[:, 1]), _bcast(neck_w)
    w = nw * _bcast(p["torso_wh"][:, 0])
    top = cy + nw * _bcast(p["torso_wh"][:, 1])
    body = ((xx - cx) / w) ** 2 + ((yy - top - 1.25 * w) / (1.25 * w)) ** 2 <= 1
    neck = ((xx - cx).abs() <= nw * 0.5) & (yy >= cy - nw) & (yy <= top + 0.1 * w)
    on = _bcast(p["torso"]) > 0
    img = torch.where((body & on)[:, None], p["torso_col"][:, :, None, None], img)
    neck_col = (skin_srgb * 0.7).clamp(0, 1)[:, :, None, None]
    return torch.where((neck & on)[:, None], neck_col, img)


# -- occluders --------------------------------------------------------------------------------
def draw_occluder_params(rng: np.random.Generator) -> dict:
    """Per-sample occluder draws: glasses 15 %, a forehead fringe 20 %, a hand 10 % (as today)."""
    p = rng.random(3)
    ang = rng.uniform(0, 2 * np.pi)
    return {
        "oc_on": np.array([p[2] < 0.15, p[0] < 0.2, p[1] < 0.1], dtype=np.float32),  # glasses, hair, hand
        "gl_col": (rng.random(3) * rng.uniform(0.05, 0.8)).astype(np.float32),
        "gl_width": np.float32(rng.uniform(1.5, 5)),
        "gl_tint": np.float32(rng.random() < 0.3),
        "gl_tint_col": (rng.random(3) * 120 / 255).astype(np.float32),
        "gl_shape": rng.uniform([0.8, 0.5, 0.8, 0.5], [1.1, 0.75, 1.1, 0.75]).astype(np.float32),
        "gl_round": np.float32(rng.random() < 0.5),
        "fr_n": np.float32(rng.integers(40, 200)),
        "fr_side": np.float32(rng.uniform(-1, 1)),
        "fr_top": np.float32(rng.uniform(0.5, 0.9)),
        "fr_reach": np.float32(rng.uniform(-0.15, 0.3)),
        "fr_lock": rng.normal(0, 1, 2).astype(np.float32),
        "fr_strands": np.stack([rng.random(FRINGE_STRANDS), rng.normal(0, 0.06, FRINGE_STRANDS),
                                rng.normal(0, 0.04, FRINGE_STRANDS), rng.normal(0, 0.02, FRINGE_STRANDS),
                                rng.uniform(0.5, 1.6, FRINGE_STRANDS)], axis=1).astype(np.float32),
        "hd_anchor": np.int64(rng.choice([3, 5, 8, 11, 13, 48, 54, 30])),
        "hd_geom": np.array([np.cos(ang), np.sin(ang), rng.uniform(0.18, 0.3), rng.uniform(0.9, 1.6),
                             rng.uniform(0.0, 0.25), 1.0 if rng.random() < 0.5 else -1.0,
                             rng.uniform(0, 2 * np.pi), rng.uniform(0.6, 1.2), rng.uniform(0.8, 1.1)],
                            dtype=np.float32),
        "hd_fingers": rng.uniform(0.9, 1.3, 4).astype(np.float32),
    }


def _seg_dist(X, Y, a, b):
    """Distance of pixel centres (X, Y) to segments a-b ((B, 2) or (B, K, 2) broadcastable)."""
    ax, ay, bx, by = a[..., 0], a[..., 1], b[..., 0], b[..., 1]
    dx, dy = bx - ax, by - ay
    t = (((X - ax) * dx + (Y - ay) * dy) / (dx * dx + dy * dy + 1e-9)).clamp(0, 1)
    return torch.sqrt((X - ax - t * dx) ** 2 + (Y - ay - t * dy) ** 2)


def _cov(sdf: torch.Tensor) -> torch.Tensor:
    """Antialiased coverage of a signed distance (px, < 0 inside)."""
    return (0.5 - sdf).clamp(0, 1)


def occluder_layer(p: dict, R: int, lm2d: torch.Tensor, hair_srgb: torch.Tensor,
                   skin_srgb: torch.Tensor) -> torch.Tensor:
    """(B, 4, R, R) RGBA occluders (sRGB, straight alpha) in front of the face."""
    from .batch_synth import linear_to_srgb, srgb_to_linear

    B = lm2d.shape[0]
    dev = lm2d.device
    X, Y = _grid(B, R, dev)
    face_w = lm2d[:, :, 0].amax(1) - lm2d[:, :, 0].amin(1)
    rgb = torch.zeros((B, 3, R, R), device=dev)
    alpha = torch.zeros((B, R, R), device=dev)

    def over(col, a):
        nonlocal rgb, alpha
        rgb = rgb * (1 - a[:, None]) + col * a[:, None]
        alpha = alpha + a * (1 - alpha)

    on = p["oc_on"]
    # glasses: two rims (ellipses or rounded boxes) around the eyes, bridge and temples
    wd = _bcast(p["gl_width"] * face_w / 150.0 * 2)
    rim_sd, tint_in = [], []
    gs = p["gl_shape"]
    rims = []
    for k, (a, b) in enumerate(((36, 42), (42, 48))):
        c = lm2d[:, a:b].mean(1)
        ew = lm2d[:, a:b, 0].amax(1) - lm2d[:, a:b, 0].amin(1)
        hw, hh = ew * gs[:, 2 * k], ew * gs[:, 2 * k + 1]
        cyy = c[:, 1] + 0.1 * hh
        ex = 2.0 + 2.0 * p["gl_round"]  # superellipse: 2 round, 4 boxy
        q = ((X - _bcast(c[:, 0])).abs() / _bcast(hw)) ** _bcast(ex) + (
            (Y - _bcast(cyy)).abs() / _bcast(hh)) ** _bcast(ex)
        r = q ** (1 / _bcast(ex))
        sd = (r - 1) * _bcast(torch.minimum(hw, hh))
        rim_sd.append(sd.abs() - wd / 2)
        tint_in.append(sd)
        rims.append((c[:, 0] - hw, c[:, 0] + hw, cyy - 0.3 * hh))
    (l0, r0, t0), (l1, r1, t1) = rims
    pt = lambda x, y: torch.stack([x, y], dim=-1)  # noqa: E731
    d = torch.minimum(rim_sd[0], rim_sd[1])
    for a_, b_ in ((pt(r0, t0), pt(l1, t1)), (pt(l0, t0), lm2d[:, 0] - pt(0 * l0, 0.02 * face_w)),
                   (pt(r1, t1), lm2d[:, 16] - pt(0 * l0, 0.02 * face_w))):
        d = torch.minimum(d, _seg_dist(X, Y, a_[:, None, None], b_[:, None, None]) - wd / 2)
    g_on = _bcast(on[:, 0])
    tint = _cov(torch.minimum(tint_in[0], tint_in[1])) * _bcast(p["gl_tint"]) * (70 / 255) * g_on
    over(p["gl_tint_col"][:, :, None, None], tint)
    over(p["gl_col"][:, :, None, None], _cov(d) * g_on)
    # fringe: strands (quadratic curves) combed from the top to one side, ending near the brows
    brow_y = lm2d[:, 17:27, 1].mean(1)
    x_lo, x_hi = lm2d[:, 17, 0] - 0.1 * face_w, lm2d[:, 26, 0] + 0.1 * face_w
    s = p["fr_strands"]  # (B, K, 5)
    K = s.shape[1]
    x0 = x_lo[:, None] + s[..., 0] * (x_hi - x_lo)[:, None]
    fw = face_w[:, None]
    y1 = brow_y[:, None] + (p["fr_reach"][:, None] + s[..., 1]) * fw
    x1 = x0 + (p["fr_side"][:, None] * 0.3 + s[..., 2]) * fw
    top = (brow_y - p["fr_top"] * face_w)[:, None].expand(-1, K)
    cx = 0.5 * (x0 + x1) + (p["fr_lock"][:, :1] * 0.05 + s[..., 3]) * fw
    t = torch.linspace(0, 1, FRINGE_POINTS, device=dev)[None, None, :]
    px = (1 - t) ** 2 * x0[..., None] + 2 * t * (1 - t) * cx[..., None] + t ** 2 * x1[..., None]
    py = (1 - t) ** 2 * top[..., None] + 2 * t * (1 - t) * (0.5 * (top + y1))[..., None] + t ** 2 * y1[..., None]
    live = (torch.arange(K, device=dev)[None] < p["fr_n"][:, None] * K / 200) & (on[:, 1:2] > 0)
    ok = live[..., None] & (px >= 0) & (px < R) & (py >= 0) & (py < R)
    b_idx = torch.arange(B, device=dev)[:, None, None].expand_as(px)
    flat = b_idx * R * R + py.clamp(0, R - 1).long() * R + px.clamp(0, R - 1).long()
    occ = torch.zeros(B * R * R, device=dev)
    occ.scatter_reduce_(0, flat.reshape(-1), ok.reshape(-1).float(), "amax")
    occ = occ.view(B, 1, R, R)
    if R >= 384:  # strands 0.5-1.5 px wide at 256 px, as the per-sample ones
        occ = F.max_pool2d(occ, 2, stride=1, padding=1)[..., :R, :R]
    shade = (s[..., 4].mean(1) * 0.9 + 0.1)[:, None, None, None]
    over((hair_srgb[:, :, None, None] * shade + 8 / 255).clamp(0, 1), occ[:, 0])
    # hand: palm, four fingers, thumb; shaded by a gradient across it
    hg = p["hd_geom"]
    anchor = lm2d[torch.arange(B, device=dev), p["hd_anchor"]]
    dirv = hg[:, 0:2]
    palm = hg[:, 2] * face_w
    c = anchor + dirv * (palm * hg[:, 3])[:, None]
    fdir = -dirv
    perp = torch.stack([-fdir[:, 1], fdir[:, 0]], dim=1)
    cxh, cyh = _bcast(c[:, 0]), _bcast(c[:, 1])
    d = (torch.sqrt(((X - cxh) / _bcast(palm)) ** 2 + ((Y - cyh) / _bcast(0.85 * palm)) ** 2) - 1) * _bcast(0.85 * palm)
    for k in range(4):
        base = c + perp * ((k - 1.5) * palm * 0.42)[:, None] + fdir * (palm * 0.5)[:, None]
        fd = fdir + perp * ((k - 1.5) * hg[:, 4])[:, None]
        fd = fd / fd.norm(dim=1, keepdim=True)
        tip = base + fd * (palm * p["hd_fingers"][:, k] * (1.0 - 0.1 * abs(k - 1.5)))[:, None]
        d = torch.minimum(d, _seg_dist(X, Y, base[:, None, None], tip[:, None, None]) - _bcast(palm * 0.16))
    tb = c + perp * (hg[:, 5] * palm * 0.9)[:, None]
    tt = tb + (fdir * 0.6 + perp * (hg[:, 5] * 0.8)[:, None]) * (palm * 0.9)[:, None]
    d = torch.minimum(d, _seg_dist(X, Y, tb[:, None, None], tt[:, None, None]) - _bcast(palm * 0.18))
    ga = _bcast(hg[:, 6])
    gr = ((X - cxh) * torch.cos(ga) + (Y - cyh) * torch.sin(ga)) / (2.5 * _bcast(palm))
    shade_h = (0.85 + 0.6 * gr).clamp(0.3, 1.3)
    skin = srgb_to_linear((skin_srgb * hg[:, 8:9]).clamp(0, 1))
    col = linear_to_srgb(skin[:, :, None, None] * shade_h[:, None] * _bcast(hg[:, 7])[:, None])
    over(col, _cov(d) * _bcast(on[:, 2]))
    return torch.cat([rgb, alpha[:, None]], dim=1)


# -- camera degradations ----------------------------------------------------------------------
def draw_degrade_params(rng: np.random.Generator, enabled: bool) -> dict:
    """Per-sample degradation draws: which (cast 60 %, vignette 30 %, blur 30 %, rescale 20 %,
    noise 70 %, JPEG 60 %, as today) and how much."""
    u = rng.random(6)
    on = np.array([u[0] < 0.6, u[1] < 0.3, u[2] < 0.3, u[3] < 0.2, u[4] < 0.7, u[5] < 0.6]) & enabled
    return {
        "dg_on": on.astype(np.float32),
        "dg_gains": np.exp(rng.normal(0, 0.07, 3)).astype(np.float32),
        "dg_blur": np.float32(rng.uniform(0.3, 1.5)),
        "dg_down": np.float32(rng.uniform(0.35, 0.8)),
        "dg_sigma": np.float32(rng.uniform(1, 8)),
        "dg_quality": np.float32(rng.integers(30, 96)),
        "dg_vig": np.float32(rng.uniform(0.1, 0.5)),
        "dg_noise": rng.integers(0, 2**31, size=1).astype(np.int64)[0],
    }


_JPEG_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], dtype=np.float32)
_JPEG_CHROMA = np.array([
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99] + [99] * 32, dtype=np.float32)


def _dct_matrix(device) -> torch.Tensor:
    n = torch.arange(8, dtype=torch.float64)
    D = torch.cos((2 * n[None] + 1) * n[:, None] * math.pi / 16) * math.sqrt(2 / 8)
    D[0] /= math.sqrt(2)
    return D.float().to(device)


def _blocks_quantise(x: torch.Tensor, q: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
    """Quantise the 8 x 8 DCT of (B, H, W) (H, W multiples of 8) with tables q (B, 64)."""
    B, H, W = x.shape
    blk = x.reshape(B, H // 8, 8, W // 8, 8).permute(0, 1, 3, 2, 4)
    c = D @ blk @ D.T
    qq = q.reshape(B, 1, 1, 8, 8)
    c = torch.round(c / qq) * qq
    return (D.T @ c @ D).permute(0, 1, 3, 2, 4).reshape(B, H, W)


def jpeg(img: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """JPEG artefacts on (B, 3, R, R) values 0..255: YCbCr, 4:2:0 chroma, 8 x 8 DCT quantised
    with the IJG tables scaled by ``quality`` (B,); returns 0..255 (rounded, clipped)."""
    B, _, H, W = img.shape
    ph, pw = (-H) % 16, (-W) % 16
    x = F.pad(img, (0, pw, 0, ph), mode="replicate")
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = -0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 0.5 * r - 0.418688 * g - 0.081312 * b
    qv = quality.float()
    scale = torch.where(qv < 50, 5000 / qv, 200 - 2 * qv)[:, None]
    table = lambda t: ((torch.as_tensor(t, device=img.device)[None] * scale + 50) // 100).clamp(1, 255)  # noqa: E731
    D = _dct_matrix(img.device)
    y = _blocks_quantise(y - 128, table(_JPEG_LUMA), D) + 128
    ch = F.avg_pool2d(torch.stack([cb, cr], 1), 2)
    qc = table(_JPEG_CHROMA)
    ch = torch.stack([_blocks_quantise(ch[:, k], qc, D) for k in range(2)], 1)
    ch = F.interpolate(ch, scale_factor=2, mode="bilinear", align_corners=False)
    cb, cr = ch[:, 0], ch[:, 1]
    out = torch.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], 1)
    return out[:, :, :H, :W].round().clamp(0, 255)


def degrade(img: torch.Tensor, p: dict, noise_tile: torch.Tensor) -> torch.Tensor:
    """Camera effects on (B, 3, R, R) sRGB [0, 1]; returns uint8-valued floats 0..255."""
    B, _, R, _ = img.shape
    on = p["dg_on"]
    img = torch.where(_bcast(on[:, 0])[:, None] > 0, img * p["dg_gains"][:, :, None, None], img)
    X, Y = _grid(B, R, img.device)
    xx, yy = X / R - 0.5, Y / R - 0.5
    vig = 1 - _bcast(p["dg_vig"]) * (xx * xx + yy * yy) * 2
    img = torch.where(_bcast(on[:, 1])[:, None] > 0, img * vig[:, None], img)
    x = torch.floor(img.clamp(0, 1) * 255 + 0.5)
    x = blur(x, torch.where(on[:, 2] > 0, p["dg_blur"] * R / 256, torch.zeros_like(on[:, 2])), 1.5 * R / 256)
    # rescale: down to one of RESCALE_STEPS sizes and back up (every step on the whole batch,
    # kept where drawn: no host round trip)
    step = ((p["dg_down"] - 0.35) / 0.45 * (RESCALE_STEPS - 1)).round().clamp(0, RESCALE_STEPS - 1)
    for k in range(RESCALE_STEPS):
        s = max(16, int(R * (0.35 + 0.45 * k / (RESCALE_STEPS - 1))))
        small = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        sel = (on[:, 3] > 0) & (step == k)
        x = torch.where(sel[:, None, None, None], F.interpolate(small, size=(R, R), mode="bilinear",
                                                                align_corners=False), x)
    T = noise_tile.shape[-1]
    seed = p["dg_noise"]
    oy, ox = seed % (T + 1 - R), (seed // 1024) % (T + 1 - R)
    ar = torch.arange(R, device=img.device)
    rows = (oy[:, None] + ar[None])  # (B, R)
    cols = (ox[:, None] + ar[None])
    nz = noise_tile[:, rows[:, :, None], cols[:, None, :]].permute(1, 0, 2, 3)  # (B, 3, R, R)
    nz = torch.where(((seed >> 20) % 2 == 1)[:, None, None, None], nz.flip(2), nz)
    x = torch.where(_bcast(on[:, 4])[:, None] > 0, x + nz * _bcast(p["dg_sigma"])[:, None], x)
    x = torch.floor(x.clamp(0, 254.5) + 0.5)
    return torch.where((on[:, 5] > 0)[:, None, None, None], jpeg(x, p["dg_quality"]), x)
