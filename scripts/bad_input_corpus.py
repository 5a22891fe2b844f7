"""Build a corpus of odd and broken inputs, run the command line on it as a new user would, and
print one summary line: inputs, clear errors, tracebacks, leftovers, batch survivors.

    python scripts/bad_input_corpus.py [--keep DIR]

The corpus (made fresh in a temporary folder from the photos that ship with scikit-image and
matplotlib; nothing is downloaded):

* one batch over a folder (``--recursive``) plus files given directly: good photos among them
  (plain, named ``..jpg``, a 244-character name, CMYK, 16-bit, AVIF) and bad ones (empty,
  truncated, text named .jpg, 16 pixels, no face, a decompression bomb, a HEIC file, a looping
  and a broken symbolic link, a folder named like a photo, a hidden photo, a folder linking back
  to itself, a name longer than the system allows, a missing path);
* one run per set-up failure: bit-flipped weights, a truncated config.json, a face model with
  face_uvs out of range, a missing face model, an unwritable output folder, an output folder
  held by another run, a broken runtime package.

An input counts as a clear error when the run names it with a reason (``FAILED``, ``skipped``,
or for set-up failures exactly one ``error:`` line and exit status 2). Leftovers are hidden
partial/old result folders or lock files left in any output folder afterwards. Survivors are
the good photos that got their result in the batch.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CLI = REPO / "scripts" / "reconstruct.py"
LEFTOVER_MARKS = (".partial-", ".old-", ".p2v.lock")


def _photos() -> dict[str, Path]:
    sys.path.insert(0, str(REPO / "tests"))
    from photos import no_face_path, photo_paths

    return {**photo_paths(), "coffee": no_face_path()}


def build_batch(root: Path) -> tuple[list[str], dict[str, bool]]:
    """(command-line inputs, {entry path: should it get a result}) of the batch run."""
    from PIL import Image

    src = _photos()
    d = root / "photos"
    (d / "sub").mkdir(parents=True)
    astro = Image.open(src["astronaut"]).convert("RGB")
    grace = Image.open(src["grace_hopper"]).convert("RGB")
    want: dict[str, bool] = {}

    def good(p: Path, img=astro, **kw) -> None:
        img.save(p, **kw)
        want[str(p)] = True

    def bad(p: Path) -> None:
        want[str(p)] = False

    good(d / "astronaut.png")
    good(d / "sub" / "grace hopper.jpg", grace, quality=92)
    good(d / ("p" * 240 + ".png"))
    good(d / "cmyk.jpg", astro.convert("CMYK"))
    Image.fromarray(np.asarray(grace.convert("L"), np.uint16) * 257).save(d / "sixteen bit.png")
    want[str(d / "sixteen bit.png")] = True
    good(d / "photo.avif")
    dotdot = root / "..jpg"
    good(dotdot, format="JPEG", quality=92)
    (d / "empty.png").write_bytes(b"")
    bad(d / "empty.png")
    data = (d / "sub" / "grace hopper.jpg").read_bytes()
    (d / "truncated.jpg").write_bytes(data[: len(data) // 3])
    bad(d / "truncated.jpg")
    (d / "notes.jpg").write_text("not a photo")
    bad(d / "notes.jpg")
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(d / "tiny.png")
    bad(d / "tiny.png")
    shutil.copy(src["coffee"], d / "coffee.png")
    bad(d / "coffee.png")
    bomb = Image.new("1", (30000, 30000))  # 900 megapixels, a few kB on disk
    bomb.save(d / "bomb.png")
    bad(d / "bomb.png")
    (d / "phone.heic").write_bytes(b"\x00\x00\x00\x18ftypheic" + bytes(64))
    bad(d / "phone.heic")
    (d / "loop.jpg").symlink_to(d / "loop.jpg")
    bad(d / "loop.jpg")
    (d / "gone.png").symlink_to(d / "nowhere.png")
    bad(d / "gone.png")
    (d / "album.jpg").mkdir()
    good(d / "album.jpg" / "inside.png", grace)  # found with --recursive
    astro.save(d / ".hidden.png")
    bad(d / ".hidden.png")
    (d / "sub" / "back").symlink_to(d, target_is_directory=True)
    bad(d / "sub" / "back")
    too_long = root / ("n" * 300 + ".jpg")
    bad(too_long)
    missing = root / "missing.png"
    bad(missing)
    return [str(d), str(dotdot), str(too_long), str(missing)], want


def _damaged_weights(root: Path, what: str) -> Path:
    w = root / f"weights-{what}"
    shutil.copytree(REPO / "pix2vertex_addon" / "weights", w)
    if what == "bitflip":
        f = w / "geometry.safetensors"
        b = bytearray(f.read_bytes())
        b[len(b) // 2] ^= 0x10
        f.write_bytes(bytes(b))
    else:
        (w / "config.json").write_text((w / "config.json").read_text()[:150])
    return w


def _bad_face_model(root: Path) -> Path:
    sys.path.insert(0, str(REPO))
    from pix2vertex_addon.core.face_model import _read_arrays, resolve_face_model_path

    arrays = _read_arrays(resolve_face_model_path(None))  # the npz or the shipped pack alike
    arrays["face_uvs"] = arrays["face_uvs"].copy()
    arrays["face_uvs"].flat[0] = 10**6
    out = root / "bad_model.npz"
    np.savez(out, **arrays)
    return out


def setup_cases(root: Path, photo: str) -> dict[str, tuple[list[str], dict[str, str]]]:
    fake = root / "fake-packages" / "scipy"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('scipy is broken (corpus stand-in)')\n")
    out = str(root / "setup-out")
    return {
        "bit-flipped weights": ([photo, "-o", out, "--weights", str(_damaged_weights(root, "bitflip"))], {}),
        "truncated config.json": ([photo, "-o", out, "--weights", str(_damaged_weights(root, "config"))], {}),
        "face_uvs out of range": ([photo, "-o", out, "--face-model", str(_bad_face_model(root))], {}),
        "missing face model": ([photo, "-o", out, "--face-model", str(root / "none.npz")], {}),
        "unwritable output": ([photo, "-o", "/proc/p2v-results"], {}),
        "output held by another run": ([photo, "-o", str(root / "locked-out")], {}),
        "broken runtime package": ([photo, "-o", out], {"PYTHONPATH": str(fake.parent)}),
    }


def _run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CLI), *args, "--quiet", "--texture-size", "256"],
                          capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=3600)


def _leftovers(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return [str(p) for p in folder.rglob("*") if any(m in p.name for m in LEFTOVER_MARKS)]


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keep", default=None, help="build the corpus here and keep it (default: a temporary folder)")
    args = ap.parse_args(argv)
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="p2v-corpus-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        inputs, want = build_batch(root)
        out = root / "out"
        r = _run([*inputs, "-o", str(out), "--recursive"])
        text = r.stdout + r.stderr
        tracebacks = text.count("Traceback")
        reported: dict[str, str] = {}
        for line in text.splitlines():
            s = line.strip()
            for entry in want:
                for tag in ("FAILED ", "skipped "):
                    if s.startswith(f"{tag}{entry}: "):
                        reported[entry] = s[len(tag) + len(entry) + 2:]
        done = {}
        for folder in out.iterdir() if out.is_dir() else []:
            rep = folder / "report.json"
            if rep.is_file():
                done[json.loads(rep.read_text())["identity"]["input"]["path"]] = folder.name
        rows = []
        clear = survivors = n_good = 0
        for entry, ok in want.items():
            resolved = str(Path(entry).resolve()) if ok else entry
            got = done.get(resolved)
            why = reported.get(entry, "")
            if ok:
                n_good += 1
                survivors += got is not None
                rows.append(f"  good  {Path(entry).name[:40]:40s} -> {got or 'NO RESULT: ' + why}")
            else:
                clear += bool(why)
                rows.append(f"  bad   {Path(entry).name[:40]:40s} -> {why or 'NOT REPORTED'}")
        leftovers = _leftovers(out)
        # set-up failures, one run each
        cases = setup_cases(root, str(root / "photos" / "astronaut.png"))
        (root / "locked-out").mkdir()
        holder = subprocess.Popen([sys.executable, "-c", (
            "import sys, time; sys.path.insert(0, sys.argv[1]);"
            "from pix2vertex_addon.core.export import OutputLock;"
            "l = OutputLock(sys.argv[2]).acquire(); print('held', flush=True); sys.stdin.read(); l.release()"),
            str(REPO), str(root / "locked-out")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert holder.stdout is not None
        holder.stdout.readline()
        try:
            for case, (cargs, env) in cases.items():
                c = _run(cargs, env)
                lines = [ln for ln in c.stderr.splitlines() if ln.strip()]
                tracebacks += (c.stdout + c.stderr).count("Traceback")
                one = c.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ")
                clear += one
                rows.append(f"  setup {case:40s} -> status {c.returncode}: {lines[-1] if lines else '(nothing)'}")
        finally:
            assert holder.stdin is not None
            holder.stdin.close()  # the other run finishes and releases its lock
            holder.wait(timeout=60)
        for folder in (root / "setup-out", root / "locked-out"):
            leftovers += _leftovers(folder)
        n_inputs = len(want) + len(cases)
        n_bad = n_inputs - n_good
        print("\n".join(rows))
        print(f"{n_inputs} inputs ({n_good} good, {n_bad} bad or set-up failures): {clear}/{n_bad} clear errors, "
              f"{tracebacks} tracebacks, {len(leftovers)} leftovers, {survivors}/{n_good} batch survivors "
              f"(batch exit status {r.returncode})")
        return 0 if (clear == n_bad and not tracebacks and not leftovers and survivors == n_good) else 1
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
