"""Training data: one LightningDataModule for image datasets and toy point clouds.

Every dataset (:mod:`sgm_lightning.datasets`) yields float tensors: images ``(C, H, W)`` in
[0, 1] (centred to [-1, 1] when ``data.centered``), points ``(d,)``. Labels are dropped (the
models are unconditional). Validation items come as ``(x, index)`` so each can get its own
fixed noise.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset, TensorDataset

from ..config import POINT_DATASETS, data_shape
from ..datasets import ModelSpaceImages, image_dataset, split_indices, toy_points


def _image(item):
    """The image of a dataset item: torchvision datasets return (image, label)."""
    return item[0] if isinstance(item, (tuple, list)) else item


class Indexed(Dataset):
    """Items ``(x, i)``: validation gets a fixed noise per index ``i``."""

    def __init__(self, base: Dataset):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i):
        return _image(self.base[i]), i


class _First(Dataset):
    def __init__(self, base: Dataset):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i):
        return _image(self.base[i])


class EpochShuffle(Sampler[int]):
    """A fresh permutation each epoch that depends only on (seed, epoch): resuming at an epoch
    boundary replays exactly the data order of an uninterrupted run. Lightning calls set_epoch."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())


class SGMDataModule(pl.LightningDataModule):
    """Train/val loaders for ``cfg`` (the ``data`` section). ``seed``: the shuffling seed."""

    def __init__(self, cfg, seed: int = 0):
        super().__init__()
        self.cfg, self.seed = cfg, seed
        self.shape = data_shape(cfg)
        self.is_image = cfg.dataset not in POINT_DATASETS
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        c = self.cfg
        if self.is_image:
            full = ModelSpaceImages(image_dataset(c, train=True), c.centered)
            evalset = full if not c.random_flip else ModelSpaceImages(image_dataset(c, train=False), c.centered)
        else:
            full = evalset = _First(TensorDataset(toy_points(c.dataset, c.n_points, c.toy_noise, c.split_seed, c)))
        tr, va = split_indices(len(full), c.val_fraction, c.max_val, c.split_seed)
        self.train_set, self.val_set = Subset(full, tr), Indexed(Subset(evalset, va))

    def train_dataloader(self) -> DataLoader:
        world = getattr(getattr(self, "trainer", None), "world_size", 1) or 1
        kw = dict(batch_size=self.cfg.batch_size, num_workers=self.cfg.num_workers, drop_last=True,
                  persistent_workers=self.cfg.num_workers > 0)
        if world > 1:  # Lightning swaps in a DistributedSampler (seeded, with set_epoch)
            return DataLoader(self.train_set, shuffle=True, **kw)
        return DataLoader(self.train_set, sampler=EpochShuffle(len(self.train_set), self.seed), **kw)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.cfg.val_batch_size, shuffle=False,
                          num_workers=self.cfg.num_workers, persistent_workers=self.cfg.num_workers > 0)
