"""Lightning DDP with 2 CPU processes (gloo, forked): training keeps the ranks' weights and EMA identical."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from sgm_lightning.training import train


class RankDump(pl.Callback):
    """Each rank writes its final raw weights, EMA shadow and a digest of the batches it saw."""

    def __init__(self, out_dir):
        self.out_dir, self.seen = str(out_dir), []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.seen.append(batch.sum().item())

    def on_train_end(self, trainer, pl_module):
        torch.save({"params": [p.detach().clone() for p in pl_module.net.parameters()],
                    "ema": [s.clone() for s in pl_module.ema.shadow], "seen": self.seen,
                    "world": trainer.world_size, "steps": trainer.global_step},
                   f"{self.out_dir}/rank{trainer.global_rank}.pt")


@pytest.mark.ddp
def test_ddp_two_cpu_processes_keep_identical_weights(tmp_path, toy_ddp_config):
    cfg = toy_ddp_config(max_steps=6, val_check_interval=3, n_points=600, val_batch_size=60)
    res = train(cfg, "toy_mixture", callbacks=[RankDump(tmp_path)])  # conftest restores the thread count
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2 and r0["steps"] == r1["steps"] == 6
    assert r0["seen"] != r1["seen"]  # the ranks trained on different shards of the data
    for a, b in zip(r0["params"] + r0["ema"], r1["params"] + r1["ema"]):
        assert torch.equal(a, b)
    for a, b in zip(res.module.net.parameters(), r0["params"]):  # rank 0's weights come back to the launcher
        assert torch.equal(a, b)
    pl.seed_everything(cfg.seed)  # train() seeds like this before building the network
    init = list(type(res.module)(cfg).net.parameters())
    assert not any(torch.equal(a, b) for a, b in zip(init, r0["params"]))  # every tensor trained
    assert (tmp_path / "ck" / "ddp" / "last.ckpt").is_file()
