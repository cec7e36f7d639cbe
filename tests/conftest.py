"""Suite-wide settings: offline logging, no network, deterministic small thread counts."""

import os

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("WANDB_DISABLE_GIT", "true")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("PYTHONHASHSEED", "0")


import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def one_thread():
    """Every test runs with one intra-op thread (restored afterwards): the tensors are small,
    and two threads on a busy 2-core machine spin-wait (measured 10x slower)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture()
def toy_ddp_config(tmp_path):
    """A factory for the toy-mixture config run by the DDP tests: 2 forked CPU processes (gloo),
    a small MLP, CSV logs and checkpoints under ``tmp_path``."""
    from sgm_lightning.config import load_config

    def make(*, max_steps: int, val_check_interval: int, n_points: int, val_batch_size: int):
        return load_config("toy_mixture", [
            "trainer.strategy=ddp_fork", "trainer.devices=2", "trainer.accelerator=cpu",
            f"trainer.max_steps={max_steps}", f"trainer.val_check_interval={val_check_interval}",
            "trainer.num_sanity_val_steps=0", "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false", f"data.n_points={n_points}", "data.batch_size=32",
            f"data.val_batch_size={val_batch_size}", "model.kwargs.hidden=32", "logging.logger=csv",
            f"logging.save_dir={tmp_path}/runs", f"checkpoint.dir={tmp_path}/ck", "name=ddp",
            "sample.at_end=false", "num_threads=1",
        ])

    return make
