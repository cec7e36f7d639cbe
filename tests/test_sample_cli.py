"""``sgm sample``: bitwise reproducible across devices and batch sizes, resumable, strict."""

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from sgm_lightning.cli import main


@pytest.fixture(scope="module")
def export_dir(tiny_export) -> Path:
    """A tiny NCSN++ (1x8x8, VE) exported as model.safetensors + config.yaml (conftest)."""
    return tiny_export("sample.steps=3")


def _sample(ckpt, out, *extra):
    return main(["sample", "--ckpt", str(ckpt), "--out", str(out), "--no-progress", *extra])


def test_one_device_batch_8_equals_two_devices_batch_3_bitwise(export_dir, tmp_path):
    n = "7"
    assert _sample(export_dir, tmp_path / "a", "--n", n, "--batch-size", "8", "--seed", "5") == 0
    # two CPU processes (gloo); forked here to skip re-importing everything, `sgm sample` uses ddp
    assert _sample(export_dir, tmp_path / "b", "--n", n, "--batch-size", "3", "--seed", "5", "--devices", "2",
                   "--accelerator", "cpu", "--strategy", "ddp_fork") == 0
    a, b = np.load(tmp_path / "a" / "samples.npz")["x"], np.load(tmp_path / "b" / "samples.npz")["x"]
    assert a.shape == (7, 8, 8, 1) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    for k in range(7):
        png = f"png/{k:06d}.png"
        assert (tmp_path / "a" / png).read_bytes() == (tmp_path / "b" / png).read_bytes()
    assert (tmp_path / "b" / "grid.png").is_file()
    assert len({a[k].tobytes() for k in range(7)}) == 7  # distinct samples: the seeds differ per index
    settings = yaml.safe_load((tmp_path / "b" / "sample_config.yaml").read_text())
    assert settings["options"]["norms"] == "sample" and settings["seed"] == 5 and settings["devices"] == 2


def test_resume_skips_written_indices_and_ignores_half_written_files(export_dir, tmp_path):
    out = tmp_path / "r"
    assert _sample(export_dir, out, "--n", "4", "--batch-size", "4") == 0
    full = np.load(out / "samples.npz")["x"]
    png = out / "png"
    before = {k: (png / f"{k:06d}.png").stat().st_mtime_ns for k in (0, 2)}
    (png / "000001.png").unlink()                       # killed before index 1 was written ...
    (png / ".000003.png.abc.tmp").write_bytes(b"\x89PNG half")  # ... and while index 3 was being written
    (png / "000003.png").unlink()
    (out / "samples.npz").unlink()
    assert _sample(export_dir, out, "--n", "4", "--batch-size", "2") == 0
    assert np.array_equal(np.load(out / "samples.npz")["x"], full)
    assert {k: (png / f"{k:06d}.png").stat().st_mtime_ns for k in (0, 2)} == before  # not redrawn
    assert not list(png.glob("*.tmp"))
    # asking for more extends the same run: the first 4 are unchanged
    assert _sample(export_dir, out, "--n", "5") == 0
    assert np.array_equal(np.load(out / "samples.npz")["x"][:4], full)


def test_other_settings_are_refused_unless_overwrite(export_dir, tmp_path, capsys):
    out = tmp_path / "o"
    assert _sample(export_dir, out, "--n", "2") == 0
    first = (out / "png" / "000000.png").read_bytes()
    assert _sample(export_dir, out, "--n", "2", "--seed", "1") == 2
    assert "other settings (differing: seed)" in capsys.readouterr().err
    assert (out / "png" / "000000.png").read_bytes() == first  # nothing destroyed
    assert _sample(export_dir, out, "--n", "2", "--seed", "1", "--overwrite") == 0
    assert (out / "png" / "000000.png").read_bytes() != first


@pytest.mark.parametrize("args, message", [
    (["--n", "0"], "--n: the number of samples must be >= 1"),
    (["--n", "2", "--sampler", "magic"], "sampler: unknown 'magic'"),
    (["--n", "2", "--sampler", "ald", "--snr", "0.1"], "--snr: the 'ald' sampler has no 'snr' option"),
    (["--n", "2", "--batch-size", "0"], "--batch-size"),
    (["--n", "2", "--inpaint", "x.png"], "--inpaint needs --mask"),
])
def test_bad_arguments_are_one_line_errors(export_dir, tmp_path, capsys, args, message):
    assert _sample(export_dir, tmp_path / "e", *args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "e" / "png").exists() or not list((tmp_path / "e" / "png").iterdir())


def test_missing_corrupt_and_mismatched_checkpoints(export_dir, tmp_path, capsys):
    assert _sample(tmp_path / "nope.ckpt", tmp_path / "m", "--n", "1") == 2
    assert "no such checkpoint" in capsys.readouterr().err
    (tmp_path / "bad.ckpt").write_bytes(b"garbage")
    assert _sample(tmp_path / "bad.ckpt", tmp_path / "m", "--n", "1") == 2
    assert "not a readable checkpoint" in capsys.readouterr().err
    bad = tmp_path / "mismatch"
    bad.mkdir()
    (bad / "model.safetensors").write_bytes((export_dir / "model.safetensors").read_bytes())
    (bad / "config.yaml").write_text((export_dir / "config.yaml").read_text().replace("nf: 8", "nf: 16"))
    assert _sample(bad, tmp_path / "m", "--n", "1") == 2
    assert "do not match" in capsys.readouterr().err


def test_inpainting_from_the_command_line_keeps_the_known_pixels(export_dir, tmp_path):
    from PIL import Image

    img = np.zeros((8, 8), dtype=np.uint8)
    img[:, :4] = 200
    mask = np.zeros((8, 8), dtype=np.uint8)
    mask[:, :4] = 255
    Image.fromarray(img).save(tmp_path / "img.png")
    Image.fromarray(mask).save(tmp_path / "mask.png")
    assert _sample(export_dir, tmp_path / "i", "--n", "2", "--inpaint", str(tmp_path / "img.png"),
                   "--mask", str(tmp_path / "mask.png")) == 0
    x = np.load(tmp_path / "i" / "samples.npz")["x"][..., 0]
    assert np.all(x[:, :, :4] == 200)
    assert not np.all(x[:, :, 4:] == 0)


def test_a_run_that_dies_halfway_keeps_what_it_wrote_and_the_rerun_completes_it(export_dir, tmp_path, monkeypatch):
    import sgm_lightning.training.sample_folder as cbs

    ref = tmp_path / "ref"
    assert _sample(export_dir, ref, "--n", "5", "--batch-size", "1") == 0
    real_save, calls = cbs.save_png, []

    def dying_save(path, image):
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")  # the process dies while sample 3 is being written
        calls.append(path)
        return real_save(path, image)

    monkeypatch.setattr(cbs, "save_png", dying_save)
    out = tmp_path / "killed"
    with pytest.raises((KeyboardInterrupt, SystemExit)):  # Lightning turns Ctrl-C into exit 1
        _sample(export_dir, out, "--n", "5", "--batch-size", "1")
    assert sorted(p.name for p in (out / "png").iterdir()) == ["000000.png", "000001.png", "000002.png"]
    assert not (out / "samples.npz").exists()
    monkeypatch.setattr(cbs, "save_png", real_save)
    assert _sample(export_dir, out, "--n", "5", "--batch-size", "1") == 0
    assert np.array_equal(np.load(out / "samples.npz")["x"], np.load(ref / "samples.npz")["x"])


def test_a_lightning_checkpoint_and_its_export_give_the_same_images(export_dir, tmp_path):
    from safetensors.torch import load_file

    state = load_file(str(export_dir / "model.safetensors"))
    ckpt = {"state_dict": {f"net.{k}": v for k, v in state.items()}, "global_step": 3,
            "sgm_config": (export_dir / "config.yaml").read_text()}
    torch.save(ckpt, tmp_path / "run.ckpt")
    assert _sample(tmp_path / "run.ckpt", tmp_path / "c", "--n", "2") == 0
    assert _sample(export_dir, tmp_path / "e", "--n", "2") == 0
    assert np.array_equal(np.load(tmp_path / "c" / "samples.npz")["x"], np.load(tmp_path / "e" / "samples.npz")["x"])


def test_the_same_weights_from_another_file_resume_the_same_folder(export_dir, tmp_path):
    """The folder's identity is the weights' sha256: an export with other file bytes resumes it."""
    import shutil

    from sgm_lightning.checkpoint import load_model

    twin = tmp_path / "twin"
    shutil.copytree(export_dir, twin)
    (twin / "config.yaml").write_text("# a copy\n" + (export_dir / "config.yaml").read_text())
    assert _sample(export_dir, tmp_path / "s", "--n", "2", "--seed", "1") == 0
    assert _sample(twin, tmp_path / "s", "--n", "3", "--seed", "1") == 0  # resumes: index 2 is added
    settings = yaml.safe_load((tmp_path / "s" / "sample_config.yaml").read_text())
    assert settings["weights_sha256"] == load_model(twin).weights_sha256 == load_model(export_dir).weights_sha256
    assert len(np.load(tmp_path / "s" / "samples.npz")["x"]) == 3
    # other weights are another model: refused
    other = tmp_path / "other"
    shutil.copytree(export_dir, other)
    from safetensors.torch import load_file, save_file

    w = load_file(str(other / "model.safetensors"))
    w = {k: v + 1e-3 if v.is_floating_point() else v for k, v in w.items()}
    save_file(w, str(other / "model.safetensors"))
    assert _sample(other, tmp_path / "s", "--n", "3", "--seed", "1") == 2


def test_exact_is_the_default_on_cpu_and_precision_is_a_setting(export_dir, tmp_path):
    from sgm_lightning.commands.sample import exact_default

    assert exact_default("cpu") is True and exact_default("gpu") is False
    assert _sample(export_dir, tmp_path / "f32", "--n", "3", "--accelerator", "cpu") == 0
    assert _sample(export_dir, tmp_path / "bf16", "--n", "3", "--accelerator", "cpu", "--precision", "bf16") == 0
    s32 = yaml.safe_load((tmp_path / "f32" / "sample_config.yaml").read_text())
    s16 = yaml.safe_load((tmp_path / "bf16" / "sample_config.yaml").read_text())
    assert s32["exact"] is True and s32["precision"] == "32" and s16["precision"] == "bf16"
    a = np.load(tmp_path / "f32" / "samples.npz")["x"].astype(int)
    b = np.load(tmp_path / "bf16" / "samples.npz")["x"].astype(int)
    assert not np.array_equal(a, b) and np.abs(a - b).mean() < 8  # bf16 rounds, the pictures agree
    # a folder drawn at one precision is not extended at another
    assert _sample(export_dir, tmp_path / "f32", "--n", "4", "--accelerator", "cpu", "--precision", "bf16") == 2


def test_a_folder_from_before_weights_identity_resumes_with_the_same_file(export_dir, tmp_path):
    from sgm_lightning.training.sample_folder import file_digest

    assert _sample(export_dir, tmp_path / "s", "--n", "2", "--seed", "1") == 0
    path = tmp_path / "s" / "sample_config.yaml"
    s = yaml.safe_load(path.read_text())
    del s["weights_sha256"], s["precision"]  # as the folder was written before
    path.write_text(yaml.safe_dump({**s, "checkpoint_sha256": file_digest(str(export_dir))}))
    assert _sample(export_dir, tmp_path / "s", "--n", "3", "--seed", "1") == 0  # resumed, index 2 added
    assert len(np.load(tmp_path / "s" / "samples.npz")["x"]) == 3
    path.write_text(yaml.safe_dump({**s, "checkpoint_sha256": "0" * 64}))  # another file: refused
    assert _sample(export_dir, tmp_path / "s", "--n", "4", "--seed", "1") == 2
