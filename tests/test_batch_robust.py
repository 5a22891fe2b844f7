"""Batches that never lose or mix up results: names, result identity, resume, locks, leftovers,
fail-fast checks and input collection (oracle pipeline: exact stand-ins for detector and networks)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from pix2vertex_addon.core.batch import collect_inputs, run_batch

from oracle import oracle_pipeline


@pytest.fixture(scope="module")
def sample():
    from pix2vertex_addon.core.synth import generate_sample

    return generate_sample(11, 256, clean=True)


@pytest.fixture(scope="module")
def pipeline(sample, face_model):
    return oracle_pipeline(sample, face_model)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


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
