"""Checkpoint compatibility with score_sde: fixture parity, exact parameter counts, strict loading.

The fixtures (tests/fixtures/score_sde/, made with the official code; see its README) hold
official state dicts, inputs and outputs. Our network loaded through ``from_score_sde`` must
reproduce each output to a relative error below 1e-4 (float32 rounding gives ~2e-6).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sgm_lightning.nets import from_score_sde
from sgm_lightning.nets.convert import network_kwargs_from_score_sde


FIXTURES = Path(__file__).resolve().parent / "fixtures" / "score_sde"
FILES = ["ncsnpp_ve_small.pt", "ddpmpp_vp_small.pt", "ncsnv2_small.pt"]


def _fixture(name: str) -> dict:
    path = FIXTURES / name
    if not path.is_file():
        pytest.fail(f"score_sde fixture {path} is missing (it is part of the repository: tests/fixtures/score_sde)")
    return torch.load(path, weights_only=True)


def test_fixture_folder_is_complete():
    if not FIXTURES.is_dir():
        pytest.fail(f"fixtures folder {FIXTURES} is missing (it is part of the repository)")
    present = sorted(p.name for p in FIXTURES.glob("*.pt"))
    assert present == sorted(FILES), "a new fixture appeared: add it to FILES so it is checked"


def test_fixtures_are_plain_data_from_the_documented_commit():
    """Every file loads with weights_only=True (no pickled code) and names the commit its README names."""
    readme = (FIXTURES / "README.md").read_text()
    for name in FILES:
        ref = _fixture(name)  # torch.load(..., weights_only=True)
        assert ref["score_sde_pytorch_commit"] in readme, name


@pytest.mark.parametrize("name", FILES)
def test_official_output_reproduced(name):
    ref = _fixture(name)
    net = from_score_sde(ref["state_dict"], json.loads(ref["config"])).eval()
    with torch.no_grad():
        out = net(ref["x"], ref["labels"]).double()
    want = ref["output"].double()
    rel_max = ((out - want).abs().max() / want.abs().max()).item()
    rel_l2 = ((out - want).norm() / want.norm()).item()
    assert rel_max < 1e-4 and rel_l2 < 1e-4, (rel_max, rel_l2)
    # elementwise too, with the absolute floor scaled to the output (outputs are divided by sigma)
    torch.testing.assert_close(out, want, rtol=1e-4, atol=1e-5 * want.abs().max().item())


def test_module_prefix_and_fourier_features_match_bitwise():
    ref = _fixture("ncsnpp_ve_small.pt")
    sd = {f"module.{k}": v for k, v in ref["state_dict"].items()}  # DataParallel checkpoints
    net = from_score_sde(sd, json.loads(ref["config"])).eval()
    feats = net.embed.fourier(torch.log(ref["labels"]))
    assert torch.equal(feats, ref["intermediates"]["fourier_features"])
    with torch.no_grad():
        temb = net.embed.dense1(net.act(net.embed.dense0(feats)))
    torch.testing.assert_close(temb, ref["intermediates"]["temb"], rtol=1e-5, atol=1e-6)


def test_ncsnv2_matches_original_ermongroup_output():
    ref = _fixture("ncsnv2_small.pt")
    net = from_score_sde(ref["state_dict"], json.loads(ref["config"])).eval()
    with torch.no_grad():
        out = net(ref["x"], ref["labels"])
        # float labels are sigma itself: the same call with sigmas[labels] gives the same scores
        out_sigma = net(ref["x"], ref["used_sigmas"].float())
    used = ref["used_sigmas"][:, None, None, None]
    torch.testing.assert_close((out.double() * used), ref["output_ermongroup_ncsnv2"].double() * used,
                               rtol=0, atol=1e-5)
    torch.testing.assert_close(out_sigma, out, rtol=1e-6, atol=0)


def _config(record: dict) -> dict:
    hp = record["hyperparameters"]
    return {"model": hp["model"], "data": hp["data"], "training": {"continuous": hp["training.continuous"]}}


def _buildable_configs() -> list[tuple[str, dict]]:
    """Every official config that builds (NCSN++ and NCSNv2), one per distinct architecture."""
    path = FIXTURES / "param_counts.json"
    if not path.is_file():
        return [("missing", {})]
    records = json.loads(path.read_text())["configs"]
    seen, out = set(), []
    for name, rec in records.items():
        if "error" in rec or rec["model_name"] == "ddpm":
            continue
        _, kw = network_kwargs_from_score_sde(_config(rec))
        arch_key = json.dumps({k: v for k, v in kw.items() if k not in ("sigma_min", "sigma_max", "dropout",
                                                                           "centered", "init_scale")},
                              sort_keys=True, default=list)
        if arch_key not in seen:
            seen.add(arch_key)
            out.append((name, rec))
    return out


@pytest.mark.parametrize("name, record", _buildable_configs(), ids=lambda v: v if isinstance(v, str) else "")
def test_parameter_count_equals_official(name, record):
    if name == "missing":
        pytest.fail(f"{FIXTURES / 'param_counts.json'} is missing")
    with torch.device("meta"):  # counts only: no memory, no init cost
        net = from_score_sde(None, _config(record))
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    fixed = sum(b.numel() for n, b in net.named_buffers() if n.endswith("fourier.W"))  # official: frozen param
    assert trainable == record["num_trainable_params"], name
    assert trainable + fixed == record["num_params"], name


def test_primary_configs_are_all_checked():
    meta = json.loads((FIXTURES / "param_counts.json").read_text())["_meta"]
    checked = {name for name, _ in _buildable_configs()}
    # the deep and non-deep variants are distinct architectures, so each primary one is kept
    assert set(meta["primary"]) <= checked


# --- strict loading ---------------------------------------------------------------------------

def _small_ve():
    ref = _fixture("ncsnpp_ve_small.pt")
    return dict(ref["state_dict"]), json.loads(ref["config"])


def test_missing_unexpected_and_misshaped_keys_are_all_listed():
    sd, cfg = _small_ve()
    del sd["all_modules.3.weight"]
    sd["all_modules.99.weight"] = torch.zeros(1)
    sd["all_modules.8.NIN_1.W"] = torch.zeros(5, 5)
    with pytest.raises(ValueError) as err:
        from_score_sde(sd, cfg)
    msg = str(err.value)
    assert "missing keys (1): all_modules.3.weight" in msg
    assert "unexpected keys (1): all_modules.99.weight" in msg
    assert "all_modules.8.NIN_1.W (5, 5)" in msg


def test_config_that_does_not_match_the_weights_is_rejected():
    sd, cfg = _small_ve()
    cfg["model"]["nf"] = 8
    with pytest.raises(ValueError, match="shape mismatches"):
        from_score_sde(sd, cfg)
    sd, cfg = _small_ve()
    cfg["model"]["sigma_max"] = 90
    with pytest.raises(ValueError, match="sigma ladder"):
        from_score_sde(sd, cfg)


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda c: c["model"].update(name="ddpm"), "model.name"),
        (lambda c: c["model"].update(normalization="InstanceNorm"), "model.normalization"),
        (lambda c: c["training"].update(continuous=False), "training.continuous"),
        (lambda c: c["data"].pop("image_size"), "data.image_size"),
    ],
)
def test_unsupported_config_names_the_key(edit, match):
    _, cfg = _small_ve()
    edit(cfg)
    with pytest.raises(ValueError, match=match):
        from_score_sde(None, cfg)
