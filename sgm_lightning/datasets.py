"""The datasets a ``data`` config section names, as plain torch datasets (no Lightning; the
LightningDataModule that loads them for training is :mod:`sgm_lightning.training.data`).

Images come as ``(C, H, W)`` floats in [0, 1] (plus labels where the source has them), points
as ``(d,)``.

Image sources, read from ``data.root`` (mnist and fashion_mnist through torchvision, the others
with :mod:`sgm_lightning.image_files`):

=============== ====================================================================
digits          scikit-learn's bundled 8x8 digits (1,797), bilinearly upsampled; offline
mnist           <root>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]
fashion_mnist   <root>/FashionMNIST/raw/... (same idx files)
cifar10         <root>/cifar-10-batches-py/data_batch_{1..5}, test_batch (python pickles)
celeba          <root>/celeba/{img_align_celeba/*.jpg, list_eval_partition.txt}; centre crop 140
lsun            <root>/<category>_train_lmdb (read with the ``lmdb`` package)
image_folder    any folder tree of .png/.jpg/... under root
=============== ====================================================================

Point sources: ``mixture`` (the analytic GaussianMixture of ``data.mixture``, so its exact
noised score is known), ``moons``, ``swiss_roll``, ``checkerboard``, ``rings``.
"""

from __future__ import annotations

import gzip
import math
import shutil
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from .config import POINT_DATASETS
from .image_files import _HOW, CelebAImages, CIFAR10Batches, ImageFiles, LSUNImages, load_image  # noqa: F401


# --- point clouds -------------------------------------------------------------------------
def build_mixture(data_cfg):
    """The exact :class:`~sgm_lightning.analytic.GaussianMixture` of a ``data`` config section."""
    from .analytic import GaussianMixture

    m = data_cfg.mixture
    return GaussianMixture(list(m.weights), [list(mu) for mu in m.means], list(m.stds))


def toy_points(name: str, n: int, noise: float = 0.05, seed: int = 0, data_cfg=None) -> torch.Tensor:
    """``n`` points ``(n, d)`` (float32) of a toy distribution, a pure function of ``seed``."""
    g = torch.Generator().manual_seed(seed)
    if name == "mixture":
        return build_mixture(data_cfg).sample(n, g, dtype=torch.float32)
    if name == "moons":
        from sklearn.datasets import make_moons

        x, _ = make_moons(n, noise=noise, random_state=seed)
        x = (x - np.array([0.5, 0.25])) * 2.0
    elif name == "swiss_roll":
        from sklearn.datasets import make_swiss_roll

        x3, _ = make_swiss_roll(n, noise=noise * 10, random_state=seed)
        x = x3[:, [0, 2]] / 5.0
    elif name == "checkerboard":  # 4x4 board on [-2, 2]^2, the black squares
        u = torch.rand(n, 2, generator=g) * 4 - 2
        cell = torch.floor(u) + 2
        flip = (cell.sum(1) % 2 == 1).to(u.dtype)
        u[:, 0] = u[:, 0] - flip * torch.where(u[:, 0] >= 0, torch.ones(n), -torch.ones(n))
        x = u.numpy()
    elif name == "rings":  # three concentric circles of radii 0.5, 1.25, 2
        r = torch.tensor([0.5, 1.25, 2.0])[torch.randint(0, 3, (n,), generator=g)]
        a = torch.rand(n, generator=g) * 2 * math.pi
        x = (torch.stack([r * a.cos(), r * a.sin()], 1) + noise * torch.randn(n, 2, generator=g)).numpy()
    else:
        raise ValueError(f"data.dataset: unknown toy {name!r}; choose one of {list(POINT_DATASETS)}")
    return torch.as_tensor(np.asarray(x), dtype=torch.float32)


# --- images ------------------------------------------------------------------------------
def digits_images(image_size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1,797 8x8 digits as ``(1797, 1, S, S)`` floats in [0, 1], and labels ``(1797,)``."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.as_tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = torch.nn.functional.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    return x.clamp_(0.0, 1.0), torch.as_tensor(d.target)


class ModelSpaceImages(Dataset):
    """Drops labels from a torchvision dataset and applies the [0,1] -> model-space scaling."""

    def __init__(self, base, centered: bool):
        self.base, self.centered = base, centered

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i):
        item = self.base[i]
        x = item[0] if isinstance(item, (tuple, list)) else item
        return x * 2.0 - 1.0 if self.centered else x


def _transform(cfg, train: bool, grayscale: bool):
    from torchvision import transforms as T

    steps = []
    if cfg.dataset == "celeba":
        steps.append(T.CenterCrop(140))  # score_sde's CelebA crop
    steps.append(T.Resize(cfg.image_size, antialias=True))
    steps.append(T.CenterCrop(cfg.image_size))
    if grayscale:
        steps.append(T.Grayscale(1))
    if train and cfg.random_flip:
        steps.append(T.RandomHorizontalFlip())
    steps.append(T.ToTensor())
    return T.Compose(steps)


def _mnist_like(cfg, cls_name: str, transform):
    import torchvision.datasets as tvd

    cls = getattr(tvd, cls_name)
    raw = Path(cfg.root) / cls.__name__ / "raw"
    for gz in raw.glob("*-ubyte.gz") if raw.is_dir() else []:  # torchvision reads the unpacked idx files
        out = gz.with_suffix("")
        if not out.exists():
            with gzip.open(gz, "rb") as fin, open(out, "wb") as fout:
                shutil.copyfileobj(fin, fout)
    try:
        return cls(cfg.root, train=True, download=cfg.download, transform=transform)
    except RuntimeError as err:
        raise FileNotFoundError(
            f"data.root: {cfg.dataset} not found in {str(raw)!r} "
            f"(looked for train/t10k idx files, optionally .gz); {_HOW}"
        ) from err


def _cifar10(cfg, transform):
    where = Path(cfg.root) / CIFAR10Batches.FOLDER
    if cfg.download and not where.exists():  # the official archive, md5-checked, unpacked only
        from torchvision.datasets import CIFAR10
        from torchvision.datasets.utils import download_and_extract_archive

        download_and_extract_archive(CIFAR10.url, cfg.root, filename=CIFAR10.filename, md5=CIFAR10.tgz_md5)
    return CIFAR10Batches(cfg.root, train=True, transform=transform)


def _celeba(cfg, transform):
    base = Path(cfg.root) / "celeba"
    if cfg.download and not (base / "list_eval_partition.txt").is_file():
        from torchvision.datasets import CelebA

        CelebA(cfg.root, split="train", download=True)  # fetches and md5-checks the official files
    return CelebAImages(cfg.root, "train", transform)


def _lsun(cfg, transform):
    db = Path(cfg.root) / f"{cfg.lsun_category}_train_lmdb"
    if not (db / "data.mdb").is_file():
        raise FileNotFoundError(f"data.root: lsun looked for {str(db / 'data.mdb')!r}; download it with LSUN's "
                                "download.py (no automatic download) and set data.root / data.lsun_category")
    try:
        import lmdb  # noqa: F401
    except ImportError as err:
        raise ValueError("data.dataset: lsun needs the lmdb package (pip install lmdb), "
                         "or export the images to a folder and use data.dataset=image_folder") from err
    return LSUNImages(db, transform)


def image_dataset(cfg, train: bool = True) -> Dataset:
    """The training split of an image dataset, items ``(C, H, W)`` in [0, 1] (plus labels)."""
    name = cfg.dataset
    if name == "digits":
        return TensorDataset(digits_images(cfg.image_size)[0])
    if name in ("mnist", "fashion_mnist"):
        tf = _transform(cfg, train, grayscale=False)
        return _mnist_like(cfg, "MNIST" if name == "mnist" else "FashionMNIST", tf)
    if name == "cifar10":
        return _cifar10(cfg, _transform(cfg, train, False))
    if name == "celeba":
        return _celeba(cfg, _transform(cfg, train, False))
    if name == "lsun":
        return _lsun(cfg, _transform(cfg, train, False))
    if name == "image_folder":
        return ImageFiles(cfg.root, transform=_transform(cfg, train, grayscale=False),
                          bad_images=cfg.get("bad_images", "fail"))
    raise ValueError(f"data.dataset: {name!r} is not an image dataset")


# --- splitting ----------------------------------------------------------------------------
def split_indices(n: int, val_fraction: float, max_val: int, seed: int) -> tuple[list[int], list[int]]:
    """A fixed (train, val) index split of ``n`` items."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = max(1, min(max_val, int(round(n * val_fraction))))
    return sorted(perm[n_val:]), sorted(perm[:n_val])
