"""Build the self-contained extension zips, one per platform, with their wheels bundled.

    .venv/bin/python scripts/build_extension.py [--platform linux-x64 ...] [--output-dir dist] [--wheels DIR]

1. exports the networks to ONNX (``pix2vertex_addon/weights/predictor.onnx``) from the torch
   definition, unless an export of the current weights is there;
2. downloads the pinned wheels of ``locks/extension-<platform>.txt`` (hashes checked by pip,
   ``--no-deps``, unmodified from the registry) into ``wheels/<platform>/`` (git-ignored; files
   already there with the right hash are not downloaded again); ``--wheels DIR`` takes them from
   ``DIR/<platform>/`` instead (another checkout's ``wheels/``: hash-checked, nothing downloaded
   or deleted there);
3. lists the bundled packages' modules a reconstruction imports (a run of ``scripts/reconstruct.py``
   on the default photo in a subprocess, torch hidden, as in Blender) and compiles those of each
   platform's wheels to checked-hash ``.pyc`` (the pack ``pix2vertex_addon/wheel_bytecode/``,
   which ``register()`` installs beside the sources: ``blender/bytecode.py``);
4. stages the add-on per platform with a manifest that lists its wheels and the platform, and runs
   Blender's ``blender_ext.py build --split-platforms`` on it: ``dist/pix2vertex-<version>-<platform>.zip``;
5. checks each zip: only what runs in Blender, never the training code (``pix2vertex_addon/training``:
   synthetic data, losses, training, evaluation), tests, scripts or docs.

``--lock`` resolves the pins (``EXTENSION_PACKAGES``) again and rewrites the lock files with the
hashes of the wheels it downloaded. Nothing else reaches the network.
"""

from __future__ import annotations

import argparse
import compileall
import hashlib
import importlib.util
import json
import os
import py_compile
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

import _bootstrap

_bootstrap.import_addon()

from pix2vertex_addon.core.export import sha256_file as sha256  # noqa: E402

REPO = _bootstrap.REPO
LOCKS = REPO / "locks"
WHEELS = REPO / "wheels"

# What the add-on imports in Blender besides numpy (which Blender bundles): measured by running
# the whole pipeline without torch and listing the imported distributions (docs/reference/extension.md).
# MediaPipe's declared jax, jaxlib, sentencepiece, sounddevice, opencv-contrib-python and
# onnxruntime's coloredlogs, flatbuffers and sympy are never imported, so they are not bundled.
EXTENSION_PACKAGES = [
    "onnxruntime==1.23.2",  # the networks
    "scipy==1.17.1",  # the template fit
    "pillow==13.0.0",  # photos and textures
    "mediapipe==0.10.21",  # face detection and face mesh
    "opencv-python-headless==4.10.0.84",  # cv2, imported by MediaPipe
    "protobuf==4.25.9",  # google.protobuf, imported by MediaPipe
    "attrs==26.1.0",  # imported by MediaPipe
    "matplotlib==3.9.4",  # imported by mediapipe.solutions.drawing_utils
    "cycler==0.12.1",  # imported by matplotlib
    "kiwisolver==1.5.1",  # imported by matplotlib
    "pyparsing==3.2.5",  # imported by matplotlib
    "python-dateutil==4.0.0",  # imported by matplotlib
    "packaging==26.4",  # imported by matplotlib
]

# Blender platform -> pip platform tags accepted for it (cp311 wheels).
PLATFORMS = {
    "linux-x64": ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
                  "manylinux2014_x86_64", "manylinux1_x86_64"],
    "windows-x64": ["win_amd64"],
    "macos-arm64": ["macosx_14_0_arm64", "macosx_13_0_arm64", "macosx_12_0_arm64", "macosx_11_0_arm64",
                    "macosx_11_0_universal2", "macosx_10_9_universal2"],
}


BLENDER_PYTHON = (3, 11)  # Blender 5.0's Python: the bytecode the zip carries is for it
WHEEL_BYTECODE = Path("pix2vertex_addon") / "wheel_bytecode"  # the pack, in the staged add-on

# Run in a subprocess of this Python: one reconstruction of the default photo without torch (the
# networks through onnxruntime, as in Blender); prints the imported modules' files in site-packages.
_IMPORTS_PROBE = r"""
import json, runpy, sys, sysconfig
sys.modules["torch"] = None
script, out = sys.argv[1], sys.argv[2]
sys.argv = [script, "--output", out]
try:
    runpy.run_path(script, run_name="__main__")
except SystemExit as exc:
    if exc.code:
        raise
roots = {sysconfig.get_paths()[k] for k in ("purelib", "platlib")}
files = set()
for mod in list(sys.modules.values()):
    f = getattr(mod, "__file__", None) or ""
    for root in roots:
        if f.endswith(".py") and f.startswith(root + "/"):
            files.add(f[len(root) + 1:])
print("IMPORTED " + json.dumps(sorted(files)))
"""


def log(msg: str) -> None:
    print(f"[build_extension] {msg}", flush=True)


def lock_path(platform: str) -> Path:
    return LOCKS / f"extension-{platform}.txt"


def _pip(args: list[str]) -> None:
    # isolated (-I): no code and no configuration from the folder this runs in
    cmd = [sys.executable, "-I", "-m", "pip", "--disable-pip-version-check", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=tempfile.gettempdir())
    if r.returncode != 0:
        tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
        raise SystemExit("[build_extension] pip failed: " + " | ".join(tail) +
                         "\n[build_extension] fix: check the network connection to the package registry")


def _download_args(platform: str, dest: Path) -> list[str]:
    args = ["download", "--no-deps", "--only-binary=:all:", "--python-version", "3.11",
            "--implementation", "cp", "--abi", "cp311", "--abi", "abi3", "--abi", "none", "-d", str(dest)]
    for tag in PLATFORMS[platform]:
        args += ["--platform", tag]
    return args


def write_lock(platform: str) -> None:
    """Download the pins for ``platform`` and record each wheel's file name and sha256."""
    with tempfile.TemporaryDirectory() as tmp:
        _pip([*_download_args(platform, Path(tmp)), *EXTENSION_PACKAGES])
        lines = [f"# Wheels of the {platform} extension zip (scripts/build_extension.py --lock); "
                 "installed by Blender as they are"]
        for whl in sorted(Path(tmp).glob("*.whl"), key=lambda p: p.name.lower()):
            name, version = whl.name.split("-")[:2]
            lines.append(f"{name.replace('_', '-').lower()}=={version} --hash=sha256:{sha256(whl)}  # {whl.name}")
    LOCKS.mkdir(exist_ok=True)
    lock_path(platform).write_text("\n".join(lines) + "\n")
    log(f"wrote {lock_path(platform).relative_to(REPO)} ({len(lines) - 1} wheels)")


def read_lock(platform: str) -> list[tuple[str, str, str]]:
    """(requirement, sha256, wheel file name) per line of the lock file."""
    p = lock_path(platform)
    if not p.is_file():
        raise SystemExit(f"[build_extension] {p} missing: run with --lock first")
    out = []
    for line in p.read_text().splitlines():
        m = re.match(r"^(\S+==\S+) --hash=sha256:([0-9a-f]{64})\s+#\s+(\S+\.whl)$", line.strip())
        if m:
            out.append((m.group(1), m.group(2), m.group(3)))
    return out


def fetch_wheels(platform: str, wheels_dir: Path | None = None) -> list[Path]:
    """The platform's wheels in ``wheels/<platform>/``, downloaded (hash-checked) when missing;
    with ``wheels_dir``, those of ``wheels_dir/<platform>/``, which must all be there."""
    entries = read_lock(platform)
    if wheels_dir is not None:
        src = wheels_dir / platform
        bad = [e[2] for e in entries if not ((src / e[2]).is_file() and sha256(src / e[2]) == e[1])]
        if bad:
            raise SystemExit(f"[build_extension] {src}: {len(bad)} pinned wheels missing or with another hash "
                             f"(first: {bad[0]}); run without --wheels to download them")
        log(f"{platform}: all {len(entries)} wheels present in {src}")
        return [src / e[2] for e in entries]
    dest = WHEELS / platform
    dest.mkdir(parents=True, exist_ok=True)
    todo = [e for e in entries if not ((dest / e[2]).is_file() and sha256(dest / e[2]) == e[1])]
    if todo:
        log(f"{platform}: downloading {len(todo)} of {len(entries)} wheels")
        with tempfile.TemporaryDirectory() as tmp:
            req = Path(tmp) / "req.txt"
            req.write_text("".join(f"{r} --hash=sha256:{h}\n" for r, h, _ in todo))
            _pip([*_download_args(platform, dest), "--require-hashes", "-r", str(req)])
    else:
        log(f"{platform}: all {len(entries)} wheels present")
    wanted = {e[2] for e in entries}
    for extra in dest.glob("*.whl"):
        if extra.name not in wanted:
            extra.unlink()
    return [dest / e[2] for e in entries]


def ensure_onnx() -> Path:
    """weights/predictor.onnx for the shipped weights and default views (exported when stale)."""
    from pix2vertex_addon.core.onnx_backend import OnnxEnsemble, OnnxModelError, onnx_path
    from pix2vertex_addon.core.predict import Predictor, default_weights_dir, load_config

    wd = default_weights_dir()
    p = Predictor(wd, threads=2, backend="torch")
    try:
        OnnxEnsemble(wd, load_config(wd), p.views, p.flip_average, threads=1)
        log(f"{onnx_path(wd).relative_to(REPO)} is current")
    except OnnxModelError:
        from pix2vertex_addon.core.ensemble import export_onnx

        export_onnx(p, onnx_path(wd))
        log(f"exported {onnx_path(wd).relative_to(REPO)}")
    return onnx_path(wd)


def blender_ext() -> Path:
    spec = importlib.util.find_spec("bpy")
    if spec is None or not spec.origin:
        raise SystemExit("[build_extension] the bpy module is needed (it carries blender_ext.py)")
    return Path(spec.origin).parent / "5.0" / "scripts" / "addons_core" / "bl_pkg" / "cli" / "blender_ext.py"


def imported_wheel_files() -> set[str]:
    """Paths (relative to site-packages, ``/``-separated) of the ``.py`` files a reconstruction
    imports from installed packages, measured by :data:`_IMPORTS_PROBE` (about 10 s)."""
    with tempfile.TemporaryDirectory(prefix="p2v-probe-") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("P2V_")}
        r = subprocess.run([sys.executable, "-c", _IMPORTS_PROBE, str(REPO / "scripts" / "reconstruct.py"), tmp],
                           capture_output=True, text=True, cwd=tmp, env=env)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("IMPORTED ")]
    if r.returncode != 0 or not lines:
        tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
        raise SystemExit("[build_extension] the import probe (a reconstruction without torch) failed: " + " | ".join(tail))
    return set(json.loads(lines[-1][len("IMPORTED "):]))


def wheel_bytecode(wheels: list[Path], wanted: set[str]) -> dict[str, bytes]:
    """Checked-hash ``.pyc`` (this Python's tag) of the modules ``wanted`` that the wheels hold,
    compiled from the wheels' own sources: {path in site-packages of the .pyc: bytes}."""
    out: dict[str, bytes] = {}
    mode = py_compile.PycInvalidationMode.CHECKED_HASH
    with tempfile.TemporaryDirectory(prefix="p2v-pyc-") as tmp:
        for whl in wheels:
            with zipfile.ZipFile(whl) as z:
                for name in z.namelist():
                    if name not in wanted:
                        continue
                    src = Path(tmp) / name
                    src.parent.mkdir(parents=True, exist_ok=True)
                    src.write_bytes(z.read(name))
                    pyc = importlib.util.cache_from_source(name)
                    try:
                        py_compile.compile(str(src), cfile=str(Path(tmp) / "out.pyc"), dfile=name, doraise=True,
                                           invalidation_mode=mode)
                    except py_compile.PyCompileError:
                        continue  # left to Python (it would not import either)
                    out[pyc] = (Path(tmp) / "out.pyc").read_bytes()
    return out


def stage(platforms: list[str], wheels: dict[str, list[Path]], dest: Path,
          bytecode: dict[str, bytes] | None = None) -> Path:
    """A copy of the add-on with the wheels and a manifest listing them and the platforms;
    ``bytecode`` (from :func:`wheel_bytecode`) becomes the pack ``pix2vertex_addon/wheel_bytecode/``."""
    src = dest / "pix2vertex"
    ignore = shutil.ignore_patterns(".git", ".venv", "wheels", "dist", "build", "out", "__pycache__",
                                    "tests", "docs", "scripts", "locks", ".*_cache", "*.tmp")
    shutil.copytree(REPO, src, ignore=ignore)
    # the zip runs the networks from their ONNX export; the torch weights stay in the checkout
    for f in (src / "pix2vertex_addon" / "weights").glob("*.safetensors"):
        f.unlink()
    (src / "wheels").mkdir()
    rel = []
    for plat in platforms:
        for whl in wheels[plat]:
            target = src / "wheels" / whl.name
            if not target.exists():
                shutil.copyfile(whl, target)
                rel.append(f"./wheels/{whl.name}")
    text = (REPO / "blender_manifest.toml").read_text()
    manifest = tomllib.loads(text)
    if "wheels" in manifest or "platforms" in manifest:
        raise SystemExit("[build_extension] blender_manifest.toml must not list wheels or platforms itself")
    head, sep, tail = text.partition("\n[permissions]")
    head += f"\nplatforms = {json.dumps(platforms)}\nwheels = [\n" + "".join(f'  "{r}",\n' for r in sorted(rel)) + "]\n"
    # Blender never writes bytecode, so the add-on's own modules ship compiled (checked-hash .pyc:
    # valid whatever the files' times after unzipping, ignored if a source is edited)
    if sys.version_info[:2] == BLENDER_PYTHON:
        if bytecode:
            pack = src / WHEEL_BYTECODE
            digest = hashlib.sha256()  # the pack's id: its files' names and contents
            for rel, data in sorted(bytecode.items()):
                (pack / rel).parent.mkdir(parents=True, exist_ok=True)
                (pack / rel).write_bytes(data)
                digest.update(rel.encode() + b"\0" + hashlib.sha256(data).digest())
            (pack / "PACK_ID").write_text(digest.hexdigest() + "\n")
        mode = py_compile.PycInvalidationMode.CHECKED_HASH
        compileall.compile_dir(str(src / "pix2vertex_addon"), quiet=1, invalidation_mode=mode)
        compileall.compile_file(str(src / "__init__.py"), quiet=1, invalidation_mode=mode)
        tail = tail.replace('  "__pycache__/",\n', "")
    else:
        log(f"Python {sys.version_info[0]}.{sys.version_info[1]} is not Blender's: the zip carries no bytecode")
    (src / "blender_manifest.toml").write_text(head + sep + tail)
    return src


# What a zip must never carry: the training code (synthetic data, losses, training, evaluation)
# and the development folders. The manifest's paths_exclude_pattern leaves them out; check_zip checks.
NOT_SHIPPED = ("pix2vertex_addon/training/", "tests/", "scripts/", "docs/", ".venv/", ".git/", "locks/")


def check_zip(path: Path) -> None:
    """Stop with one line when the zip carries anything of :data:`NOT_SHIPPED`."""
    with zipfile.ZipFile(path) as z:
        bad = sorted({p for n in z.namelist() for p in NOT_SHIPPED if n.startswith(p) or n == p.rstrip("/")})
    if bad:
        raise SystemExit(f"[build_extension] {path.name} carries {', '.join(bad)}: check paths_exclude_pattern "
                         "in blender_manifest.toml")


def build(platforms: list[str], output_dir: Path, wheels_dir: Path | None = None) -> list[Path]:
    ensure_onnx()
    wheels = {p: fetch_wheels(p, wheels_dir) for p in platforms}
    wanted = imported_wheel_files() if sys.version_info[:2] == BLENDER_PYTHON else set()
    output_dir.mkdir(parents=True, exist_ok=True)
    version = tomllib.loads((REPO / "blender_manifest.toml").read_text())["version"]
    zips = []
    for plat in platforms:  # one staging each: each zip carries its own wheels' bytecode
        pyc = wheel_bytecode(wheels[plat], wanted)
        with tempfile.TemporaryDirectory(prefix="p2v-ext-") as tmp:
            src = stage([plat], {plat: wheels[plat]}, Path(tmp), bytecode=pyc)
            cmd = [sys.executable, str(blender_ext()), "build", "--source-dir", str(src),
                   "--output-dir", str(output_dir), "--split-platforms"]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                raise SystemExit(f"[build_extension] blender_ext build failed:\n{r.stdout}{r.stderr}")
        z = output_dir / f"pix2vertex-{version}-{plat.replace('-', '_')}.zip"
        if not z.is_file():
            raise SystemExit(f"[build_extension] expected {z} from blender_ext build:\n{r.stdout}")
        check_zip(z)
        zips.append(z)
        log(f"{z.name}: {z.stat().st_size / 2**20:.1f} MiB, {len(wheels[plat])} wheels, "
            f"bytecode of {len(pyc)} of their modules")
    return zips


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--platform", action="append", choices=sorted(PLATFORMS),
                    help="build only these (repeatable; default: all three)")
    ap.add_argument("--output-dir", type=Path, default=REPO / "dist")
    ap.add_argument("--wheels", type=Path, default=None, metavar="DIR",
                    help="take the pinned wheels from DIR/<platform>/ (e.g. another checkout's wheels/) "
                         "instead of downloading them into wheels/")
    ap.add_argument("--lock", action="store_true", help="re-resolve the pins and rewrite locks/")
    a = ap.parse_args(argv)
    platforms = a.platform or list(PLATFORMS)
    if a.lock:
        for p in platforms:
            write_lock(p)
        return 0
    build(platforms, a.output_dir.resolve(), a.wheels.resolve() if a.wheels else None)
    return 0


if __name__ == "__main__":
    sys.exit(main(_bootstrap.script_argv()))
