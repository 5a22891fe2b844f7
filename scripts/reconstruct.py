"""Reconstruct 3D faces from photos, headless.

    blender -b -P scripts/reconstruct.py -- INPUT... --output DIR
    python scripts/reconstruct.py INPUT... --output DIR            (with the bpy module, or without)

INPUT: image files or folders of images (a batch). With no INPUT, the embedded default photo
(scikit-image's astronaut) is used. Each photo's results go to DIR/<name>/ (face.obj, face.mtl,
face_base.obj, texture.png, texture_raw.png, normal.png, depth.npy, landmarks.json, maps.png,
report.json; with --build head, the default, also head.obj, head.mtl, head.glb and head.json).
Finished photos are skipped when their recorded input, options and weights match (a result of
another photo or an outdated one is replaced only with --overwrite). A bad photo is reported and
the batch goes on; one run at a time uses an output folder (--wait). The exit status is 0 only
when every photo succeeded (1: some failed, 2: bad arguments, set-up or output folder, 130:
cancelled).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
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
    ap.add_argument("--overwrite", action="store_true", help="redo photos that have results, and replace results of other or changed "
                    "photos in the way (never a folder that is not a result)")
    ap.add_argument("--recursive", action="store_true", help="look into sub-folders too")
    ap.add_argument("--all-faces", action="store_true", help="every face of a photo, not only the largest")
    ap.add_argument("--no-detail", action="store_true", help="skip the fine-detail stage")
    ap.add_argument("--dense-only", action="store_true",
                    help="fit the template to the networks' maps alone (the paper's fit), without the detected landmarks")
    ap.add_argument("--build", choices=("head", "face"), default="head",
                    help="head (default): also the full head with eyes and teeth (head.obj, head.glb with the "
                         "shape keys as morph targets, head.json); face: only the face mask")
    ap.add_argument("--no-arkit", action="store_true", help="no ARKit shape keys on the head")
    ap.add_argument("--texture-size", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=max(1, min(4, os.cpu_count() or 1)))
    ap.add_argument("--face-model", default=None, help="ict_facekit.npz (default: $P2V_FACE_MODEL or ../shared)")
    ap.add_argument("--weights", default=None, help="network weights folder (default: the shipped ones)")
    ap.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                    help="when another run uses the output folder, wait this long for it (default: fail at once)")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    return ap.parse_args(argv)


def _missing_package(exc: ImportError) -> str:
    return (f"a runtime package is missing or broken ({exc}); install them with "
            "'python3 vendor_install.py' (or 'blender -b -P vendor_install.py')")


def _setup_pipeline(args: argparse.Namespace):
    """The pipeline, or one line saying what in the set-up is wrong (weights, face model, runtime
    packages): never a traceback."""
    try:
        from pix2vertex_addon.core.face_model import FaceModelError
        from pix2vertex_addon.core.pipeline import Pipeline

        try:
            return Pipeline(args.face_model, args.weights, threads=args.threads), ""
        except FaceModelError as exc:
            return None, str(exc)
    except ImportError as exc:
        return None, _missing_package(exc)
    except (OSError, ValueError) as exc:  # WeightsError, DetectorUnavailable, missing files
        return None, str(exc)
    except Exception as exc:  # noqa: BLE001 - any other set-up failure is still one line
        return None, f"cannot set up the reconstruction: {type(exc).__name__}: {exc}"


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str]) -> int:
    args = parse(argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)  # like Ctrl-C: the result being written is removed
    try:
        import_addon()
        from pix2vertex_addon.core.batch import gather_inputs, run_batch
        from pix2vertex_addon.core.detect import DetectorUnavailable
        from pix2vertex_addon.core.export import OutputError
        from pix2vertex_addon.core.pipeline import PipelineOptions
    except ImportError as exc:
        print(f"error: {_missing_package(exc)}", file=sys.stderr)
        return 2

    inputs = args.inputs or [str(default_input())]
    found = gather_inputs(inputs, recursive=args.recursive)
    for path, reason in found.skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    if not found.files and not found.problems:
        print(f"error: no images found in {', '.join(inputs)}", file=sys.stderr)
        return 2
    pipeline, why = _setup_pipeline(args)
    if pipeline is None:
        print(f"error: {why}", file=sys.stderr)
        return 2
    opts = PipelineOptions(all_faces=args.all_faces, detail=not args.no_detail, landmarks=not args.dense_only,
                           head=args.build == "head", arkit=not args.no_arkit)

    from tqdm import tqdm

    bar = tqdm(total=len(found.files), unit="photo", disable=args.quiet, file=sys.stderr)

    def progress(i: int, total: int, name: str, stage: str) -> None:
        bar.n = i
        bar.set_postfix_str(f"{name}: {stage}", refresh=True)

    try:
        rep = run_batch(pipeline, found.files, args.output, opts, overwrite=args.overwrite, progress=progress,
                        texture_size=args.texture_size, names=found.names, lock_wait_s=args.wait)
    except KeyboardInterrupt:
        bar.close()
        print("cancelled: finished results are complete, nothing half-written was left", file=sys.stderr)
        return 130
    except (DetectorUnavailable, OutputError) as exc:
        bar.close()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    bar.close()
    rep.failed = found.problems + rep.failed
    print(rep.summary())
    out = Path(args.output).resolve()
    for src, folders in rep.done:
        for f in folders:
            print(f"  {src} -> {f}")
    if rep.done:
        print(f"results in {out} (open face.obj in Blender or any 3D tool; report.json has the details)")
    if rep.cancelled:
        return 130
    if rep.aborted:
        return 2
    return 0 if rep.ok else 1


if __name__ == "__main__":
    sys.exit(main(script_argv()))
