"""Random scene parameters of a synthetic sample, and the seed <-> split contract (no ``bpy``).

Every sample is a pure function of its integer seed. Each aspect (identity, expression, pose,
camera, appearance, lighting, background, occluders, camera degradations) draws from its own
random stream ``numpy.random.default_rng([seed, STREAM])``, so fixing one aspect through an option
never changes the others, and nothing drawn depends on the resolution.

Splits are seed ranges (:data:`SPLITS`); the identity of a sample is drawn from
``default_rng([identity_id, IDENTITY_STREAM])`` with ``identity_id = seed``, so two splits never
share an identity.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "EXPRESSION_GROUPS",
    "POSE_RANGES_DEG",
    "SPLITS",
    "identity_id_of_seed",
    "rng_for",
    "sample_expression",
    "sample_identity",
    "sample_pose",
    "seed_range",
    "split_of_seed",
]

SPLITS: dict[str, range] = {
    "train": range(0, 1_000_000_000),
    "val": range(1_000_000_000, 1_010_000_000),
    "test": range(1_010_000_000, 1_020_000_000),
}

# Stream ids of the independent random aspects of a sample.
STREAMS = {
    "identity": 1, "expression": 2, "pose": 3, "camera": 4, "appearance": 5, "light": 6,
    "background": 7, "occluders": 8, "degrade": 9, "hair": 10,
}

# Pose ranges (degrees): half of the samples uniform over the range, half normal around 0 with
# a third of the range as sigma (clipped), so frontal views are common and extremes are covered.
POSE_RANGES_DEG = {"yaw": 70.0, "pitch": 30.0, "roll": 20.0}


def seed_range(split: str) -> range:
    """Seeds of a split ("train", "val", "test")."""
    try:
        return SPLITS[split]
    except KeyError:
        raise ValueError(f"unknown split {split!r}; use one of {sorted(SPLITS)}") from None


def split_of_seed(seed: int) -> str:
    """The split a seed belongs to; raises ValueError for seeds outside every split."""
    for name, r in SPLITS.items():
        if seed in r:
            return name
    raise ValueError(f"seed {seed} is outside every split range {SPLITS}")


def identity_id_of_seed(seed: int) -> int:
    """Identity id of a sample (one identity per seed; split ranges never overlap)."""
    return int(seed)


def rng_for(seed: int, stream: str) -> np.random.Generator:
    return np.random.default_rng([int(seed), STREAMS[stream]])


def sample_identity(identity_id: int, n: int = 100, scale: float = 1.0) -> np.ndarray:
    """(n,) float64 identity weights ~ N(0, scale^2), a function of ``identity_id`` only."""
    return rng_for(identity_id, "identity").standard_normal(n) * scale


# Sparse expression model: independent "actions", each switched on with a probability; paired
# _L/_R shapes are symmetric with probability 0.6, otherwise one-sided or unequal.
EXPRESSION_GROUPS = {
    "jawOpen": 0.35, "smile": 0.35, "brows": 0.35, "gaze": 0.5, "blink": 0.15, "squint": 0.15,
    "wide": 0.08, "frown": 0.12, "stretch": 0.1, "pucker": 0.1, "roll": 0.05, "shrug": 0.1,
    "press": 0.08, "dimple": 0.1, "upperUp": 0.12, "lowerDown": 0.12, "mouthSide": 0.1,
    "jawSide": 0.08, "jawForward": 0.05, "cheekPuff": 0.04, "sneer": 0.08,
}


def _pair(rng, w, names, out):
    a, b = names
    r = rng.random()
    if r < 0.6:
        out[a] = w
        out[b] = float(np.clip(w * rng.uniform(0.85, 1.15), 0, 1))
    elif r < 0.8:
        out[a if rng.random() < 0.5 else b] = w
    else:
        out[a] = w
        out[b] = w * rng.uniform(0.0, 0.6)


def sample_expression(rng: np.random.Generator) -> dict[str, float]:
    """A sparse, plausible ARKit expression {name: weight in [0, 1]}; {} for a neutral face."""
    out: dict[str, float] = {}
    if rng.random() < 0.12:
        return out
    on = {g: rng.random() < p for g, p in EXPRESSION_GROUPS.items()}
    u = lambda lo=0.15, hi=1.0: float(rng.uniform(lo, hi))  # noqa: E731
    if on["jawOpen"]:
        out["jawOpen"] = u(0.1, 0.9)
        if rng.random() < 0.15:
            out["mouthClose"] = out["jawOpen"] * u(0.2, 0.8)
    if on["smile"]:
        w = u(0.2, 1.0)
        _pair(rng, w, ("mouthSmile_L", "mouthSmile_R"), out)
        if rng.random() < 0.5:
            _pair(rng, w * u(0.3, 0.8), ("cheekSquint_L", "cheekSquint_R"), out)
    if on["brows"]:
        kind = rng.integers(4)
        if kind == 0:
            _pair(rng, u(), ("browDown_L", "browDown_R"), out)
        elif kind == 1:
            _pair(rng, u(), ("browInnerUp_L", "browInnerUp_R"), out)
        elif kind == 2:
            _pair(rng, u(), ("browOuterUp_L", "browOuterUp_R"), out)
        else:
            _pair(rng, u(), ("browInnerUp_L", "browInnerUp_R"), out)
            _pair(rng, u(), ("browOuterUp_L", "browOuterUp_R"), out)
    if on["gaze"]:
        h, v = rng.uniform(-0.8, 0.8), rng.uniform(-0.7, 0.7)
        # h > 0: both eyes look to the subject's left.
        if h > 0:
            out["eyeLookOut_L"], out["eyeLookIn_R"] = h, h
        else:
            out["eyeLookIn_L"], out["eyeLookOut_R"] = -h, -h
        if v > 0:
            out["eyeLookUp_L"], out["eyeLookUp_R"] = v, v
        else:
            out["eyeLookDown_L"], out["eyeLookDown_R"] = -v, -v
    if on["blink"]:
        if rng.random() < 0.7:
            w = u(0.4, 1.0)
            out["eyeBlink_L"], out["eyeBlink_R"] = w, w
        else:
            out["eyeBlink_L" if rng.random() < 0.5 else "eyeBlink_R"] = u(0.6, 1.0)
    if on["squint"]:
        _pair(rng, u(0.2, 0.9), ("eyeSquint_L", "eyeSquint_R"), out)
    if on["wide"] and "eyeBlink_L" not in out and "eyeBlink_R" not in out:
        _pair(rng, u(0.2, 0.9), ("eyeWide_L", "eyeWide_R"), out)
    if on["frown"]:
        _pair(rng, u(), ("mouthFrown_L", "mouthFrown_R"), out)
    if on["stretch"]:
        _pair(rng, u(0.1, 0.8), ("mouthStretch_L", "mouthStretch_R"), out)
    if on["pucker"]:
        out["mouthPucker" if rng.random() < 0.5 else "mouthFunnel"] = u(0.2, 0.9)
    if on["roll"]:
        out["mouthRollLower" if rng.random() < 0.5 else "mouthRollUpper"] = u(0.2, 0.8)
    if on["shrug"]:
        out["mouthShrugLower" if rng.random() < 0.6 else "mouthShrugUpper"] = u(0.1, 0.8)
    if on["press"]:
        _pair(rng, u(0.1, 0.8), ("mouthPress_L", "mouthPress_R"), out)
    if on["dimple"]:
        _pair(rng, u(0.1, 0.8), ("mouthDimple_L", "mouthDimple_R"), out)
    if on["upperUp"]:
        _pair(rng, u(0.1, 0.8), ("mouthUpperUp_L", "mouthUpperUp_R"), out)
    if on["lowerDown"]:
        _pair(rng, u(0.1, 0.8), ("mouthLowerDown_L", "mouthLowerDown_R"), out)
    if on["mouthSide"]:
        out["mouthLeft" if rng.random() < 0.5 else "mouthRight"] = u(0.1, 0.7)
    if on["jawSide"]:
        out["jawLeft" if rng.random() < 0.5 else "jawRight"] = u(0.1, 0.6)
    if on["jawForward"]:
        out["jawForward"] = u(0.1, 0.6)
    if on["cheekPuff"]:
        _pair(rng, u(0.2, 0.8), ("cheekPuff_L", "cheekPuff_R"), out)
    if on["sneer"]:
        _pair(rng, u(0.1, 0.8), ("noseSneer_L", "noseSneer_R"), out)
    return {k: float(np.clip(v, 0.0, 1.0)) for k, v in out.items()}


def sample_pose(rng: np.random.Generator) -> dict[str, float]:
    """Head pose in degrees: {"yaw", "pitch", "roll"} (see :func:`rotation_from_pose`)."""
    out = {}
    for name, lim in POSE_RANGES_DEG.items():
        if rng.random() < 0.5:
            a = rng.uniform(-lim, lim)
        else:
            a = float(np.clip(rng.normal(0.0, lim / 3.0), -lim, lim))
        out[name] = float(a)
    return out


def rotation_from_pose(yaw_deg: float, pitch_deg: float, roll_deg: float) -> np.ndarray:
    """(3, 3) camera-frame head rotation ``Rz(roll) @ Ry(yaw) @ Rx(pitch)``.

    Right-handed rotations about the camera axes (x right, y down, z forward). For a face looking
    at the camera: positive yaw turns it towards the image's left (the subject's right), positive
    pitch makes it look down (towards the image's bottom), and positive roll turns the image of
    the face clockwise.
    """
    y, p, r = (math.radians(a) for a in (yaw_deg, pitch_deg, roll_deg))
    cy, sy, cp, sp, cr, sr = math.cos(y), math.sin(y), math.cos(p), math.sin(p), math.cos(r), math.sin(r)
    Ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    Rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    Rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return Rz @ Ry @ Rx
