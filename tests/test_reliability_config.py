"""Bad configs are one line that names the key (or file, line and column), exit 2, before any output."""

from __future__ import annotations

from pathlib import Path

import pytest

from sgm_lightning.cli import main
from sgm_lightning.config import config_from_yaml, load_config, to_yaml

TOY = ["logging.logger=none", "sample.at_end=false"]


def run_train(tmp_path: Path, capsys, *args: str) -> tuple[int, str]:
    rc = main(["train", *args, f"checkpoint.dir={tmp_path}/ck", f"logging.save_dir={tmp_path}/runs"])
    err = capsys.readouterr().err.strip()
    return rc, err


def assert_one_line(rc: int, err: str, *names: str) -> None:
    assert rc == 2
    assert "\n" not in err and "Traceback" not in err, err
    for name in names:
        assert name in err, err


def test_yaml_syntax_error_names_file_line_and_column(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  dataset: moons\n  batch_size: [1, 2\nsde: {}\n")
    rc, err = run_train(tmp_path, capsys, "--config", str(bad))
    assert_one_line(rc, err, str(bad), "line 4, column 4")
    assert not (tmp_path / "ck").exists()


def test_python_yaml_tags_are_refused_and_run_nothing(tmp_path, capsys):
    marker = tmp_path / "pwned"
    bad = tmp_path / "tag.yaml"
    bad.write_text(f'seed: !!python/object/apply:os.system ["touch {marker}"]\n')
    rc, err = run_train(tmp_path, capsys, "--config", str(bad))
    assert_one_line(rc, err, str(bad), "line 1, column 7", "python/object/apply")
    assert not marker.exists()
    with pytest.raises(ValueError, match="the saved config: not valid config YAML at line 1"):
        config_from_yaml(f'seed: !!python/object/apply:os.system ["touch {marker}"]\n')
    assert not marker.exists()


@pytest.mark.parametrize("override, key", [
    ("sde.sigma_max=.inf", "sde.sigma_max"),
    ("optim.lr=.nan", "optim.lr"),
    ("optim.betas=[0.9,.inf]", "optim.betas[1]"),
    ("trainer.devices=0", "trainer.devices"),
    ("name=../../escape", "name"),
    ("name=/tmp/abs", "name"),
    ("sample.predictor=bogus", "sample.predictor"),
    ("sample.corrector=bogus", "sample.corrector"),
    ("sample.sampler=bogus", "sample.sampler"),
    ("sample.method=bogus", "sample.method"),
    ("sample.n_samples=100000000", "sample.n_samples"),
    ("sample.seed=-1", "sample.seed"),
    ("seed=9999999999999", "seed"),
    ("data.bad_images=maybe", "data.bad_images"),
    ("optim.implementation=turbo", "optim.implementation"),
    ("trainer.limit_train_batches=0", "trainer.limit_train_batches"),
])
def test_impossible_values_name_their_key(tmp_path, capsys, override, key):
    rc, err = run_train(tmp_path, capsys, "--config", "toy_2d", *TOY, override)
    assert_one_line(rc, err, f"{key}:")
    assert not (tmp_path / "ck").exists() and not (tmp_path / "runs").exists()


def test_an_arch_that_contradicts_the_preset_is_refused_and_the_preset_arch_is_recorded(tmp_path, capsys):
    rc, err = run_train(tmp_path, capsys, "model.arch=mlp", *TOY)
    assert_one_line(rc, err, "model.arch:", "ncsnpp_digits")
    cfg = load_config(None, [])
    assert cfg.model.arch == "ncsnpp"  # the saved config says what is trained
    old = to_yaml(cfg).replace("arch: ncsnpp", "arch: mlp")  # checkpoints written before still load
    assert config_from_yaml(old).model.arch == "ncsnpp"


def test_a_point_dataset_with_the_image_network_is_refused(tmp_path, capsys):
    rc, err = run_train(tmp_path, capsys, "data.dataset=moons", *TOY)  # the digits config: NCSN++
    assert_one_line(rc, err, "model.preset:", "data.dataset=moons is a point dataset")
    assert not (tmp_path / "ck").exists()


def test_an_image_dataset_with_the_point_mlp_is_refused(tmp_path, capsys):
    rc, err = run_train(tmp_path, capsys, "--config", "toy_2d", "data.dataset=digits", *TOY)
    assert_one_line(rc, err, "model.arch:", "image dataset")


def test_output_folders_that_are_files_are_named_before_anything_is_written(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    rc = main(["train", "--config", "toy_2d", *TOY, f"checkpoint.dir={blocker}"])
    assert_one_line(rc, capsys.readouterr().err.strip(), "checkpoint.dir:", str(blocker), "is a file")
    rc = main(["train", "--config", "toy_2d", "logging.logger=csv", "sample.at_end=false",
               f"checkpoint.dir={tmp_path}/ck", f"logging.save_dir={blocker}/sub"])
    assert_one_line(rc, capsys.readouterr().err.strip(), "logging.save_dir:", str(blocker))
    assert not (tmp_path / "ck").exists()


def test_gpu_accelerator_without_a_gpu_is_one_line(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    rc, err = run_train(tmp_path, capsys, "--config", "toy_2d", *TOY, "trainer.accelerator=gpu")
    assert_one_line(rc, err, "trainer.accelerator:", "no CUDA GPU")
    assert not (tmp_path / "ck").exists()


def test_too_large_a_batch_names_the_sizes_and_writes_nothing(tmp_path, capsys):
    rc, err = run_train(tmp_path, capsys, "--config", "toy_2d", *TOY, "data.n_points=200",
                        "data.batch_size=1000000000")
    assert_one_line(rc, err, "data.batch_size: 1000000000", "180 training items")
    assert not (tmp_path / "ck").exists()


def test_an_image_folder_smaller_than_one_batch_is_refused(tmp_path, capsys):
    from PIL import Image
    import numpy as np

    root = tmp_path / "imgs"
    root.mkdir()
    for i in range(5):
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(root / f"{i}.png")
    rc, err = run_train(tmp_path, capsys, "data.dataset=image_folder", f"data.root={root}", "data.image_size=8",
                        "data.batch_size=8", *TOY)
    assert_one_line(rc, err, "data.batch_size: 8", "4 training items")
    assert not (tmp_path / "ck").exists()
