"""Photos -> result folders, shared by the command line, Blender's Batch Reconstruct and its
single Reconstruct (no bpy).

* :func:`gather_inputs` collects photos from files and folders; an entry that cannot be read is
  reported and the collection goes on; whatever a folder holds that is not used is reported with
  the reason (hidden, not a photo, unsupported format, a folder, a broken or looping link).
* :func:`result_names` gives each photo a folder name that depends only on the photo (its path
  relative to the folder it was found in) and on which other photos share that name, never on
  the order of the batch; a name is never ``.``, ``..``, hidden, absolute, or longer than the file
  system allows, so no result can land outside its own folder of the output folder.
* :func:`reconstruct_photo` is the one load -> reconstruct -> write path. Every result records
  what it came from (:func:`.results.result_identity`: resolved path, size, modification time and
  content hash of the photo, the options, the weights' hashes); a finished result is skipped only
  when its record matches, and is replaced only with ``overwrite``; a folder that is not a result
  is never replaced.
* :func:`output_session` checks the output folder before any work (writable, free space, name and
  path limits), locks it against a second run and removes what killed runs left behind.
* :func:`run_batch`: many photos; a bad photo never stops the batch.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import time
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .blas import shared_cores
from .detect import DetectorUnavailable, NoFaceError
from .export import MIN_FREE_BYTES, OutputError, OutputLock, check_output_folder, clean_leftovers
from .images import ImageError, load_image
from .pipeline import (
    CancelFn,
    Cancelled,
    Pipeline,
    PipelineOptions,
    ProgressFn,
    ReconstructionError,
    _cancelled,
)
from .results import (
    array_identity,
    identity_mismatch,
    input_identity,
    read_identity,
    result_identity,
    write_result,
)

__all__ = ["BatchReport", "IMAGE_SUFFIXES", "Inputs", "PhotoResult", "ResultExists", "collect_inputs",
           "gather_inputs", "output_names", "output_session", "reconstruct_photo", "result_names", "run_batch",
           "safe_name"]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".jp2", ".ppm", ".pgm"}
# Photo formats PIL cannot read here: reported by name instead of silently passed over.
UNSUPPORTED_SUFFIXES = {".heic": "HEIC", ".heif": "HEIF", ".avif": "AVIF", ".dng": "DNG raw", ".cr2": "Canon raw",
                        ".cr3": "Canon raw", ".nef": "Nikon raw", ".arw": "Sony raw", ".raf": "Fujifilm raw",
                        ".orf": "Olympus raw", ".rw2": "Panasonic raw", ".psd": "Photoshop", ".svg": "SVG"}
MAX_NAME_BYTES = 200  # result folder names: room for ".<name>.partial-xxxxxxxx" and "_faceN" in 255 bytes
_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}
_BAD_CHARS = set('/\\:*?"<>|')


def _avif_readable() -> bool:
    try:
        from PIL import features

        return bool(features.check("avif"))
    except Exception:  # noqa: BLE001 - an old Pillow without the feature registry
        return False


def image_suffixes() -> set[str]:
    """Suffixes a folder's photos may have (AVIF when this Pillow reads it)."""
    return IMAGE_SUFFIXES | ({".avif"} if _avif_readable() else set())


class ResultExists(OutputError):
    """A result folder is in the way: another photo's result, an outdated one (``replaceable``:
    overwrite would replace it), or a folder that is not a result."""

    def __init__(self, folder: Path, reason: str, replaceable: bool):
        hint = "not replaced (use overwrite to replace it)" if replaceable else "it is left alone"
        super().__init__(f"{folder} {reason}: {hint}")
        self.folder, self.reason, self.replaceable = folder, reason, replaceable


@dataclass
class Inputs:
    """Photos found by :func:`gather_inputs`, their result names, and what was not used."""

    files: list[Path] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (entry, reason): failures
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (entry, reason): passed over


@dataclass
class BatchReport:
    done: list[tuple[str, list[str]]] = field(default_factory=list)  # (input, result folders)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (input, reason)
    notes: list[tuple[str, str]] = field(default_factory=list)  # (input, what else to know)
    cleaned: list[str] = field(default_factory=list)  # leftovers of killed runs removed
    cancelled: bool = False
    aborted: str = ""  # why the batch stopped early (the output folder failed)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed and not self.cancelled and not self.aborted

    def summary(self) -> str:
        lines = [f"{len(self.done)} reconstructed, {len(self.skipped)} skipped (already done), "
                 f"{len(self.failed)} failed{', cancelled' if self.cancelled else ''} "
                 f"in {self.seconds:.1f} s"]
        if self.aborted:
            lines.append(f"  STOPPED: {self.aborted}")
        if self.cleaned:
            lines.append(f"  removed {len(self.cleaned)} leftover(s) of interrupted runs")
        lines += [f"  FAILED {path}: {reason}" for path, reason in self.failed]
        lines += [f"  NOTE {path}: {note}" for path, note in self.notes]
        return "\n".join(lines)


# -- inputs -----------------------------------------------------------------------------------------
def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _walk(folder: Path, rel: tuple[str, ...], recursive: bool, suffixes: set[str], found: list[tuple[Path, str]],
          inp: Inputs, seen_dirs: set[tuple[int, int]]) -> None:
    try:
        st = folder.stat()
        if (st.st_dev, st.st_ino) in seen_dirs:
            inp.skipped.append((str(folder), "a link back to a folder already searched (loop)"))
            return
        seen_dirs.add((st.st_dev, st.st_ino))
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        inp.problems.append((str(folder), f"cannot read the folder: {_why(exc)}"))
        return
    for e in entries:
        p = Path(e.path)
        suffix = p.suffix.lower()
        try:
            if e.is_symlink() and not p.exists():
                inp.skipped.append((str(p), "a broken or looping symbolic link"))
            elif e.is_dir():
                if recursive:
                    if e.name.startswith("."):
                        inp.skipped.append((str(p), "a hidden folder (not searched)"))
                    else:
                        _walk(p, rel + (e.name,), recursive, suffixes, found, inp, seen_dirs)
                elif suffix in suffixes:
                    inp.skipped.append((str(p), "a folder named like a photo (sub-folders need --recursive)"))
                else:
                    inp.skipped.append((str(p), "a sub-folder (searched only with --recursive)"))
            elif not e.is_file():
                inp.skipped.append((str(p), "not a regular file"))
            elif e.name.startswith("."):
                if suffix in suffixes:
                    inp.skipped.append((str(p), "a hidden file"))
            elif suffix in suffixes:
                found.append((p, "__".join(rel + (p.stem,))))
            elif suffix in UNSUPPORTED_SUFFIXES:
                inp.skipped.append((str(p), f"{UNSUPPORTED_SUFFIXES[suffix]} images cannot be read; "
                                            "convert it to JPEG or PNG"))
            else:
                inp.skipped.append((str(p), "not a photo (file name suffix)"))
        except OSError as exc:
            inp.problems.append((str(p), f"cannot read: {_why(exc)}"))


def gather_inputs(paths: Iterable[str | os.PathLike[str]], recursive: bool = False) -> Inputs:
    """Photos from files given directly (whatever their suffix) and from folders (by suffix, sorted),
    each once, with their result names; entries that cannot be read go to ``problems`` and
    everything a folder holds that is not used goes to ``skipped``, each with its reason."""
    inp = Inputs()
    found: list[tuple[Path, str]] = []
    suffixes = image_suffixes()
    for raw in paths:
        p = Path(raw)
        try:
            if p.is_dir():
                _walk(p, (), recursive, suffixes, found, inp, set())
            elif p.exists():
                found.append((p, p.stem))
            elif p.is_symlink():
                inp.problems.append((str(p), "a broken or looping symbolic link"))
            else:
                inp.problems.append((str(p), "no such file or folder"))
        except OSError as exc:
            inp.problems.append((str(p), f"cannot read: {_why(exc)}"))
    seen: set[str] = set()
    unique: list[tuple[Path, str]] = []
    for f, base in found:
        try:
            key = str(f.resolve())
        except (OSError, RuntimeError) as exc:
            inp.problems.append((str(f), f"cannot read: {exc}"))
            continue
        if key not in seen:
            seen.add(key)
            unique.append((f, base))
    inp.files = [f for f, _ in unique]
    inp.names = result_names(unique)
    return inp


def collect_inputs(paths: Iterable[str | os.PathLike[str]], recursive: bool = False
                   ) -> tuple[list[Path], list[tuple[str, str]]]:
    """(photos, (entry, reason) for entries that are missing or cannot be read): :func:`gather_inputs`
    without the names and the skipped entries."""
    inp = gather_inputs(paths, recursive)
    return inp.files, inp.problems


# -- names ------------------------------------------------------------------------------------------
def _short_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]


def safe_name(base: str) -> str:
    """A folder name made from ``base`` that is one plain, visible name: path separators and
    characters Windows refuses become ``_``; leading and trailing dots and spaces go (so never
    ``.``, ``..`` or hidden); empty becomes ``image``; too long is cut (at a character) and tagged
    with a hash of the whole name."""
    s = unicodedata.normalize("NFC", base)
    s = "".join("_" if c in _BAD_CHARS or ord(c) < 32 or c == "\x7f" else c for c in s).strip(" .")
    if not s:
        s = "image"
    if s.split(".")[0].upper() in _RESERVED:
        s = f"_{s}"
    if len(s.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        tag = _short_hash(base)
        cut = s
        while len(cut.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES - 9:
            cut = cut[:-1]
        s = f"{cut.rstrip(' .')}-{tag}"
    return s


def result_names(entries: list[tuple[Path, str]]) -> list[str]:
    """Folder names for (photo, base name) pairs: ``safe_name(base)``; photos whose names clash
    (ignoring case, as macOS and Windows do) get their suffix added, and those that still clash a
    hash of their resolved path. Depends on the set of photos, not on their order."""

    def clashes(names: list[str]) -> set[int]:
        groups: dict[str, list[int]] = {}
        for i, n in enumerate(names):
            groups.setdefault(n.casefold(), []).append(i)
        return {i for g in groups.values() if len(g) > 1 for i in g}

    names = [safe_name(base) for _, base in entries]
    for i in clashes(names):
        f, base = entries[i]
        names[i] = safe_name(f"{base}_{f.suffix.lstrip('.').lower()}" if f.suffix else base)
    for i in clashes(names):
        f, base = entries[i]
        try:
            key = str(f.resolve())
        except (OSError, RuntimeError):
            key = str(f.absolute())
        names[i] = safe_name(f"{names[i]}-{_short_hash(key)}")
    return names


def output_names(files: list[Path]) -> list[str]:
    """One folder name per photo from its file name (:func:`result_names`)."""
    return result_names([(f, f.stem) for f in files])


# -- one photo --------------------------------------------------------------------------------------
@dataclass
class PhotoResult:
    """What :func:`reconstruct_photo` did: the result folders (first face first), the
    reconstructions (empty when skipped), the photo's pixels, and notes for the user."""

    folders: list[Path]
    recs: list = field(default_factory=list)
    heads: list = field(default_factory=list)
    rgb: np.ndarray | None = None
    skipped: bool = False
    notes: list[str] = field(default_factory=list)


def options_record(opts: PipelineOptions, texture_size: int) -> dict:
    return {**dataclasses.asdict(opts), "texture_size": int(texture_size)}


def weights_record(pipeline: Pipeline) -> object:
    """The networks' weight hashes (``config.json``'s sha256), or the predictor's name when it
    has none (stand-ins in tests)."""
    cfg = getattr(pipeline.predictor, "config", None)
    if isinstance(cfg, dict) and isinstance(cfg.get("sha256"), dict):
        return cfg["sha256"]
    return type(pipeline.predictor).__name__


def _check_target(folder: Path, wanted: dict, overwrite: bool, replace_own: bool = False) -> str | None:
    """None when ``folder`` is free, else the mismatch reason (or "" when it matches); raises
    ResultExists when it may not be replaced (``replace_own``: results of the same input may)."""
    if not folder.exists() and not folder.is_symlink():
        return None
    if folder.is_symlink() or not folder.is_dir() or not (folder / "report.json").is_file():
        raise ResultExists(folder, "exists and is not a pix2vertex result (move it away or choose another "
                           "output folder)", replaceable=False)
    recorded = read_identity(folder)
    reason = identity_mismatch(recorded, wanted)
    own = recorded is not None and all((recorded.get("input") or {}).get(k) == wanted["input"].get(k)
                                       for k in ("path", "name"))
    if recorded is None and _legacy_input(folder) == wanted["input"].get("path"):
        return reason  # made by a version without records, from this same file: redone in place
    if reason is not None and not overwrite and not (replace_own and own):
        raise ResultExists(folder, reason, replaceable=True)
    return reason or ""


def _legacy_input(folder: Path) -> str | None:
    """The resolved input path of a result written before identity records (its ``input``)."""
    try:
        doc = json.loads((folder / "report.json").read_text(encoding="utf-8"))
        return str(Path(doc["input"]).resolve()) if isinstance(doc.get("input"), str) else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RuntimeError):
        return None


def reconstruct_photo(
    pipeline: Pipeline,
    source: str | os.PathLike[str] | tuple[str, np.ndarray],
    out_dir: str | os.PathLike[str],
    name: str,
    options: PipelineOptions | None = None,
    overwrite: bool = False,
    resume: bool = True,
    replace_own: bool = False,
    texture_size: int = 1024,
    progress: ProgressFn | None = None,
    cancel: CancelFn = None,
    extra_report: dict | None = None,
) -> PhotoResult:
    """Load one photo (a path, or (name, (H, W, 3) uint8 pixels)), reconstruct it and write its
    faces into ``out_dir/<name>/`` (more faces: ``<name>_face2/``...), each folder atomically.

    resume : skip the photo when its result already exists with a matching record.
    overwrite : replace results whose record does not match (another photo, the photo changed,
        other options or weights); without it such a result raises :class:`ResultExists` before
        any work. A folder that is not a result is never replaced.
    replace_own : replace results of this same input whatever else changed (Blender's Reconstruct).
    Raises ImageError, NoFaceError, ReconstructionError, Cancelled, OutputError.
    """
    opts = options or PipelineOptions()
    out = Path(out_dir)
    name = safe_name(name)
    report = progress or (lambda f, s: None)
    report(0.0, "load")
    if isinstance(source, tuple):
        label, rgb = source
        source_id = array_identity(label, rgb)
        meta: dict = {"input": f"Blender image {label}"}
    else:
        path = Path(source)
        try:
            source_id = input_identity(path)
        except OSError as exc:
            if not path.exists():
                raise ImageError(f"{path}: no such file") from None
            raise ImageError(f"{path}: cannot read the file ({_why(exc)})") from None
        meta = {"input": str(path)}
    wanted = result_identity(source_id, options_record(opts, texture_size), weights_record(pipeline))
    target = out / name
    state = _check_target(target, wanted, overwrite, replace_own)
    if state == "" and resume:
        return PhotoResult(folders=[target], skipped=True)
    if not isinstance(source, tuple):
        rgb, info = load_image(path)
        meta["image"] = {"format": info.format, "mode": info.mode, "size": info.size, "notes": info.notes}
    with shared_cores():  # beside a warm-up, and the head's fit beside the files: half the cores each
        recs = pipeline.reconstruct(rgb, opts, progress=report, cancel=cancel)
        folders = [target] + [out / f"{name}_face{k + 1}" for k in range(1, len(recs))]
        for folder in folders[1:]:
            _check_target(folder, wanted, overwrite, replace_own)
        if _cancelled(cancel):
            raise Cancelled("cancelled before writing")
        report(1.0, "head" if opts.head else "write")
        # the full heads are fitted in a second thread while the results' textures are made (both
        # mostly numpy and OpenCV, which run without the GIL); each head's files wait for its fit
        with ThreadPoolExecutor(1, thread_name_prefix="p2v-head") as beside:
            head_jobs: list[Future] = []
            if opts.head:
                from .head import build_head

                head_jobs = [beside.submit(build_head, pipeline.model, rec.vertices_model, arkit=opts.arkit)
                             for rec in recs]
            for k, (rec, folder) in enumerate(zip(recs, folders)):
                write_result(folder, rgb, rec, pipeline.model.template, overwrite=True, texture_size=texture_size,
                             report={**meta, **(extra_report or {}), "face_index": k, "faces": len(recs),
                                     "identity": wanted},
                             extra=_head_writer(pipeline.model, head_jobs[k]) if head_jobs else None)
            heads = [job.result() for job in head_jobs]
    notes = [f"{w} (face {k + 1})" if len(recs) > 1 else w for k, rec in enumerate(recs) for w in rec.warnings]
    return PhotoResult(folders=folders, recs=recs, heads=heads, rgb=rgb, notes=notes)


def _head_writer(model, head: Future) -> Callable[[Path], object]:
    """Writes the head's files into a result folder being built (its texture.png is there),
    once the head's fit (``head``, a future) is done."""
    from .head_files import write_head_files

    return lambda folder: write_head_files(folder, head.result(), model, folder / "texture.png")


# -- the output folder ------------------------------------------------------------------------------
@contextmanager
def output_session(out_dir: str | os.PathLike[str], names: Iterable[str] = (), wait_s: float = 0.0,
                   need_bytes: int = MIN_FREE_BYTES) -> Iterator[list[str]]:
    """``with output_session(out, names) as cleaned:`` the output folder checked before any work
    (writable, ``need_bytes`` free, the longest of ``names`` fits the name and path limits), locked
    for this run (another run waits ``wait_s`` seconds, then :class:`.export.LockedError` names
    the holder), with the leftovers of killed runs removed (``cleaned``: their names)."""
    longest = max((safe_name(n) for n in names), key=lambda n: len(n.encode("utf-8", "surrogateescape")),
                  default="")
    folder = check_output_folder(out_dir, need_bytes, f"{longest}_face99" if longest else "")
    with OutputLock(folder, wait_s=wait_s):
        yield clean_leftovers(folder)


def _output_failed(out: Path, exc: OutputError) -> str:
    """Why the output folder as a whole fails now ("" when only this result failed)."""
    if isinstance(exc, ResultExists):
        return ""
    try:
        check_output_folder(out)
    except OutputError as now:
        return str(now)
    if isinstance(exc.__cause__, OSError) and exc.__cause__.errno in (errno.ENOSPC, errno.EROFS, errno.EDQUOT):
        return str(exc)
    return ""


def run_batch(
    pipeline: Pipeline,
    inputs: list[Path],
    out_dir: str | Path,
    options: PipelineOptions | None = None,
    overwrite: bool = False,
    progress: Callable[[int, int, str, str], None] | None = None,
    cancel: CancelFn = None,
    texture_size: int = 1024,
    names: list[str] | None = None,
    lock_wait_s: float = 0.0,
) -> BatchReport:
    """Reconstruct every input into ``out_dir/<name>/`` (names: :func:`output_names` unless given).

    The output folder is checked and locked first (:func:`output_session`; raises OutputError
    before any work). progress(index, total, input name, stage) is called as work advances;
    ``cancel`` (callable or ``threading.Event``) stops the batch between stages (nothing
    half-written remains). A photo that fails is recorded with the reason and the batch goes on;
    it stops early only when the output folder itself fails (full, read-only).
    """
    t0 = time.perf_counter()
    out = Path(out_dir)
    opts = options or PipelineOptions()
    rep = BatchReport()
    names = output_names(inputs) if names is None else names
    total = len(inputs)
    with output_session(out, names, wait_s=lock_wait_s) as cleaned:
        rep.cleaned = cleaned
        for i, (path, name) in enumerate(zip(inputs, names)):
            if _cancelled(cancel):
                rep.cancelled = True
                break

            def stage(frac: float, s: str, i: int = i, path: Path = path) -> None:
                if progress:
                    progress(i, total, path.name, s)

            try:
                res = reconstruct_photo(pipeline, path, out, name, opts, overwrite=overwrite, resume=not overwrite,
                                        texture_size=texture_size, progress=stage, cancel=cancel)
                if res.skipped:
                    rep.skipped.append(str(path))
                    if progress:
                        progress(i + 1, total, path.name, "skipped")
                    continue
                rep.done.append((str(path), [str(f) for f in res.folders]))
                rep.notes += [(str(path), n) for n in res.notes]
            except Cancelled:
                rep.cancelled = True
                break
            except OutputError as exc:
                rep.failed.append((str(path), str(exc)))
                rep.aborted = _output_failed(out, exc)
                if rep.aborted:
                    break
            except (ImageError, NoFaceError, ReconstructionError) as exc:
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
