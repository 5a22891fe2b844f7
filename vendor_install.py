#!/usr/bin/env python3
"""Set up pix2vertex for development, or torch for Blender.

Development (any Python 3.11)::

    python3 vendor_install.py                 # .venv/ with the exact pins below (idempotent)

Every package is installed from ``locks/dev-<platform>.txt`` (each with its sha256, no dependency
resolution; ``--lock`` rewrites it from the pins below). pip runs isolated (``-I``) from a
temporary folder, so nothing in the folder this starts in is run. A second run with unchanged
pins does nothing; a registry that cannot be reached is one line and exit code 3.

The extension zip needs none of this (its wheels are bundled). Developers who want torch inside
Blender (the networks' own runtime instead of ONNX Runtime)::

    blender -b -P vendor_install.py                          # run by Blender itself
    python3 vendor_install.py --blender-python /path/to/blender/5.0/python/bin/python3.11

installs torch (the CPU build on Linux) and safetensors into Blender's user ``scripts/modules``,
which Blender itself puts on ``sys.path``.

Both check that the face model loads: ``--face-model PATH``, else ``$P2V_FACE_MODEL``, else the
pack shipped in ``pix2vertex_addon/face_model_pack``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent
VENV = REPO / ".venv"
STAMP = VENV / ".p2v-requirements.sha256"
BLENDER_VERSION = "5.0"

LOCKS = REPO / "locks"
# Packages the add-on needs at run time (Blender bundles numpy itself; the extension zip bundles
# the rest as wheels: scripts/build_extension.py).
RUNTIME = [
    "torch==2.13.0",  # the CPU build (+cpu on Linux: TORCH_LOCAL); it lies on the development machines' disk
    "onnxruntime==1.23.2",  # the networks' runtime in the extension
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
    "onnx==1.17.0",  # exporting the networks (core/ensemble.py); 1.17 keeps protobuf 4 and numpy 1
]
# torch's local version on Linux: the CPU build, never the CUDA one (about 900 MB more).
TORCH_LOCAL = "+cpu" if sys.platform.startswith("linux") else ""
# What --blender-python installs (with their dependencies, from the lock) for torch in Blender.
BLENDER_TORCH = ["torch", "safetensors"]
# pip's words for a registry it cannot reach
_OFFLINE = ("NewConnectionError", "Failed to establish a new connection", "Temporary failure in name resolution",
            "Network is unreachable", "Could not fetch URL", "ProxyError", "ConnectTimeout", "Max retries exceeded",
            "No matching distribution found", "Could not find a version that satisfies")
IMPORT_CHECK = ["bpy", "torch", "numpy", "scipy", "safetensors", "PIL", "tqdm", "pytest", "mediapipe", "cv2", "skimage"]


def log(msg: str) -> None:
    print(f"[vendor_install] {msg}", flush=True)


class SetupError(Exception):
    """A step failed: the message is the one line to show; ``code`` the exit status."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def run(cmd: list[str], dry_run: bool = False) -> None:
    """Run ``cmd`` from a temporary folder (never this one); pip's failure as one line."""
    log("$ " + " ".join(cmd))
    if dry_run:
        return
    # pip's progress goes to the terminal; its warnings and errors are read for the one-line message
    r = subprocess.run(cmd, cwd=tempfile.gettempdir(), stderr=subprocess.PIPE, text=True)
    if r.returncode == 0:
        return
    text = r.stderr
    if any(w in text for w in _OFFLINE):
        raise SetupError("cannot reach the package registry (or it lacks a pinned file); connect to the "
                         "network and run this again (nothing was changed)", code=3)
    last = [ln for ln in text.strip().splitlines() if ln.strip()][-1:] or ["no output"]
    raise SetupError(f"{cmd[0]} {' '.join(cmd[1:4])} failed: {last[0].strip()}")


def pip(python: Path | str) -> list[str]:
    """pip of ``python`` in isolated mode: no code, environment or configuration from here."""
    return [str(python), "-I", "-m", "pip", "--disable-pip-version-check", "--no-input"]


def platform_tag() -> str:
    machine = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64"}.get(platform.machine().lower(), platform.machine().lower())
    system = {"win32": "windows", "darwin": "macos"}.get(sys.platform, "linux")
    return f"{system}-{machine}"


def lock_file() -> Path:
    return LOCKS / f"dev-{platform_tag()}.txt"


def top_level_pins() -> list[str]:
    return [f"torch==2.13.0{TORCH_LOCAL}" if r == "torch==2.13.0" else r for r in RUNTIME + DEVELOPMENT]


def write_lock(python: Path) -> Path:
    """Resolve the pins (pip --dry-run --report) and write every package with its sha256."""
    with tempfile.TemporaryDirectory() as tmp:
        items = []
        for extra, reqs in ((["--no-deps"], NO_DEPS), ([], top_level_pins())):
            report = Path(tmp) / "report.json"
            run([*pip(python), "install", "--dry-run", "--ignore-installed", "--quiet", "--report", str(report),
                 *extra, *reqs])
            items += json.loads(report.read_text())["install"]
    lines = {}
    for it in items:
        name, version = it["metadata"]["name"].lower().replace("_", "-"), it["metadata"]["version"]
        digest = it["download_info"].get("archive_info", {}).get("hashes", {}).get("sha256")
        if not digest:
            raise SetupError(f"no sha256 for {name} {version} in pip's report")
        lines[name] = f"{name}=={version} --hash=sha256:{digest}"
    LOCKS.mkdir(exist_ok=True)
    out = lock_file()
    out.write_text(f"# Every package of .venv on {platform_tag()} with its sha256 (vendor_install.py --lock)\n"
                   + "\n".join(sorted(lines.values())) + "\n")
    log(f"wrote {out.relative_to(REPO)} ({len(lines)} packages)")
    return out


def lock_lines(names: list[str] | None = None) -> list[str]:
    """Requirement lines of the lock (all, or ``names`` and nothing else)."""
    lines = [ln for ln in lock_file().read_text().splitlines() if ln and not ln.startswith("#")]
    if names is None:
        return lines
    return [ln for ln in lines if ln.split("==")[0] in names]


def venv_python(venv: Path = VENV) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def requirements_digest() -> str:
    lock = lock_file().read_text() if lock_file().is_file() else ""
    text = "\n".join(RUNTIME + NO_DEPS + DEVELOPMENT + [platform.python_version(), lock])
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
    return REPO / "pix2vertex_addon" / "face_model_pack"


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
    r = subprocess.run([exe, "-I", "-c", code, str(REPO), str(path)], capture_output=True, text=True,
                       cwd=tempfile.gettempdir())
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
        run([sys.executable, "-I", "-m", "venv", str(VENV)], dry_run)
    else:
        log(f"updating {VENV}")
    if lock_file().is_file():
        with tempfile.TemporaryDirectory() as tmp:
            req = Path(tmp) / "requirements.txt"
            req.write_text("\n".join(lock_lines()) + "\n")
            # exactly the lock: every file hash-checked, nothing resolved beyond it
            run([*pip(py), "install", "--require-hashes", "--no-deps", "-r", str(req)], dry_run)
    else:
        log(f"warning: no {lock_file().relative_to(REPO)} for this platform; installing the pins without hashes")
        run([*pip(py), "install", f"torch==2.13.0{TORCH_LOCAL}"], dry_run)
        run([*pip(py), "install", *top_level_pins()], dry_run)
        run([*pip(py), "install", "--no-deps", *NO_DEPS], dry_run)
    if not dry_run:
        if not imports_ok(py, IMPORT_CHECK):
            raise SetupError("packages installed but do not import; run again with --force")
        STAMP.write_text(digest + "\n")
        log(f"installed the {len(lock_lines()) if lock_file().is_file() else 'top-level'} pinned packages into {VENV}")
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


def running_inside_blender() -> bool:
    return "bpy" in sys.modules or Path(sys.argv[0]).stem.lower().startswith("blender")


def blender_modules_dir(version: str = BLENDER_VERSION) -> Path:
    """Blender's user ``scripts/modules`` (on ``sys.path`` in Blender, put there by Blender)."""
    try:
        import bpy  # noqa: F401  (only present when Blender runs this script)
    except ImportError:
        return blender_user_dir(version) / "scripts" / "modules"
    return Path(bpy.utils.user_resource("SCRIPTS", path="modules", create=True))


def blender_torch_lines() -> list[str]:
    """torch, safetensors and torch's dependencies from the lock (numpy: Blender's own)."""
    deps = {"torch", "safetensors", "filelock", "typing-extensions", "sympy", "mpmath", "networkx", "jinja2",
            "markupsafe", "fsspec"}
    return lock_lines(sorted(deps))


def setup_blender(python: Path, target: Path, face_model: Path, dry_run: bool) -> int:
    stamp = target / ".p2v-torch.sha256"
    lines = blender_torch_lines() if lock_file().is_file() else [f"torch==2.13.0{TORCH_LOCAL}", "safetensors==0.8.0"]
    digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()
    if stamp.is_file() and stamp.read_text().strip() == digest and not dry_run:
        log(f"torch for Blender in {target} is up to date; nothing to install")
        return 0
    log(f"installing torch for Blender's Python {python} into {target}")
    r = subprocess.run([str(python), "-I", "-m", "pip", "--version"], capture_output=True, cwd=tempfile.gettempdir())
    if r.returncode != 0:
        run([str(python), "-I", "-m", "ensurepip", "--upgrade"], dry_run)
    with tempfile.TemporaryDirectory() as tmp:
        req = Path(tmp) / "requirements.txt"
        req.write_text("\n".join(lines) + "\n")
        hashes = ["--require-hashes", "--no-deps"] if lock_file().is_file() else []
        run([*pip(python), "install", "--upgrade", "--target", str(target), *hashes, "-r", str(req)], dry_run)
        if dry_run:
            log("would install: " + " ".join(ln.split(" ")[0] for ln in lines))
    if not dry_run:
        stamp.write_text(digest + "\n")
    log("done: restart Blender; the add-on's preferences show 'Networks: torch'")
    return 0


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--blender-python", metavar="PATH", help="Blender's bundled Python executable")
    ap.add_argument("--target", metavar="DIR", help="folder for torch (default: Blender's user scripts/modules)")
    ap.add_argument("--blender-version", default=BLENDER_VERSION)
    ap.add_argument("--face-model", metavar="PATH", help="ict_facekit.npz or a pack folder (default: "
                    "$P2V_FACE_MODEL or the shipped pack)")
    ap.add_argument("--lock", action="store_true", help="resolve the pins again and rewrite locks/dev-<platform>.txt")
    ap.add_argument("--force", action="store_true", help="reinstall even when up to date")
    ap.add_argument("--dry-run", action="store_true", help="print what would be done")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    face_model = resolve_face_model(args.face_model)

    blender_python = args.blender_python
    if blender_python is None and running_inside_blender():
        blender_python = sys.executable
    try:
        if args.lock:
            write_lock(venv_python() if venv_python().exists() else Path(sys.executable))
            return 0
        if blender_python:
            target = Path(args.target) if args.target else blender_modules_dir(args.blender_version)
            rc = setup_blender(Path(blender_python), target, face_model, args.dry_run)
            ok = args.dry_run or check_face_model(face_model, None)
        else:
            py = setup_venv(args.force, args.dry_run)
            rc = 0
            ok = args.dry_run or check_face_model(face_model, py)
    except SetupError as e:
        log(f"error: {e}")
        return e.code
    if not ok:
        log(f"fix: pass --face-model PATH or set P2V_FACE_MODEL (looked at {face_model})")
        rc = rc or 2
    log(f"finished in {time.perf_counter() - t0:.1f} s")
    return rc


if __name__ == "__main__":
    argv = sys.argv[sys.argv.index("--") + 1 :] if "--" in sys.argv else sys.argv[1:]
    sys.exit(main(argv))
