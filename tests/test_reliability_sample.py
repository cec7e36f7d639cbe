"""``sgm sample`` never replaces files it did not write, never counts a broken file as done,
checks its arguments before writing, refuses a second writer and writes files with the umask."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from sgm_lightning.cli import main
from sgm_lightning.paths import FolderLock


@pytest.fixture(scope="module")
def model_dir(tiny_export) -> Path:
    return tiny_export("sample.steps=2")


def sample(model_dir, out, capsys, *extra) -> tuple[int, str]:
    rc = main(["sample", "--ckpt", str(model_dir), "--out", str(out), "--no-progress", "--n", "2", *extra])
    return rc, capsys.readouterr().err.strip()


@pytest.mark.parametrize("name", ["samples.npz", "grid.png"])
def test_outputs_it_did_not_write_are_never_replaced(model_dir, tmp_path, capsys, name):
    out = tmp_path / "o"
    out.mkdir()
    (out / name).write_bytes(b"someone else's work")
    rc, err = sample(model_dir, out, capsys)
    assert rc == 2 and name in err and "--overwrite" in err and "\n" not in err
    assert (out / name).read_bytes() == b"someone else's work"
    assert sorted(p.name for p in out.iterdir()) == [name]  # nothing else written either
    rc, _ = sample(model_dir, out, capsys, "--overwrite")
    assert rc == 0 and (out / name).read_bytes() != b"someone else's work"


def test_seeds_outside_the_documented_range_are_refused(model_dir, tmp_path, capsys):
    rc, err = sample(model_dir, tmp_path / "s", capsys, "--seed", str(2**70))
    assert rc == 2 and "--seed: must be in [0, 2**63)" in err
    assert not (tmp_path / "s").exists()


def test_a_second_writer_into_the_same_folder_is_refused(model_dir, tmp_path, capsys):
    out = tmp_path / "l"
    with FolderLock(out, "--out"):
        rc, err = sample(model_dir, out, capsys)
    assert rc == 2 and f"another process is writing into {out}" in err
    assert not (out / "png").exists()
    assert sample(model_dir, out, capsys)[0] == 0  # released: the next run goes ahead


def test_outputs_get_the_users_umask(model_dir, tmp_path, capsys):
    umask = os.umask(0)
    os.umask(umask)
    assert sample(model_dir, tmp_path / "m", capsys)[0] == 0
    expect = 0o666 & ~umask  # as open(path, "w") would make them (0644 under the usual umask 022)
    for f in [tmp_path / "m" / "grid.png", tmp_path / "m" / "png" / "000000.png", tmp_path / "m" / "samples.npz"]:
        assert f.stat().st_mode & 0o777 == expect, f


def test_rejected_runs_leave_nothing_that_blocks_the_next(model_dir, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    rc, err = sample(model_dir, blocker, capsys)
    assert rc == 2 and f"--out: {blocker} is a file" in err
    if not torch.cuda.is_available():
        rc, err = sample(model_dir, tmp_path / "g", capsys, "--accelerator", "gpu")
        assert rc == 2 and "--accelerator" in err and not (tmp_path / "g").exists()
    # a settings file with no samples (a run that stopped before drawing) does not block other settings
    out = tmp_path / "stale"
    (out / "png").mkdir(parents=True)
    (out / "sample_config.yaml").write_text("seed: 99\nsampler: pc\n")
    assert sample(model_dir, out, capsys, "--seed", "3")[0] == 0


def test_empty_or_truncated_pngs_are_never_counted_as_done(model_dir, tmp_path, capsys):
    out = tmp_path / "t"
    assert sample(model_dir, out, capsys, "--n", "3")[0] == 0
    good = (out / "png" / "000001.png").read_bytes()
    (out / "png" / "000001.png").write_bytes(b"")            # zero bytes: redrawn
    assert sample(model_dir, out, capsys, "--n", "3")[0] == 0
    assert (out / "png" / "000001.png").read_bytes() == good
    (out / "png" / "000002.png").write_bytes(good[:20])       # truncated: named, removed, redrawn next run
    rc, err = sample(model_dir, out, capsys, "--n", "3")
    assert rc == 2 and "000002.png: not a complete PNG" in err and not (out / "png" / "000002.png").exists()
    assert sample(model_dir, out, capsys, "--n", "3")[0] == 0
    assert np.load(out / "samples.npz")["x"].shape == (3, 8, 8, 1)


def test_more_samples_than_memory_holds_are_refused_up_front(model_dir, tmp_path, capsys):
    rc = main(["sample", "--ckpt", str(model_dir), "--out", str(tmp_path / "big"), "--n", str(10**9)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "--n: 1000000000 samples of shape (1, 8, 8) need 60 GiB" in err
    assert not (tmp_path / "big").exists()


def test_a_full_disk_while_writing_a_png_names_the_file_and_leaves_no_temp(tmp_path, monkeypatch):
    import errno

    from PIL import Image

    from sgm_lightning.images import save_png

    def full(self, fp, *a, **k):
        fp.write(b"\x89PNG partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full)
    with pytest.raises(OSError) as caught:
        save_png(tmp_path / "png" / "000007.png", np.zeros((4, 4, 1), np.uint8))
    assert str(caught.value) == f"could not write {tmp_path / 'png' / '000007.png'}: No space left on device"
    assert list((tmp_path / "png").iterdir()) == []
