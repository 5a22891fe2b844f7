"""What the add-on needs at run time, whether it is there, and how to fix what is not.

The extension zip bundles its runtime packages as wheels that Blender installs itself (listed in
``blender_manifest.toml``; numpy comes with Blender), so the add-on never edits ``sys.path`` and
never installs anything. The networks run with onnxruntime from ``weights/predictor.onnx``, or
with torch where a developer has it. The face model is the pack shipped in the add-on unless a
path is set in the preferences or in ``$P2V_FACE_MODEL``.

Everything here only looks (``importlib.util.find_spec``, file checks): nothing is imported, so
drawing the panel never fails and never loads a heavy package.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import bpy


@dataclass(frozen=True)
class Requirement:
    name: str  # as shown to the user
    module: str  # import name
    purpose: str


REQUIREMENTS = (
    Requirement("NumPy", "numpy", "arrays (comes with Blender)"),
    Requirement("SciPy", "scipy", "fitting the template"),
    Requirement("Pillow", "PIL", "reading photos, writing textures"),
    Requirement("MediaPipe", "mediapipe", "finding the face"),
    Requirement("OpenCV", "cv2", "MediaPipe's image operations"),
    Requirement("ONNX Runtime", "onnxruntime", "running the networks"),
)
# torch (with safetensors) can stand in for onnxruntime: the developers' runtime.
TORCH = Requirement("torch", "torch", "running the networks (optional: instead of ONNX Runtime)")
RUNTIME_PACKAGES = tuple(r.module for r in REQUIREMENTS)

_found: set[str] = set()


def addon_package() -> str:
    """Module name of the add-on (``bl_ext.<repo>.pix2vertex`` when installed as an extension)."""
    base = __package__.rsplit(".", 2)[0]  # strip ".pix2vertex_addon.blender"
    return base if base.startswith("bl_ext.") else "pix2vertex_addon"


def is_checkout() -> bool:
    """Whether the add-on runs from a development checkout (``vendor_install.py`` beside it; the
    extension zip leaves it out)."""
    return (Path(__file__).resolve().parents[2] / "vendor_install.py").is_file()


def has_module(name: str) -> bool:
    """Whether ``name`` can be imported (found ones are remembered; missing ones looked up again)."""
    if name in _found:
        return True
    try:
        ok = importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        ok = False
    if ok:
        _found.add(name)
    return ok


def package_fix() -> str:
    if not is_checkout():
        return ("Reinstall the pix2vertex extension zip built for this platform (Linux x64, Windows "
                "x64 or macOS Apple silicon): it bundles every package")
    return "Run 'python3 vendor_install.py' in the checkout (README, For developers)"


def _networks_backend() -> str | None:
    """'onnx' or 'torch' when the networks can run, else None."""
    from ..core.onnx_backend import onnx_path
    from ..core.predict import default_weights_dir

    if has_module("onnxruntime") and onnx_path(default_weights_dir()).is_file():
        return "onnx"
    if has_module("torch") and has_module("safetensors") and any(default_weights_dir().glob("*.safetensors")):
        return "torch"
    return None


def missing_packages() -> list[str]:
    """Runtime packages that cannot be imported (empty when all are present); torch counts for
    ONNX Runtime where a developer has it."""
    missing = [r.name for r in REQUIREMENTS if not has_module(r.module)]
    if "ONNX Runtime" in missing and has_module("torch"):
        missing.remove("ONNX Runtime")
    return missing


def addon_preferences(context: bpy.types.Context | None = None):
    """This add-on's preferences (``preferences.P2V_AddonPreferences``), or None when it is
    registered without being enabled. Here, not in ``preferences``, which imports this module."""
    ctx = context or bpy.context
    addon = ctx.preferences.addons.get(addon_package())
    return None if addon is None else addon.preferences


def face_model_path(context: bpy.types.Context | None = None) -> str:
    """The face model in force: the preferences' path, else ``$P2V_FACE_MODEL``, else the pack
    shipped with the add-on."""
    from ..core.face_model import resolve_face_model_path

    prefs = addon_preferences(context)
    if prefs is not None and prefs.face_model_path:
        return bpy.path.abspath(prefs.face_model_path)
    return str(resolve_face_model_path(None))


def face_model_problem(context: bpy.types.Context | None = None) -> str | None:
    path = face_model_path(context)
    if Path(path).exists():
        return None
    fix = ("clear the Face Model path in the add-on preferences to use the model that comes with "
           "the add-on, or point it at ict_facekit.npz")
    if os.environ.get("P2V_FACE_MODEL"):
        fix += " (or unset P2V_FACE_MODEL)"
    return f"Face model not found at {path}: {fix}"


def networks_problem() -> str | None:
    if _networks_backend() is not None:
        return None
    if has_module("onnxruntime"):
        return ("The networks' ONNX file (weights/predictor.onnx) is missing: " + package_fix()
                if not is_checkout() else
                "weights/predictor.onnx is missing: run 'python -m pix2vertex_addon.core.onnx_backend --export'")
    return None  # reported as a missing package


def blocking_reason(context: bpy.types.Context | None = None) -> str | None:
    """Why Reconstruct and Batch cannot run now (one line with the fix), or None."""
    missing = missing_packages()
    if missing:
        return f"Missing runtime packages: {', '.join(missing)}. {package_fix()}"
    return face_model_problem(context) or networks_problem()


def status_lines(context: bpy.types.Context | None = None) -> list[tuple[str, bool, str]]:
    """(label, ok, fix) for each runtime package, the networks and the face model."""
    lines = []
    for r in REQUIREMENTS:
        ok = has_module(r.module)
        if r.module == "onnxruntime" and not ok and has_module("torch"):
            lines.append((f"{r.name}: not installed; torch runs the networks", True, ""))
            continue
        lines.append((f"{r.name}: {'installed' if ok else 'missing'} ({r.purpose})", ok, "" if ok else package_fix()))
    backend = _networks_backend()
    net_problem = networks_problem()
    lines.append((
        f"Networks: {'ONNX Runtime' if backend == 'onnx' else backend or 'cannot run'}",
        backend is not None,
        net_problem or ("" if backend else package_fix()),
    ))
    problem = face_model_problem(context)
    path = face_model_path(context)
    lines.append((f"Face model: {path}", problem is None, problem or ""))
    return lines
