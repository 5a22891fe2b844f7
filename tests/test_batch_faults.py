"""Fault test: a batch killed with SIGKILL at random points, several times, then resumed: every
photo ends with exactly its own result, nothing partial remains, no other file changed."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import REPO

CHILD = """
import sys
sys.path[:0] = [{repo!r}, {tests!r}]
from pathlib import Path
from pix2vertex_addon.core.batch import gather_inputs, run_batch
from pix2vertex_addon.training.synth import generate_sample
from oracle import oracle_pipeline

pipe = oracle_pipeline(generate_sample(11, 256, clean=True))
found = gather_inputs([sys.argv[1]], recursive=True)
print("ready", flush=True)
rep = run_batch(pipe, found.files, sys.argv[2], names=found.names, texture_size=256,
                progress=lambda i, n, name, stage: print(i, name, stage, flush=True))
print("finished", len(rep.done), len(rep.skipped), len(rep.failed), flush=True)
"""


def _photos(src: Path, n: int) -> dict[Path, bytes]:
    from pix2vertex_addon.training.synth import generate_sample

    img = generate_sample(11, 256, clean=True)["image"]
    made = {}
    for k in range(n):
        a = img.copy()
        a[0, 0] = (k, 255 - k, 7)  # distinct photos, the same face for the oracle
        p = src / ("sub" if k % 2 else "") / f"photo {k}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(a).save(p)
        made[p] = p.read_bytes()
    return made


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume(tmp_path):
    from pix2vertex_addon.core.results import RESULT_FILES

    src, out = tmp_path / "in", tmp_path / "out"
    photos = _photos(src, 5)
    out.mkdir()
    (out / "user notes.txt").write_text("mine")
    (out / "user folder").mkdir()
    (out / "user folder" / "a.bin").write_bytes(os.urandom(1000))
    user_files = _tree(out)
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(repo=str(REPO), tests=str(REPO / "tests")))
    rng = random.Random(18)
    kills = 0
    left: list[str] = []  # what the killed runs left (removed by the next run)
    for run in range(8):
        proc = subprocess.Popen([sys.executable, str(script), str(src), str(out)], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        events = rng.randint(1, 30)  # kill after a random number of progress events...
        finished = False
        for _ in range(events):
            line = proc.stdout.readline()
            if not line or line.startswith("finished"):
                finished = True
                break
        if not finished:
            if run % 2:  # ... plus a random delay
                time.sleep(rng.uniform(0.0, 0.3))
            else:  # ... or the moment a result folder is being written (its hidden .partial- folder)
                t0 = time.monotonic()
                while proc.poll() is None and time.monotonic() - t0 < 60:
                    if any(".partial-" in q.name for q in out.iterdir()):
                        break
                    time.sleep(0.002)
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait(timeout=120)
        left += [q.name for q in out.iterdir() if q.name.startswith(".")]
        proc.stdout.close()
    assert kills >= 5
    print("left by killed runs:", left)
    assert any(".partial-" in n for n in left), "the kills hit result writing at least once"
    # resume until done
    r = subprocess.run([sys.executable, str(script), str(src), str(out)], capture_output=True, text=True, timeout=600)
    last = r.stdout.strip().splitlines()[-1].split()
    assert last[0] == "finished" and last[3] == "0", r.stdout[-2000:]
    assert int(last[1]) + int(last[2]) == len(photos)
    # every photo has exactly its own, complete result; nothing partial; nothing else changed
    results = {}
    for d in out.iterdir():
        if (d / "report.json").exists():
            rep = json.loads((d / "report.json").read_text())
            results[d.name] = rep["identity"]["input"]
            assert sorted(p.name for p in d.iterdir()) == sorted(RESULT_FILES + ("face_base.mtl",)), d
            assert np.load(d / "depth.npy").shape == (256, 256)
    assert len(results) == len(photos)
    for p, data in photos.items():
        own = [name for name, src_id in results.items() if src_id["path"] == str(p.resolve())]
        assert len(own) == 1, (p, own)
        assert results[own[0]]["sha256"] == hashlib.sha256(data).hexdigest()
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(list(results) + ["user folder", "user notes.txt"]), names
    assert {k: v for k, v in _tree(out).items() if k.split("/")[0] not in results} == user_files


@pytest.mark.slow
def test_sigterm_stops_the_command_line_cleanly(tmp_path):
    """SIGTERM is handled like Ctrl-C: status 130, the result being made is not left half-written,
    the lock is released (the real networks and detector, on the default photo)."""
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, str(REPO / "scripts" / "reconstruct.py"), "-o", str(out), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (out / ".p2v.lock").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # the lock appears once the networks are loaded and the batch starts
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, (proc.returncode, stderr[-2000:])
    assert "Traceback" not in stderr and "cancelled" in stderr
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []
