#!/usr/bin/env python3
"""Set up pix2vertex for development or for a Blender installation.

Development (any Python 3.11)::

    python3 vendor_install.py                 # .venv/ with the exact pins below (idempotent)

Blender users (torch and scipy go into the extension's own folder, not the system Python)::

    blender -b -P vendor_install.py                          # run by Blender itself
    python3 vendor_install.py --blender-python /path/to/blender/5.0/python/bin/python3.11

Both also locate the ICT-FaceKit face model: ``--face-model PATH``, else ``$P2V_FACE_MODEL``, else
``../shared/face-model/ict_facekit.npz`` next to this repository, and check that it loads.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent
VENV = REPO / ".venv"
STAMP = VENV / ".p2v-requirements.sha256"
EXTENSION_ID = "pix2vertex"
BLENDER_VERSION = "5.0"

# Packages the add-on needs at run time inside Blender (Blender bundles numpy itself).
RUNTIME = [
    "torch==2.13.0",  # the CPU build; it lies on the development machines' disk
    "scipy==1.17.1",
    "safetensors==0.8.0",  # network weights without pickle
    "pillow==13.0.0",  # image reading: EXIF, CMYK, 16-bit, PNG/JPEG writing
    # What MediaPipe's face detection and face mesh (the "solutions" API) import. MediaPipe itself
    # goes in with --no-deps (NO_DEPS below): its declared jax, jaxlib, sounddevice, sentencepiece
    # and the GUI build of OpenCV are never used by the face models and cost hundreds of MB.
    "absl-py==2.5.1",
    "attrs==26.1.0",
    "flatbuffers==25.12.19",
    "protobuf==4.25.9",
    "opencv-python-headless==4.10.0.84",
    "matplotlib==3.9.4",  # imported by mediapipe.solutions.drawing_utils; also ships grace_hopper.jpg
    "pyparsing==3.2.5",  # matplotlib 3.9's parser; 3.3 floods every import with deprecation warnings
]
# Installed without their declared dependencies (see above).
NO_DEPS = ["mediapipe==0.10.21"]
# Everything a developer (and CI) needs on top, in .venv.
DEVELOPMENT = [
    "bpy==5.0.1",  # real Blender 5.0 as a Python module: the tests run the add-on inside it
    "numpy==1.26.4",  # bpy 5.0 needs numpy < 2
    "scikit-image==0.24.0",  # ships the astronaut and cameraman photos used as test inputs
    "trimesh==5.2.0",  # scripts/bench_geometry.py compares our registration with nricp_amberg
    "rtree==1.4.1",  # needed by trimesh's nricp_amberg
    "tqdm==4.70.1",
    "pytest==9.2.0",
    "ruff==0.17.6",
    "mypy==2.4.1",
    "fake-bpy-module-5-0==20260730",
]
IMPORT_CHECK = ["bpy", "torch", "numpy", "scipy", "safetensors", "PIL", "tqdm", "pytest", "mediapipe", "cv2", "skimage"]


def log(msg: str) -> None:
    print(f"[vendor_install] {msg}", flush=True)


def run(cmd: list[str], dry_run: bool = False) -> None:
    log("$ " + " ".join(cmd))
    if not dry_run:
        subprocess.run(cmd, check=True)


def venv_python(venv: Path = VENV) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def requirements_digest() -> str:
    text = "\n".join(RUNTIME + NO_DEPS + DEVELOPMENT + [platform.python_version()])
    return hashlib.sha256(text.encode()).hexdigest()


def imports_ok(python: Path, modules: list[str]) -> bool:
    code = "import importlib.util, sys; sys.exit(any(importlib.util.find_spec(m) is None for m in %r))"
    r = subprocess.run([str(python), "-c", code % modules], capture_output=True)
    return r.returncode == 0


# -- face model --------------------------------------------------------------------------------
def resolve_face_model(arg: str | None) -> Path:
    if arg:
        return Path(arg).expanduser().resolve()
    env = os.environ.get("P2V_FACE_MODEL")
    if env:
        return Path(env).expanduser().resolve()
    return (REPO.parent / "shared" / "face-model" / "ict_facekit.npz").resolve()


def check_face_model(path: Path, python: Path | None) -> bool:
    """Load and validate the model with the add-on's own loader (in ``python`` when given)."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from pix2vertex_addon.core.face_model import load_face_model, FaceModelError\n"
        "try:\n    m = load_face_model(sys.argv[2])\n"
        "except FaceModelError as e:\n    print(e); sys.exit(3)\n"
        "print(f'{m.template.n_vertices} template vertices')"
    )
    exe = str(python) if python else sys.executable
    r = subprocess.run([exe, "-c", code, str(REPO), str(path)], capture_output=True, text=True)
    if r.returncode == 0:
        log(f"face model OK: {path} ({r.stdout.strip()})")
        return True
    log(f"face model problem: {(r.stdout + r.stderr).strip()}")
    return False


# -- development environment ------------------------------------------------------------------
def setup_venv(force: bool, dry_run: bool) -> Path:
    if sys.version_info[:2] != (3, 11):
        log(f"warning: Blender 5.0 uses Python 3.11; this is {platform.python_version()}")
    py = venv_python()
    digest = requirements_digest()
    if (
        not force
        and py.exists()
        and STAMP.exists()
        and STAMP.read_text().strip() == digest
        and imports_ok(py, IMPORT_CHECK)
    ):
        log(f"{VENV} is up to date (pins unchanged); nothing to install")
        return py
    if not py.exists():
        run([sys.executable, "-m", "venv", str(VENV)], dry_run)
    else:
        log(f"updating {VENV}")
    # torch first, with its exact pin, so that nothing drags in another (CUDA) build.
    run([str(py), "-m", "pip", "install", "--disable-pip-version-check", "torch==2.13.0"], dry_run)
    run([str(py), "-m", "pip", "install", "--disable-pip-version-check", *RUNTIME, *DEVELOPMENT], dry_run)
    run([str(py), "-m", "pip", "install", "--disable-pip-version-check", "--no-deps", *NO_DEPS], dry_run)
    if not dry_run:
        if not imports_ok(py, IMPORT_CHECK):
            raise SystemExit("[vendor_install] packages installed but do not import; see the pip output above")
        STAMP.write_text(digest + "\n")
        log(f"installed {len(RUNTIME) + len(NO_DEPS) + len(DEVELOPMENT)} pinned packages into {VENV}")
    return py


# -- Blender ----------------------------------------------------------------------------------
def blender_user_dir(version: str = BLENDER_VERSION) -> Path:
    """Blender's user resource folder for ``version`` on this OS (honours BLENDER_USER_RESOURCES)."""
    env = os.environ.get("BLENDER_USER_RESOURCES")
    if env:
        return Path(env)
    home = Path.home()
    if sys.platform == "win32":
        return Path(os.environ.get("APPDATA", home)) / "Blender Foundation" / "Blender" / version
    if sys.platform == "darwin":
        return home / "Library" / "Application Support" / "Blender" / version
    base = Path(os.environ.get("XDG_CONFIG_HOME", home / ".config"))
    return base / "blender" / version


def extension_user_dir(repo: str, version: str) -> Path:
    """Where ``bpy.utils.extension_path_user('bl_ext.<repo>.pix2vertex')`` points."""
    try:
        import bpy  # noqa: F401  (only present when Blender runs this script)
    except ImportError:
        return blender_user_dir(version) / "extensions" / ".user" / repo / EXTENSION_ID
    return Path(bpy.utils.extension_path_user(f"bl_ext.{repo}.{EXTENSION_ID}", create=True))


def running_inside_blender() -> bool:
    return "bpy" in sys.modules or Path(sys.argv[0]).stem.lower().startswith("blender")


def setup_blender(python: Path, target: Path, face_model: Path, dry_run: bool) -> int:
    site = target / "site-packages"
    log(f"installing runtime packages for Blender's Python {python} into {site}")
    if not dry_run:
        site.mkdir(parents=True, exist_ok=True)
    r = subprocess.run([str(python), "-m", "pip", "--version"], capture_output=True)
    if r.returncode != 0:
        run([str(python), "-m", "ensurepip", "--upgrade"], dry_run)
    pip_target = [str(python), "-m", "pip", "install", "--upgrade", "--no-input", "--target", str(site)]
    run([*pip_target, *RUNTIME], dry_run)
    run([*pip_target, "--no-deps", *NO_DEPS], dry_run)
    if not dry_run:
        # Blender bundles numpy: keep its build, not a second copy from torch's dependencies.
        probe = subprocess.run([str(python), "-c", "import numpy"], capture_output=True,
                               env={**os.environ, "PYTHONNOUSERSITE": "1"})
        if probe.returncode == 0:
            for p in site.glob("numpy*"):
                shutil.rmtree(p, ignore_errors=True)
        config = target / "p2v_config.json"
        tmp = config.with_suffix(".tmp")
        tmp.write_text(json.dumps({"face_model": str(face_model)}, indent=2))
        os.replace(tmp, config)
        log(f"recorded the face model path in {config}")
    log("done: enable (or re-enable) the add-on in Blender; its preferences show the package status")
    return 0


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--blender-python", metavar="PATH", help="Blender's bundled Python executable")
    ap.add_argument("--target", metavar="DIR", help="extension user folder (default: Blender's own)")
    ap.add_argument("--repo", default="user_default", help="extension repository the add-on is in")
    ap.add_argument("--blender-version", default=BLENDER_VERSION)
    ap.add_argument("--face-model", metavar="PATH", help="ict_facekit.npz (default: $P2V_FACE_MODEL "
                    "or ../shared/face-model/ict_facekit.npz)")
    ap.add_argument("--force", action="store_true", help="reinstall even when up to date")
    ap.add_argument("--dry-run", action="store_true", help="print what would be done")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    face_model = resolve_face_model(args.face_model)

    blender_python = args.blender_python
    if blender_python is None and running_inside_blender():
        blender_python = sys.executable
    if blender_python:
        target = Path(args.target) if args.target else extension_user_dir(args.repo, args.blender_version)
        rc = setup_blender(Path(blender_python), target, face_model, args.dry_run)
        ok = args.dry_run or check_face_model(face_model, Path(blender_python))
    else:
        py = setup_venv(args.force, args.dry_run)
        rc = 0
        ok = args.dry_run or check_face_model(face_model, py)
    if not ok:
        log(f"fix: pass --face-model PATH or set P2V_FACE_MODEL (looked at {face_model})")
        rc = rc or 2
    log(f"finished in {time.perf_counter() - t0:.1f} s")
    return rc


if __name__ == "__main__":
    argv = sys.argv[sys.argv.index("--") + 1 :] if "--" in sys.argv else sys.argv[1:]
    sys.exit(main(argv))
