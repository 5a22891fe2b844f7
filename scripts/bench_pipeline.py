"""Benchmark the photo pipeline: per-stage seconds, a batch without reloading, peak memory.

    .venv/bin/python scripts/bench_pipeline.py [--repeats 3] [--batch 20] [--threads 2]

Prints three tables:
1. per-stage seconds for a 1024 x 1024 photo (scikit-image's astronaut, upscaled), after the
   models are loaded (median of --repeats runs; the first run is a warm-up);
   then the parts of writing one result, wall and process-CPU seconds;
2. a batch of --batch photos (the three test photos, cycled, with small variations) through one
   Pipeline: total and per-photo seconds, with the load time shown apart;
3. peak resident memory (ru_maxrss) of a fresh process reconstructing a 4000 x 3000 photo.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))


def photos() -> dict[str, np.ndarray]:
    from pix2vertex_addon.core.images import load_image

    from photos import photo_paths

    return {k: load_image(p)[0] for k, p in photo_paths().items()}


def resize(rgb: np.ndarray, w: int, h: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(rgb).resize((w, h), Image.LANCZOS))


def big_photo(base: np.ndarray, w: int, h: int) -> np.ndarray:
    """The face photo scaled to the height of a w x h canvas, on a mid-grey background."""
    s = resize(base, int(base.shape[1] * h / base.shape[0]), h)
    out = np.full((h, w, 3), 120, np.uint8)
    x0 = (w - s.shape[1]) // 2
    out[:, x0:x0 + s.shape[1]] = s
    return out


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in rows])


def stage_table(pipeline, rgb, repeats: int, out: Path) -> tuple[str, float]:
    from pix2vertex_addon.core.results import write_result

    runs = []
    for k in range(repeats + 1):
        t0 = time.perf_counter()
        rec = pipeline.reconstruct(rgb)[0]
        t1 = time.perf_counter()
        write_result(out / f"r{k}", rgb, rec, pipeline.model.template, overwrite=True)
        t2 = time.perf_counter()
        rep = json.loads((out / f"r{k}" / "report.json").read_text())
        sec = {s: v for s, v in rep["seconds"].items() if not s.startswith("write_")}
        sec.update({k2: v for k2, v in rep["seconds"].items() if k2.startswith("write_") and k2 != "write_total"})
        sec["reconstruct (total)"] = t1 - t0
        sec["write files (total)"] = t2 - t1
        sec["end to end"] = t2 - t0
        if k > 0:
            runs.append(sec)
    keys = list(runs[0])
    rows = [[k, f"{np.median([r[k] for r in runs]):.3f}"] for k in keys]
    return table(rows, ["stage (1024x1024 photo)", f"median s of {repeats}"]), float(np.median([r["end to end"] for r in runs]))


def write_table(pipeline, rgb, repeats: int, out: Path) -> str:
    """Wall and process-CPU seconds of each part of writing one result (medians of ``repeats``
    after a warm-up): CPU seconds stay meaningful on a loaded machine, where wall seconds do not
    (the PNG encoders run in two threads, so their CPU seconds add up both)."""
    from concurrent.futures import ThreadPoolExecutor

    from pix2vertex_addon.core.export import write_obj
    from pix2vertex_addon.core.images import save_png_atomic
    from pix2vertex_addon.core.projection import crop_depth, depth_map
    from pix2vertex_addon.core.results import (
        FAST_PNG,
        MODEL_TO_OBJ_M,
        detailed_mesh,
        face_normal_map,
        write_result,
    )
    from pix2vertex_addon.core.texture import clean_texture

    t = pipeline.model.template
    rec = pipeline.reconstruct(rgb)[0]
    v, q, quv = detailed_mesh(rec, t.faces, t.uvs)
    tris = np.concatenate([q[:, [0, 1, 2]], q[:, [0, 2, 3]]])
    out.mkdir(parents=True, exist_ok=True)
    state: dict = {}

    def depth():
        state["dcrop"] = crop_depth(rec.camera, v, tris)
        depth_map(rec.camera, state["dcrop"], rgb.shape[:2])

    def texture():
        state["tex"] = clean_texture(rgb, rec.camera, rec.vertices, t.vertices_cm * 10.0, t.faces, t.uvs,
                                     mask=rec.maps["mask"], depth_crop=state["dcrop"])

    def normal():
        state["normal"] = face_normal_map(rec, t.faces, t.uvs)

    def obj_text():
        write_obj(out, rec.vertices_model * MODEL_TO_OBJ_M, t.faces, t.uvs, stem="face_base", normal_map="normal.png")
        write_obj(out, rec.to_model(v) * MODEL_TO_OBJ_M, q, quv, stem="face")

    def pngs():
        tex = state["tex"]
        with ThreadPoolExecutor(2) as pool:
            jobs = [pool.submit(save_png_atomic, out / n, a, FAST_PNG) for n, a in
                    (("texture.png", tex.texture), ("texture_raw.png", tex.raw), ("normal.png", state["normal"]))]
            for j in jobs:
                j.result()

    def png_previous():
        save_png_atomic(out / "texture_level3.png", state["tex"].texture, 3)

    def whole():
        write_result(out / "whole", rgb, rec, t, overwrite=True)

    parts = [("depth raster", depth), ("texture clean-up (bake, confidence, completion)", texture),
             ("normal map", normal), ("OBJ text (face + face_base)", obj_text),
             ("PNG encoding (3 x 1024^2, 2 threads)", pngs),
             ("for comparison: one 1024^2 PNG at level 3 (the previous setting)", png_previous),
             ("write_result, everything", whole)]
    times: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in parts}
    for k in range(repeats + 1):
        for name, fn in parts:
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            if k > 0:
                times[name].append((time.perf_counter() - w0, time.process_time() - c0))
    rows = [[name, f"{np.median([w for w, _ in ts]):.3f}", f"{np.median([c for _, c in ts]):.3f}"]
            for name, ts in times.items()]
    return table(rows, ["writing one result (1024x1024 photo)", f"wall s, median of {repeats}", "CPU s"])


def memory_child(path: str, threads: int, weights: str | None) -> None:
    from pix2vertex_addon.core.images import load_image
    from pix2vertex_addon.core.pipeline import Pipeline
    from pix2vertex_addon.core.results import write_result

    p = Pipeline(weights_dir=weights, threads=threads)
    rgb, _ = load_image(path)
    rec = p.reconstruct(rgb)[0]
    with tempfile.TemporaryDirectory() as d:
        write_result(Path(d) / "r", rgb, rec, p.model.template)
    print(json.dumps({"maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--weights", default=None, help="network weights folder (default: the shipped ones)")
    ap.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.threads, args.weights)
        return 0

    from pix2vertex_addon.core.batch import run_batch
    from pix2vertex_addon.core.pipeline import Pipeline

    print(f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, threads={args.threads}, "
          f"python {platform.python_version()}, {time.strftime('%Y-%m-%d')}")
    t0 = time.perf_counter()
    pipeline = Pipeline(weights_dir=args.weights, threads=args.threads)
    load_s = time.perf_counter() - t0
    ph = photos()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rgb = resize(ph["astronaut"], 1024, 1024)
        text, e2e = stage_table(pipeline, rgb, args.repeats, tmp / "stages")
        print(f"\nmodels loaded in {load_s:.2f} s\n")
        print(text)
        print()
        print(write_table(pipeline, rgb, args.repeats, tmp / "write"))

        from PIL import Image

        names = list(ph)
        batch_dir = tmp / "batch"
        batch_dir.mkdir()
        rng = np.random.default_rng(0)
        for i in range(args.batch):
            base = ph[names[i % len(names)]]
            s = 1.0 + 0.25 * rng.random()
            img = resize(base, int(base.shape[1] * s), int(base.shape[0] * s))
            Image.fromarray(img).save(batch_dir / f"p{i:02d}.jpg", quality=92)
        files = sorted(batch_dir.iterdir())
        t0 = time.perf_counter()
        rep = run_batch(pipeline, files, tmp / "batch_out")
        bt = time.perf_counter() - t0
        print()
        print(table([[len(files), len(rep.done), len(rep.failed), f"{bt:.1f}", f"{bt / len(files):.2f}"]],
                    ["photos", "done", "failed", "total s", "s per photo"]))
        for p, r in rep.failed:
            print(f"  failed {p}: {r}")

        big = big_photo(ph["grace_hopper"], 4000, 3000)
        Image.fromarray(big).save(tmp / "big.jpg", quality=92)
        cmd = [sys.executable, __file__, "--memory-child", str(tmp / "big.jpg"), "--threads", str(args.threads)]
        if args.weights:
            cmd += ["--weights", args.weights]
        r = subprocess.run(cmd, capture_output=True, text=True)
        last = (r.stdout.strip().splitlines() or ["{}"])[-1]
        try:
            mem = json.loads(last)["maxrss_mb"]
            print()
            print(table([["4000x3000", f"{mem:.0f}"]], ["photo", "peak RSS MB (fresh process, incl. torch)"]))
        except (ValueError, KeyError):
            print("memory run failed:", r.stderr[-2000:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
