"""``sgm fid``: bad reference statistics, mismatched image sizes and unwritable outputs are one
line (exit 2) before any features are computed; nothing crashes in the linear algebra."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sgm_lightning.cli import main
from sgm_lightning.metrics.images import check_reference_stats, load_reference_stats


def fid(capsys, *args) -> tuple[int, str]:
    rc = main(["fid", *args, "--feature-net", "/nonexistent/never-loaded.pt"])
    return rc, capsys.readouterr().err.strip()


def stats_file(tmp_path, name="ref.npz", **change):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(50, 4))
    stats = {"mu": a.mean(0), "sigma": np.cov(a, rowvar=False), "n": np.array(50)}
    stats.update(change)
    np.savez(tmp_path / name, **stats)
    return tmp_path / name


def samples_npz(tmp_path, size=8, name="s.npz"):
    x = np.random.default_rng(1).integers(0, 256, (6, size, size, 3), dtype=np.uint8)
    np.savez(tmp_path / name, x=x)
    return tmp_path / name


@pytest.mark.parametrize("change, message", [
    ({"mu": np.array([0.0, np.nan, 0.0, 0.0])}, "'mu' holds 1 NaN/inf values"),
    ({"sigma": np.full((4, 4), np.inf)}, "'sigma' holds 16 NaN/inf values"),
    ({"sigma": np.triu(np.ones((4, 4)))}, "'sigma' is not symmetric"),
    ({"sigma": np.eye(3)}, "need (F,) and (F, F)"),
    ({"n": np.array(1)}, "'n' must be one count >= 2"),
])
def test_bad_reference_statistics_are_named_before_any_work(tmp_path, capsys, change, message):
    ref = stats_file(tmp_path, **change)
    rc, err = fid(capsys, "--samples", str(samples_npz(tmp_path)), "--ref", str(ref))
    assert rc == 2 and str(ref) in err and message in err and "\n" not in err
    with pytest.raises(ValueError, match="reference:"):
        check_reference_stats(dict(np.load(ref)))


def test_good_statistics_load(tmp_path):
    assert load_reference_stats(stats_file(tmp_path))["mu"].shape == (4,)


def test_json_to_a_folder_is_refused_before_computing(tmp_path, capsys):
    (tmp_path / "out").mkdir()
    rc, err = fid(capsys, "--samples", str(samples_npz(tmp_path)), "--ref", str(stats_file(tmp_path)),
                  "--json", str(tmp_path / "out"))
    assert rc == 2 and f"--json: {tmp_path / 'out'} is a folder" in err


def test_samples_and_reference_of_different_sizes_are_refused(tmp_path, capsys):
    rc, err = fid(capsys, "--samples", str(samples_npz(tmp_path, 8)), "--ref", str(samples_npz(tmp_path, 16, "r.npz")))
    assert rc == 2 and "the samples are 8x8x3 images and the reference 16x16x3" in err


def test_pngs_of_different_sizes_in_a_folder_name_the_file(tmp_path, capsys):
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i, size in enumerate((8, 8, 12)):
        Image.fromarray(np.zeros((size, size, 3), np.uint8)).save(folder / f"{i}.png")
    rc, err = fid(capsys, "--samples", str(folder), "--ref", str(stats_file(tmp_path)))
    assert rc == 2 and f"{folder / '2.png'} is 12x12x3" in err and "0.png is 8x8x3" in err
    (folder / "2.png").write_bytes(b"\x89PNG\r\n")  # truncated
    rc, err = fid(capsys, "--samples", str(folder), "--ref", str(stats_file(tmp_path)))
    assert rc == 2 and f"{folder / '2.png'} is not a readable PNG" in err


def test_a_torch_export_archive_with_pickled_weights_is_refused_before_loading(tmp_path):
    """torch.export.load would fall back to an unrestricted unpickle for them: refused first."""
    import json
    import zipfile

    import torch

    from sgm_lightning.metrics.images import load_feature_net

    lin = torch.nn.Linear(4, 2)
    torch.export.save(torch.export.export(lin, (torch.randn(3, 4),)), str(tmp_path / "ok.pt2"))
    assert load_feature_net(tmp_path / "ok.pt2")(torch.ones(3, 4)).shape == (3, 2)
    with zipfile.ZipFile(tmp_path / "ok.pt2") as src, zipfile.ZipFile(tmp_path / "bad.pt2", "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename.endswith("model_weights_config.json"):
                cfg = json.loads(data)
                for v in cfg["config"].values():
                    v["use_pickle"] = True
                data = json.dumps(cfg).encode()
            dst.writestr(item, data)
    with pytest.raises(ValueError, match="stores 'weight' as a pickle|stores 'bias' as a pickle"):
        load_feature_net(tmp_path / "bad.pt2")
