"""Operators: thin wrappers that gather inputs, run the core off the main thread, report, return.

Reconstruct and Batch Reconstruct run their work in a background thread (:mod:`.jobs`) when
invoked from the interface (the interface stays responsive, Esc or the Cancel button stops them)
and in the calling thread when executed from a script (``bpy.ops.p2v.reconstruct()``). Either
way the scene is changed only on the main thread, in one step, after the work succeeded.
"""

from __future__ import annotations

import shutil
import time
import traceback
from pathlib import Path

import bpy
import numpy as np

from . import deps, jobs

# the pipeline's stage names in words a user understands (progress bar, status line)
STAGE_WORDS = {
    "detect": "Finding the face", "crop": "Cropping the face", "networks": "Estimating the 3D shape",
    "target_mesh": "Building the surface", "affine": "Aligning the template", "registration": "Fitting the template",
    "detail": "Adding fine detail", "camera": "Placing the camera", "done": "Finishing",
    "load": "Reading the photo", "head": "Building the head", "write": "Writing the results",
    "skipped": "Skipped (already done)",
}


def stage_words(stage: str) -> str:
    return STAGE_WORDS.get(stage, stage.replace("_", " ").capitalize())


# -- inputs -------------------------------------------------------------------------------------
class InputError(ValueError):
    """The operator's inputs are incomplete (message for the user)."""


def _image_source(settings) -> tuple[str, object]:
    """(name, path or (H, W, 3) uint8 array) of the photo chosen in the panel."""
    img = settings.image
    if img is not None:
        path = bpy.path.abspath(img.filepath) if img.filepath else ""
        if path and Path(path).is_file() and img.packed_file is None and not img.is_dirty:
            return img.name, path
        w, h = img.size
        if w == 0 or h == 0:
            raise InputError(f"Image '{img.name}' has no pixels (is its file missing?)")
        px = np.empty(w * h * img.channels, dtype=np.float32)
        img.pixels.foreach_get(px)
        px = px.reshape(h, w, img.channels)[::-1]
        rgb = px[..., :3] if img.channels >= 3 else np.repeat(px[..., :1], 3, axis=2)
        return img.name, np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if settings.image_path:
        path = bpy.path.abspath(settings.image_path)
        return Path(path).stem, path
    raise InputError("Choose a photo first (Photo, or an image loaded in Blender)")


def _check_runtime(context) -> str:
    """Face model path in force; raises InputError when the runtime cannot work."""
    reason = deps.blocking_reason(context)
    if reason:
        raise InputError(reason)
    return deps.face_model_path(context)


def _poll_runtime(cls, context) -> bool:
    """Poll of Reconstruct and Batch: no job running and everything needed there (else the
    button is disabled and its tooltip, like the panel, says why)."""
    if jobs.current_job() is not None:
        return False
    reason = deps.blocking_reason(context)
    if reason:
        cls.poll_message_set(reason)
        return False
    return True


def _threads(context) -> int:
    prefs = deps.addon_preferences(context)
    return prefs.threads if prefs is not None else 0


def _user_message(exc: BaseException) -> str:
    from ..core.batch import ResultExists
    from ..core.detect import DetectorUnavailable, NoFaceError
    from ..core.export import OutputError
    from ..core.face_model import FaceModelError
    from ..core.images import ImageError
    from ..core.pipeline import ReconstructionError
    from ..core.predict import WeightsError

    if isinstance(exc, ResultExists) and exc.replaceable:
        return f"{exc.folder} {exc.reason}: it is kept; choose another Results folder or move it away"
    if isinstance(exc, NoFaceError):
        return f"No face found in the photo: {exc}. Try a photo with a clearly visible, frontal face"
    if isinstance(exc, ImageError):
        return f"Cannot read the photo: {exc}"
    if isinstance(exc, (FaceModelError, ReconstructionError, DetectorUnavailable, OutputError, WeightsError)):
        return str(exc)
    if isinstance(exc, FileNotFoundError):
        return f"{exc}"
    if isinstance(exc, ImportError):
        return f"A runtime package is missing ({exc}). {deps.package_fix()}"
    return f"Reconstruction failed: {type(exc).__name__}: {exc}"


def warm_up_soon(context, checked: bool = False) -> None:
    """Start the background warm-up (:func:`.jobs.warm_up`) when everything Reconstruct needs
    is installed (``checked``: the caller has just found :func:`.deps.blocking_reason` empty);
    called when the panel is drawn and when a photo is chosen."""
    try:
        if not checked and deps.blocking_reason(context):
            return
        from .apply import DETAIL_TEXTURE_SIZE

        jobs.warm_up(deps.face_model_path(context), _threads(context), (DETAIL_TEXTURE_SIZE,))
    except Exception:  # noqa: BLE001 - a convenience: Reconstruct reports any problem itself
        pass


# -- reconstruct ----------------------------------------------------------------------------------
def start_reconstruct(context, run_in_thread: bool) -> tuple[jobs.Job, dict]:
    """Check the inputs (raises InputError) and start the reconstruction job: the core's one
    load -> reconstruct -> write path (:func:`..core.batch.reconstruct_photo`), as the batch uses."""
    from ..core.batch import output_session, reconstruct_photo, safe_name
    from ..core.pipeline import PipelineOptions
    from . import scratch

    settings = context.scene.p2v
    from .mesh import has_template_topology

    if settings.template is None or not has_template_topology(settings.template):
        raise InputError("Choose a template face (or click Add Template Face)")
    name, source = _image_source(settings)
    model_path = _check_runtime(context)
    threads = _threads(context)
    out_root = Path(bpy.path.abspath(settings.output_dir)) if settings.output_dir else scratch.root()
    from .naming import reconstruction_name

    t_start = time.perf_counter()
    rname = reconstruction_name(settings.template, name)
    folder_name = safe_name(rname)
    opts = PipelineOptions(detail=True, head=settings.build == "HEAD", arkit=settings.use_arkit,
                           face_index=settings.face_index)
    src = source if isinstance(source, str) else (name, source)

    def work(progress, cancel):
        progress(0.0, "Loading the networks")
        # a warm-up in progress goes on beside the job: the pipeline is built once (whichever
        # thread asks first), and a layout table the warm-up is making is waited for, not made
        # twice (core/layout_cache.py), so its remaining tables come on the second core
        pipe = jobs.get_pipeline(model_path, threads)
        with output_session(out_root, [folder_name]):
            res = reconstruct_photo(pipe, src, out_root, folder_name, opts, resume=False, replace_own=True,
                                    progress=lambda f, s: progress(0.05 + 0.9 * f, stage_words(s)), cancel=cancel)
        return res.recs[0], res.folders[0], pipe.model.template, (res.heads[0] if res.heads else None)

    job = jobs.Job(f"reconstruct {name}", work)
    if run_in_thread:
        job.start()
    else:
        job.run_here()
    return job, {"name": rname, "photo": name, "template": settings.template.name, "t_start": t_start}


def finish_reconstruct(context, job: jobs.Job, info: dict, report) -> set[str]:
    """Apply a finished job's result on the main thread; report errors; return operator state."""
    from ..core.pipeline import Cancelled
    from . import scratch
    from .apply import apply_reconstruction, update_detail_modifiers

    settings = context.scene.p2v
    settings.running = False
    settings.progress = 0.0
    if job.error is not None:
        if isinstance(job.error, Cancelled):
            settings.status = "Cancelled"
            report({"WARNING"}, "Reconstruction cancelled; the scene is unchanged")
            return {"CANCELLED"}
        settings.status = "Failed"
        if not isinstance(job.error, (ValueError, OSError)):
            print(job.traceback)
        report({"ERROR"}, _user_message(job.error))
        return {"CANCELLED"}
    rec, folder, template, head = job.result
    obj = bpy.data.objects.get(info["template"])
    if obj is None:
        report({"ERROR"}, f"The template object '{info['template']}' was removed during the reconstruction")
        return {"CANCELLED"}
    made = apply_reconstruction(context, obj, rec, template, folder, info["name"], use_detail=settings.use_detail,
                                detail_strength=settings.detail_strength, add_target_mesh=settings.add_target_mesh)
    if head is not None:
        from .head import add_head_object, hide_face_only

        made["head"] = add_head_object(context, head, info["name"], folder / "texture.png", like=obj,
                                       face_material=obj.active_material).name
        hide_face_only(obj)
        update_detail_modifiers(obj, settings.use_detail, settings.detail_strength)  # the head's normal map
    where = f"results in {folder}"
    if scratch.is_scratch(folder):  # no Results folder set: the textures are packed, nothing else is kept
        shutil.rmtree(folder, ignore_errors=True)
        del obj["p2v_results"]
        where = "no Results folder set, so no result files were kept"
    settings.status = f"Reconstructed {info['name']} in {time.perf_counter() - info['t_start']:.1f} s"
    report({"INFO"}, f"Reconstructed {info['name']} into '{obj.name}'; {where}"
           + (f"; target mesh '{made['target']}'" if made["target"] else "")
           + (f"; head '{made['head']}'" if made.get("head") else ""))
    for w in rec.warnings:
        report({"WARNING"}, w)
    return {"FINISHED"}


class _ModalJob:
    """Shared modal loop: a timer polls the job, Esc cancels it, the panel shows progress.
    Subclasses define ``_start(context, threaded)`` (sets ``self._job``; raises InputError or
    RuntimeError on bad input) and ``_finish(context)``."""

    _job: jobs.Job
    _info: dict
    _timer = None

    def _start_or_report(self, context, threaded: bool) -> bool:
        try:
            self._start(context, threaded)
        except (InputError, RuntimeError, ImportError) as exc:
            self.report({"ERROR"}, _user_message(exc) if isinstance(exc, ImportError) else str(exc))
            return False
        return True

    def invoke(self, context, event):
        if not self._start_or_report(context, threaded=True):
            return {"CANCELLED"}
        return self._begin_modal(context)

    def execute(self, context):
        if not self._start_or_report(context, threaded=False):
            return {"CANCELLED"}
        return self._finish(context)

    def _begin_modal(self, context):
        wm = context.window_manager
        self._timer = wm.event_timer_add(0.1, window=context.window)
        wm.modal_handler_add(self)
        context.scene.p2v.running = True
        return {"RUNNING_MODAL"}

    def _tick(self, context):
        s = context.scene.p2v
        s.progress = self._job.fraction
        s.status = self._job.text
        if context.workspace is not None:
            context.workspace.status_text_set(f"pix2vertex: {self._job.text} ({self._job.fraction:.0%}) - Esc to cancel")
        for area in context.screen.areas if context.screen else []:
            if area.type == "VIEW_3D":
                area.tag_redraw()

    def _end_modal(self, context):
        context.window_manager.event_timer_remove(self._timer)
        if context.workspace is not None:
            context.workspace.status_text_set(None)

    def modal(self, context, event):
        if event.type == "ESC" and event.value == "PRESS":
            self._job.cancel()
            context.scene.p2v.status = "Cancelling..."
            return {"RUNNING_MODAL"}  # Esc is ours while the job runs
        if event.type == "TIMER":
            self._tick(context)
            if self._job.done:
                self._end_modal(context)
                return self._finish(context)
        return {"PASS_THROUGH"}


class P2V_OT_reconstruct(_ModalJob, bpy.types.Operator):
    """Reconstruct the face in the photo and warp the template into it (Esc cancels)"""

    bl_idname = "p2v.reconstruct"
    bl_label = "Reconstruct"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return _poll_runtime(cls, context)

    def _finish(self, context):
        return finish_reconstruct(context, self._job, self._info, self.report)

    def _start(self, context, threaded: bool):
        self._job, self._info = start_reconstruct(context, threaded)


# -- batch ----------------------------------------------------------------------------------------
def start_batch(context, run_in_thread: bool) -> jobs.Job:
    from ..core.batch import gather_inputs, run_batch
    from ..core.pipeline import PipelineOptions

    s = context.scene.p2v
    if not s.batch_input_dir or not Path(bpy.path.abspath(s.batch_input_dir)).is_dir():
        raise InputError("Choose an input folder of photos")
    if not s.batch_output_dir:
        raise InputError("Choose an output folder")
    src = Path(bpy.path.abspath(s.batch_input_dir))
    dst = Path(bpy.path.abspath(s.batch_output_dir))
    found = gather_inputs([src])
    if not found.files:
        raise InputError(f"No images in {src}" + (f" ({found.problems[0][1]})" if found.problems else ""))
    model_path = _check_runtime(context)
    threads = _threads(context)
    overwrite = s.batch_overwrite
    opts = PipelineOptions(head=s.build == "HEAD", arkit=s.use_arkit)

    def work(progress, cancel):
        progress(0.0, "Loading the networks")
        jobs.wait_for_warm_up()
        pipe = jobs.get_pipeline(model_path, threads)

        def prog(i, total, name, stage):
            progress(i / max(total, 1), f"{i}/{total} {name}: {stage_words(stage).lower()}")

        rep = run_batch(pipe, found.files, dst, opts, overwrite=overwrite, progress=prog, cancel=cancel,
                        names=found.names)
        rep.failed = found.problems + rep.failed
        rep.notes = found.skipped + rep.notes
        return rep

    job = jobs.Job(f"batch {src.name}", work)
    return job.start() if run_in_thread else job.run_here()


def finish_batch(context, job: jobs.Job, report) -> set[str]:
    s = context.scene.p2v
    s.running = False
    s.progress = 0.0
    if job.error is not None:
        s.status = "Batch failed"
        report({"ERROR"}, _user_message(job.error))
        return {"CANCELLED"}
    rep = job.result
    s.status = rep.summary().splitlines()[0]
    for path, reason in rep.failed:
        report({"WARNING"}, f"{Path(path).name}: {reason}")
    report({"WARNING"} if rep.failed or rep.cancelled else {"INFO"}, s.status)
    return {"CANCELLED"} if rep.cancelled else {"FINISHED"}


class P2V_OT_batch_reconstruct(_ModalJob, bpy.types.Operator):
    """Reconstruct every photo of the input folder into the output folder (the scene is not changed)"""

    bl_idname = "p2v.batch_reconstruct"
    bl_label = "Batch Reconstruct"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context):
        return _poll_runtime(cls, context)

    def _finish(self, context):
        return finish_batch(context, self._job, self.report)

    def _start(self, context, threaded: bool):
        self._job = start_batch(context, threaded)


class P2V_OT_cancel(bpy.types.Operator):
    """Cancel the running reconstruction"""

    bl_idname = "p2v.cancel"
    bl_label = "Cancel"
    bl_options = {"INTERNAL"}

    @classmethod
    def poll(cls, context):
        return jobs.current_job() is not None

    def execute(self, context):
        jobs.cancel_current()
        context.scene.p2v.status = "Cancelling..."
        return {"FINISHED"}


class P2V_OT_apply_detail(bpy.types.Operator):
    """Bake the current shape and the fine-detail modifiers into the mesh (the template becomes a plain mesh)"""

    bl_idname = "p2v.apply_detail"
    bl_label = "Apply Detail"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        from .apply import DISPLACE_MOD

        obj = context.scene.p2v.template if hasattr(context.scene, "p2v") else None
        return obj is not None and DISPLACE_MOD in obj.modifiers

    def execute(self, context):
        from .apply import apply_detail

        obj = context.scene.p2v.template
        n_before = len(obj.data.vertices)
        mesh = apply_detail(context, obj)
        context.scene.p2v.template = None  # no longer the template's topology
        self.report({"INFO"}, f"Applied the detail to '{obj.name}': {n_before} -> {len(mesh.vertices)} vertices")
        return {"FINISHED"}


class P2V_OT_add_template(bpy.types.Operator):
    """Add the ICT-FaceKit face-region template mesh (metres, with UVs) at the 3D cursor"""

    bl_idname = "p2v.add_template"
    bl_label = "Add Template Face"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context: bpy.types.Context) -> set[str]:
        from bpy_extras import object_utils

        from ..core.face_model import FaceModelError, load_face_model
        from .mesh import TEMPLATE_PROP, template_mesh

        try:
            model = load_face_model(deps.face_model_path(context))
        except FaceModelError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        except Exception as exc:  # noqa: BLE001 - e.g. numpy missing: tell the user, do not crash
            traceback.print_exc()
            self.report({"ERROR"}, f"Cannot load the face model: {exc}")
            return {"CANCELLED"}
        name = "ICT-FaceKit Face"
        mesh = template_mesh(model, name)
        obj = object_utils.object_data_add(context, mesh, operator=None, name=name)
        obj[TEMPLATE_PROP] = str(model.path.name)
        settings = getattr(context.scene, "p2v", None)
        if settings is not None:
            settings.template = obj
        self.report({"INFO"}, f"Added {name}: {len(mesh.vertices)} vertices")
        return {"FINISHED"}


def menu_add_template(self: bpy.types.Menu, _context: bpy.types.Context) -> None:
    self.layout.operator(P2V_OT_add_template.bl_idname, icon="MONKEY")


CLASSES = (P2V_OT_add_template, P2V_OT_reconstruct, P2V_OT_batch_reconstruct, P2V_OT_cancel, P2V_OT_apply_detail)
