"""The networks through onnxruntime, without torch (no ``bpy``).

``weights/predictor.onnx`` is :class:`~.ensemble.ViewEnsemble` exported from the torch definition
(``scripts/build_extension.py`` or ``python -m pix2vertex_addon.core.onnx_backend --export``
writes it; it is a build product, not committed). Its metadata names the views and the weights it
came from; :class:`OnnxEnsemble` refuses an export that does not match the weights folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

__all__ = ["ONNX_NAME", "OnnxEnsemble", "OnnxModelError", "onnx_metadata", "onnx_path"]

ONNX_NAME = "predictor.onnx"
META_KEY = "pix2vertex"


class OnnxModelError(RuntimeError):
    """The ONNX export is missing, unreadable or does not match the weights."""


def onnx_path(weights_dir: str | Path) -> Path:
    return Path(weights_dir) / ONNX_NAME


def onnx_metadata(config: dict, views: tuple, flip_average: bool) -> dict:
    """What an export records and the runtime checks: views, mirroring, resolution, weight hashes."""
    return {
        "views": [list(map(float, v)) for v in views],
        "flip_average": bool(flip_average),
        "resolution": int(config["architecture"]["resolution"]),
        "sha256": dict(config.get("sha256", {})),
    }


class OnnxEnsemble:
    """``run(x)``: float32 (B, 3, R, R) in [-1, 1] -> geometry (B, 4, R, R), correspondence
    (B, 3, R, R), like ``ViewEnsemble`` (one crop per session run)."""

    def __init__(self, weights_dir: str | Path, config: dict, views: tuple, flip_average: bool, threads: int):
        import onnxruntime as ort

        path = onnx_path(weights_dir)
        if not path.is_file():
            raise OnnxModelError(
                f"{path} not found: export the networks with "
                "`python -m pix2vertex_addon.core.onnx_backend --export` (needs torch)."
            )
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(int(threads), 0)
        opts.inter_op_num_threads = 1
        # no busy-waiting after a run: the next stages (numpy, OpenCV) need the cores
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types
            raise OnnxModelError(f"{path} is unreadable or corrupt ({str(e).splitlines()[0]})") from None
        meta = self.session.get_modelmeta().custom_metadata_map.get(META_KEY)
        want = onnx_metadata(config, views, flip_average)
        if meta is None or json.loads(meta) != want:
            raise OnnxModelError(
                f"{path} was exported for other weights or views than {Path(weights_dir)} and "
                f"these settings (views {want['views']}); export it again."
            )

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        gs, cs = [], []
        for k in range(len(x)):
            g, c = self.session.run(None, {"image": np.ascontiguousarray(x[k : k + 1], dtype=np.float32)})
            gs.append(g)
            cs.append(c)
        return np.concatenate(gs), np.concatenate(cs)


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="Export the shipped networks to ONNX (needs torch).")
    ap.add_argument("--export", action="store_true", help="write WEIGHTS/predictor.onnx")
    ap.add_argument("--weights", default=None, help="weights folder (default: the shipped weights)")
    a = ap.parse_args(argv)
    if not a.export:
        ap.print_help()
        return 0
    from .ensemble import export_onnx
    from .predict import Predictor

    p = Predictor(a.weights, threads=2, backend="torch")
    out = export_onnx(p, onnx_path(p.weights_dir))
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
