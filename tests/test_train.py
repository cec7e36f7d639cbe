"""`sgm train` end to end on toy data: checkpoints, EMA in validation, loading/export, exact resume, logging."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from sgm_lightning.checkpoint import export, load_model
from sgm_lightning.training import train
from sgm_lightning.config import load_config


def toy_cfg(tmp_path: Path, *overrides: str):
    return load_config("toy_mixture", [
        f"checkpoint.dir={tmp_path}/ck", f"logging.save_dir={tmp_path}/runs", "logging.logger=csv",
        "sample.at_end=false", "data.n_points=1200", "data.val_batch_size=120", "data.batch_size=64",
        "model.kwargs.hidden=64", "optim.warmup_steps=5", "logging.log_every_n_steps=1",
        "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", *overrides,
    ])


def csv_metrics(run_root: Path) -> list[dict]:
    (path,) = run_root.rglob("metrics.csv")
    with open(path) as f:
        return list(csv.DictReader(f))


def test_toy_run_checkpoints_ema_validation_and_export(tmp_path):
    cfg = toy_cfg(tmp_path, "name=toy", "trainer.max_steps=40", "trainer.val_check_interval=20",
                  "trainer.num_sanity_val_steps=0", "optim.lr=3e-3")
    res = train(cfg, "toy_mixture")
    run = tmp_path / "ck" / "toy"
    assert res.run_dir == run and (run / "config.yaml").is_file() and (run / "last.ckpt").is_file()
    assert len(list(run.glob("step*.ckpt"))) == 2  # best-k (k=2) by val/loss
    rows = csv_metrics(tmp_path / "runs")
    keys = {k for r in rows for k, v in r.items() if v}
    for k in ("train/loss", "train/lr", "train/grad_norm", "train/ema_decay", "train/images_per_sec", "val/loss"):
        assert k in keys, k
    assert sum(k.startswith("val_by_sigma/") for k in keys) == 8
    val = [float(r["val/loss"]) for r in rows if r.get("val/loss")]
    assert len(val) == 2 and val[1] < val[0]  # it learns
    # EMA: decay followed score_sde's warm-up; after 40 updates the formula gives 41/50
    assert res.module.ema.num_updates == 40
    assert res.module.ema.last_decay == pytest.approx(41 / 50)
    # the checkpoint loads strictly with the EMA weights, not the raw ones
    m = load_model(run / "last.ckpt")
    shadow = dict(zip([n for n, _ in res.module.net.named_parameters()], res.module.ema.shadow))
    for name, p in m.net.named_parameters():
        assert torch.equal(p, shadow[name]) and not torch.equal(p, res.module.net.get_parameter(name))
    assert m.step == 40 and m.shape == (2,) and not m.net.training
    # validation ran on the EMA weights: recompute val/loss with the loaded EMA net and the same fixed noise
    from sgm_lightning.training import ScoreModule

    ema_module = ScoreModule(cfg, net=m.net)
    dm = res.trainer.datamodule
    total, count = 0.0, 0
    from sgm_lightning.training.module import VAL_NOISE_SEED
    from sgm_lightning.rng import rand, randn, sample_generators

    for x0, idx in dm.val_dataloader():
        gens = sample_generators(VAL_NOISE_SEED, idx)
        u, z = rand((len(idx),), gens), randn(x0.shape, gens)
        with torch.no_grad():
            total += ema_module.loss_terms(x0, u=u, z=z)[0].sum().item()
        count += len(idx)
    assert total / count == pytest.approx(val[1], rel=1e-5)
    # export: safetensors + config.yaml, loads to the same network
    out = export(run / "last.ckpt", tmp_path / "export")
    m2 = load_model(out)
    assert all(torch.equal(a, b) for a, b in zip(m.net.state_dict().values(), m2.net.state_dict().values()))
    x, t = torch.randn(5, 2), torch.rand(5) * 0.9 + 0.1
    assert torch.equal(m.score_fn()(x, t), m2.score_fn()(x, t))


def test_resume_at_epoch_boundary_is_exact(tmp_path):
    common = ["trainer.max_steps=-1", "trainer.val_check_interval=null", "trainer.check_val_every_n_epoch=1",
              "data.n_points=400", "trainer.num_sanity_val_steps=0", "optim.schedule=constant"]
    straight = train(toy_cfg(tmp_path / "a", *common, "trainer.max_epochs=2", "name=straight"), "toy")
    first = train(toy_cfg(tmp_path / "b", *common, "trainer.max_epochs=1", "name=split"), "toy")
    steps_per_epoch = first.trainer.global_step
    assert steps_per_epoch == 5  # 360 training points, batch 64, drop_last
    resumed = train(toy_cfg(tmp_path / "b", *common, "trainer.max_epochs=2", "resume=last", "name=split"), "toy")
    assert resumed.trainer.global_step == straight.trainer.global_step == 2 * steps_per_epoch
    for a, b in zip(straight.module.net.parameters(), resumed.module.net.parameters()):
        assert torch.equal(a, b)
    for a, b in zip(straight.module.ema.shadow, resumed.module.ema.shadow):
        assert torch.equal(a, b)
    assert resumed.module.ema.num_updates == 10
    lr = lambda r: r.trainer.optimizers[0].param_groups[0]["lr"]  # noqa: E731
    assert lr(straight) == lr(resumed)


def test_wandb_offline_run_directory_has_the_logged_keys(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no_netrc"))
    monkeypatch.delenv("WANDB_MODE", raising=False)
    cfg = toy_cfg(tmp_path, "logging.logger=wandb", "name=wb", "trainer.max_steps=6", "trainer.val_check_interval=6",
                  "trainer.num_sanity_val_steps=0")
    train(cfg, "toy_mixture")
    runs = list((tmp_path / "runs" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    # wandb >= 0.2x keeps history in the run's binary log (protobuf; keys are stored as UTF-8)
    (log,) = runs[0].glob("run-*.wandb")
    data = log.read_bytes()
    for k in ("train/loss", "train/lr", "train/grad_norm", "train/ema_decay", "train/images_per_sec", "val/loss",
              "val_by_sigma/00_sigma_", "sigma_max"):
        assert k.encode() in data, k


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        load_model(tmp_path / "missing.ckpt")
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_model(bad)
    plain = tmp_path / "plain.ckpt"
    torch.save({"state_dict": {}}, plain)
    with pytest.raises(ValueError, match="not an sgm-lightning checkpoint"):
        load_model(plain)
    res = train(toy_cfg(tmp_path, "name=e", "trainer.max_steps=2", "trainer.num_sanity_val_steps=0",
                        "trainer.val_check_interval=2"), "toy")
    out = export(res.run_dir / "last.ckpt", tmp_path / "exp")
    text = (out / "config.yaml").read_text()
    (out / "config.yaml").write_text(text.replace("hidden: 64", "hidden: 32"))
    with pytest.raises(ValueError, match="do not match"):
        load_model(out)
    (out / "config.yaml").unlink()
    with pytest.raises(FileNotFoundError, match="config.yaml"):
        load_model(out)
    trunc = tmp_path / "trunc.ckpt"
    trunc.write_bytes((res.run_dir / "last.ckpt").read_bytes()[:500])
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_model(trunc)


def test_cli_reports_bad_input_in_one_line(capsys, tmp_path):
    from sgm_lightning.cli import main

    assert main(["train", "optim.lrr=1"]) == 2
    assert "optim.lrr" in capsys.readouterr().err
    assert main(["train", "--config", "toy_mixture", f"checkpoint.dir={tmp_path}", "resume=last"]) == 2
    assert "resume=last" in capsys.readouterr().err
    assert main(["train", "model.kwargs.bogus=3", "sample.at_end=false"]) == 2
    assert "bogus" in capsys.readouterr().err


def test_final_samples_come_from_the_ema_network(tmp_path):
    """The end-of-run grid is drawn from the EMA weights: resampling the saved checkpoint reproduces it."""
    from sgm_lightning.sampling import draw_samples, sampler_settings

    cfg = toy_cfg(tmp_path, "name=s", "trainer.max_steps=8", "trainer.val_check_interval=8",
                  "trainer.num_sanity_val_steps=0", "sample.at_end=true", "sample.n_samples=48",
                  "sample.batch_size=48", "sample.steps=10", "sample.seed=3")
    res = train(cfg, "toy_mixture")
    assert res.grid == res.run_dir / "samples.png" and res.grid.stat().st_size > 0
    cb = next(c for c in res.trainer.callbacks if type(c).__name__ == "SamplingCallback")
    m = load_model(res.run_dir / "last.ckpt")
    name, options = sampler_settings(cfg.sample)
    x, nfe = draw_samples(m.score_fn(), m.sde, m.shape, list(range(48)), seed=3, sampler=name, options=options,
                          exact=False)
    assert nfe == 21  # 10 corrector + 10 predictor steps + the final noise-free (denoise) step
    assert torch.allclose(cb.samples, x, atol=1e-5)
    with res.module.ema_scope():  # and not from the raw weights
        raw = [p.clone() for p in res.module.net.parameters()]
    assert any(not torch.equal(a, b) for a, b in zip(raw, res.module.net.parameters()))


def test_learning_rate_schedule_warmup_and_cosine():
    from types import SimpleNamespace

    from sgm_lightning.training.module import lr_factor

    o = SimpleNamespace(warmup_steps=10, schedule="cosine", min_lr_ratio=0.1)
    assert lr_factor(0, o, 110) == pytest.approx(0.1)  # linear warm-up: (step + 1) / warmup
    assert lr_factor(9, o, 110) == pytest.approx(1.0)
    assert lr_factor(60, o, 110) == pytest.approx(0.1 + 0.9 * 0.5)  # half way down the cosine
    assert lr_factor(110, o, 110) == pytest.approx(0.1) and lr_factor(500, o, 110) == pytest.approx(0.1)
    o.schedule = "constant"
    assert lr_factor(4, o, None) == pytest.approx(0.5) and lr_factor(10_000, o, None) == 1.0
