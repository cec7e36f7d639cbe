"""Training never reports success on a broken run and never loses or overwrites work:
NaN stops the run (exit 1, nothing non-finite kept), one last.ckpt that is always the newest
state, resume keeps the run's config, Ctrl-C saves last.ckpt, checkpoints never run code."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sgm_lightning.cli import main
from sgm_lightning.training import train
from sgm_lightning.config import load_config

#: the installed ``sgm`` script of this interpreter (``python -m sgm_lightning`` where there is none)
SGM = [str(Path(sys.executable).parent / "sgm")] if (Path(sys.executable).parent / "sgm").is_file() \
    else [sys.executable, "-m", "sgm_lightning"]
TINY = ["--config", "toy_2d", "logging.logger=none", "sample.at_end=false", "data.n_points=400",
        "data.batch_size=32", "data.val_batch_size=64", "model.kwargs.hidden=16", "trainer.val_check_interval=2",
        "trainer.num_sanity_val_steps=0", "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false", "num_threads=1", "optim.warmup_steps=1"]


def cli(tmp_path: Path, *args: str, env=None, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([*SGM, "train", *TINY, f"checkpoint.dir={tmp_path}/ck", *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})


def step_of(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])


@pytest.fixture()
def fresh_run_name(monkeypatch):
    monkeypatch.delenv("SGM_RUN_NAME", raising=False)  # train() sets it for its DDP workers


def api(tmp_path: Path, *overrides: str):
    return load_config("toy_2d", [*TINY[2:], f"checkpoint.dir={tmp_path}/ck", *overrides])


def test_a_diverging_run_exits_1_names_the_step_and_keeps_no_checkpoint(tmp_path, fresh_run_name, capsys):
    rc = main(["train", *TINY, f"checkpoint.dir={tmp_path}/ck", "optim.lr=1e6", "optim.grad_clip=null", "name=nan",
               "trainer.max_steps=40"])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert rc == 1, last
    assert "training diverged at step" in last and "optim.lr=1e+06" in last and "not finite" in last
    run = tmp_path / "ck" / "nan"
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml"]  # no lossnan best, no last.ckpt
    assert not (run / "samples.png").exists()


def test_resuming_twice_keeps_one_last_ckpt_at_the_newest_step(tmp_path, fresh_run_name):
    train(api(tmp_path, "name=r", "trainer.max_steps=2"), config_name="toy_2d")
    run = tmp_path / "ck" / "r"
    original = (run / "config.yaml").read_text()
    (run / ".last.ckpt.x1y2.tmp").write_bytes(b"half a checkpoint")  # a run killed while saving
    for steps in (4, 6):
        train(api(tmp_path, "name=r", "resume=last", f"trainer.max_steps={steps}"), config_name="toy_2d",
              resume_overrides=["name", "resume", "trainer.max_steps"])
        assert step_of(run / "last.ckpt") == steps
    assert not list(run.glob("last-v*.ckpt")) and not list(run.glob(".*.tmp"))
    assert (run / "config.yaml").read_text() == original  # never overwritten by a resume
    assert sorted(p.name for p in run.glob("config-resume-*.yaml")) == ["config-resume-1.yaml", "config-resume-2.yaml"]
    assert "max_steps: 6" in (run / "config-resume-2.yaml").read_text()


def test_resuming_keeps_the_csv_metrics_of_the_first_part(tmp_path, fresh_run_name):
    logs = ["logging.logger=csv", f"logging.save_dir={tmp_path}/runs", "logging.log_every_n_steps=1"]
    train(api(tmp_path, "name=m", "trainer.max_steps=2", *logs), config_name="toy_2d")
    first = tmp_path / "runs" / "csv" / "toy_2d" / "m" / "metrics.csv"
    before = first.read_text()
    assert "train/loss" in before
    train(api(tmp_path, "name=m", "resume=last", "trainer.max_steps=4", *logs), config_name="toy_2d",
          resume_overrides=["name", "resume", "trainer.max_steps"])
    assert first.read_text() == before  # Lightning's CSV logger would have deleted it
    assert (tmp_path / "runs" / "csv" / "toy_2d" / "m-resume-1" / "metrics.csv").is_file()


def test_resume_refuses_changes_that_would_make_it_another_run(tmp_path, fresh_run_name, capsys):
    train(api(tmp_path, "name=r", "trainer.max_steps=2"), config_name="toy_2d")
    before = sorted(p.name for p in (tmp_path / "ck" / "r").iterdir())
    for override, key in (("sde.sigma_max=50", "sde.sigma_max"), ("loss.weighting=likelihood", "loss.weighting"),
                          ("model.kwargs.hidden=32", "model.kwargs.hidden")):
        rc = main(["train", *TINY, f"checkpoint.dir={tmp_path}/ck", "name=r", "resume=last", override])
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert rc == 2 and err.startswith(f"sgm train: error: {key}: cannot change when resuming"), err
    assert sorted(p.name for p in (tmp_path / "ck" / "r").iterdir()) == before
    # keys given on the command line are the only ones applied: --config may even be another one
    rc = main(["train", "--config", "digits", f"checkpoint.dir={tmp_path}/ck", "name=r", "resume=last",
               "trainer.max_steps=3", "logging.logger=none", "sample.at_end=false",
               "trainer.enable_progress_bar=false"])
    assert rc == 0, capsys.readouterr().err
    assert step_of(tmp_path / "ck" / "r" / "last.ckpt") == 3


def test_a_second_writer_into_a_run_folder_is_refused(tmp_path, fresh_run_name, capsys):
    from sgm_lightning.paths import FolderLock

    train(api(tmp_path, "name=r", "trainer.max_steps=2"), config_name="toy_2d")
    run = tmp_path / "ck" / "r"
    with FolderLock(run, "name"):  # e.g. the same resume started twice
        rc = main(["train", *TINY, f"checkpoint.dir={tmp_path}/ck", "name=r", "resume=last", "trainer.max_steps=4"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert rc == 2 and f"name: another process is writing into {run}" in err
    assert step_of(run / "last.ckpt") == 2 and not (run / "config-resume-1.yaml").exists()


def test_a_new_run_never_reuses_a_run_folder(tmp_path, fresh_run_name, capsys):
    train(api(tmp_path, "name=r", "trainer.max_steps=2"), config_name="toy_2d")
    os.environ.pop("SGM_RUN_NAME", None)
    rc = main(["train", *TINY, f"checkpoint.dir={tmp_path}/ck", "name=r", "trainer.max_steps=2"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert rc == 2 and "already holds a run" in err and "resume=last name=r" in err


def test_a_truncated_or_malicious_resume_checkpoint_is_one_line_and_runs_no_code(tmp_path, capsys, monkeypatch):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    bad = tmp_path / "evil" / "last.ckpt"
    bad.parent.mkdir()
    torch.save({"state_dict": {}, "sgm_config": "", "x": Evil()}, bad)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # torch's default would unpickle it
    rc = main(["train", *TINY, f"checkpoint.dir={tmp_path}/ck", f"resume={bad}"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and str(bad) in err and "\n" not in err
    assert not marker.exists()
    cut = tmp_path / "cut" / "last.ckpt"
    cut.parent.mkdir()
    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1000)}, "sgm_config": "seed: 0\n"}, good)
    cut.write_bytes(good.read_bytes()[:-700])
    rc = main(["train", *TINY, f"checkpoint.dir={tmp_path}/ck", f"resume={cut}"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and f"resume: {cut} is not a readable checkpoint" in err
    assert not (tmp_path / "ck").exists()


def test_ctrl_c_saves_last_ckpt_and_exits_130(tmp_path):
    proc = subprocess.Popen([*SGM, "train", *TINY, f"checkpoint.dir={tmp_path}/ck", "name=c",
                             "trainer.max_steps=1000000", "trainer.val_check_interval=5"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = tmp_path / "ck" / "c" / "step0000005-loss"
    deadline = time.time() + 120
    while time.time() < deadline and not list(first.parent.glob("step0000005-*.ckpt")) and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()[1][-2000:]
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "continue with: sgm train resume=last name=c" in err.strip().splitlines()[-1]
    last = first.parent / "last.ckpt"
    assert step_of(last) > 5  # the steps after the last periodic checkpoint are kept
    assert not list(first.parent.glob(".*.tmp"))


def test_a_full_disk_names_the_checkpoint_and_leaves_no_partial_file(tmp_path, monkeypatch):
    from sgm_lightning.training.guards import AtomicCheckpointIO

    io = AtomicCheckpointIO()
    target = tmp_path / "run" / "last.ckpt"
    io.save_checkpoint({"w": torch.ones(3)}, target)
    before = target.read_bytes()

    def full(obj, f, *a, **k):
        f.write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(OSError) as caught:
        io.save_checkpoint({"w": torch.zeros(3)}, target)
    assert str(caught.value).startswith(f"could not write checkpoint {target}: [enforce fail")
    assert target.read_bytes() == before  # the previous last.ckpt is intact
    assert sorted(p.name for p in target.parent.iterdir()) == ["last.ckpt"]
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


def test_export_writes_files_with_the_umask_and_refuses_a_file_as_out(tmp_path, fresh_run_name, capsys):
    train(api(tmp_path, "name=e", "trainer.max_steps=2"), config_name="toy_2d")
    ckpt = tmp_path / "ck" / "e" / "last.ckpt"
    (tmp_path / "file").write_text("x")
    assert main(["export", "--ckpt", str(ckpt), "--out", str(tmp_path / "file")]) == 2
    assert f"--out: {tmp_path / 'file'} is a file" in capsys.readouterr().err
    assert main(["export", "--ckpt", str(ckpt), "--out", str(tmp_path / "exp")]) == 0
    umask = os.umask(0)
    os.umask(umask)
    for name in ("model.safetensors", "config.yaml"):
        assert (tmp_path / "exp" / name).stat().st_mode & 0o777 == 0o666 & ~umask, name
    from sgm_lightning.checkpoint import export  # the Python API too, not only `sgm export`

    export(ckpt, tmp_path / "api")
    for name in ("model.safetensors", "config.yaml"):
        assert (tmp_path / "api" / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


def test_the_guard_names_each_kind_of_non_finite_state():
    from types import SimpleNamespace

    from sgm_lightning.errors import RunFailed
    from sgm_lightning.training.guards import NonFiniteGuard

    guard = NonFiniteGuard(load_config("toy_2d", ["sde.sigma_max=1e6", "optim.grad_clip=null"]))
    net = torch.nn.Linear(2, 2)
    trainer = SimpleNamespace(global_step=17, sanity_checking=False, callback_metrics={})
    guard.on_train_batch_end(trainer, net, {"loss": torch.tensor(1.0)}, None, 0)  # all finite: nothing
    with pytest.raises(RunFailed, match=r"step 17: the training loss \(inf\).*grad_clip=null.*sigma_max=1e\+06"):
        guard.on_train_batch_end(trainer, net, {"loss": torch.tensor(float("inf"))}, None, 0)
    with torch.no_grad():
        net.weight[0, 1] = float("nan")
    with pytest.raises(RunFailed, match=r"step 17: a network weight is not finite"):
        guard.on_train_batch_end(trainer, net, {"loss": torch.tensor(1.0)}, None, 0)
    trainer.callback_metrics["val/loss"] = torch.tensor(float("nan"))
    with pytest.raises(RunFailed, match=r"step 17: the validation loss \(nan\) is not finite"):
        guard.on_validation_end(trainer, net)


def test_kill_9_while_checkpointing_every_step_leaves_a_resumable_last_ckpt(tmp_path, fresh_run_name):
    from sgm_lightning.training.guards import read_checkpoint

    proc = subprocess.Popen([*SGM, "train", *TINY, f"checkpoint.dir={tmp_path}/ck", "name=k",
                             "trainer.max_steps=1000000", "checkpoint.every_n_train_steps=1",
                             "checkpoint.save_top_k=1"],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    last = tmp_path / "ck" / "k" / "last.ckpt"
    deadline = time.time() + 120
    while time.time() < deadline and not last.exists() and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)  # a few saves later: the kill lands in or between checkpoint writes
    proc.kill()
    proc.wait(timeout=60)
    step = int(read_checkpoint(last)["global_step"])  # complete, whatever the kill interrupted
    assert step >= 1
    res = train(api(tmp_path, "name=k", "resume=last", f"trainer.max_steps={step + 2}"), config_name="toy_2d",
                resume_overrides=["name", "resume", "trainer.max_steps"])
    assert res.trainer.global_step == step + 2
    assert not list(last.parent.glob(".*.tmp")) and not list(last.parent.glob("last-v*"))


def test_nan_samples_from_a_diverging_sampler_fail_the_run_instead_of_a_black_grid(tmp_path, fresh_run_name, capsys):
    tiny_images = ["data.image_size=8", "model.kwargs.nf=8", "model.kwargs.ch_mult=[1]",
                   "model.kwargs.num_res_blocks=1", "model.kwargs.attn_resolutions=[]", "sde.N=5",
                   "data.batch_size=16", "data.val_batch_size=64"]
    rc = main(["train", *tiny_images, f"checkpoint.dir={tmp_path}/ck", "name=g", "logging.logger=none",
               "trainer.max_steps=1", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
               "sample.sampler=ald", "sample.step_lr=1e30", "sample.n_steps_each=1", "sample.n_samples=2"])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert rc == 1 and "at step 1 the sampled images are broken" in last and "2 of 2 images hold NaN" in last
    assert not (tmp_path / "ck" / "g" / "samples.png").exists()
    assert step_of(tmp_path / "ck" / "g" / "last.ckpt") == 1  # the finite training state is kept


def test_train_restores_the_run_name_variable_it_publishes_for_ddp_workers(tmp_path, monkeypatch):
    """train() sets SGM_RUN_NAME while it runs (the DDP workers it launches read it) and puts the
    old value back afterwards, so a later run in the process (the lab's E7) needs no clean-up."""
    monkeypatch.delenv("SGM_RUN_NAME", raising=False)
    train(api(tmp_path, "name=e1", "trainer.max_steps=1"), config_name="toy_2d")
    assert "SGM_RUN_NAME" not in os.environ
    monkeypatch.setenv("SGM_RUN_NAME", "outer")
    train(api(tmp_path, "name=e2", "trainer.max_steps=1"), config_name="toy_2d")
    assert os.environ["SGM_RUN_NAME"] == "outer"
