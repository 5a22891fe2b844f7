"""Training losses of the image-to-geometry networks (no ``bpy``), after Sela et al. 2017.

Geometry network: L1 on xyz (weight 100) + L1 between surface normals of the predicted and the
true xyz map (weight 10), both restricted to the face mask (the label means nothing outside it),
plus a binary cross-entropy mask loss over the whole crop. Correspondence network: L1 restricted
to the mask.

Tensors are torch, channel-first: maps (B, C, R, R); masks (B, 1, R, R) bool or {0, 1} float.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..core.nets import XYZ_SCALE_MM

__all__ = ["LossWeights", "normals_from_xyz", "masked_l1", "geometry_loss", "geometry_terms", "correspondence_loss"]


NORMALS_EPS = 1e-5


@dataclass(frozen=True)
class LossWeights:
    xyz: float = 100.0
    normals: float = 10.0
    mask: float = 5.0
    corr: float = 100.0


def _check_map(name: str, t: torch.Tensor, channels: int) -> None:
    if t.ndim != 4 or t.shape[1] != channels:
        raise ValueError(f"{name} must be (B, {channels}, R, R) (got {tuple(t.shape)})")


def normals_from_xyz(xyz: torch.Tensor, mask: torch.Tensor | None = None, eps: float = 1e-8):
    """Unit surface normals from an xyz map by image-space finite differences.

    Parameters
    ----------
    xyz : (B, 3, H, W) float
        Points in the label frame (x right, y down, z forward), any length unit.
    mask : (B, 1, H, W) bool/float, optional
        Valid pixels.
    eps : float
        Added in quadrature to the cross product's length (unit: xyz unit squared). It bounds the
        gradient where the predicted surface is nearly flat in the image (e.g. at start-up, when
        an exact normalisation's huge gradients would swamp the other losses under Adam).

    Returns
    -------
    normals : (B, 3, H-1, W-1) float
        ``cross(d/drow, d/dcol)`` normalised: for a surface facing the camera the normal points
        towards it (negative z).
    valid : (B, 1, H-1, W-1) bool
        Pixel and its right and lower neighbours all in the mask (all True without a mask).
    """
    _check_map("xyz", xyz, 3)
    p = xyz[:, :, :-1, :-1]
    dcol = xyz[:, :, :-1, 1:] - p
    drow = xyz[:, :, 1:, :-1] - p
    n = torch.cross(drow, dcol, dim=1)
    n = n / torch.sqrt((n * n).sum(dim=1, keepdim=True) + eps * eps)
    if mask is None:
        valid = torch.ones_like(n[:, :1], dtype=torch.bool)
    else:
        m = mask.bool()
        valid = m[:, :, :-1, :-1] & m[:, :, :-1, 1:] & m[:, :, 1:, :-1]
    return n, valid


def masked_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean |pred - target| over the masked pixels and all channels (0 when the mask is empty)."""
    m = mask.to(pred.dtype)
    denom = m.sum() * pred.shape[1]
    return ((pred - target).abs() * m).sum() / denom.clamp_min(1.0)


def geometry_loss(
    pred: torch.Tensor, xyz_mm: torch.Tensor, mask: torch.Tensor, w: LossWeights = LossWeights()
):
    """Loss of the geometry network.

    Parameters
    ----------
    pred : (B, 4, R, R) float
        Network output: xyz / XYZ_SCALE_MM and the mask logit.
    xyz_mm : (B, 3, R, R) float
        Label xyz in mm (0 outside the mask).
    mask : (B, 1, R, R) bool/float
        Label face mask.

    Returns
    -------
    total : scalar tensor
    parts : dict of float (unweighted 'xyz', 'normals', 'mask')
    """
    t = geometry_terms(pred, xyz_mm, mask)
    total = w.xyz * t["xyz"] + w.normals * t["normals"] + w.mask * t["mask"]
    return total, {k: v.item() for k, v in t.items()}


def geometry_terms(pred: torch.Tensor, xyz_mm: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """The unweighted terms of :func:`geometry_loss` as tensors ('xyz', 'normals', 'mask'):
    nothing is read back to the host (a training loop that must not wait on the device)."""
    _check_map("pred", pred, 4)
    _check_map("xyz_mm", xyz_mm, 3)
    _check_map("mask", mask, 1)
    target = xyz_mm / XYZ_SCALE_MM
    pxyz = pred[:, :3]
    l_xyz = masked_l1(pxyz, target, mask)
    # eps: 1e-5 (XYZ_SCALE_MM units squared) = 0.1 mm^2, vs ~2 mm^2 for 1.5 mm pixels at 128 px
    n_pred, valid = normals_from_xyz(pxyz, mask, eps=NORMALS_EPS)
    n_true, _ = normals_from_xyz(target, None)
    l_n = masked_l1(n_pred, n_true, valid)
    l_mask = F.binary_cross_entropy_with_logits(pred[:, 3:4], mask.to(pred.dtype))
    return {"xyz": l_xyz, "normals": l_n, "mask": l_mask}


def correspondence_loss(
    pred: torch.Tensor, corr: torch.Tensor, mask: torch.Tensor, w: LossWeights = LossWeights()
):
    """Masked L1 of the correspondence network: pred, corr (B, 3, R, R); mask (B, 1, R, R)."""
    _check_map("pred", pred, 3)
    _check_map("corr", corr, 3)
    _check_map("mask", mask, 1)
    l_c = masked_l1(pred, corr, mask)
    return w.corr * l_c, {"corr": l_c.item()}
