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


#: a tiny NCSN++ (1x8x8, VE, 50 levels) for the sgm sample / Python API tests, pinned so that it
#: does not follow the default config (an untrained export cannot carry model.sigma_data=auto,
#: and the PC sampler is what those tests check)
TINY_EXPORT = ["data.image_size=8", "model.preset=ncsnpp_digits", "model.kwargs.nf=8", "model.kwargs.ch_mult=[1]",
               "model.kwargs.num_res_blocks=1", "model.kwargs.attn_resolutions=[]", "sde.N=50",
               "model.precond=none", "model.sigma_data=0.5", "loss.sigma_dist=uniform_t", "loss.weighting=sigma2",
               "sample.sampler=pc", "sample.predictor=reverse_diffusion", "sample.corrector=langevin"]


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory):
    """``tiny_export(*overrides) -> folder``: that tiny NCSN++ (seed-0 weights plus 0.05 noise, so
    that its zero-initialised output layer gives a signal) exported as model.safetensors +
    config.yaml; one folder per set of overrides, shared by the session (read it, do not write it)."""
    from safetensors.torch import save_file

    from sgm_lightning.checkpoint import build_net
    from sgm_lightning.config import data_shape, load_config, to_yaml

    made: dict = {}

    def make(*overrides: str):
        if overrides not in made:
            cfg = load_config(None, [*TINY_EXPORT, *overrides])
            torch.manual_seed(0)
            net = build_net(cfg.model, data_shape(cfg.data), cfg.sde, cfg.data.centered)
            with torch.no_grad():
                for p in net.parameters():
                    p.add_(0.05 * torch.randn_like(p))
            out = tmp_path_factory.mktemp("export")
            save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(out / "model.safetensors"))
            (out / "config.yaml").write_text(to_yaml(cfg))
            made[overrides] = out
        return made[overrides]

    return make
