"""Image files in the on-disk formats of the datasets, read without surprises.

* :class:`ImageFiles`: every image under a folder; unreadable files fail naming the file, or are
  skipped (``data.bad_images``); :func:`load_image` scales 16-bit greyscale by its bit depth.
* :class:`CIFAR10Batches`: CIFAR-10's python batches through a restricted unpickler
  (:mod:`sgm_lightning.safe_pickle`), so a data file cannot run code.
* :class:`CelebAImages`, :class:`LSUNImages`: CelebA's aligned JPEGs and LSUN's lmdb databases.

Each returns PIL images (with a label where the format has one); :mod:`sgm_lightning.data`
adds the transforms and the train/val split.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

_HOW = "put the files there, set data.root=..., or set data.download=true (mnist, fashion_mnist, cifar10, celeba)"


class ImageFiles(Dataset):
    """Every image file in a folder tree (no class sub-folders needed), sorted by path.

    Each file's header is read up front: a file that is not an image stops the run naming it
    (``bad_images="fail"``, the default) or is left out with a warning (``"skip"``). A file
    whose pixels turn out unreadable later (truncated) is handled the same way when it is read
    (``skip`` serves the next readable file instead). 16-bit greyscale files are scaled by their
    bit depth (see :func:`load_image`).
    """

    def __init__(self, root: str | Path, transform=None, bad_images: str = "fail"):
        from torchvision.datasets.folder import IMG_EXTENSIONS

        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"data.root: image_folder looked in {str(self.root)!r}, which is not a folder")
        files = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in IMG_EXTENSIONS and p.is_file())
        if not files:
            raise FileNotFoundError(f"data.root: no image files ({', '.join(IMG_EXTENSIONS)}) under {str(self.root)!r}")
        self.bad_images, self.transform = bad_images, transform
        bad = [(p, err) for p, err in ((p, _header_error(p)) for p in files) if err is not None]
        if bad and bad_images == "fail":
            p, err = bad[0]
            raise ValueError(f"data.root: {p} is not a readable image ({err}); {len(bad)} such file(s) under "
                             f"{self.root}; remove them or set data.bad_images=skip")
        if bad:
            import warnings

            warnings.warn(f"data.bad_images=skip: left out {len(bad)} unreadable file(s), e.g. {bad[0][0]}",
                          stacklevel=2)
        skip = {p for p, _ in bad}
        self.files = [p for p in files if p not in skip]
        if not self.files:
            raise FileNotFoundError(f"data.root: no readable image files under {str(self.root)!r}")

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i):
        for j in range(len(self.files)):
            path = self.files[(i + j) % len(self.files)]
            try:
                img = load_image(path)
            except ValueError:
                if self.bad_images == "fail":
                    raise
                continue
            return self.transform(img) if self.transform else img
        raise ValueError(f"data.root: no readable image files under {self.root}")


def _header_error(path: Path) -> str | None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.size  # noqa: B018 - the header is parsed on open
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        return f"{type(err).__name__}: {err}"
    return None


def load_image(path: str | Path):
    """An image file as an 8-bit RGB PIL image. 16-bit greyscale (PNG ``I;16`` / ``I``) is scaled
    by its bit depth (v / 65535, so 30000 stays 0.46, not white); float or 32-bit integer images
    are refused. Unreadable or truncated files raise ValueError naming the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            mode, fmt = img.mode, img.format
            if mode.startswith("I;16") or (mode == "I" and fmt == "PNG"):  # PNG ints are at most 16 bits
                arr = np.asarray(img).astype(np.float64)
                return Image.fromarray(np.round(arr / 65535.0 * 255.0).clip(0, 255).astype(np.uint8)).convert("RGB")
            if mode in ("I", "F"):
                raise ValueError(f"data.root: {path} holds {'float' if mode == 'F' else '32-bit integer'} pixels "
                                 f"(mode {mode}); convert it to an 8- or 16-bit PNG/JPEG")
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(f"data.root: {path} is not a readable image ({type(err).__name__}: {err}); "
                         "remove it or set data.bad_images=skip") from None


class CIFAR10Batches(Dataset):
    """CIFAR-10's python batches (``data_batch_1..5`` or ``test_batch``) under
    ``<root>/cifar-10-batches-py``, read with :func:`~sgm_lightning.safe_pickle.load_data_pickle`
    (torchvision's loader calls ``pickle.load``, which runs whatever code a file holds). Items
    ``(PIL image, label)`` as torchvision's CIFAR10; presence is checked, not md5, so subsets work."""

    FOLDER = "cifar-10-batches-py"
    TRAIN = [f"data_batch_{i}" for i in range(1, 6)]

    def __init__(self, root: str | Path, train: bool = True, transform=None):
        from .safe_pickle import load_data_pickle

        base = Path(root) / self.FOLDER
        names = self.TRAIN if train else ["test_batch"]
        missing = [n for n in names if not (base / n).is_file()]
        if missing:
            raise FileNotFoundError(f"data.root: cifar10 not found in {str(base)!r} (missing {', '.join(missing)}; "
                                    f"needs data_batch_1..5, test_batch); {_HOW}")
        data, labels = [], []
        for n in names:
            entry = load_data_pickle(base / n)
            entry = {(k.decode() if isinstance(k, bytes) else k): v for k, v in entry.items()} \
                if isinstance(entry, dict) else None
            x = None if entry is None else entry.get("data")
            if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072:
                raise ValueError(f"data.root: {base / n} is not a CIFAR-10 batch (a dict with 'data': uint8 N x 3072)")
            data.append(x)
            labels += list(entry.get("labels", entry.get("fine_labels", [0] * len(x))))
        self.data = np.concatenate(data).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        self.targets, self.transform = labels, transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i):
        from PIL import Image

        img = Image.fromarray(self.data[i])
        return (self.transform(img) if self.transform else img), self.targets[i]


class CelebAImages(Dataset):
    """CelebA's aligned faces (178x218 JPEGs) of one split of ``list_eval_partition.txt``
    (lines ``<file> <0|1|2>``: train, valid, test), read from ``<root>/celeba/``. Unlike
    torchvision's CelebA it needs no md5-checked attribute files, so copies and subsets work."""

    SPLITS = {"train": "0", "valid": "1", "test": "2"}

    def __init__(self, root: str | Path, split: str = "train", transform=None):
        base = Path(root) / "celeba"
        part, folder = base / "list_eval_partition.txt", base / "img_align_celeba"
        if not part.is_file() or not folder.is_dir():
            raise FileNotFoundError(f"data.root: celeba not found in {str(base)!r} "
                                    f"(img_align_celeba/*.jpg and list_eval_partition.txt); {_HOW}")
        rows = [line.split() for line in part.read_text().splitlines() if line.strip()]
        names = [r[0] for r in rows if r[1] == self.SPLITS[split]]
        missing = sorted(set(names) - set(os.listdir(folder)))
        if missing or not names:
            raise FileNotFoundError(f"data.root: celeba {split} split lists {len(names)} images, "
                                    f"{len(missing)} missing from {str(folder)!r} (e.g. {missing[:3]}); {_HOW}")
        self.files, self.transform = [folder / n for n in names], transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i):
        img = load_image(self.files[i])  # a truncated JPEG is named, not a PIL traceback
        return self.transform(img) if self.transform else img


class LSUNImages(Dataset):
    """One LSUN database ``<category>_train_lmdb`` (lmdb keys: image ids, values: WebP/JPEG bytes).
    Replaces torchvision's LSUN, which pickles its key list into the working directory and opens
    the database eagerly: py-lmdb refuses to open one database twice in a process (train and eval
    copies) and lmdb handles must not cross a fork (DataLoader workers), so here each process
    opens each database once, on first use."""

    _envs: dict = {}  # resolved path -> (pid, open lmdb environment)

    def __init__(self, path: str | Path, transform=None):
        self.path, self.transform = str(Path(path).resolve()), transform
        with self._env().begin() as txn:
            self.keys = list(txn.cursor().iternext(keys=True, values=False))

    def _env(self):
        import lmdb

        pid, env = self._envs.get(self.path, (None, None))
        if pid != os.getpid():
            if env is not None:  # inherited through fork: close the child's copy, open its own
                env.close()
            env = lmdb.open(self.path, readonly=True, lock=False, readahead=False, meminit=False)
            self._envs[self.path] = (os.getpid(), env)
        return env

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i):
        from PIL import Image

        with self._env().begin() as txn:
            data = txn.get(self.keys[i])
        try:
            img = Image.open(io.BytesIO(data or b"")).convert("RGB")
        except (OSError, SyntaxError, ValueError) as err:
            raise ValueError(f"data.root: {self.path}: the image under key {self.keys[i]!r} is not readable "
                             f"({type(err).__name__}: {err})") from None
        return self.transform(img) if self.transform else img
