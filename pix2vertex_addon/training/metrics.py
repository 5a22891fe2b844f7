"""Evaluation metrics of the paper (Sela et al. 2017, Table 1) plus correspondence and mask.

All inputs are numpy arrays of one image, (R, R[, C]), in the units of docs/reference/conventions.md.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ransac_scale_shift", "depth_errors", "corr_errors_mm", "mask_iou", "summarize"]


def ransac_scale_shift(pred: np.ndarray, true: np.ndarray, thresh: float, iters: int = 200, seed: int = 0):
    """Fit ``true ~ s * pred + t`` robustly (RANSAC on point pairs, then least squares on the inliers).

    pred, true : (n,) float; thresh : inlier distance in the unit of ``true``. Returns (s, t).
    """
    pred = np.asarray(pred, np.float64)
    true = np.asarray(true, np.float64)
    n = pred.size
    if n < 2:
        return 1.0, (float(true.mean() - pred.mean()) if n else 0.0)
    rng = np.random.default_rng(seed)
    i = rng.integers(0, n, iters)
    j = rng.integers(0, n, iters)
    dp = pred[i] - pred[j]
    ok = np.abs(dp) > 1e-9
    s = np.where(ok, (true[i] - true[j]) / np.where(ok, dp, 1.0), 1.0)
    t = true[i] - s * pred[i]
    best, best_count = 0, -1
    for k in range(0, iters, 50):  # score hypotheses in chunks to bound memory
        res = np.abs(s[k : k + 50, None] * pred[None] + t[k : k + 50, None] - true[None])
        counts = (res < thresh).sum(1)
        a = int(np.argmax(counts))
        if counts[a] > best_count:
            best_count, best = int(counts[a]), k + a
    inl = np.abs(s[best] * pred + t[best] - true) < thresh
    if inl.sum() < 2:
        inl = np.ones(n, bool)
    A = np.stack([pred[inl], np.ones(int(inl.sum()))], 1)
    (s_f, t_f), *_ = np.linalg.lstsq(A, true[inl], rcond=None)
    return float(s_f), float(t_f)


def depth_errors(pred_z: np.ndarray, true_z: np.ndarray, mask: np.ndarray, seed: int = 0) -> np.ndarray:
    """Per-pixel absolute depth error in percent of the true depth range, after a RANSAC fit of a
    global scale and shift along the depth axis (the paper's Table 1 protocol).

    pred_z, true_z : (R, R) float mm; mask : (R, R) bool (ground-truth face mask).
    Returns (n,) float64 errors over the mask pixels.
    """
    m = np.asarray(mask, bool)
    p = np.asarray(pred_z, np.float64)[m]
    t = np.asarray(true_z, np.float64)[m]
    if t.size == 0:
        return np.zeros(0)
    rng_ = float(t.max() - t.min()) or 1.0
    s, sh = ransac_scale_shift(p, t, thresh=0.01 * rng_, seed=seed)
    return np.abs(s * p + sh - t) / rng_ * 100.0


def corr_errors_mm(pred_corr: np.ndarray, true_corr: np.ndarray, mask: np.ndarray, scale_mm) -> np.ndarray:
    """Per-pixel Euclidean correspondence error in mm over the true mask.

    pred_corr, true_corr : (R, R, 3) float in [0, 1]; scale_mm : (3,) from ``corr_to_mm_scale``.
    """
    m = np.asarray(mask, bool)
    d = (np.asarray(pred_corr, np.float64)[m] - np.asarray(true_corr, np.float64)[m]) * np.asarray(scale_mm)
    return np.linalg.norm(d, axis=1)


def mask_iou(pred_mask: np.ndarray, true_mask: np.ndarray) -> float:
    """Intersection over union of two (R, R) bool masks (1 when both are empty)."""
    a = np.asarray(pred_mask, bool)
    b = np.asarray(true_mask, bool)
    u = (a | b).sum()
    return float((a & b).sum() / u) if u else 1.0


def summarize(errors) -> dict:
    """mean, std, median and mean of the largest 10 percent ("top10") of a set of errors."""
    e = np.sort(np.asarray(errors, np.float64).ravel())
    if e.size == 0:
        return {"mean": float("nan"), "std": float("nan"), "median": float("nan"), "top10": float("nan")}
    k = max(1, int(np.ceil(0.1 * e.size)))
    return {
        "mean": float(e.mean()),
        "std": float(e.std()),
        "median": float(np.median(e)),
        "top10": float(e[-k:].mean()),
    }
