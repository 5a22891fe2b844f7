"""Batched synthetic generator: B training samples in one pass on a torch device.

    gen = BatchGenerator(resolution=128, device="cuda")
    batch = gen.generate(seeds)      # image (B, 3, R, R) in [-1, 1], xyz, corr, mask (training layout)

Two stages. :func:`draw_params` draws every sample's scene on the CPU from the sample's own seed,
with the per-sample generator's random streams and functions for the face (identity,
expression), pose, camera (distance, crop jitter, the camera placed on the 68 landmarks as
``generate_sample`` does), skin/eye/hair appearance and lighting: a seed gives the same face,
pose, camera and lights as ``generate_sample(seed)``, in whatever batch it falls. The
background, hair, occluder and degradation streams are drawn in the batched layers' own form
(:mod:`.batch_layers`). :meth:`BatchGenerator.render` does the rest on the device: shape
synthesis as one matmul over the bases, one batched rasterisation (``rasterize`` with a batch
of meshes), per-vertex albedo, normals, the key light's shadow map (one batched rasterisation
too), shading, albedo detail, eyes, exposure, hair, occluders, backgrounds, torso and camera
degradations. Given the same posed vertices and focal length the labels (xyz, corr, mask) are
the per-sample generator's, bit for bit (``tests/test_batch_training.py``); the appearance
matches it in distribution (docs/reference/batched_synth.md).
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F

from ..core.correspondence import MODEL_TO_CAMERA
from ..core.face_model import N_IDENTITY, FaceModel, load_synth_face_model
from . import batch_layers as L
from .synth import appearance as A
from .synth.generator import _place_camera, _sample_light, sample_camera
from .synth.hair import draw_hair
from .synth.mesh import SCLERA, TEETH, render_mesh
from .synth.raster import rasterize
from .synth.sampling import rng_for, rotation_from_pose, sample_expression, sample_identity, sample_pose

__all__ = ["BatchGenerator", "draw_params", "linear_to_srgb", "srgb_to_linear"]

_LUM = (0.2126, 0.7152, 0.0722)
CURTAIN_SEEDS = 250
CURTAIN_STEPS = 32


def srgb_to_linear(c: torch.Tensor) -> torch.Tensor:
    return torch.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(c: torch.Tensor) -> torch.Tensor:
    c = c.clamp(0.0, 1.0)
    return torch.where(c <= 0.0031308, c * 12.92, 1.055 * c.clamp(min=1e-12) ** (1 / 2.4) - 0.055)


# -- per-sample draws (CPU) -------------------------------------------------------------------
def _draw_one(seed: int, R: int, model: FaceModel, lm_basis: tuple, jitter: bool,
              occluders: bool, degrade: bool, n_photos: int) -> dict:
    w_id = sample_identity(seed, N_IDENTITY, 1.0)
    w_ex = model.expression_weights(sample_expression(rng_for(seed, "expression")))
    pose = sample_pose(rng_for(seed, "pose"))
    rot = rotation_from_pose(pose["yaw"], pose["pitch"], pose["roll"]) @ MODEL_TO_CAMERA
    dist, s_j, sh_j = sample_camera(rng_for(seed, "camera"))
    if not jitter:
        s_j, sh_j = 1.0, np.zeros(2)
    # the landmarks alone place the camera (float32 shape, as generate_sample's)
    lm = lm_basis[0] + w_id.astype(np.float32) @ lm_basis[1]
    lm = lm + w_ex.astype(np.float32) @ lm_basis[2]
    Xr = (lm.reshape(-1, 3).astype(np.float64) * 10.0) @ rot.T
    t, f = _place_camera(Xr, R, dist, s_j, sh_j * R * s_j)
    app = A.sample_appearance(rng_for(seed, "appearance"))
    light = _sample_light(rng_for(seed, "light"))
    lip = app["lipstick_srgb"]
    out = {
        "seed": np.int64(seed),
        "coeffs": np.concatenate([w_id, w_ex]).astype(np.float32),
        "rotation": rot, "translation": t, "focal": np.float64(f),
        "skin_srgb": np.asarray(app["skin_srgb"]), "hair_srgb": np.asarray(app["hair_srgb"]),
        "brow_srgb": np.asarray(app["brow_srgb"]), "iris_srgb": np.asarray(app["iris_srgb"]),
        "lipstick": np.asarray(lip if lip is not None else [0.0, 0.0, 0.0]),
        "sclera_srgb": np.asarray(app["sclera_srgb"]), "teeth_srgb": np.asarray(app["teeth_srgb"]),
        "app": np.array([lip is not None, app["lip_red"], app["cheek_red"], app["brow_density"],
                         app["eye_dark"], app["beard"], app["freckles"], app["bald"], app["hairline_cm"],
                         app["pores"], app["blotches"], app["pupil"]], dtype=np.float32),
        "noise_offset": np.asarray(app["noise_offset"], dtype=np.int64),
        "light": np.array([light["ambient"], *light["ambient_colour"], light["sh1"], *light["sh1_dir"],
                           light["key"], *light["key_dir"], *light["key_colour"], light["shadow_soft_px"],
                           light["fill"], *light["fill_dir"], light["wrap"], light["shininess"],
                           light["specular"], light["exposure"]], dtype=np.float32),
    }
    out.update(_draw_hair(rng_for(seed, "hair"), occluders and not app["bald"]))
    out.update(L.draw_background_params(rng_for(seed, "background"), app["skin_srgb"], n_photos,
                                        A.PHOTO_BACKGROUND_P))
    oc = L.draw_occluder_params(rng_for(seed, "occluders"))
    oc["oc_on"] = oc["oc_on"] * occluders
    out.update(oc)
    out.update(L.draw_degrade_params(rng_for(seed, "degrade"), degrade))
    return out


def _draw_hair(rng: np.random.Generator, enabled: bool) -> dict:
    """The hair layer's draws (``training/synth/hair.draw_hair``) as fixed-size arrays."""
    d = draw_hair(rng)
    return {
        "hr_on": np.float32(enabled and d["style"] != "none"), "hr_long": np.float32(d["style"] == "long"),
        "hr_geom": np.array([d["thick"], d["front"], d["drop"], d["nape"], d["length"], d["flare"], *d["wave"],
                             d["n_turns"], d["sheen"]], dtype=np.float32),
        "hr_phase": d["phase"].astype(np.float32), "hr_freq": d["freq"].astype(np.float32),
        "hr_colour": d["colour_jit"].astype(np.float32),
    }


def draw_params(seeds, resolution: int, model: FaceModel | None = None, *, jitter: bool = True,
                occluders: bool = True, degrade: bool = True, n_photos: int | None = None,
                threads: int = 1) -> dict[str, np.ndarray]:
    """Stacked per-sample scene parameters of ``seeds`` (each a function of its seed only)."""
    model = model if model is not None else load_synth_face_model()
    rm = render_mesh(model)
    lm_cols = (rm.landmarks_68[:, None] * 3 + np.arange(3)).ravel()
    lm_basis = (rm.neutral_flat[lm_cols], np.ascontiguousarray(rm.identity_basis[:, lm_cols]),
                np.ascontiguousarray(rm.expression_basis[:, lm_cols]))
    if n_photos is None:
        from .synth.photos import photo_sources

        n_photos = len(photo_sources())
    R = int(resolution)

    def one(s):
        return _draw_one(int(s), R, model, lm_basis, jitter, occluders, degrade, n_photos)

    seeds = [int(s) for s in seeds]
    if threads > 1:
        with ThreadPoolExecutor(threads) as ex:
            rows = list(ex.map(one, seeds))
    else:
        rows = [one(s) for s in seeds]
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


# -- the device stage ---------------------------------------------------------------------------
class BatchGenerator:
    """Renders batches of synthetic samples on ``device`` (see the module docstring)."""

    def __init__(self, resolution: int = 128, device: str | torch.device = "cpu",
                 model: FaceModel | None = None, photos: bool = True):
        self.R = int(resolution)
        if self.R < 16 or self.R % 8:
            raise ValueError(f"resolution must be a multiple of 8 and >= 16, got {resolution}")
        self.device = torch.device(device)
        self.model = model if model is not None else load_synth_face_model()
        rm = self.rm = render_mesh(self.model)
        dev = self.device
        t = lambda a, dt=torch.float32: torch.as_tensor(np.array(a), dtype=dt, device=dev)  # noqa: E731
        self.N = rm.n_vertices
        self.basis = t(np.concatenate([rm.identity_basis, rm.expression_basis]))  # (153, 3N)
        self.neutral = t(rm.neutral_flat)
        self.tris = t(rm.triangles, torch.int64)
        self.casters = t(rm.caster_triangles, torch.int64)
        self.tri_part = t(rm.tri_part, torch.int64)
        mk = rm.masks
        self.masks = {k: t(v) for k, v in mk.items()}
        self.part = t(rm.part, torch.int64)
        canon = np.zeros((self.N, 3), dtype=np.float32)
        canon[: rm.n_face_vertices] = rm.canon
        self.canon = t(canon)
        self.neutral_cm = t(rm.neutral_cm)
        self.eye_centres = t(rm.eye_centres_cm)
        self.landmarks = t(rm.landmarks_68, torch.int64)
        bank = A.noise_bank()
        self.bank = {k: t(v) for k, v in bank.items()}
        self.noise_tile = t(np.random.default_rng(31337).standard_normal((512, 512, 3), dtype=np.float32)
                            .transpose(2, 0, 1))
        self.photos = L.photo_bank(dev) if photos else None
        self.n_photos = 0 if self.photos is None else int(self.photos["images"].shape[0])
        # hair: scalp vertices/triangles and the curtain seeds (a fixed subsample of the sides)
        ns = self.ns = rm.n_skin_vertices
        neu = rm.neutral_cm[:ns]
        ear_z = float(rm.neutral_cm[rm.landmarks_68[0], 2])
        side = np.clip((ear_z - 0.5 - neu[:, 2]) / 1.5, 0.0, 1.0)
        self.hair_side = t(side)
        self.skin_tris = t(rm.skin_triangles, torch.int64)
        cand = np.flatnonzero(side > 0.5)
        self.curtain_ids = t(cand[:: max(1, len(cand) // CURTAIN_SEEDS)], torch.int64)
        self.sm_size = int(np.clip(self.R // 2, 96, 192))

    # -- public ---------------------------------------------------------------------------------
    def params(self, seeds, **kw) -> dict[str, torch.Tensor]:
        """:func:`draw_params` for ``seeds``, moved to the device."""
        p = draw_params(seeds, self.R, self.model, n_photos=self.n_photos, **kw)
        return self.to_device(p)

    def to_device(self, p: dict) -> dict[str, torch.Tensor]:
        """Parameters (numpy arrays, or tensors as a DataLoader hands them over, possibly pinned)
        on the device."""
        out = {}
        for k, v in p.items():
            tt = v if isinstance(v, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(v))
            if tt.dtype == torch.float64 and k not in ("rotation", "translation", "focal"):
                tt = tt.float()
            out[k] = tt.to(self.device, non_blocking=True)
        return out

    @torch.no_grad()
    def generate(self, seeds, *, shadows: bool = True, **kw) -> dict[str, torch.Tensor]:
        """Training tensors of ``seeds``: image (B, 3, R, R) float32 in [-1, 1], xyz (B, 3, R, R)
        mm, corr (B, 3, R, R), mask (B, 1, R, R) float32."""
        return self.render(self.params(seeds, **kw), shadows=shadows, layers=kw.get("occluders", True))

    def posed_vertices(self, p: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, N, 3) float64 camera-frame vertices, mm: one matmul over the bases."""
        V = (self.neutral + p["coeffs"] @ self.basis).view(-1, self.N, 3).double()
        return (V * 10.0) @ p["rotation"].transpose(1, 2) + p["translation"][:, None, :]

    @torch.no_grad()
    def render(self, p: dict[str, torch.Tensor], *, shadows: bool = True, X: torch.Tensor | None = None,
               as_uint8: bool = False, layers: bool = True) -> dict[str, torch.Tensor]:
        """Render the batch of parameters ``p``; ``X`` overrides the posed vertices (tests);
        ``layers=False`` skips the hair and occluder layers (parameters drawn without them)."""
        R, N, dev = self.R, self.N, self.device
        X = self.posed_vertices(p) if X is None else X.to(dev, torch.float64)
        B = X.shape[0]
        f = p["focal"].double()
        nfv = self.rm.n_face_vertices
        z_ref = X[:, :nfv, 2].mean(dim=1)
        tri_id, bary, depth = rasterize(X, self.tris, f, R, cull_backfaces=True, return_numpy=False)
        tri_id, bary, depth = tri_id.reshape(-1), bary.reshape(-1, 3), depth.reshape(-1)
        covered = tri_id >= 0
        face_px = covered & (tri_id < self.rm.n_face_tris)
        cov = torch.nonzero(covered).squeeze(1)
        b_of = torch.div(cov, R * R, rounding_mode="floor")
        loc = cov - b_of * R * R
        tri_c = tri_id.index_select(0, cov)
        bary_c = bary.index_select(0, cov)

        # per-vertex attributes, interpolated at the covered pixels (interpolate_pixels' order)
        Nv = self._vertex_normals(X)
        alb_v, spec_v, hair_v = self._vertex_albedo(p, B)
        mk = self.masks
        attrs = torch.cat([Nv, alb_v, self.neutral_cm.expand(B, N, 3), spec_v[..., None], hair_v[..., None],
                           mk["beard"].expand(B, N)[..., None], mk["freckle"].expand(B, N)[..., None],
                           self.canon.expand(B, N, 3)], dim=2).reshape(B * N, -1)
        corners = self.tris.index_select(0, tri_c) + (b_of * N)[:, None]
        vals = attrs.index_select(0, corners[:, 0]) * bary_c[:, 0:1]
        vals = vals + attrs.index_select(0, corners[:, 1]) * bary_c[:, 1:2]
        vals = vals + attrs.index_select(0, corners[:, 2]) * bary_c[:, 2:3]
        Nrm, alb, neu = vals[:, 0:3], vals[:, 3:6], vals[:, 6:9]
        spw, hw, bw, fz, cn = vals[:, 9], vals[:, 10], vals[:, 11], vals[:, 12], vals[:, 13:16]
        rows = torch.div(loc, R, rounding_mode="floor")
        cols = loc - rows * R
        fb = f.index_select(0, b_of)
        ray = torch.stack([(cols.double() + 0.5 - R / 2) / fb, (rows.double() + 0.5 - R / 2) / fb,
                           torch.ones_like(fb)], dim=1)
        P = ray * depth.index_select(0, cov)[:, None].double()

        # shading
        Nrm = Nrm / (torch.sqrt((Nrm * Nrm).sum(1, keepdim=True)) + 1e-12)
        lin, expo = self._shade(p, X, P.float(), Nrm, alb, neu, spw, hw, bw, fz, ray.float(), cov, b_of,
                                tri_c, B, shadows)

        # labels (as generate_sample: the pixel's point on its ray, its canonical coordinate)
        hair_rgba = occ_rgba = None
        lm2d = self._project(X[:, self.landmarks], f)
        if layers:
            hair_rgba = self._hair(p, X, Nv, f, covered.view(B, R, R), depth.view(B, R, R), expo)
            occ_rgba = L.occluder_layer(p, R, lm2d.float(), p["hair_srgb"], p["skin_srgb"])
        mask = face_px.view(B, R, R).clone()
        if hair_rgba is not None:
            mask &= hair_rgba[:, 3] < 0.5
        if occ_rgba is not None:
            mask &= occ_rgba[:, 3] < 0.5
        pm = mask.reshape(-1).index_select(0, cov)[:, None]  # (selections by where: no host sync)
        lab = P.clone()
        lab[:, 2] -= z_ref.index_select(0, b_of)
        xyz = torch.zeros((B * R * R, 3), dtype=torch.float32, device=dev)
        corr = torch.zeros((B * R * R, 3), dtype=torch.float32, device=dev)
        xyz.index_copy_(0, cov, torch.where(pm, lab.float(), 0.0))
        corr.index_copy_(0, cov, torch.where(pm, cn.clamp(0.0, 1.0), 0.0))

        img = L.compose_background(p, self.photos, R, lm2d[:, 8].float(),
                                   (lm2d[:, :, 0].amax(1) - lm2d[:, :, 0].amin(1)).float() * 0.55,
                                   p["skin_srgb"])
        flat = img.permute(0, 2, 3, 1).reshape(-1, 3)
        flat = flat.index_copy(0, cov, linear_to_srgb(lin))
        img = flat.view(B, R, R, 3).permute(0, 3, 1, 2)
        for layer in (hair_rgba, occ_rgba):
            if layer is not None:
                a = layer[:, 3:4]
                img = img * (1 - a) + layer[:, :3] * a
        img8 = L.degrade(img, p, self.noise_tile)
        chw = lambda t: t.view(B, R, R, 3).permute(0, 3, 1, 2).contiguous()  # noqa: E731
        out = {"xyz": chw(xyz), "corr": chw(corr), "mask": mask[:, None].float()}
        out["image"] = img8.to(torch.uint8) if as_uint8 else img8 / 127.5 - 1.0
        return out

    # -- pieces -------------------------------------------------------------------------------------
    def _project(self, P: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        c = self.R / 2.0
        return torch.stack([f[:, None] * P[..., 0] / P[..., 2] + c, f[:, None] * P[..., 1] / P[..., 2] + c], -1)

    def _vertex_normals(self, X: torch.Tensor) -> torch.Tensor:
        Xf = X.float()
        T = self.tris
        a = Xf[:, T[:, 0]]
        fn = torch.cross(Xf[:, T[:, 1]] - a, Xf[:, T[:, 2]] - a, dim=2)
        n = torch.zeros_like(Xf)
        for k in range(3):
            n.index_add_(1, T[:, k], fn)
        return n / (n.norm(dim=2, keepdim=True) + 1e-12)

    def _vertex_albedo(self, p, B):
        """Per-vertex linear albedo (B, N, 3), specular (B, N), hair weight (B, N):
        ``appearance.vertex_albedo`` for a batch."""
        mk, ns = self.masks, self.ns
        ap = p["app"]
        col = lambda k: srgb_to_linear(p[k].float())[:, None, :]  # noqa: E731
        skin, hair, brow = col("skin_srgb"), col("hair_srgb"), col("brow_srgb")
        m = {k: mk[k][None, :ns, None] for k in ("lips", "cheeks", "nose", "eyes", "brow", "beard")}
        base = torch.tensor([0.85, 0.55, 0.58], device=self.device)
        lip = skin * base[None, None] ** (1 + ap[:, 1])[:, None, None]
        lip = torch.where(ap[:, 0, None, None] > 0, 0.3 * lip + 0.7 * col("lipstick"), lip)
        a = skin + m["lips"] * (lip - skin)
        red = torch.tensor([0.0, 0.25, 0.25], device=self.device)
        cheek = ap[:, 2, None, None]
        shade = 1 - (m["cheeks"] * cheek + m["nose"] * (0.6 * cheek)) * red
        shade = shade * (1 - m["eyes"] * (ap[:, 4, None, None] * torch.tensor([0.3, 0.35, 0.3], device=self.device)))
        shade = shade * (1 - 0.8 * mk["lash_up"][None, :ns, None] - 0.3 * mk["lash_lo"][None, :ns, None])
        a = a * shade
        bd = m["brow"] * ap[:, 3, None, None]
        a = a + bd * (brow - a)
        a = a + m["beard"] * (ap[:, 5, None, None] * 0.35) * (hair - a)
        h0 = ap[:, 8, None]
        line = h0 - mk["behind"][None, :ns] * (h0 + 3.0)
        hw = torch.sigmoid(((mk["height"][None, :ns] - line) / 0.35).clamp(-50, 50))
        hw = hw * (ap[:, 7, None] < 0.5)
        a = a + hw[..., None] * (hair - a)
        inner = mk["inner_colour"][ns:].expand(B, -1, 3)
        part = self.part[ns:]
        inner = torch.where((part == TEETH)[None, :, None], col("teeth_srgb"), inner)
        inner = torch.where((part == SCLERA)[None, :, None], col("sclera_srgb"), inner)
        inner = inner * mk["inner_ao"][None, ns:, None]
        alb = torch.cat([a, inner], dim=1)
        spec = mk["spec_base"].expand(B, -1).clone()
        spec[:, :ns] = torch.where(hw > 0.5, torch.full_like(hw, 0.15), spec[:, :ns])
        hair_w = torch.cat([hw, torch.zeros((B, self.N - ns), device=self.device)], dim=1)
        return alb, spec, hair_w

    def _lookup(self, tex: str, uv: torch.Tensor, off: torch.Tensor) -> torch.Tensor:
        """Nearest, wrapping lookup (``appearance.lookup(..., bilinear=False)``)."""
        t = self.bank[tex]
        s = t.shape[0]
        i = (uv[:, 1].long() + off[:, 1]) % s  # trunc like numpy's astype(int64)
        j = (uv[:, 0].long() + off[:, 0]) % s
        return t[i, j]

    def _shade(self, p, X, P, Nrm, alb, neu, spw, hw, bw, fz, ray, cov, b_of, tri_c, B, shadows):
        ap, lt = p["app"], p["light"]
        g = lambda v: v.index_select(0, b_of)  # noqa: E731  per-sample values at the pixels
        # eyes: iris, pupil, limbus, lid shading (appearance.paint_eyes)
        eye = self.tri_part.index_select(0, tri_c) == SCLERA
        left = neu[:, 0] > 0
        d = neu - torch.where(left[:, None], self.eye_centres[0].float(), self.eye_centres[1].float())
        dist = d.norm(dim=1)
        cos_t = d[:, 2] / (dist + 1e-9)
        r = torch.arccos(cos_t.clamp(-1, 1)) / A.IRIS_HALF_ANGLE
        iris = g(srgb_to_linear(p["iris_srgb"].float())) * (0.6 + 0.7 * r[:, None])
        e = torch.where((r < 1.0)[:, None], iris, alb)
        e = e * (1 - 0.6 * (1 - (r - 1.0).abs() / 0.12).clamp(0, 1)[:, None])
        e = torch.where((r < g(ap[:, 11]))[:, None], torch.full_like(e, 0.01), e)
        up = (d[:, 1] / (dist + 1e-9)).clamp(0, 1)
        e = e * (1 - 0.45 * up - 0.4 * (1 - cos_t.clamp(0, 1)))[:, None]
        alb = torch.where(eye[:, None], e, alb)
        # albedo detail by neutral position (1 texel = 1 mm)
        off = g(p["noise_offset"])
        tex_uv = torch.stack([neu[:, 0] * 10, -neu[:, 1] * 10], 1) + 128
        fine = self._lookup("fine", tex_uv, off[:, :2])
        mid = self._lookup("mid", tex_uv, off[:, 2:])
        detail = 1 + (g(ap[:, 9]) * fine + g(ap[:, 10]) * mid) * (hw < 0.5)
        alb = alb * detail[:, None]
        stub = (bw * g(ap[:, 5]) * (fine > 0.5)).clamp(0, 1)[:, None] * 0.5
        alb = alb * (1 - stub) + g(srgb_to_linear(p["hair_srgb"].float())) * stub
        fr = self._lookup("fine", tex_uv * 0.5, off.flip(1)[:, :2])
        alb = alb * (1 - 0.35 * g(ap[:, 6]) * fz.clamp(0, 1) * (fr > 1.6))[:, None]
        strand = self._lookup("strand", tex_uv * torch.tensor([1.0, 0.25], device=self.device), off[:, :2])
        alb = alb * (1 + 0.35 * hw * strand)[:, None]
        # lights: ambient with a first-order SH term, wrapped key light with a shadow map, fill
        Vdir = -ray / ray.norm(dim=1, keepdim=True)
        amb = g(lt[:, 0:1] * lt[:, 1:4])
        sh1 = g(lt[:, 5:8] * (lt[:, 4:5] / 0.7))
        shade = amb * (1 + (Nrm * sh1).sum(1)).clamp(min=0.2)[:, None]
        key, L_ = g(lt[:, 8]), g(lt[:, 9:12])
        ndl = (Nrm * L_).sum(1)
        w = g(lt[:, 20])
        diff = ((ndl + w) / (1 + w)).clamp(min=0)
        sh = torch.ones_like(ndl)
        if shadows:
            sh = self._shadow(X, P, Nrm, lt[:, 9:12].double(), cov, b_of, B, lt[:, 15])
            fade = ((ndl - 0.08) / 0.2).clamp(0.0, 1.0)
            sh = 1.0 - (1.0 - sh) * (fade * fade * (3 - 2 * fade))
        on = (key > 0).float()
        kc = g(lt[:, 8:9] * lt[:, 12:15])
        shade = shade + (diff * sh * on)[:, None] * kc
        H = Vdir + L_
        H = H / H.norm(dim=1, keepdim=True)
        spec = ((Nrm * H).sum(1).clamp(0, 1) ** g(lt[:, 21])) * (ndl > 0) * sh * g(lt[:, 22]) * spw * on
        fill = g(lt[:, 16]) * (Nrm * g(lt[:, 17:20])).sum(1).clamp(min=0)
        shade = shade + fill[:, None]
        lin = alb * shade + spec[:, None] * kc
        # auto-exposure: the skin's median luminance gain (nan-padded medians per sample)
        lumw = torch.tensor(_LUM, device=self.device)
        R2 = self.R * self.R
        grid = torch.full((2, B * R2), float("nan"), device=self.device)
        grid[0].index_copy_(0, cov, lin @ lumw)
        grid[1].index_copy_(0, cov, alb @ lumw)
        med = grid.view(2, B, R2).nanmedian(dim=2).values
        gain = med[0] / med[1].clamp(min=1e-4)
        expo = lt[:, 23] / (gain * 0.35).clamp(min=1e-4)
        return lin * g(expo)[:, None], expo

    def _shadow(self, X, P, N, Lk, cov, b_of, B, soft):
        """Fraction of the key light reaching each covered pixel (``generator._shadow``,
        batched), softened by a per-sample blur of ``soft`` px at 256."""
        R, S = self.R, self.sm_size
        centre = X.mean(dim=1)
        D = 5000.0
        zl = -Lk
        up = torch.where((zl[:, 1].abs() < 0.9)[:, None], torch.tensor([0.0, 1.0, 0.0], device=self.device,
                                                                        dtype=Lk.dtype),
                         torch.tensor([1.0, 0.0, 0.0], device=self.device, dtype=Lk.dtype))
        xl = torch.cross(up, zl, dim=1)
        xl = xl / xl.norm(dim=1, keepdim=True)
        yl = torch.cross(zl, xl, dim=1)
        Rl = torch.stack([xl, yl, zl], dim=1)  # (B, 3, 3)
        origin = centre + Lk * D
        Xl = (X[:, : self.rm.n_caster_vertices] - origin[:, None]) @ Rl.transpose(1, 2)
        radius = (X - centre[:, None]).norm(dim=2).amax(dim=1) * 1.02
        f = S / 2 * D / radius
        sm = rasterize(Xl, self.casters, f, S, cull_backfaces=True, return_bary=False,
                       return_numpy=False).depth.reshape(-1)
        Pl = torch.einsum("pij,pj->pi", Rl.float().index_select(0, b_of), P - origin.float().index_select(0, b_of))
        fb = f.float().index_select(0, b_of)
        u = fb * Pl[:, 0] / Pl[:, 2] + S / 2
        v = fb * Pl[:, 1] / Pl[:, 2] + S / 2
        texel = (2 * radius / S).float().index_select(0, b_of)
        ndl = (N * Lk.float().index_select(0, b_of)).sum(1).clamp(0.05, 1.0)
        bias = texel * (1.5 + torch.minimum(2.0 * torch.sqrt(1 - ndl ** 2) / ndl, torch.full_like(ndl, 6.0)))
        lit = torch.zeros_like(u)
        base = b_of * S * S
        for dx in (-0.5, 0.5):
            for dy in (-0.5, 0.5):
                j = (u + dx).long().clamp(0, S - 1)
                i = (v + dy).long().clamp(0, S - 1)
                lit += (Pl[:, 2] <= sm.index_select(0, base + i * S + j) + bias).float()
        lit = lit / 4
        img = torch.ones(B * R * R, device=self.device)
        img.index_copy_(0, cov, lit)
        img = L.blur(img.view(B, 1, R, R), soft * R / 256, 4.0 * R / 256)
        return img.reshape(-1).index_select(0, cov)

    def _hair(self, p, X, Nv, f, covered, depth, expo):
        """(B, 4, R, R) RGBA hair layer with volume (``training/synth/hair.py``, batched)."""
        R, ns, dev = self.R, self.ns, self.device
        B = X.shape[0]
        mk = self.masks
        gm = p["hr_geom"]
        thick, front, drop, nape, length, flare = (gm[:, k:k + 1] for k in range(6))
        neu = self.neutral_cm[:ns]
        h0 = p["app"][:, 8:9] + front
        line = h0 - self.hair_side[None] * (drop + h0.clamp(min=0)) - mk["behind"][None, :ns] * nape
        w = torch.sigmoid(((mk["height"][None, :ns] - line) / 0.4).clamp(-50, 50))  # (B, ns)
        on = w > 0.5
        T = self.skin_tris
        tri_on = on[:, T[:, 0]] & on[:, T[:, 1]] & on[:, T[:, 2]]  # (B, Ts)
        used = torch.zeros((B, ns), device=dev).index_add_(
            1, T.reshape(-1), tri_on.float().repeat_interleave(3, dim=1)) > 0
        sn = torch.sin(neu[None] @ p["hr_freq"] + p["hr_phase"][:, None])
        var = 1 + 0.25 * sn.mean(dim=2)
        top = (mk["height"][None, :ns] / 8.0).clamp(0, 1)
        sm = ((w - 0.3) / 0.5).clamp(0, 1)
        t_mm = (1.5 + thick * (0.45 + 0.55 * top) * var) * sm * sm * (3 - 2 * sm)
        Xs = X[:, :ns].float() + Nv[:, :ns] * t_mm[..., None]
        bw = torch.tensor([[1 / 3, 1 / 3, 1 / 3], [2 / 3, 1 / 6, 1 / 6], [1 / 6, 2 / 3, 1 / 6],
                           [1 / 6, 1 / 6, 2 / 3]], device=dev)
        tp = torch.einsum("kc,btcd->bktd", bw, Xs[:, T]).reshape(B, -1, 3)  # (B, 4 Ts, 3)
        pts = [Xs, tp]
        ok = [used, tri_on.repeat(1, 4)]
        # curtains (long hair) from the sides and back, along the head's own down axis
        rot = p["rotation"].float()
        down, lat = -rot[:, :, 1], rot[:, :, 0]
        cid = self.curtain_ids
        seeds = Xs[:, cid]  # (B, C, 3)
        lowest = torch.where(used, (Xs * down[:, None]).sum(2), torch.full_like(w, -1e9)).amax(1)
        span = lowest[:, None] + length - (seeds * down[:, None]).sum(2)
        s_t = torch.linspace(0.0, 1.0, CURTAIN_STEPS, device=dev)
        hang = span[:, None, :] * s_t[None, :, None]  # (B, S, C)
        out_dir = down[:, None] + (torch.sign(neu[cid, 0])[None] * flare)[..., None] * lat[:, None]
        cur = seeds[:, None] + hang[..., None] * out_dir[:, None]
        pts.append(cur.reshape(B, -1, 3))
        ok.append((used[:, cid] & (p["hr_long"][:, None] > 0))[:, None].expand(-1, CURTAIN_STEPS, -1).reshape(B, -1))
        Pp = torch.cat(pts, 1)
        okp = torch.cat(ok, 1) & (Pp[..., 2] > 1.0) & (p["hr_on"][:, None] > 0)
        ff = f.float()[:, None]
        u = ff * Pp[..., 0] / Pp[..., 2].clamp(min=1.0) + R / 2
        v = ff * Pp[..., 1] / Pp[..., 2].clamp(min=1.0) + R / 2
        okp &= (u >= 0) & (u < R) & (v >= 0) & (v < R)
        r_, c_ = v.long().clamp(0, R - 1), u.long().clamp(0, R - 1)
        bi = torch.arange(B, device=dev)[:, None]
        okp &= ~covered[bi, r_, c_] | (Pp[..., 2] < depth[bi, r_, c_] + 2.0)
        G = max(8, R // 4)
        occ = torch.zeros(B * G * G, device=dev)
        gidx = bi * G * G + (v * G / R).long().clamp(0, G - 1) * G + (u * G / R).long().clamp(0, G - 1)
        occ.scatter_reduce_(0, gidx.reshape(-1), okp.reshape(-1).float(), "amax")
        occ = occ.view(B, 1, G, G)
        Dg = (L.blur(occ, torch.full((B,), 1.1, device=dev), 1.1) * 2.2).clamp(0, 1)
        # shading on the grid: normals from the silhouette's slope, lights of the sample
        Db = L.blur(Dg, torch.full((B,), 2.5, device=dev), 2.5)[:, 0]
        gy, gx = torch.gradient(Db, dim=(1, 2))
        Ng = torch.stack([-gx * 4.0, -gy * 4.0, -torch.ones_like(gx)], -1)
        Ng = Ng / Ng.norm(dim=-1, keepdim=True)
        lt = p["light"]
        bc = lambda v: v[:, None, None]  # noqa: E731
        shade = bc(lt[:, 0:1] * lt[:, 1:4]).expand(B, G, G, 3)
        Lk = lt[:, 9:12]
        ndl = (Ng * bc(Lk)).sum(-1)
        Hv = Lk + torch.tensor([0.0, 0.0, -1.0], device=dev)
        Hv = Hv / Hv.norm(dim=1, keepdim=True)
        spec = (Ng * bc(Hv)).sum(-1).clamp(0, 1) ** 12 * bc(gm[:, 9]) * (ndl > 0)
        kc = lt[:, 8:9] * lt[:, 12:15] * (lt[:, 8:9] > 0)
        shade = shade + (ndl.clamp(min=0) + spec)[..., None] * bc(kc)
        shade = shade + bc(lt[:, 16:17]) * (Ng * bc(lt[:, 17:20])).sum(-1).clamp(min=0)[..., None]
        alb = srgb_to_linear((p["hair_srgb"] * p["hr_colour"]).clamp(0, 1))
        base = bc(alb) * shade * bc(expo[:, None]) * (0.65 + 0.35 * (Dg[:, 0] * 1.3).clamp(0, 1))[..., None]
        base = linear_to_srgb(base).permute(0, 3, 1, 2)  # (B, 3, G, G)
        up = lambda a: F.interpolate(a, size=(R, R), mode="bilinear", align_corners=False)  # noqa: E731
        Dw = up(Dg)[:, 0]
        reach = up(F.max_pool2d((Dg > 0).float(), 3, stride=1, padding=1))[:, 0] > 0
        # strands radiating from the crown (above the topmost hair)
        vv = torch.where(okp, v, torch.full_like(v, float(R)))
        vmin = vv.amin(1)
        near_top = okp & (v < vmin[:, None] + 0.03 * R + 1)
        cx = (u * near_top).sum(1) / near_top.sum(1).clamp(min=1)
        cy = vmin - 0.15 * R
        xx, yy = L._grid(B, R, dev)
        dx, dy = xx - bc(cx), yy - bc(cy)
        rad = torch.sqrt(dx * dx + dy * dy)
        ang = torch.atan2(dx, dy) + bc(gm[:, 6]) * torch.sin(rad * bc(256 / (gm[:, 7] * R)))
        uvs = torch.stack([(ang * bc(256 * gm[:, 8] / (2 * math.pi))).reshape(B, -1),
                           (rad * (64 / R)).reshape(B, -1)], -1).reshape(-1, 2)
        off = p["noise_offset"].repeat_interleave(R * R, dim=0)
        strand = self._lookup("strand", uvs, off[:, :2]).view(B, R, R)
        coarse = self._lookup("mid", uvs * 0.25, off[:, 2:]).view(B, R, R)
        a = ((Dw - 0.3) / 0.3 + 1.2 * strand).clamp(0, 1)
        alpha = a * a * (3 - 2 * a) * reach * bc(p["hr_on"])
        tex = (1 + 0.6 * strand).clamp(min=0.45) * torch.exp(0.11 * coarse)
        rgb = (up(base) * tex[:, None]).clamp(max=1.0)
        return torch.cat([rgb, alpha[:, None]], 1)

