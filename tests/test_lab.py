"""Theory lab: each --quick experiment reproduces the direction Lee, Lu & Tan (2022) predict.

The experiments are deterministic given their seed; the margins below were checked on several
seeds (see the report of issue 6) and are far from the measured values.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from sgm_lightning.cli import main
from sgm_lightning.lab import LabContext, run_experiment
from sgm_lightning.lab import spacing


def _load(path, name):
    data = json.loads((path / f"{name}.json").read_text())
    assert (path / f"{name}.png").stat().st_size > 10_000
    assert data["meta"]["experiment"] == name and data["claims"]
    return data


# --- command line -------------------------------------------------------------------------
def test_cli_runs_spacing_and_writes_outputs(tmp_path, capsys):
    assert main(["lab", "spacing", "--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "sqrt(d)(gamma*-1)" in out and "spacing.json" in out
    data = _load(tmp_path, "spacing")
    # E5: the final error is one function of sqrt(d)(gamma - 1): across d, log KL varies
    # ~15x less at fixed sqrt(d)(gamma-1) than at fixed gamma (measured 0.097 vs 1.55) ...
    c = data["summary"]["collapse"]
    assert c["std_logkl_fixed_x"] < 0.2 * c["std_logkl_fixed_gamma"]
    # ... and the largest warm ratio shrinks like d^{-1/2} (measured slope -0.484)
    assert -0.56 < data["summary"]["slope_gamma_star_vs_d"] < -0.44
    xs = [v["x_star"] for v in data["summary"]["per_dim"].values()]
    assert max(xs) / min(xs) < 1.2  # sqrt(d)(gamma*-1) is the same number for d = 16 ... 1024


def test_cli_rejects_bad_input(tmp_path, capsys):
    assert main(["lab", "spacing", "--quick", "--device", "tpu", "--out", str(tmp_path)]) == 2
    assert "--device" in capsys.readouterr().err
    assert main(["lab", "spacing", "--quick", "--seed", "-1", "--out", str(tmp_path)]) == 2
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["lab", "spacing", "--quick", "--out", str(f)]) == 2
    assert not (tmp_path / "spacing.json").exists()  # rejected before any work
    with pytest.raises(ValueError, match="experiment"):
        run_experiment("nope", LabContext(), tmp_path)


# --- E5 spacing: the exact recursion ------------------------------------------------------
def test_level_update_is_the_langevin_variance_recursion():
    """The closed form equals T explicit steps of var <- (1 - alpha/v)^2 var + 2 alpha."""
    v = torch.tensor([0.5, 1e-4, 2.0], dtype=torch.float64)
    var0 = torch.tensor([3.0, 1e-3, 0.1], dtype=torch.float64)
    alpha = 0.03 * v.min().item()
    var = var0.clone()
    for _ in range(7):
        var = (1 - alpha / v) ** 2 * var + 2 * alpha
    torch.testing.assert_close(spacing.level_update(var0, v, alpha, 7), var, rtol=1e-12, atol=0)
    # the fixed point is the chain's stationary variance v / (1 - alpha / (2 v))  (theory.md E6)
    pi = spacing.stationary_variance(v, alpha)
    torch.testing.assert_close(spacing.level_update(pi, v, alpha, 3), pi, rtol=1e-12, atol=0)


def test_chi2_formula_of_the_warm_start():
    """1 + chi^2(N(0, a) || N(0, b))^d = (1 - delta^2)^{-d/2} with a/b = 1 + delta (theory.md 2b)."""
    d, delta = 9, 0.3
    var_p = torch.full((d,), 2.0, dtype=torch.float64)
    got = spacing.log1p_chi2(var_p * (1 + delta), var_p)
    assert math.isclose(float(got), -d / 2 * math.log(1 - delta**2), rel_tol=1e-12)
    assert math.isinf(float(spacing.log1p_chi2(var_p * 2.5, var_p)))
    assert float(spacing.kl_gauss(var_p, var_p)) == 0.0


# --- E6 noise-design ------------------------------------------------------------------------
def test_noise_design_matches_released_ncsnv2_configs(tmp_path):
    run_experiment("noise-design", LabContext(quick=True), tmp_path)
    ds = _load(tmp_path, "noise-design")["datasets"]
    c = ds["cifar10"]
    # technique 2 for D = 3072: gamma ~ 1.040 (notes; released ladder 1.0376)
    assert abs(c["gamma"] - 1.040) < 0.002 and abs(c["gamma_released"] - 1.0376) < 1e-4
    # technique 4 on the released ladder (L = 232, T = 5) gives the released step_lr 6.2e-6
    assert abs(c["step_lr_best_on_released_ladder"] / 6.2e-6 - 1) < 0.01
    for name in ("celeba", "lsun_bedroom", "ffhq"):  # within 5% of the released value
        r = ds[name]
        assert abs(r["step_lr_best_on_released_ladder"] / r["released"]["step_lr"] - 1) < 0.05, name
    # church's released step_lr (4.9e-6) is NOT technique 4 of its own ladder (2.3e-6): reported
    ch = ds["lsun_church"]
    assert ch["step_lr_best_on_released_ladder"] / ch["released"]["step_lr"] < 0.6
    # technique 2's L is within 10% of the released L where the image size matches the config
    for name in ("cifar10", "celeba", "lsun_bedroom", "ffhq"):
        assert abs(ds[name]["L"] / ds[name]["released"]["L"] - 1) < 0.1, name
    # technique 1 on shipped data: the toy mixture's spread is ~ its config's sigma_max = 12
    assert 9.0 < ds["toy_mixture"]["sigma_1"] < 12.5 and ds["toy_mixture"]["gamma"] is None  # NaN: no root for D = 2
    assert 5.0 < ds["digits16"]["sigma_1"] < 16.0  # <= sqrt(256) for pixels in [0, 1]
