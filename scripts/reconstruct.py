"""Reconstruct 3D faces from photos, headless.

    blender -b -P scripts/reconstruct.py -- INPUT... --output DIR
    python scripts/reconstruct.py INPUT... --output DIR            (with the bpy module, or without)

INPUT: image files or folders of images (a batch). With no INPUT, the embedded default photo
(scikit-image's astronaut) is used. Each photo's results go to DIR/<name>/ (face.obj, face.mtl,
face_base.obj, texture.png, texture_raw.png, normal.png, depth.npy, landmarks.json, maps.png,
report.json). Finished photos are skipped unless --overwrite. A bad photo is reported and the batch goes on; the exit status
is 0 only when every photo succeeded (1: some failed, 2: bad arguments or set-up, 130: cancelled).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bootstrap import import_addon, script_argv  # noqa: E402


def default_input() -> Path:
    import skimage

    return Path(skimage.data_dir) / "astronaut.png"


def parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="reconstruct.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("inputs", nargs="*", metavar="INPUT", help="image files or folders")
    ap.add_argument("--output", "-o", default="out", help="results folder (default: out)")
    ap.add_argument("--overwrite", action="store_true", help="redo photos that already have results")
    ap.add_argument("--recursive", action="store_true", help="look into sub-folders too")
    ap.add_argument("--all-faces", action="store_true", help="every face of a photo, not only the largest")
    ap.add_argument("--no-detail", action="store_true", help="skip the fine-detail stage")
    ap.add_argument("--texture-size", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=max(1, min(4, os.cpu_count() or 1)))
    ap.add_argument("--face-model", default=None, help="ict_facekit.npz (default: $P2V_FACE_MODEL or ../shared)")
    ap.add_argument("--weights", default=None, help="network weights folder (default: the shipped ones)")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    return ap.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse(argv)
    import_addon()
    from pix2vertex_addon.core.batch import collect_inputs, run_batch
    from pix2vertex_addon.core.detect import DetectorUnavailable
    from pix2vertex_addon.core.face_model import FaceModelError
    from pix2vertex_addon.core.pipeline import Pipeline, PipelineOptions

    inputs = args.inputs or [str(default_input())]
    files, missing = collect_inputs(inputs, recursive=args.recursive)
    if not files and not missing:
        print(f"no images found in {', '.join(inputs)}", file=sys.stderr)
        return 2
    try:
        pipeline = Pipeline(args.face_model, args.weights, threads=args.threads)
    except (FaceModelError, FileNotFoundError, DetectorUnavailable, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    opts = PipelineOptions(all_faces=args.all_faces, detail=not args.no_detail)

    from tqdm import tqdm

    bar = tqdm(total=len(files), unit="photo", disable=args.quiet, file=sys.stderr)

    def progress(i: int, total: int, name: str, stage: str) -> None:
        bar.n = i
        bar.set_postfix_str(f"{name}: {stage}", refresh=True)

    try:
        rep = run_batch(pipeline, files, args.output, opts, overwrite=args.overwrite, progress=progress,
                        texture_size=args.texture_size)
    except KeyboardInterrupt:
        bar.close()
        print("cancelled: finished results are complete, nothing half-written was left", file=sys.stderr)
        return 130
    except DetectorUnavailable as exc:
        bar.close()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    bar.close()
    rep.failed = missing + rep.failed
    print(rep.summary())
    out = Path(args.output).resolve()
    for src, folders in rep.done:
        for f in folders:
            print(f"  {src} -> {f}")
    if rep.done:
        print(f"results in {out} (open face.obj in Blender or any 3D tool; report.json has the details)")
    if rep.cancelled:
        return 130
    return 0 if rep.ok and not missing else 1


if __name__ == "__main__":
    sys.exit(main(script_argv()))
