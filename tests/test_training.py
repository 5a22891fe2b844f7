"""End-to-end smoke test of the training path (test_before_push style): one iteration of training
on a tiny fake batch, resume, export to fp16 safetensors, load with the Predictor, evaluate."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pix2vertex_addon.training.train import ReplayPool, TrainOptions, train


def _opts(tmp_path, **kw):
    base = dict(
        name="smoke",
        runs_dir=str(tmp_path),
        data="fake",
        resolution=32,
        ngf=8,
        max_channels=16,
        batch_size=2,
        iters=1,
        val_every=1,
        val_size=2,
        workers=0,
        threads=1,
        log_every=1,
    )
    base.update(kw)
    return TrainOptions(**base)


def test_one_iteration_resume_export_predict_evaluate(tmp_path):
    from pix2vertex_addon.core.predict import Predictor
    from pix2vertex_addon.training.evaluate import evaluate
    from pix2vertex_addon.training.export import export

    res = train(_opts(tmp_path), progress=False)
    run = tmp_path / "smoke"
    assert res["iter"] == 1 and np.isfinite(res["depth_mean_pct"]) and np.isfinite(res["corr_median_mm"])
    saved = json.loads((run / "opts.json").read_text())
    assert saved["resolution"] == 32 and saved["nets"] == ["geometry", "correspondence"]
    ck = torch.load(run / "latest.pt", weights_only=True)
    assert ck["iter"] == 1
    w0 = ck["nets"]["geometry"]["head.5.weight"].clone()

    res = train(_opts(tmp_path, iters=2), resume=True, progress=False)
    ck = torch.load(run / "latest.pt", weights_only=True)
    assert ck["iter"] == 2 and not torch.equal(ck["nets"]["geometry"]["head.5.weight"], w0)
    events = [json.loads(line)["event"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert events.count("start") == 2 and events.count("val") == 2

    cfg = export(run, tmp_path / "weights")
    assert cfg["source"]["iter"] == 2 and set(cfg["sha256"]) == {"geometry", "correspondence"}
    p = Predictor(tmp_path / "weights", threads=1)
    out = p.predict(np.zeros((32, 32, 3), np.uint8))
    assert out["xyz"].dtype == np.float32 and out["xyz"].shape == (32, 32, 3)

    rep = evaluate(p, "fake", n=3, out_dir=tmp_path / "eval", n_show=2, progress=False)
    assert rep["n_images"] == 3
    assert (tmp_path / "eval" / "report.md").read_text().startswith("# Network evaluation")
    assert (tmp_path / "eval" / "error_maps.png").stat().st_size > 0

    from pix2vertex_addon.training.model_card import write_card

    card = write_card(tmp_path / "weights", tmp_path / "eval", "test", "smoke")
    assert cfg["sha256"]["geometry"] in card and "| mask IoU |" in card


def test_init_from_exported_weights_and_time_limit(tmp_path):
    """GPU chunks: a run starts from exported fp16 weights (no optimiser state travels) and stops
    itself, checkpointed and validated, when --max-minutes is reached."""
    from pix2vertex_addon.training.export import export

    train(_opts(tmp_path, iters=3), progress=False)
    export(tmp_path / "smoke", tmp_path / "w")
    src = torch.load(tmp_path / "smoke" / "latest.pt", weights_only=True)["nets"]["geometry"]

    res = train(
        _opts(tmp_path, name="next", seed=1, iters=10_000, val_every=10_000, max_minutes=1e-9, init_weights=str(tmp_path / "w")),
        progress=False,
    )
    assert res["iter"] == 1 and np.isfinite(res["depth_mean_pct"])  # stopped after one step, validated
    ck = torch.load(tmp_path / "next" / "latest.pt", weights_only=True)
    assert ck["iter"] == 1
    # another seed, one Adam step from the exported weights: close to them (fp16 rounding, lr 2e-4);
    # a fresh start with that seed is far from them
    key = next(k for k in src if k.endswith("weight") and src[k].dim() == 4)
    w_src, w_new = src[key], ck["nets"]["geometry"][key]
    fresh = train(_opts(tmp_path, name="fresh", seed=1, iters=1), progress=False)
    w_fresh = torch.load(tmp_path / "fresh" / "latest.pt", weights_only=True)["nets"]["geometry"][key]
    assert fresh["iter"] == 1
    assert (w_new - w_src).abs().max() < 1e-2 < (w_fresh - w_src).abs().max()

    with pytest.raises(ValueError, match="another architecture"):
        train(_opts(tmp_path, name="bad", max_channels=8, init_weights=str(tmp_path / "w")), progress=False)


def test_resume_without_checkpoint_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        train(_opts(tmp_path), resume=True, progress=False)


def test_training_reduces_loss_on_a_fixed_batch(tmp_path):
    """A few steps on the same fake batch must lower the geometry and correspondence losses."""
    from pix2vertex_addon.core.losses import correspondence_loss, geometry_loss
    from pix2vertex_addon.core.nets import define_net
    from pix2vertex_addon.training.data import FakeFaces

    torch.manual_seed(0)
    b = torch.utils.data.default_collate([FakeFaces("train", 32, 4)[i] for i in range(4)])
    g = define_net("geometry", 32, 8, 32)
    c = define_net("correspondence", 32, 8, 32)
    opt = torch.optim.Adam(list(g.parameters()) + list(c.parameters()), 3e-3)
    first = last = None
    for _ in range(40):
        lg, _ = geometry_loss(g(b["image"]), b["xyz"], b["mask"])
        lc, _ = correspondence_loss(c(b["image"]), b["corr"], b["mask"])
        opt.zero_grad()
        (lg + lc).backward()
        opt.step()
        first = first or (lg.item(), lc.item())
        last = (lg.item(), lc.item())
    assert last[0] < 0.85 * first[0] and last[1] < 0.85 * first[1], (first, last)


def test_replay_pool_mixes_fresh_and_old():
    pool = ReplayPool(size=5, seed=0)
    mk = lambda v: {"image": torch.full((2, 1), float(v))}  # noqa: E731
    out = pool.mix(mk(1), 4)
    assert out["image"].shape[0] == 2  # empty pool: only the fresh samples
    out = pool.mix(mk(2), 4)
    assert out["image"].shape[0] == 4 and (out["image"][:2] == 2).all() and (out["image"][2:] == 1).all()
    for v in range(3, 6):
        pool.mix(mk(v), 4)
    assert pool.n == 5 and set(pool.store["image"].flatten().tolist()) <= {3.0, 4.0, 5.0}
