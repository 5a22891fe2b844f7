"""Many photos in one run, shared by the command line and Blender's Batch Reconstruct (no bpy).

A bad photo never stops the batch: its failure is recorded with the reason and the run goes on.
Finished results (a folder with ``report.json``) are skipped unless ``overwrite``; every result is
written atomically, so a cancel or a crash leaves only whole results behind.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .detect import DetectorUnavailable, NoFaceError
from .export import OutputError
from .images import ImageError, load_image
from .pipeline import CancelFn, Cancelled, Pipeline, PipelineOptions, ReconstructionError, _cancelled
from .results import write_result

__all__ = ["BatchReport", "IMAGE_SUFFIXES", "collect_inputs", "output_names", "run_batch"]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".jp2", ".ppm", ".pgm"}


@dataclass
class BatchReport:
    done: list[tuple[str, list[str]]] = field(default_factory=list)  # (input, result folders)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (input, reason)
    cancelled: bool = False
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed and not self.cancelled

    def summary(self) -> str:
        lines = [f"{len(self.done)} reconstructed, {len(self.skipped)} skipped (already done), "
                 f"{len(self.failed)} failed{', cancelled' if self.cancelled else ''} "
                 f"in {self.seconds:.1f} s"]
        lines += [f"  FAILED {path}: {reason}" for path, reason in self.failed]
        return "\n".join(lines)


def collect_inputs(paths: Iterable[str | Path], recursive: bool = False) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files given directly (whatever their suffix) and image files inside given folders, sorted;
    plus (path, reason) for inputs that do not exist."""
    files: list[Path] = []
    missing: list[tuple[str, str]] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            it = p.rglob("*") if recursive else p.iterdir()
            files += sorted(q for q in it if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES
                            and not q.name.startswith("."))
        elif p.exists():
            files.append(p)
        else:
            missing.append((str(p), "no such file or folder"))
    seen: set[Path] = set()
    unique = []
    for f in files:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique, missing


def output_names(files: list[Path]) -> list[str]:
    """One folder name per input: the file stem, made unique within the batch."""
    names: list[str] = []
    used: set[str] = set()
    for f in files:
        base = f.stem or "image"
        name = base
        if name in used:
            name = f"{base}_{f.suffix.lstrip('.').lower()}" if f.suffix else base
        k = 2
        while name in used:
            name = f"{base}-{k}"
            k += 1
        used.add(name)
        names.append(name)
    return names


def run_batch(
    pipeline: Pipeline,
    inputs: list[Path],
    out_dir: str | Path,
    options: PipelineOptions | None = None,
    overwrite: bool = False,
    progress: Callable[[int, int, str, str], None] | None = None,
    cancel: CancelFn = None,
    texture_size: int = 1024,
) -> BatchReport:
    """Reconstruct every input into ``out_dir/<name>/``.

    progress(index, total, input name, stage) is called as work advances; ``cancel`` (callable or
    ``threading.Event``) stops the batch between stages (nothing half-written remains).
    """
    t0 = time.perf_counter()
    out = Path(out_dir)
    opts = options or PipelineOptions()
    rep = BatchReport()
    names = output_names(inputs)
    total = len(inputs)
    for i, (path, name) in enumerate(zip(inputs, names)):
        if _cancelled(cancel):
            rep.cancelled = True
            break
        target = out / name
        if (target / "report.json").exists() and not overwrite:
            rep.skipped.append(str(path))
            if progress:
                progress(i + 1, total, path.name, "skipped")
            continue

        def stage(frac: float, s: str, i: int = i, path: Path = path) -> None:
            if progress:
                progress(i, total, path.name, s)

        try:
            stage(0.0, "load")
            rgb, info = load_image(path)
            recs = pipeline.reconstruct(rgb, opts, progress=stage, cancel=cancel)
            folders = []
            for k, rec in enumerate(recs):
                folder = target if k == 0 else out / f"{name}_face{k + 1}"
                stage(1.0, "write")
                if _cancelled(cancel):
                    raise Cancelled("cancelled before writing")
                write_result(folder, rgb, rec, pipeline.model.template, overwrite=overwrite,
                             texture_size=texture_size,
                             report={"input": str(path), "image": {"format": info.format, "mode": info.mode,
                                                                    "size": info.size, "notes": info.notes},
                                     "face_index": k})
                folders.append(str(folder))
            rep.done.append((str(path), folders))
        except Cancelled:
            rep.cancelled = True
            break
        except (ImageError, NoFaceError, ReconstructionError, OutputError, FileExistsError) as exc:
            rep.failed.append((str(path), str(exc)))
        except DetectorUnavailable:
            raise
        except MemoryError:
            rep.failed.append((str(path), "out of memory (try a smaller image)"))
        except Exception as exc:  # noqa: BLE001 - a batch goes on past any single bad photo
            rep.failed.append((str(path), f"unexpected error: {type(exc).__name__}: {exc}"))
        if progress:
            progress(i + 1, total, path.name, "done")
    rep.seconds = time.perf_counter() - t0
    return rep
