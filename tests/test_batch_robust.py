"""Batches that never lose or mix up results: names, result identity, resume, locks, leftovers,
fail-fast checks and input collection (oracle pipeline: exact stand-ins for detector and networks)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from test_pipeline import pipeline, sample  # noqa: F401 - the same oracle fixtures

from pix2vertex_addon.core.batch import run_batch

from oracle import oracle_pipeline


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_a_photo_named_dot_dot_jpg_never_replaces_the_output_folder(tmp_path, pipeline, sample):
    """Data loss of the old code: ``..jpg`` has the stem ``.``, its result folder was the output
    folder itself, and --overwrite replaced every other result and the user's own files."""
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(sample["image"]).save(src / "face.png")
    Image.fromarray(sample["image"]).save(src / "..jpg", format="JPEG", quality=95)
    out = tmp_path / "out"
    first = run_batch(pipeline, [src / "face.png"], out)
    assert len(first.done) == 1
    (out / "my notes.txt").write_text("the user's own file")
    before = _snapshot(out)
    rep = run_batch(pipeline, [src / "..jpg"], out, overwrite=True)
    assert len(rep.done) == 1, rep.summary()
    after = _snapshot(out)
    for name, data in before.items():
        assert after.get(name) == data, f"{name} was lost or changed"
    (folder,) = rep.done[0][1]
    assert Path(folder).parent.resolve() == out.resolve() and Path(folder).name not in (".", "..")
    assert (Path(folder) / "report.json").exists()


def _save(path: Path, image, tweak: int = 0) -> Path:
    """Write the sample photo (``tweak`` changes one pixel: another photo, same face)."""
    a = image.copy()
    a[0, 0, 0] = (int(a[0, 0, 0]) + tweak) % 256
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path)
    return path


def _source(folder: Path) -> str:
    return json.loads((folder / "report.json").read_text())["identity"]["input"]["path"]


@pytest.mark.parametrize("base", [".", "..", "", "...", "/etc/passwd", "../../x", "a/../../b", " .hidden", "CON",
                                  "x" * 300, "é" * 200, "a\x00b", "con.txt"])
def test_result_names_stay_inside_the_output_folder(tmp_path, base):
    from pix2vertex_addon.core.batch import MAX_NAME_BYTES, safe_name

    name = safe_name(base)
    assert name not in ("", ".", "..") and not name.startswith(".") and "/" not in name and "\\" not in name
    assert "\x00" not in name and len(name.encode()) <= MAX_NAME_BYTES
    assert (tmp_path / name).resolve().parent == tmp_path.resolve()
    assert name.split(".")[0].upper() != "CON"


@pytest.mark.slow
def test_resume_skips_only_the_same_input(tmp_path, pipeline, sample):
    a = _save(tmp_path / "A" / "image.png", sample["image"])
    b = _save(tmp_path / "B" / "image.png", sample["image"], tweak=1)
    out = tmp_path / "out"
    assert len(run_batch(pipeline, [a], out).done) == 1
    # another folder's image.png: the old code reported it skipped and kept a's result
    rep = run_batch(pipeline, [b], out)
    assert not rep.skipped and not rep.done and len(rep.failed) == 1
    assert "another input" in rep.failed[0][1] and str(a.resolve()) in rep.failed[0][1]
    assert _source(out / "image") == str(a.resolve()), "a's result is kept"
    rep = run_batch(pipeline, [b], out, overwrite=True)
    assert len(rep.done) == 1 and _source(out / "image") == str(b.resolve())
    assert run_batch(pipeline, [b], out).skipped == [str(b)], "the same input is skipped"
    # the same path with other content, or other options: redone only with overwrite, else why not
    _save(b, sample["image"], tweak=2)
    rep = run_batch(pipeline, [b], out)
    assert "content changed" in rep.failed[0][1]
    assert len(run_batch(pipeline, [b], out, overwrite=True).done) == 1
    from pix2vertex_addon.core.pipeline import PipelineOptions

    rep = run_batch(pipeline, [b], out, PipelineOptions(detail=False))
    assert "other options" in rep.failed[0][1]


def test_a_folder_that_is_not_a_result_is_never_replaced(tmp_path, pipeline, sample):
    a = _save(tmp_path / "in" / "holiday.png", sample["image"])
    out = tmp_path / "out"
    (out / "holiday").mkdir(parents=True)
    (out / "holiday" / "mine.txt").write_text("keep")
    rep = run_batch(pipeline, [a], out, overwrite=True)
    assert "not a pix2vertex result" in rep.failed[0][1]
    assert (out / "holiday" / "mine.txt").read_text() == "keep"


@pytest.mark.slow
def test_recursive_names_do_not_depend_on_other_photos(tmp_path, pipeline, sample):
    from pix2vertex_addon.core.batch import gather_inputs

    src = tmp_path / "in"
    _save(src / "b" / "x.png", sample["image"], tweak=1)
    _save(src / "c" / "x.png", sample["image"], tweak=2)
    out = tmp_path / "out"
    first = gather_inputs([src], recursive=True)
    assert first.names == ["b__x", "c__x"]
    assert len(run_batch(pipeline, first.files, out, names=first.names).done) == 2
    _save(src / "a" / "x.png", sample["image"], tweak=3)  # a new sub-folder that sorts first
    again = gather_inputs([src], recursive=True)
    assert again.names == ["a__x", "b__x", "c__x"]
    rep = run_batch(pipeline, again.files, out, names=again.names)
    assert len(rep.done) == 1 and len(rep.skipped) == 2 and not rep.failed
    for sub in "abc":  # every photo has exactly its own result
        assert _source(out / f"{sub}__x") == str((src / sub / "x.png").resolve())


def test_a_second_run_is_told_who_holds_the_output_folder(tmp_path, pipeline, sample):
    import os
    import threading

    from pix2vertex_addon.core.export import LockedError, OutputLock

    a = _save(tmp_path / "in" / "face.png", sample["image"])
    out = tmp_path / "out"
    out.mkdir()
    held = OutputLock(out).acquire()
    try:
        with pytest.raises(LockedError, match=f"process {os.getpid()}"):
            run_batch(pipeline, [a], out)
        assert not (out / "face").exists()
        threading.Timer(0.5, held.release).start()
        rep = run_batch(pipeline, [a], out, lock_wait_s=30)  # waits for the first to finish
        assert len(rep.done) == 1
    finally:
        held.release()
    assert not (out / ".p2v.lock").exists()


def test_stale_lock_and_leftovers_of_killed_runs_are_removed(tmp_path, pipeline, sample):
    a = _save(tmp_path / "in" / "face.png", sample["image"])
    out = tmp_path / "out"
    assert len(run_batch(pipeline, [a], out).done) == 1
    # what kill -9 leaves: a lock file nobody holds, a half-written result, and a replaced result
    # whose new version never moved in (killed between AtomicFolder's two renames)
    (out / ".p2v.lock").write_text('{"pid": 999999, "host": "gone", "started": "then"}')
    (out / ".face.partial-0123abcd").mkdir()
    (out / ".face.partial-0123abcd" / "face.obj").write_text("half")
    import shutil

    shutil.copytree(out / "face", out / ".other.old-89abcdef")
    (out / "notes.partial-0123abcd").write_text("a user's file that only looks similar")
    rep = run_batch(pipeline, [a], out)
    assert rep.skipped == [str(a)] and sorted(rep.cleaned) == [".face.partial-0123abcd", ".other.old-89abcdef"]
    assert sorted(p.name for p in out.iterdir()) == ["face", "notes.partial-0123abcd", "other"]
    assert (out / "other" / "report.json").exists(), "the old result was put back"


def test_unwritable_or_full_output_fails_before_any_work(tmp_path, pipeline, sample, monkeypatch):
    import shutil
    from collections import namedtuple

    from pix2vertex_addon.core.export import OutputError

    a = _save(tmp_path / "in" / "face.png", sample["image"])
    calls = []
    monkeypatch.setattr(pipeline, "reconstruct", lambda *a, **k: calls.append(1) or [])
    with pytest.raises(OutputError, match="cannot create|not writable"):
        run_batch(pipeline, [a], "/proc/p2v-results")  # a file system that refuses new folders, even to root
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 10**6, 10**6))
    with pytest.raises(OutputError, match="1 MB free"):
        run_batch(pipeline, [a], tmp_path / "out")
    assert not calls, "nothing was reconstructed"


def test_names_the_file_system_cannot_hold_are_caught_before_the_work(tmp_path, pipeline, sample):
    from pix2vertex_addon.core.export import OutputError

    # a legal 244-character file name: its result folder fits (the old code failed at write time)
    long_photo = _save(tmp_path / "in" / ("p" * 240 + ".png"), sample["image"])
    out = tmp_path / "out"
    rep = run_batch(pipeline, [long_photo], out)
    assert len(rep.done) == 1, rep.summary()
    assert len(Path(rep.done[0][1][0]).name.encode()) <= 200
    # an output folder whose results would exceed the path limit: refused before any work
    deep = tmp_path.joinpath(*["d" * 240] * 16)
    with pytest.raises(OutputError, match="too long"):
        run_batch(pipeline, [long_photo], deep)


def test_input_collection_reports_what_it_skips_and_goes_on(tmp_path, sample):
    import os

    from pix2vertex_addon.core.batch import gather_inputs

    d = tmp_path / "in"
    good = _save(d / "good.png", sample["image"])
    Image.fromarray(sample["image"]).save(d / "photo.avif")
    (d / "phone.heic").write_bytes(b"\x00\x00\x00\x18ftypheic")
    (d / "loop.jpg").symlink_to(d / "loop.jpg")
    (d / "album.jpg").mkdir()
    (d / ".hidden.png").write_bytes(b"x")
    (d / "notes.txt").write_text("x")
    too_long = tmp_path / ("n" * 300 + ".jpg")
    found = gather_inputs([d, too_long, tmp_path / "missing.png"])
    assert [f.name for f in found.files] == ["good.png", "photo.avif"] and found.files[0] == good
    problems = dict(found.problems)
    assert "too long" in problems[str(too_long)].lower()
    assert problems[str(tmp_path / "missing.png")] == "no such file or folder"
    skipped = {Path(p).name: r for p, r in found.skipped}
    assert "HEIC" in skipped["phone.heic"] and "looping" in skipped["loop.jpg"]
    assert "folder named like a photo" in skipped["album.jpg"] and "hidden" in skipped[".hidden.png"]
    assert "not a photo" in skipped["notes.txt"]
    # an unreadable entry inside a folder does not stop the collection
    fd = os.open(d, os.O_RDONLY)
    for _ in range(22):  # a folder deeper than the system's path limit (made relative to each level)
        os.mkdir("s" * 200, dir_fd=fd)
        fd, old = os.open("s" * 200, os.O_RDONLY, dir_fd=fd), fd
        os.close(old)
    os.close(fd)
    found = gather_inputs([d], recursive=True)
    assert good in found.files and any("too long" in r.lower() for _, r in found.problems), found.problems


def test_permission_denied_is_not_called_a_corrupt_image(tmp_path, sample, monkeypatch):
    from PIL import Image as PILImage

    from pix2vertex_addon.core.images import ImageError, load_image

    p = _save(tmp_path / "locked.png", sample["image"])

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(PILImage, "open", denied)
    with pytest.raises(ImageError) as err:
        load_image(p)
    assert "Permission denied" in str(err.value) and "corrupt" not in str(err.value)


class _ThreeFaces:
    """Detector stand-in: the sample's face three times (the third one's networks see no face)."""

    def __init__(self, oracle_detector):
        self.inner = oracle_detector

    def detect_with_notes(self, rgb, all_faces=False):
        faces = self.inner.detect(rgb) * 3
        return (faces if all_faces else faces[:1]), ([] if all_faces else ["2 more face(s) in the photo were "
                                                                             "not reconstructed"])


class _BlindOnThird:
    def __init__(self, inner):
        self.inner, self.calls, self.resolution = inner, 0, inner.resolution

    def predict(self, crop):
        self.calls += 1
        maps = self.inner.predict(crop)
        if self.calls % 3 == 0:
            maps["mask"][:] = 0.0
        return maps


@pytest.mark.slow
def test_every_face_found_is_reconstructed_or_reported(tmp_path, sample, face_model):
    from pix2vertex_addon.core.pipeline import Pipeline, PipelineOptions

    base = oracle_pipeline(sample, face_model)
    pipe = Pipeline(face_model, detector=_ThreeFaces(base.detector), predictor=_BlindOnThird(base.predictor))
    photo = _save(tmp_path / "in" / "group.png", sample["image"])
    rep = run_batch(pipe, [photo], tmp_path / "out", PipelineOptions(all_faces=True))
    assert [Path(f).name for f in rep.done[0][1]] == ["group", "group_face2"]
    notes = " ".join(n for _, n in rep.notes)
    assert "face 3 of 3 was not reconstructed" in notes and "almost no face" in notes
    assert "face 3 of 3" in " ".join(json.loads((tmp_path / "out" / "group" / "report.json").read_text())["warnings"])
    rep = run_batch(pipe, [photo], tmp_path / "out1")
    assert len(rep.done[0][1]) == 1 and "2 more face(s)" in " ".join(n for _, n in rep.notes)


@pytest.mark.slow
def test_no_face_message_states_the_size_this_photo_needs():
    """A 100-pixel face in a 4000 x 3000 photo is missed (measured); the message must not claim
    that 40 pixels are enough."""
    import numpy as np

    from pix2vertex_addon.core.detect import FaceDetector, NoFaceError
    from pix2vertex_addon.core.images import load_image

    from photos import photo_paths

    rgb, _ = load_image(photo_paths()["astronaut"])  # its face is about 92 px across
    canvas = np.full((3000, 4000, 3), 110, np.uint8)
    canvas[:512, :512] = rgb
    det = FaceDetector()
    with pytest.raises(NoFaceError) as err:
        det.detect(canvas)
    size = int(str(err.value).split("at least about ")[1].split()[0])
    assert size > 92 and "4000x3000" in str(err.value)
    det.close()


def test_a_full_disk_during_the_batch_stops_it_instead_of_failing_every_photo(tmp_path, pipeline, sample,
                                                                              monkeypatch):
    import errno

    from pix2vertex_addon.core import batch
    from pix2vertex_addon.core.export import OutputError

    photos = [_save(tmp_path / "in" / f"p{k}.png", sample["image"], tweak=k) for k in range(3)]
    calls = []
    real = pipeline.reconstruct

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    def disk_full(*a, **k):
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as exc:
            raise OutputError(f"cannot write in {tmp_path / 'out'}: No space left on device") from exc

    monkeypatch.setattr(pipeline, "reconstruct", counting)
    monkeypatch.setattr(batch, "write_result", disk_full)
    rep = run_batch(pipeline, photos, tmp_path / "out")
    assert "No space left" in rep.aborted and len(rep.failed) == 1 and len(calls) == 1
    assert "STOPPED" in rep.summary() and not rep.ok


@pytest.mark.slow
def test_results_of_older_versions_are_redone_only_for_their_own_photo(tmp_path, pipeline, sample):
    a = _save(tmp_path / "A" / "image.png", sample["image"])
    b = _save(tmp_path / "B" / "image.png", sample["image"], tweak=1)
    out = tmp_path / "out"
    assert len(run_batch(pipeline, [a], out).done) == 1
    report = out / "image" / "report.json"
    doc = json.loads(report.read_text())
    del doc["identity"]  # as written before results had records
    report.write_text(json.dumps(doc))
    rep = run_batch(pipeline, [b], out)
    assert "no record of its input" in rep.failed[0][1], "another photo's old result is kept"
    rep = run_batch(pipeline, [a], out)
    assert len(rep.done) == 1 and _source(out / "image") == str(a.resolve()), "its own old result is redone"
