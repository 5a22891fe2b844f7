"""Work off Blender's main thread: one background job at a time, with progress and cancel.

The job's function runs in a worker thread and must not touch ``bpy``; the operator that started
it polls :class:`Job` from a timer on the main thread and applies the result there.
"""

from __future__ import annotations

import os
import threading
import traceback
from collections.abc import Callable
from typing import Any

_pipelines: dict[tuple, Any] = {}
_pipelines_lock = threading.Lock()
_current: Job | None = None


class Job:
    """Run ``fn(progress, cancel)`` in a thread. ``progress(fraction, text)`` may be called from the
    worker; ``cancel`` is a ``threading.Event`` the worker checks between stages."""

    def __init__(self, name: str, fn: Callable[..., Any]):
        self.name = name
        self.fn = fn
        self.cancel_event = threading.Event()
        self.fraction = 0.0
        self.text = "starting"
        self.result: Any = None
        self.error: BaseException | None = None
        self.traceback = ""
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def _progress(self, fraction: float, text: str) -> None:
        self.fraction = float(min(max(fraction, 0.0), 1.0))
        self.text = text

    def _run(self) -> None:
        try:
            self.result = self.fn(self._progress, self.cancel_event)
            from .bytecode import cache_later

            cache_later()  # the next Blender session imports the bundled packages faster
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            self.error = exc
            self.traceback = traceback.format_exc()
        finally:
            self._done.set()

    def start(self) -> Job:
        global _current
        if _current is not None and not _current.done:
            raise RuntimeError(f"another reconstruction is running ({_current.name}); cancel it first")
        _current = self
        self._thread = threading.Thread(target=self._run, name=f"p2v-{self.name}", daemon=True)
        self._thread.start()
        return self

    def run_here(self) -> Job:
        """Run in the calling thread (scripts and tests)."""
        self._run()
        return self

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def cancel(self) -> None:
        self.cancel_event.set()


def current_job() -> Job | None:
    return _current if _current is not None and not _current.done else None


def cancel_current() -> bool:
    job = current_job()
    if job is None:
        return False
    job.cancel()
    return True


def get_pipeline(face_model_path: str, threads: int):
    """A :class:`Pipeline` per (face model, threads), built once (in whichever thread asks)."""
    from ..core.pipeline import Pipeline

    n = threads or (os.cpu_count() or 2)
    key = (face_model_path, n)
    with _pipelines_lock:
        p = _pipelines.get(key)
        if p is None:
            p = Pipeline(face_model_path, threads=n)
            _pipelines[key] = p
        return p


_warm: dict[tuple, threading.Thread] = {}


def warm_up(face_model_path: str, threads: int, detail_texture_sizes: tuple[int, ...] = ()) -> None:
    """Once per (face model, threads): in a background thread, build the pipeline and do the
    first reconstruction's one-time work (:meth:`..core.pipeline.Pipeline.warm_up`), so that
    Reconstruct runs at its usual speed the first time too. Started when the panel shows or a
    photo is chosen; a failure is left for Reconstruct to report."""
    key = (face_model_path, threads or (os.cpu_count() or 2))
    if key in _warm:
        return

    def run() -> None:
        try:
            from ..core.pipeline import PipelineOptions

            get_pipeline(face_model_path, threads).warm_up(PipelineOptions(detail=True),
                                                           detail_texture_sizes=detail_texture_sizes)
        except Exception:  # noqa: BLE001 - Reconstruct loads again and reports the error
            pass

    _warm[key] = t = threading.Thread(target=run, name="p2v-warm-up", daemon=True)
    t.start()


def wait_for_warm_up(timeout: float | None = None) -> None:
    """Let a running warm-up finish (a job would only do the same work beside it)."""
    for t in list(_warm.values()):
        t.join(timeout)


def release(timeout: float = 60.0) -> None:
    """Cancel a running job, wait for its worker to stop, then close the cached pipelines'
    detectors (on unregister). The worker checks the cancel flag between stages, so this waits
    for at most one stage; a worker still running after ``timeout`` keeps its detector open
    (closing it under the worker would crash it) and the cache is only forgotten."""
    job = current_job()
    if job is not None:
        job.cancel()
        job.wait(timeout)
    wait_for_warm_up(timeout)
    _warm.clear()
    with _pipelines_lock:
        if job is None or job.done:
            for p in _pipelines.values():
                p.detector.close()
        _pipelines.clear()
