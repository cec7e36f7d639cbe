"""Data files never run code, and odd or broken image files are read right or named."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
from PIL import Image

from sgm_lightning.config import load_config
from sgm_lightning.datasets import CIFAR10Batches, ImageFiles, image_dataset, load_image
from sgm_lightning.safe_pickle import load_data_pickle


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def write_cifar(root, evil_marker=None):
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), "labels": [1, 2, 3, 4]}
        if evil_marker is not None and name == "data_batch_3":
            batch["labels"] = _Evil(evil_marker)
        with open(base / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
    return base


def test_a_malicious_cifar_batch_is_refused_and_runs_no_code(tmp_path):
    marker = tmp_path / "pwned"
    base = write_cifar(tmp_path / "data", evil_marker=marker)
    with open(base / "data_batch_3", "rb") as f:  # the file really would run code through pickle.load
        assert b"system" in f.read()
    cfg = load_config("cifar10_ncsnpp", [f"data.root={tmp_path / 'data'}"])
    with pytest.raises(ValueError, match=r"data_batch_3: refers to (posix|os)\.system"):
        image_dataset(cfg.data)
    assert not marker.exists()


def test_real_cifar_batches_load_through_the_allow_list(tmp_path):
    base = write_cifar(tmp_path / "data")
    ds = CIFAR10Batches(tmp_path / "data", train=True)
    assert len(ds) == 20
    raw = load_data_pickle(base / "data_batch_2")
    img, label = ds[5]  # item 1 of batch 2, channel-first bytes -> HWC pixels
    assert label == 2
    assert np.array_equal(np.asarray(img), raw["data"][1].reshape(3, 32, 32).transpose(1, 2, 0))


def test_sixteen_bit_grey_pngs_are_scaled_by_their_bit_depth(tmp_path):
    path = tmp_path / "g16.png"
    Image.fromarray(np.full((4, 4), 30000, np.uint16)).save(path)
    assert Image.open(path).mode.startswith("I")
    px = np.asarray(load_image(path))
    assert px.shape == (4, 4, 3)
    assert int(px[0, 0, 0]) == round(30000 / 65535 * 255)  # 117, not 255 (white)


def _folder(tmp_path):
    root = tmp_path / "imgs"
    root.mkdir()
    for i in range(3):
        Image.fromarray(np.full((8, 8, 3), 50 * (i + 1), np.uint8)).save(root / f"{i}.png")
    return root


def test_a_non_image_file_fails_by_default_and_is_skipped_on_request(tmp_path):
    root = _folder(tmp_path)
    (root / "notes.png").write_text("not an image")
    with pytest.raises(ValueError, match=r"notes\.png is not a readable image.*data\.bad_images=skip"):
        ImageFiles(root)
    with pytest.warns(UserWarning, match="left out 1 unreadable"):
        ds = ImageFiles(root, bad_images="skip")
    assert [p.name for p in ds.files] == ["0.png", "1.png", "2.png"]


def test_a_truncated_image_is_named_or_skipped_when_read(tmp_path):
    root = _folder(tmp_path)
    big = root / "3.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(big)
    big.write_bytes(big.read_bytes()[: big.stat().st_size // 2])
    ds = ImageFiles(root)  # the header is fine; the pixels are not
    with pytest.raises(ValueError, match=r"3\.png is not a readable image"):
        ds[3]
    skip = ImageFiles(root, bad_images="skip")
    assert np.asarray(skip[3])[0, 0, 0] == 50  # the next readable file (0.png) instead


def test_unwritable_output_folders_are_named(tmp_path, monkeypatch):
    from sgm_lightning import paths

    monkeypatch.setattr(paths.os, "access", lambda p, mode: False)  # a read-only disk (root ignores chmod)
    with pytest.raises(ValueError, match=rf"checkpoint.dir: cannot create files in {tmp_path} \(read-only"):
        paths.check_output_dir(tmp_path / "new" / "run", "checkpoint.dir")


def test_an_error_from_a_dataloader_worker_is_reported_as_its_own_last_line():
    from sgm_lightning.errors import one_line

    wrapped = ValueError("Caught ValueError in DataLoader worker process 0.\nOriginal Traceback (most recent call "
                         "last):\n  File \"x.py\", line 1, in f\nValueError: data.root: imgs/3.png is not a "
                         "readable image (OSError: truncated)\n")
    assert one_line(wrapped) == "data.root: imgs/3.png is not a readable image (OSError: truncated)"
    assert one_line(OSError(28, "No space left on device", "/ck/last.ckpt")) == \
        "[Errno 28] No space left on device: '/ck/last.ckpt'"
