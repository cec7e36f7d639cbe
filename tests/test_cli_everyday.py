"""The command line behaves like its peers: options and ``key=value`` overrides in any order,
``--version``, ``--print-config``, ``python -m sgm_lightning``, a quiet run whose progress bar
counts steps, and runs that are never clobbered (a reused ``name=`` is refused in one line,
``resume=last`` continues, the default name never collides)."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from sgm_lightning.cli import build_parser, main, parse
from sgm_lightning.config import config_from_yaml, load_config, to_yaml
from sgm_lightning.training import train
from sgm_lightning.training.run import resolve_run

TINY = ["logging.logger=none", "sample.at_end=false", "data.n_points=400", "data.batch_size=32",
        "data.val_batch_size=64", "model.kwargs.hidden=16", "trainer.val_check_interval=2",
        "trainer.num_sanity_val_steps=0", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
        "num_threads=1", "optim.warmup_steps=1"]


@pytest.fixture()
def fresh_run_name(monkeypatch):
    monkeypatch.delenv("SGM_RUN_NAME", raising=False)  # train() sets it for its DDP workers


def step_of(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])


# --- parsing -----------------------------------------------------------------------------------
@pytest.mark.parametrize("argv", [
    ["train", "trainer.max_steps=1", "--config", "toy_2d", "logging.logger=none"],
    ["train", "--config", "toy_2d", "trainer.max_steps=1", "logging.logger=none"],
    ["train", "trainer.max_steps=1", "logging.logger=none", "--config", "toy_2d"],
])
def test_options_and_overrides_mix_in_any_order(argv):
    args = parse(build_parser(), argv)
    assert args.config == "toy_2d" and args.overrides == ["trainer.max_steps=1", "logging.logger=none"]


def test_later_overrides_win_in_command_line_order():
    args = parse(build_parser(), ["train", "a.b=1", "--config", "toy_2d", "a.b=2", "--print-config", "a.b=3"])
    assert args.overrides == ["a.b=1", "a.b=2", "a.b=3"] and args.print_config is True


def test_fid_overrides_mix_too():
    args = parse(build_parser(), ["fid", "data.image_size=8", "--ref-config", "digits", "data.centered=false"])
    assert args.ref_config == "digits" and args.overrides == ["data.image_size=8", "data.centered=false"]


def test_unknown_options_are_still_refused(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--config", "toy_2d", "--bogus", "a=1"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == "sgm train: error: unrecognized arguments: --bogus"
    with pytest.raises(SystemExit) as exc:  # a subcommand without overrides takes no key=value
        main(["export", "--ckpt", "a", "--out", "b", "x=1"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == "sgm export: error: unrecognized arguments: x=1"


def test_version_via_python_m():
    out = subprocess.run([sys.executable, "-m", "sgm_lightning", "--version"], capture_output=True, text=True,
                         timeout=600)  # ~3 s idle (imports torch); generous for a loaded CI machine
    assert out.returncode == 0
    assert out.stdout == f"sgm {importlib.metadata.version('sgm-lightning')}\n"


def test_print_config_prints_the_validated_config_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rc = main(["train", "trainer.max_steps=1", "--print-config", "--config", "toy_2d", "logging.logger=none",
               f"checkpoint.dir={tmp_path}/ck"])
    assert rc == 0
    text = capsys.readouterr().out
    printed = yaml.safe_load(text)
    assert printed["trainer"]["max_steps"] == 1 and printed["logging"]["logger"] == "none"
    assert printed["data"]["dataset"] == "moons" and printed["sde"]["sigma_max"] == 6.0  # from toy_2d.yaml
    expected = load_config("toy_2d", ["trainer.max_steps=1", "logging.logger=none", f"checkpoint.dir={tmp_path}/ck"])
    assert text == to_yaml(expected) and to_yaml(config_from_yaml(text)) == text  # the resolved config, reloadable
    assert list(tmp_path.iterdir()) == []  # no run folder, no logs
    # validated: a bad key is the usual one-line error, exit 2
    assert main(["train", "--print-config", "optim.lrr=1"]) == 2
    assert "optim.lrr" in capsys.readouterr().err


# --- a quiet run -------------------------------------------------------------------------------
def test_a_fresh_run_is_quiet_and_its_bar_counts_steps(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_SILENT", "SGM_RUN_NAME")}
    env.update(WANDB_MODE="offline", HOME=str(tmp_path), COLUMNS="120")
    out = subprocess.run(
        [sys.executable, "-m", "sgm_lightning", "train", "trainer.max_steps=3", "--config", "toy_2d",
         "logging.logger=wandb", f"logging.save_dir={tmp_path}/logs", f"checkpoint.dir={tmp_path}/ck",
         "data.n_points=400", "data.batch_size=32", "data.val_batch_size=64", "model.kwargs.hidden=16",
         "trainer.val_check_interval=2", "trainer.num_sanity_val_steps=0", "sample.at_end=false", "num_threads=1"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-2000:]
    assert "litlogger" not in text
    assert "anonymous" not in text
    assert "exists and is not empty" not in text
    assert "Epoch" not in text and "/-2" not in text
    bar = [line for line in text.splitlines() if line.startswith("train step")]
    assert bar and " 3/3 " in bar[-1], text[-2000:]  # 400 points / 32 = 11 batches an epoch: steps, not batches


# --- runs are never clobbered ------------------------------------------------------------------
def test_a_reused_name_is_refused_in_one_line_and_resume_last_continues(tmp_path, fresh_run_name, capsys):
    ck = tmp_path / "ck"
    cfg = load_config("toy_2d", [*TINY, f"checkpoint.dir={ck}", "name=r", "trainer.max_steps=2"])
    train(cfg, config_name="toy_2d")
    os.environ.pop("SGM_RUN_NAME", None)
    run = ck / "r"
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    rc = main(["train", "--config", "toy_2d", *TINY, f"checkpoint.dir={ck}", "name=r", "trainer.max_steps=4"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert err[0] == (f"sgm train: error: name: {run} already holds a run (last.ckpt, config.yaml); continue it "
                      "with resume=last name=r, or choose another name=")
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir()} == before  # nothing touched
    assert step_of(run / "last.ckpt") == 2
    rc = main(["train", "--config", "toy_2d", *TINY, f"checkpoint.dir={ck}", "name=r", "resume=last",
               "trainer.max_steps=4"])
    assert rc == 0 and step_of(run / "last.ckpt") == 4


def test_a_folder_with_only_a_config_is_a_run_too(tmp_path, fresh_run_name, capsys):
    run = tmp_path / "ck" / "crashed"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("seed: 0\n")  # e.g. a run that failed before its first checkpoint
    rc = main(["train", "--config", "toy_2d", *TINY, "logging.logger=csv", f"logging.save_dir={tmp_path}/logs",
               f"checkpoint.dir={tmp_path}/ck", "name=crashed", "trainer.max_steps=1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == [f"sgm train: error: name: {run} already holds a run (config.yaml); continue it "
                               "with resume=last name=crashed, or choose another name="]
    assert (run / "config.yaml").read_text() == "seed: 0\n" and not (tmp_path / "logs").exists()  # before any work


def test_the_default_name_never_collides(tmp_path, fresh_run_name, monkeypatch):
    import time

    monkeypatch.setattr(time, "strftime", lambda fmt, *a: "20260101-000000")
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    cfg = load_config("toy_2d", [*TINY, f"checkpoint.dir={tmp_path}/ck"])
    names = []
    for _ in range(3):  # three runs started in the same second
        name, run_dir, ckpt = resolve_run(cfg, "toy_2d")
        assert ckpt is None and not run_dir.exists()
        run_dir.mkdir(parents=True)
        names.append(name)
    assert names == ["toy_2d-20260101-000000", "toy_2d-20260101-000000-2", "toy_2d-20260101-000000-3"]


def test_a_model_kwarg_that_breaks_the_network_is_named(tmp_path, fresh_run_name, capsys):
    rc = main(["train", "model.kwargs.nf=15", "logging.logger=none", f"checkpoint.dir={tmp_path}/ck"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == ["sgm train: error: model.kwargs: the ncsnpp network cannot be built with nf=15: "
                               "num_channels (30) must be divisible by num_groups (7)"]
    assert not (tmp_path / "ck").exists()  # before any file is written
