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
    from pix2vertex_addon.training.export_weights import export

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
    assert rep["masked_output"]["depth_mean"] >= 0 and 0 <= rep["mask_coverage"] <= 1
    _check_compare(tmp_path / "eval", tmp_path)

    from pix2vertex_addon.training.model_card import write_card

    card = write_card(tmp_path / "weights", tmp_path / "eval", "test", "smoke")
    assert cfg["sha256"]["geometry"] in card and "| mask IoU |" in card


def _check_compare(eval_dir, tmp_path):
    """The paired comparison: zero against itself; a known per-image change is found, with a
    confidence interval around it; evaluations of different image sets are refused."""
    from pix2vertex_addon.training.evaluate import PER_IMAGE_FILE, compare, main

    per = dict(np.load(eval_dir / PER_IMAGE_FILE))
    assert len(per["iou"]) == 3 and np.all(np.isfinite(per["d_mean"]))
    same = compare(eval_dir, eval_dir)
    assert all(r["diff"] == 0 and r["ci95"] == [0.0, 0.0] and not r["significant"] for r in same["rows"])
    better = tmp_path / "better"
    better.mkdir()
    per_b = dict(per)
    per_b["d_mean"] = per["d_mean"] - np.array([1.0, 2.0, 3.0])
    np.savez(better / PER_IMAGE_FILE, **per_b)
    row = {r["metric"]: r for r in compare(eval_dir, better)["rows"]}["depth mean error (%)"]
    assert row["diff"] == pytest.approx(-2.0) and -3.0 <= row["ci95"][0] <= row["ci95"][1] <= -1.0
    assert row["significant"] and row["b_better_share"] == 1.0
    assert main(["--compare", str(eval_dir), str(better), "--out", str(tmp_path / "cmp")]) == 0
    assert "| depth mean error (%) |" in (tmp_path / "cmp" / "comparison.md").read_text()
    per_b["iou"] = per["iou"][:2]
    np.savez(better / PER_IMAGE_FILE, **{k: v[:2] if v.ndim else v for k, v in per_b.items()})
    with pytest.raises(ValueError, match="not the same images"):
        compare(eval_dir, better)
    per_b = dict(per)
    per_b["split"] = np.array("val")
    np.savez(better / PER_IMAGE_FILE, **per_b)
    with pytest.raises(ValueError, match=r"\(val split\)"):
        compare(eval_dir, better)


def test_init_from_exported_weights_and_time_limit(tmp_path):
    """GPU chunks: a run starts from exported fp16 weights (no optimiser state travels) and stops
    itself, checkpointed and validated, when --max-minutes is reached."""
    from pix2vertex_addon.training.export_weights import export

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


def test_data_offset_draws_other_samples(tmp_path, capsys):
    """--data-offset N starts the training stream at sample N: the same offset trains identically,
    another one on other samples; continuing exported weights from offset 0 warns."""

    def weights(name, **kw):
        train(_opts(tmp_path, name=name, **kw), progress=False)
        return torch.load(tmp_path / name / "latest.pt", weights_only=True)["nets"]["geometry"]["head.5.weight"]

    a, b, c = weights("a"), weights("b"), weights("c", data_offset=1000)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert json.loads((tmp_path / "c" / "opts.json").read_text())["data_offset"] == 1000
    from pix2vertex_addon.training.export_weights import export

    export(tmp_path / "a", tmp_path / "w")
    capsys.readouterr()
    weights("d", init_weights=str(tmp_path / "w"))
    assert "--data-offset" in capsys.readouterr().err
    weights("e", init_weights=str(tmp_path / "w"), data_offset=1000)
    assert "--data-offset" not in capsys.readouterr().err


def test_resume_without_checkpoint_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        train(_opts(tmp_path), resume=True, progress=False)


def test_training_reduces_loss_on_a_fixed_batch(tmp_path):
    """A few steps on the same fake batch must lower the geometry and correspondence losses."""
    from pix2vertex_addon.core.nets import define_net
    from pix2vertex_addon.training.data import FakeFaces
    from pix2vertex_addon.training.losses import correspondence_loss, geometry_loss

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


def test_learning_curve_fit_and_extrapolation(tmp_path, capsys):
    """scripts/learning_curve.py recovers a known power law and where it reaches each goal."""
    import importlib.util

    from conftest import REPO

    spec = importlib.util.spec_from_file_location("learning_curve", REPO / "scripts" / "learning_curve.py")
    lc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lc)
    amp, k = lc.fit_power_law([1e5, 4e5, 1.6e6], [8.0, 4.0, 2.0])
    assert k == pytest.approx(0.5) and amp == pytest.approx(8.0 * 1e5**0.5)
    assert lc.samples_for(amp, k, 1.0) == pytest.approx(6.4e6)
    assert lc.samples_for(amp, -0.1, 1.0) == float("inf")
    points = []
    for i, n in enumerate((1e5, 4e5)):  # every metric halves per 4x samples
        d = tmp_path / f"e{i}"
        d.mkdir()
        f = 0.5**i
        (d / "metrics.json").write_text(
            json.dumps({"depth_mean": 8 * f, "depth_top10": 20 * f, "corr_median_mm": 4 * f, "mask_iou": 1 - 0.2 * f})
        )
        points += ["--point", f"p{i}:{d}:{int(n)}"]
    assert lc.main(points + ["--samples-per-minute", "1000"]) == 0
    rows = {r.split("|")[1].strip(): r for r in capsys.readouterr().out.splitlines()[2:]}
    # depth mean 4 at 4e5 -> 2 at 1.6e6: 4x the last point, 1600 minutes
    assert "| 0.500 | 2 | 1.6e+06 | 4 | 1.6e+03 |" in rows["depth mean (%)"]
    assert "| 0.500 | 0.95 | 1.6e+06 | 4 |" in rows["mask IoU"]  # 1 - IoU: 0.2, 0.1 -> 0.05


def test_average_weights_script(tmp_path):
    """scripts/average_weights.py: every float tensor is the mean of the inputs' (fp16 in, fp16
    out); the result loads in the Predictor and records its inputs; other architectures are refused."""
    import importlib.util
    from pathlib import Path

    from safetensors.torch import load_file

    from pix2vertex_addon.core.predict import Predictor
    from pix2vertex_addon.training.export_weights import export

    spec = importlib.util.spec_from_file_location(
        "average_weights", Path(__file__).resolve().parents[1] / "scripts" / "average_weights.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for name, seed in (("a", 0), ("b", 1)):
        train(_opts(tmp_path, name=name, seed=seed), progress=False)
        export(tmp_path / name, tmp_path / f"w{name}")
    assert mod.main(["--weights", str(tmp_path / "wa"), str(tmp_path / "wb"), "--out", str(tmp_path / "avg")]) == 0
    a, b, m = (load_file(str(tmp_path / d / "geometry.safetensors")) for d in ("wa", "wb", "avg"))
    key = "head.5.weight"
    assert not torch.equal(a[key], b[key])
    torch.testing.assert_close(m[key].float(), (a[key].float() + b[key].float()) / 2, atol=1e-3, rtol=0)
    cfg = json.loads((tmp_path / "avg" / "config.json").read_text())
    assert [s["weights"] for s in cfg["source"]["averaged"]] == [str(tmp_path / "wa"), str(tmp_path / "wb")]
    assert Predictor(tmp_path / "avg", threads=1).predict(np.zeros((32, 32, 3), np.uint8))["xyz"].shape == (32, 32, 3)
    train(_opts(tmp_path, name="c", max_channels=8), progress=False)
    export(tmp_path / "c", tmp_path / "wc")
    with pytest.raises(SystemExit, match="different architectures"):
        mod.main(["--weights", str(tmp_path / "wa"), str(tmp_path / "wc"), "--out", str(tmp_path / "bad")])


@pytest.mark.slow
def test_gpu_chunk_script(tmp_path):
    """scripts/gpu_chunk.sh (run on the device machine): trains from the init weights on the given
    data offset and leaves the exported weights, the log and the options in $OUT."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from pix2vertex_addon.training.export_weights import export

    train(_opts(tmp_path, name="init"), progress=False)
    export(tmp_path / "init", tmp_path / "w")
    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, INIT=str(tmp_path / "w"), OUT=str(tmp_path / "out"), PY=sys.executable,
               RUNS=str(tmp_path / "runs"), WORKERS="0")
    tiny = ["--data", "fake", "--resolution", "32", "--ngf", "8", "--max-channels", "16", "--batch-size", "2",
            "--fresh-per-step", "1", "--pool-size", "4", "--iters", "2", "--val-every", "1", "--val-size", "2",
            "--threads", "1"]
    r = subprocess.run(["bash", str(repo / "scripts" / "gpu_chunk.sh"), "c1", "1000", "5", *tiny],
                       cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr + r.stdout
    out = tmp_path / "out"
    cfg = json.loads((out / "c1" / "config.json").read_text())
    assert cfg["source"]["iter"] == 2 and (out / "c1" / "geometry.safetensors").stat().st_size > 0
    assert json.loads((out / "c1.opts.json").read_text())["data_offset"] == 1000
    assert json.loads((out / "c1.opts.json").read_text())["init_weights"] == str(tmp_path / "w")
    assert '"event": "val"' in (out / "c1.jsonl").read_text()
    r = subprocess.run(["bash", str(repo / "scripts" / "gpu_chunk.sh"), "c2"], cwd=repo, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "data offset" in r.stderr


@pytest.mark.slow
def test_eval_reconstruction_script(tmp_path):
    """scripts/eval_reconstruction.py: the similarity fit recovers a known transform; with the true
    maps in place of the networks the fitted template lies within the registration's accuracy of
    the true vertices (docs/reference/geometry.md: under 1 mm), with the networks it is worse but a face."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "eval_reconstruction", Path(__file__).resolve().parents[1] / "scripts" / "eval_reconstruction.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rng = np.random.default_rng(0)
    src = rng.normal(size=(50, 3))
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))
    s, r, t = mod.similarity_fit(src, 1.3 * src @ q.T + [1.0, 2.0, 3.0])
    assert s == pytest.approx(1.3) and np.allclose(r, q) and np.allclose(t, [1, 2, 3])

    assert mod.main(["--n", "2", "--true-maps", "--out", str(tmp_path / "t"), "--quiet"]) == 0
    true = json.loads((tmp_path / "t" / "metrics.json").read_text())
    assert true["failed"] == 0 and true["v_median"] < 1.0 and 0.2 < true["visible_share"] < 0.9
    assert mod.main(["--n", "2", "--out", str(tmp_path / "n"), "--quiet", "--rotations"]) == 0
    net = json.loads((tmp_path / "n" / "metrics.json").read_text())
    assert true["v_mean"] < net["v_mean"] < 15.0
    assert mod.compare(tmp_path / "t", tmp_path / "n").count("| vertex error") == 2


@pytest.mark.filterwarnings("ignore:Detected call of")  # the schedule alone, no optimiser steps
def test_trainer_schedule_is_the_linear_decay(tmp_path):
    """train()'s LambdaLR gives lr * lr_factor(it) at step it (constant, then linear to 0)."""
    from pix2vertex_addon.training.train import Trainer, lr_factor

    opts = _opts(tmp_path, iters=10, lr_decay_start=4)
    tr = Trainer(opts)
    seen = []
    for _ in range(10):
        seen.append(tr.optims["geometry"].param_groups[0]["lr"])
        for s in tr.scheds.values():
            s.step()
    assert seen == pytest.approx([opts.lr * lr_factor(opts, it) for it in range(10)])
    assert seen[:5] == pytest.approx([opts.lr] * 5) and seen[-1] == pytest.approx(opts.lr / 6)
