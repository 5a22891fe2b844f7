"""The networks with their test-time views as one torch module (imports torch; no ``bpy``).

:class:`ViewEnsemble` is what :class:`~.predict.Predictor` runs with torch and what
:func:`export_onnx` writes to ONNX for the torch-free runtime (:mod:`.onnx_backend`): the crop,
its turned and zoomed views, each also mirrored, through both networks, mapped back and averaged
in the crop's frame (``Predictor``'s docstring and ``_unwarp_average`` in :mod:`.predict`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from .predict import _unwarp_average, _warp

__all__ = ["ViewEnsemble", "export_onnx", "ONNX_OPSET"]

# GridSample and AffineGrid (the turned and zoomed views) need opset 20.
ONNX_OPSET = 20


class ViewEnsemble(nn.Module):
    """forward: float (B, 3, R, R) in [-1, 1] -> geometry (B, 4, R, R), correspondence
    (B, 3, R, R), both averaged over the views; views as :attr:`Predictor.views`."""

    def __init__(self, geometry: nn.Module, correspondence: nn.Module, views: tuple, flip_average: bool):
        super().__init__()
        self.geometry = geometry
        self.correspondence = correspondence
        self.views = tuple(views)
        self.flip_average = bool(flip_average)

    def forward(self, x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = x0.shape[0]
        x = torch.cat([x0 if v == (0.0, 1.0) else _warp(x0, v[0], v[1], "reflection") for v in self.views])
        if self.flip_average:  # one pass over the crops and their mirror images (eval-mode BN)
            x = torch.cat([x, torch.flip(x, dims=[3])])
        g = self.geometry(x).float()
        c = self.correspondence(x).float()
        if self.flip_average:
            n = g.shape[0] // 2
            gf, cf = torch.flip(g[n:], dims=[3]), torch.flip(c[n:], dims=[3])
            gf = torch.cat([-gf[:, :1], gf[:, 1:]], dim=1)  # x right -> left
            cf = torch.cat([1.0 - cf[:, :1], cf[:, 1:]], dim=1)  # canonical u -> 1 - u
            g, c = (g[:n] + gf) * 0.5, (c[:n] + cf) * 0.5
        if len(self.views) > 1:
            g, c = _unwarp_average(g, c, self.views, b)
        return g, c


def export_onnx(predictor, path: str | Path, fp16_weights: bool = True) -> Path:
    """Write ``predictor``'s networks and views as one ONNX model (batch 1) to ``path``, atomically.

    The metadata records the views, the mirroring, the resolution and the sha256 of the weights it
    came from, so the runtime can refuse a stale export. ``fp16_weights`` stores the large weight
    tensors as fp16 (the shipped weights are fp16 already) behind Cast nodes: half the size."""
    import onnx

    from .onnx_backend import META_KEY, onnx_metadata

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    model = ViewEnsemble(
        predictor.nets["geometry"], predictor.nets["correspondence"], predictor.views, predictor.flip_average
    ).eval()
    x = torch.zeros(1, 3, predictor.resolution, predictor.resolution)
    torch.onnx.export(
        model, (x,), str(tmp), dynamo=False, opset_version=ONNX_OPSET,
        input_names=["image"], output_names=["geometry", "correspondence"],
    )
    proto = onnx.load(str(tmp))
    if fp16_weights:
        _weights_to_fp16(proto)
    meta = onnx_metadata(predictor.config, predictor.views, predictor.flip_average)
    proto.metadata_props.add(key=META_KEY, value=json.dumps(meta, sort_keys=True))
    onnx.checker.check_model(proto)
    onnx.save(proto, str(tmp))
    tmp.replace(path)
    return path


def _weights_to_fp16(proto, min_size: int = 1024) -> None:
    """Store float32 initializers of at least ``min_size`` values as fp16, each behind a Cast node
    that gives the graph its float32 tensor under the original name."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    graph = proto.graph
    casts = []
    for init in graph.initializer:
        if init.data_type != onnx.TensorProto.FLOAT:
            continue
        a = numpy_helper.to_array(init)
        if a.size < min_size:
            continue
        name = init.name
        init.CopyFrom(numpy_helper.from_array(a.astype(np.float16), name + "__fp16"))
        casts.append(helper.make_node("Cast", [name + "__fp16"], [name], to=onnx.TensorProto.FLOAT))
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)
