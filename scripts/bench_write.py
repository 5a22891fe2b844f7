"""Writing a result (``core/results.py: write_result``) against another revision, interleaved.

    git archive REV pix2vertex_addon | tar -x -C /some/folder
    .venv/bin/python scripts/bench_write.py --baseline /some/folder/pix2vertex_addon [--repeats 9]

Reconstructs scikit-image's astronaut (upscaled to 1024 x 1024, as ``bench_pipeline.py``) once
with this tree, then times the parts of writing its result (depth raster, texture clean-up,
normal map, OBJ text) and the whole ``write_result`` with this tree and, given ``--baseline``
(another revision's ``pix2vertex_addon`` folder, imported as a package of its own), with that
one, alternating which goes first, in one process, so that both see the same load on a shared
machine. Prints whether the two wrote the same texture, raw texture, confidence, normal map and
OBJ text, then a markdown table of median wall and process-CPU milliseconds and their ratios.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import shutil
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bootstrap import REPO, import_addon, script_argv  # noqa: E402

MODULES = ("results", "texture", "projection", "export")


def _load(package_dir: Path, name: str) -> dict[str, ModuleType]:
    spec = importlib.util.spec_from_file_location(name, package_dir / "__init__.py",
                                                  submodule_search_locations=[str(package_dir)])
    if spec is None or spec.loader is None:
        raise SystemExit(f"error: cannot load {package_dir} as a package")
    pkg = importlib.util.module_from_spec(spec)
    sys.modules[name] = pkg
    spec.loader.exec_module(pkg)
    return {m: importlib.import_module(f"{name}.core.{m}") for m in MODULES}


def _outputs(mods: dict[str, ModuleType], case: dict) -> dict[str, object]:
    r, t, p, e = (mods[m] for m in MODULES)
    photo, rec, tpl = case["photo"], case["rec"], case["template"]
    faces, uvs = np.asarray(tpl.faces), np.asarray(tpl.uvs)
    v, q, quv = r.detailed_mesh(rec, faces, uvs)
    dc = p.crop_depth(rec.camera, v, np.concatenate([q[:, [0, 1, 2]], q[:, [0, 2, 3]]]))
    tex = t.clean_texture(photo, rec.camera, rec.vertices, tpl.vertices_cm * 10.0, faces, uvs, mask=rec.maps["mask"],
                          depth_crop=dc)
    return {"texture": tex.texture, "raw texture": tex.raw, "confidence": tex.confidence,
            "normal map": r.face_normal_map(rec, faces, uvs),
            "OBJ text": e.format_obj(rec.to_model(v) * 0.001, q, quv, mtl_file="face.mtl")
            + e.format_obj(rec.vertices_model * 0.001, faces, uvs, mtl_file="face_base.mtl")}


def _parts(mods: dict[str, ModuleType], case: dict, out: Path) -> dict[str, tuple[float, float]]:
    r, t, p, e = (mods[m] for m in MODULES)
    photo, rec, tpl = case["photo"], case["rec"], case["template"]
    faces, uvs = np.asarray(tpl.faces), np.asarray(tpl.uvs)
    secs: dict[str, tuple[float, float]] = {}

    def lap(name, fn):
        w, c = time.perf_counter(), time.process_time()
        res = fn()
        secs[name] = (time.perf_counter() - w, time.process_time() - c)
        return res

    v, q, quv = r.detailed_mesh(rec, faces, uvs)
    dc = lap("depth raster", lambda: p.crop_depth(rec.camera, v, np.concatenate([q[:, [0, 1, 2]], q[:, [0, 2, 3]]])))
    lap("texture clean-up", lambda: t.clean_texture(photo, rec.camera, rec.vertices, tpl.vertices_cm * 10.0, faces,
                                                    uvs, mask=rec.maps["mask"], depth_crop=dc))
    lap("normal map", lambda: r.face_normal_map(rec, faces, uvs))
    lap("OBJ text (face + face_base)", lambda: (e.format_obj(rec.to_model(v) * 0.001, q, quv, mtl_file="face.mtl"),
                                                e.format_obj(rec.vertices_model * 0.001, faces, uvs,
                                                             mtl_file="face_base.mtl")))
    lap("write_result, everything", lambda: r.write_result(out, photo, rec, tpl, overwrite=True))
    return secs


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--baseline", type=Path, help="another revision's pix2vertex_addon folder")
    args = ap.parse_args(argv)
    if args.baseline is not None and not (args.baseline / "core" / "results.py").is_file():
        print(f"error: {args.baseline} is not a pix2vertex_addon folder", file=sys.stderr)
        return 2
    import_addon()
    sys.path.insert(0, str(REPO / "tests"))
    from PIL import Image

    from pix2vertex_addon.core.images import load_image
    from pix2vertex_addon.core.pipeline import Pipeline

    from photos import photo_paths

    photo, _ = load_image(photo_paths()["astronaut"])
    photo = np.asarray(Image.fromarray(photo).resize((1024, 1024), Image.LANCZOS))
    pipe = Pipeline()
    case = {"photo": photo, "rec": pipe.reconstruct(photo)[0], "template": pipe.model.template}
    versions = {"this tree": {m: importlib.import_module(f"pix2vertex_addon.core.{m}") for m in MODULES}}
    if args.baseline is not None:
        versions["baseline"] = _load(args.baseline.resolve(), "p2v_baseline")
    names = list(versions)
    if len(names) > 1:
        a, b = (_outputs(versions[n], case) for n in names)
        for k in a:
            same = a[k] == b[k] if isinstance(a[k], str) else np.array_equal(a[k], b[k])
            print(f"{k}: {'identical' if same else 'DIFFERENT'}")
    tmp = Path(tempfile.mkdtemp())
    try:
        for n in names:  # warm-up: the layout caches of each version
            _parts(versions[n], case, tmp / "warm")
        runs: dict[str, list[dict[str, tuple[float, float]]]] = {n: [] for n in names}
        for i in range(args.repeats):
            for n in (names if i % 2 == 0 else names[::-1]):
                runs[n].append(_parts(versions[n], case, tmp / "r"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nwriting the astronaut's result (1024 x 1024 photo), median of {args.repeats}, interleaved (ms)\n")
    cols = [f"{n} wall" for n in names] + [f"{n} CPU" for n in names]
    ratio = len(names) > 1
    print("| part | " + " | ".join(cols) + (" | wall ratio | CPU ratio |" if ratio else " |"))
    print("|---" * (len(cols) + 1 + 2 * ratio) + "|")
    for part in runs[names[0]][0]:
        med = {n: np.median([r[part] for r in runs[n]], axis=0) * 1000.0 for n in names}
        row = [f"{med[n][0]:.0f}" for n in names] + [f"{med[n][1]:.0f}" for n in names]
        if ratio:
            row += [f"{med[names[0]][0] / med[names[1]][0]:.2f}", f"{med[names[0]][1] / med[names[1]][1]:.2f}"]
        print(f"| {part} | " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(script_argv()))
