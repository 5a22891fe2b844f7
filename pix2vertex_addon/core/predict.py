"""Inference of the image-to-geometry networks (no ``bpy``): ``Predictor(weights_dir).predict(crop)``.

The weights folder holds ``config.json`` (architecture and resolution) and one fp16 safetensors
file per network (``geometry.safetensors``, ``correspondence.safetensors``), loaded without
pickle. The networks are built and loaded once per :class:`Predictor`; :func:`get_predictor`
caches one per (folder, threads) for callers that want a process-wide instance.

Outputs follow docs/reference/conventions.md, at the network resolution ``R = predictor.resolution``:

``xyz`` : float32 (R, R, 3)
    label frame (x right, y down, z forward; z relative to the head centre), millimetres;
    0 where ``mask`` < 0.5 (``predict_batch(..., apply_mask=False)`` keeps the networks' values).
``mask`` : float32 (R, R)
    face-mask probability in [0, 1]; threshold at 0.5 for a binary mask.
``corr`` : float32 (R, R, 3)
    canonical correspondence in [0, 1] (clipped); 0 where ``mask`` < 0.5 (same exception).
"""

from __future__ import annotations

import importlib.util
import json
import threading
from pathlib import Path

import numpy as np

__all__ = ["BACKENDS", "Predictor", "WeightsError", "default_backend", "default_weights_dir", "get_predictor",
           "load_config", "verify_weights"]

CONFIG_NAME = "config.json"
# In-plane turns (degrees) of the extra views the Predictor averages by default (docs/reference/networks.md).
DEFAULT_ROTATIONS = (-5.0, 5.0)
# Magnifications of the zoomed views it averages by default (none; docs/reference/networks.md).
DEFAULT_SCALES = ()
# "torch": the networks' own definition; "onnx": their ONNX export through onnxruntime (no torch).
BACKENDS = ("torch", "onnx")


def default_backend(weights_dir=None) -> str:
    """torch where it is installed and the folder has the torch weights (development), else
    onnxruntime (the extension zip, which ships only the ONNX export)."""
    wd = Path(weights_dir) if weights_dir else default_weights_dir()
    has_weights = any(wd.glob("*.safetensors")) or not (wd / "predictor.onnx").is_file()
    return "torch" if has_weights and importlib.util.find_spec("torch") is not None else "onnx"


def default_weights_dir() -> Path:
    """``pix2vertex_addon/weights`` (shipped with the add-on)."""
    return Path(__file__).resolve().parents[1] / "weights"


def load_config(weights_dir) -> dict:
    p = Path(weights_dir) / CONFIG_NAME
    if not p.exists():
        raise FileNotFoundError(
            f"{p} not found: the network weights are missing. Export them with "
            "`python -m pix2vertex_addon.training.export_weights --run RUN_DIR --out pix2vertex_addon/weights`."
        )
    try:
        cfg = json.loads(p.read_bytes())
        if not isinstance(cfg, dict):
            raise ValueError("not a JSON object")
        for key in ("resolution", "ngf", "max_channels"):
            int(cfg["architecture"][key])
        for name in cfg["files"].values():
            str(name)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else f"{type(exc).__name__}: {exc}"
        raise WeightsError(f"{p} is damaged or not a pix2vertex weights config ({reason}); "
                           "reinstall the add-on (or export the weights again)") from None
    return cfg


class WeightsError(ValueError):
    """The network weights are missing, damaged or do not fit (the message names the file)."""


def verify_weights(path, sha256: str | None) -> None:
    """Check a weights file against the sha256 its ``config.json`` records (None: not recorded)."""
    from .export import sha256_file

    p = Path(path)
    try:
        digest = sha256_file(p)
    except OSError as exc:
        raise WeightsError(f"cannot read the network weights {p} ({exc.strerror or exc}); "
                           "reinstall the add-on") from None
    if sha256 is not None and digest != sha256:
        raise WeightsError(f"the network weights {p} are damaged (their sha256 differs from the one in "
                           f"{CONFIG_NAME}); reinstall the add-on")


def load_weights_into(net, path) -> None:
    """Load an fp16 safetensors state dict (no pickle) into ``net`` (fp32); WeightsError (a
    ValueError) on an unreadable file or a mismatch of names or shapes."""
    from safetensors.torch import load_file

    try:
        sd = {k: v.float() for k, v in load_file(str(path)).items()}
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types for damaged files
        raise WeightsError(f"the network weights {path} cannot be read ({type(exc).__name__}: {exc}); "
                           "reinstall the add-on") from None
    try:
        missing, unexpected = net.load_state_dict(sd, strict=False)
    except RuntimeError as e:  # same names, other shapes
        raise WeightsError(f"{path} does not match the network: {str(e).splitlines()[0]}") from None
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise WeightsError(f"{path} does not match the network (missing {missing[:3]}, unexpected {unexpected[:3]})")


class Predictor:
    """Geometry and correspondence networks, loaded once and reused.

    Parameters
    ----------
    weights_dir : path, optional
        Folder with config.json and the safetensors files (default: the shipped weights).
    threads : int
        ``torch.set_num_threads`` for inference (set explicitly; the default 2 suits a laptop).
    device : str
        'cpu' (default) or a torch device string.
    flip_average : bool
        Also run both networks on the mirrored crop and average the two predictions, mapped back
        (x -> -x for xyz, u -> 1 - u for the correspondence; the template is mirror-symmetric and
        the crop's principal point is its centre, so both maps are exact). On the 500 held-out
        test images it lowered the mean depth error by 5 % and the correspondence median by 7 %
        (docs/reference/networks.md), for twice the work (0.035 s per crop against 0.032 on 2 cores: one batch);
        default on.
    rotations : sequence of float
        In-plane angles (degrees) of extra views: the crop turned about its centre (a camera
        rolled about its optical axis, so the maps turn back exactly), each also mirrored when
        ``flip_average``; all views are averaged in the crop's frame. ``()``: no turned views.
        The default (-5, 5) costs about four times the network time of the mirrored pair (0.14 s
        per crop on 2 cores); docs/reference/networks.md has what it buys.
    scales : sequence of float
        Magnifications of further views: the crop zoomed about its centre by each factor (a camera
        with a longer or shorter focal length, so the maps shrink or grow back exactly and their
        values stay: the label frame does not depend on the focal length), each also mirrored
        when ``flip_average``. ``()`` (the default): none.
    backend : str
        'torch', 'onnx' (``weights/predictor.onnx`` through onnxruntime, exported for these views:
        :mod:`.onnx_backend`) or None: torch where installed, else onnx.
    """

    def __init__(
        self,
        weights_dir=None,
        threads: int = 2,
        device: str = "cpu",
        flip_average: bool = True,
        rotations=DEFAULT_ROTATIONS,
        scales=DEFAULT_SCALES,
        backend: str | None = None,
    ):
        self.weights_dir = Path(weights_dir) if weights_dir else default_weights_dir()
        self.config = load_config(self.weights_dir)
        self.threads = int(threads)
        self.flip_average = bool(flip_average)
        self.rotations = tuple(float(a) for a in rotations)
        if any(abs(a) > 30 for a in self.rotations):
            raise ValueError(f"rotations must be small in-plane angles in degrees (|a| <= 30), got {rotations}")
        self.scales = tuple(float(s) for s in scales)
        if any(not 0.7 <= s <= 1.4 for s in self.scales):
            raise ValueError(f"scales must be magnifications near 1 (0.7 to 1.4), got {scales}")
        self.backend = backend or default_backend(self.weights_dir)
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        a = self.config["architecture"]
        self.resolution = int(a["resolution"])
        self.xyz_scale_mm = float(self.config.get("xyz_scale_mm", 100.0))
        self._lock = threading.Lock()
        self.nets: dict = {}
        if self.backend == "onnx":
            from .onnx_backend import OnnxEnsemble

            self._onnx = OnnxEnsemble(self.weights_dir, self.config, self.views, self.flip_average, self.threads)
            return
        import torch

        from .nets import define_net

        self.device = torch.device(device)
        torch.set_num_threads(self.threads)
        for name in ("geometry", "correspondence"):
            net = define_net(
                name,
                resolution=self.resolution,
                ngf=a["ngf"],
                max_channels=a["max_channels"],
                num_downs=a.get("num_downs"),
                norm=a.get("norm", "batch"),
            )
            path = self.weights_dir / self.config["files"][name]
            verify_weights(path, (self.config.get("sha256") or {}).get(name))
            load_weights_into(net, path)
            self.nets[name] = net.to(self.device).eval()

    @property
    def views(self) -> tuple:
        """(angle in degrees, magnification) of each view before mirroring, the crop itself first."""
        return (
            ((0.0, 1.0),)
            + tuple((a, 1.0) for a in self.rotations if a)
            + tuple((0.0, s) for s in self.scales if s != 1.0)
        )

    def _prepare(self, crop) -> np.ndarray:
        crop = np.asarray(crop)
        if crop.dtype != np.uint8 or crop.ndim != 3 or crop.shape[2] != 3 or crop.shape[0] != crop.shape[1]:
            raise ValueError(
                f"crop must be a square uint8 RGB image (R, R, 3) (got {crop.dtype} {crop.shape})"
            )
        if crop.shape[0] != self.resolution:
            from PIL import Image

            crop = np.asarray(
                Image.fromarray(crop).resize((self.resolution, self.resolution), Image.Resampling.BILINEAR)
            )
        return crop

    def predict(self, crop) -> dict:
        """Run both networks on one face crop.

        crop : uint8 (S, S, 3) RGB, framed as in core/crop.py; resized to (R, R) when S != R.
        Returns dict xyz float32 (R, R, 3) mm, mask float32 (R, R) probability, corr float32 (R, R, 3).
        """
        return self.predict_batch(self._prepare(crop)[None])[0]

    def predict_batch(self, crops, apply_mask: bool = True) -> list[dict]:
        """crops: uint8 (B, R, R, 3) at the network resolution; returns one dict per crop.

        ``apply_mask=False`` keeps the networks' xyz and correspondence at every pixel instead of
        zeroing them where ``mask`` < 0.5 (the evaluation scores them over the true mask)."""
        crops = np.ascontiguousarray(crops)
        if crops.dtype != np.uint8 or crops.ndim != 4 or crops.shape[-1] != 3:
            raise ValueError(f"crops must be uint8 (B, R, R, 3) (got {crops.dtype} {crops.shape})")
        with self._lock:
            g, c = self._forward(crops)
        out = []
        for k in range(len(g)):
            mask = 1.0 / (1.0 + np.exp(-g[k, 3]))
            xyz = g[k, :3].transpose(1, 2, 0) * self.xyz_scale_mm
            corr = np.clip(c[k].transpose(1, 2, 0), 0.0, 1.0)
            if apply_mask:
                keep = (mask >= 0.5)[..., None]
                xyz, corr = xyz * keep, corr * keep
            out.append(
                {
                    "xyz": xyz.astype(np.float32),
                    "mask": mask.astype(np.float32),
                    "corr": corr.astype(np.float32),
                }
            )
        return out


    def _forward(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 (B, R, R, 3) -> the averaged network outputs, float32 (B, 4, R, R), (B, 3, R, R)."""
        if self.backend == "onnx":
            x = crops.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(127.5) - np.float32(1.0)
            return self._onnx.run(x)
        import torch

        from .ensemble import ViewEnsemble
        from .nets import image_to_tensor

        ensemble = ViewEnsemble(self.nets["geometry"], self.nets["correspondence"], self.views, self.flip_average)
        with torch.inference_mode():
            torch.set_num_threads(self.threads)
            g, c = ensemble(image_to_tensor(crops).to(self.device))
            return g.cpu().numpy(), c.cpu().numpy()


def _warp_theta(angle_deg: float, scale: float, n: int):
    import math

    import torch

    t = math.radians(angle_deg)
    c, s = math.cos(t) / scale, math.sin(t) / scale
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0]]).expand(n, 2, 3)


def _warp(x, angle_deg: float, scale: float, padding: str):
    """Resample (N, C, R, R) maps so that the content turns by ``angle_deg`` and grows by
    ``scale`` about the centre (the crop's principal point); ``(-angle_deg, 1 / scale)`` undoes it."""
    import torch.nn.functional as F

    grid = F.affine_grid(_warp_theta(angle_deg, scale, len(x)).to(x), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding, align_corners=False)


def _unwarp_average(g, c, views, b: int):
    """Average the predictions of the views (``g``, ``c`` stacked view by view, ``b`` crops each;
    ``views`` as :attr:`Predictor.views`, the first the crop itself) in the frame of the crop.

    A view of the crop turned by ``a`` about its centre is the image of a camera rolled about its
    optical axis, so its maps are exact after turning them back by ``-a`` and turning their xyz
    vectors in the image plane (x right, y down) by ``a``. A view zoomed by ``s`` is the image of
    the same camera with an ``s`` times longer focal length: its maps shrink back by ``1 / s`` and
    their values stay. The correspondence is frame-free. Each view counts only where it covers the
    crop (a turned view's corners, a magnified view's border fall outside)."""
    import math

    import torch

    gs, cs, ws = [g[:b]], [c[:b]], [torch.ones_like(g[:b, :1])]
    for k, (a, s) in enumerate(views[1:], start=1):
        gk = _warp(g[k * b : (k + 1) * b], -a, 1.0 / s, "border")
        ck = _warp(c[k * b : (k + 1) * b], -a, 1.0 / s, "border")
        wk = (_warp(torch.ones_like(gk[:, :1]), -a, 1.0 / s, "zeros") > 0.999).to(gk)
        if a:
            t = math.radians(a)
            gx, gy = gk[:, 0].clone(), gk[:, 1].clone()
            gk[:, 0] = math.cos(t) * gx - math.sin(t) * gy
            gk[:, 1] = math.sin(t) * gx + math.cos(t) * gy
        gs.append(gk * wk)
        cs.append(ck * wk)
        ws.append(wk)
    w = torch.stack(ws).sum(0)
    return torch.stack(gs).sum(0) / w, torch.stack(cs).sum(0) / w


_CACHE: dict = {}
_CACHE_LOCK = threading.Lock()


def get_predictor(
    weights_dir=None, threads: int = 2, flip_average: bool = True, rotations=DEFAULT_ROTATIONS,
    scales=DEFAULT_SCALES, backend: str | None = None,
) -> Predictor:
    """A process-wide :class:`Predictor` per (weights folder, threads, flip_average, rotations,
    scales), built on first use."""
    key = (
        str(Path(weights_dir).resolve()) if weights_dir else str(default_weights_dir()),
        int(threads),
        bool(flip_average),
        tuple(float(a) for a in rotations),
        tuple(float(s) for s in scales),
        backend or default_backend(weights_dir),
    )
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = Predictor(
                weights_dir, threads, flip_average=flip_average, rotations=rotations, scales=scales,
                backend=backend,
            )
        return _CACHE[key]
