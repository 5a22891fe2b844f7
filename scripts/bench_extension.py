"""Cold start and repeat of the extension as an artist gets it (docs/reference/benchmarks.md).

    .venv/bin/python scripts/bench_extension.py [--zip dist/pix2vertex-0.1.0-linux_x64.zip] [--photo P]

Builds the Linux zip when none is given (scripts/build_extension.py), installs it with
``bpy.ops.extensions.package_install_files`` into a fresh Blender (the bpy module in a venv that
holds only bpy and numpy; ``BLENDER_USER_RESOURCES`` in a temporary folder; no network where the
machine allows a network namespace), enables it, adds the template and runs Reconstruct three times on
the photo (default: scikit-image's astronaut). Prints a table: the first Reconstruct after enabling
(cold start: the packages, the face model and the networks load), the second (repeat) and a third
with Build: Face only, in the session that installed the extension and in a next one (the
preferences saved, as Blender does on quit), the number of modules the import system compiled
from source up to the end of the first Reconstruct, and the pipeline's own stage times of the
next session's cold start and repeat.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import _bootstrap

_bootstrap.import_addon()

# Runs in the clean Python: install, enable, add the template, Reconstruct twice.
_IN_BLENDER = r"""
import importlib.util, json, sys, time
from pathlib import Path
import numpy as np
import bpy
zip_path, photo, out, again = sys.argv[1], sys.argv[2], Path(sys.argv[3]), sys.argv[4] == "again"
profile = sys.argv[5] if len(sys.argv) > 5 else ""
res = {"has_torch": importlib.util.find_spec("torch") is not None,
       "has_scipy": importlib.util.find_spec("scipy") is not None}
mod = "bl_ext.user_default.pix2vertex"
# count what the import system compiles from source (no .pyc to read), and its CPU time
import importlib.machinery as _mach
_compiled = {"n": 0, "s": 0.0}
_to_code = _mach.SourceFileLoader.source_to_code
def _counted(self, data, path, *args, **kwargs):
    t = time.process_time()
    try:
        return _to_code(self, data, path, *args, **kwargs)
    finally:
        _compiled["n"] += 1
        _compiled["s"] += time.process_time() - t
_mach.SourceFileLoader.source_to_code = _counted
if again:  # a later Blender session: the extension installed and enabled in the saved preferences
    res["enabled_at_start"] = mod in bpy.context.preferences.addons
    if not res["enabled_at_start"]:
        bpy.ops.preferences.addon_enable(module=mod)
else:
    bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default", enable_on_install=True)
    bpy.ops.wm.save_userpref()  # as Blender does on quit: the next session starts with it enabled
res["enabled"] = mod in bpy.context.preferences.addons
site = Path(bpy.utils.user_resource("EXTENSIONS")) / ".local" / "lib" / "python3.11" / "site-packages"
res["pyc_after_enable"] = sum(1 for _ in site.rglob("*.pyc"))  # the zip's pack, installed by register()
deps = sys.modules[mod + ".pix2vertex_addon.blender.deps"]
res["status"] = [[t, ok] for t, ok, _ in deps.status_lines(bpy.context)]
res["blocking"] = deps.blocking_reason(bpy.context)
res["poll"] = bpy.ops.p2v.reconstruct.poll()
res["add_template"] = sorted(bpy.ops.p2v.add_template())
s = bpy.context.scene.p2v
s.image_path = photo
s.output_dir = str(out / "results")
bpy.context.preferences.addons[mod].preferences.threads = 2
times = []
for i, build in enumerate(("HEAD", "HEAD", "FACE")):  # cold start, repeat, repeat of the face only
    s.build = build
    if profile:
        import cProfile
        prof = cProfile.Profile()
        prof.enable()
    t = time.perf_counter()
    res["reconstruct"] = sorted(bpy.ops.p2v.reconstruct())
    times.append(time.perf_counter() - t)
    if i == 0:
        res["compiled_first"] = dict(_compiled)
    if profile:
        prof.disable()
        prof.dump_stats(f"{profile}-{'again' if again else 'install'}-{i}.prof")
    if i <= 1:  # the cold start's and the repeat's stage times
        res["report" if i else "report_cold"] = json.loads((out / "results" / Path(photo).stem / "report.json").read_text())
res["times"] = times
key = s.template.data.shape_keys.key_blocks["p2v Reconstruction"]
co = np.empty(len(key.data) * 3, np.float32)
key.data.foreach_get("co", co)
np.save(out / "co.npy", co.reshape(-1, 3))
res["modules"] = sorted({m.split(".")[0] for m in sys.modules})
import threading
for t in threading.enumerate():
    if t.name == "p2v-bytecode":  # the add-on's bytecode cache for the next session
        t.join()
print("RESULT" + json.dumps(res))
"""


def _clean_python(root: Path) -> Path:
    """A venv whose site-packages holds only bpy and numpy (linked from this one)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    site = Path(sysconfig.get_paths()["purelib"])
    target = next((root / "lib").glob("python3*/site-packages"))
    for name in ("bpy", "bpy-5.0.1.dist-info", "numpy", "numpy.libs", "numpy-1.26.4.dist-info"):
        if (site / name).exists():
            os.symlink(site / name, target / name)
    return root / "bin" / "python"


def _offline(cmd: list[str]) -> tuple[list[str], str]:
    """The command in a network namespace without interfaces where the machine allows one."""
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-n", "true"], capture_output=True).returncode == 0:
        return [unshare, "-n", *cmd], "network namespace"
    return cmd, "proxy variables pointing at a closed port"


def install_and_reconstruct(zip_path: Path, photo: Path, work: Path, again: bool = False,
                            profile: str = "") -> tuple[dict, str]:
    """Run :data:`_IN_BLENDER` in a clean, offline Python; returns its result and how it was cut
    off from the network. ``again``: in a new session with the extension already installed.
    ``profile``: a path prefix; each Reconstruct's cProfile statistics go to ``PREFIX-MODE-I.prof``."""
    py = work / "venv" / "bin" / "python" if again else _clean_python(work / "venv")
    mode = "again" if again else "install"
    cmd, how = _offline([str(py), "-c", _IN_BLENDER, str(zip_path), str(photo), str(work), mode, profile])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("P2V_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(BLENDER_USER_RESOURCES=str(work / "blender-user"), PYTHONNOUSERSITE="1")
    env.update({k: "http://127.0.0.1:9" for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")})
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, cwd=work)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT")]
    if r.returncode != 0 or not lines:
        raise RuntimeError(f"({how})\n" + r.stdout[-3000:] + r.stderr[-3000:])
    return json.loads(lines[-1][len("RESULT"):]), how


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zip", type=Path, help="the Linux extension zip (default: build it)")
    ap.add_argument("--photo", type=Path, help="photo (default: scikit-image's astronaut)")
    ap.add_argument("--profile", type=Path, help="write cProfile statistics of each Reconstruct as PREFIX-*.prof")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="p2v-bench-ext-") as tmp:
        work = Path(tmp)
        z = a.zip
        if z is None:
            import build_extension

            z = build_extension.build(["linux-x64"], work / "dist")[0]
        if a.photo:
            photo = a.photo
        else:
            import skimage

            photo = Path(skimage.data_dir) / "astronaut.png"
        prof = str(a.profile.resolve()) if a.profile else ""
        res, how = install_and_reconstruct(z.resolve(), photo.resolve(), work, profile=prof)
        res2, _ = install_and_reconstruct(z.resolve(), photo.resolve(), work, again=True, profile=prof)
        report, cold = res2["report"], res2["report_cold"]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, {os.cpu_count()} cores, "
          f"load {load:.1f}, {how}, zip {z.name}")
    print("| Reconstruct (full head unless said) | session after installing | next session |\n|---|---|---|")
    rows = ("first after enabling (cold start)", "repeat", "repeat, Build: Face only")
    for k, label in enumerate(rows):
        print(f"| {label} | {res['times'][k]:.2f} | {res2['times'][k]:.2f} |")
    c1, c2 = res["compiled_first"], res2["compiled_first"]
    print(f"| modules compiled from source up to the end of the first Reconstruct (CPU s) "
          f"| {c1['n']} ({c1['s']:.2f}) | {c2['n']} ({c2['s']:.2f}) |")
    print("\nStages in the next session (the pipeline's report.json), full head:\n")
    print("| stage | cold start | repeat |\n|---|---|---|")
    for k, v in report.get("seconds", {}).items():
        print(f"| {k} | {cold.get('seconds', {}).get(k, float('nan')):.2f} | {v:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(_bootstrap.script_argv()))
