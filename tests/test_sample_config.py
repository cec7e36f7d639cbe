"""One sampler contract: ``sample: {sampler: <name>, options: {...}}``, checked at load against
that sampler's signature; old flat sections (YAML files, configs saved in old checkpoints) load
and give the sampler call the old code made."""

from __future__ import annotations

import inspect

import pytest
import yaml

from sgm_lightning.config import CONFIG_DIR, config_from_yaml, load_config, to_yaml
from sgm_lightning.sampling import SAMPLERS, sampler_settings

#: the ``sample`` section every old checkpoint saved (the old SampleConfig, all keys written)
OLD_SAVED = {"sampler": "pc", "predictor": "reverse_diffusion", "corrector": "langevin", "snr": 0.16,
             "steps": None, "corrector_steps": 1, "n_steps_each": 5, "step_lr": 6.2e-6, "method": "rk45",
             "denoise": True, "norms": "batch", "n_samples": 64, "batch_size": 64, "every_n_steps": 0,
             "at_end": True, "seed": 0, "trajectory": False, "trajectory_frames": 10}

#: what the old ``callbacks.sampler_settings`` returned for OLD_SAVED with each sampler (per_sample=True)
OLD_CALLS = {
    "pc": {"predictor": "reverse_diffusion", "corrector": "langevin", "snr": 0.16, "steps": None,
           "corrector_steps": 1, "denoise": True, "norms": "sample"},
    "ald": {"n_steps_each": 5, "step_lr": 6.2e-6, "denoise": True},
    "ode": {"method": "rk45", "denoise": True},
    "edm_stochastic": {"steps": None},
}


def _effective(name: str, options: dict) -> dict:
    """The keyword arguments the sampler runs with: its defaults, then ``options``."""
    params = inspect.signature(SAMPLERS[name]).parameters.values()
    return {**{p.name: p.default for p in params if p.kind == p.KEYWORD_ONLY}, **options}


@pytest.mark.parametrize("sampler", sorted(OLD_CALLS))
def test_an_old_checkpoints_flat_section_gives_the_old_call(sampler):
    cfg = load_config("toy_mixture")
    saved = yaml.safe_load(to_yaml(cfg))
    saved["sample"] = {**OLD_SAVED, "sampler": sampler}
    loaded = config_from_yaml(yaml.safe_dump(saved))
    assert loaded.sample.sampler == sampler
    assert sampler_settings(loaded.sample) == (sampler, OLD_CALLS[sampler])


@pytest.mark.parametrize("name", sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
def test_each_bundled_config_written_flat_loads_to_the_same_call(name, tmp_path):
    """The bundled configs in the old flat form (as they were) give the sampler call of the new form."""
    new = load_config(name)
    text = yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text())
    flat = dict(text["sample"])
    flat.update(flat.pop("options", {}) or {})
    text["sample"] = flat
    old_file = tmp_path / f"{name}.yaml"
    old_file.write_text(yaml.safe_dump(text))
    old = load_config(old_file)
    for cfg in (old, new):
        assert cfg.sample.sampler == new.sample.sampler
    n_old, o_old = sampler_settings(old.sample)
    n_new, o_new = sampler_settings(new.sample)
    assert n_old == n_new and _effective(n_old, o_old) == _effective(n_new, o_new)
    assert config_from_yaml(to_yaml(new)) == new


def test_an_option_the_sampler_does_not_take_is_an_error_naming_it(tmp_path):
    with pytest.raises(ValueError, match=r"^sample\.options\.temperature: not an option of sampler 'pc'"):
        load_config("toy_2d", ["sample.options.temperature=1.0"])
    with pytest.raises(ValueError, match=r"^sample\.step_lr: not an option of sampler 'pc'"):
        load_config("toy_2d", ["sample.step_lr=1.0"])  # the old flat override form, checked the same way
    f = tmp_path / "c.yaml"
    f.write_text("data: {dataset: moons}\nsample: {sampler: edm_heun, options: {S_churn: 10}}\n")
    with pytest.raises(ValueError, match=r"^sample\.options\.S_churn: not an option of sampler 'edm_heun'"):
        load_config(f)
    with pytest.raises(ValueError, match=r"^sample\.options\.steps: must be >= 1"):
        load_config("toy_2d", ["sample.options.steps=0"])
    with pytest.raises(ValueError, match=r"^sample\.sampler: unknown sampler 'magic'"):
        load_config("toy_2d", ["sample.sampler=magic"])


def test_options_reach_the_sampler_and_a_switch_keeps_only_what_it_takes():
    cfg = load_config("toy_2d", ["sample.sampler=edm_stochastic", "sample.options={steps: 12, S_churn: 5.0}"])
    assert sampler_settings(cfg.sample) == ("edm_stochastic", {"steps": 12, "S_churn": 5.0})
    assert sampler_settings(cfg.sample, sampler="edm_heun") == ("edm_heun", {"steps": 12})
    with pytest.raises(ValueError, match="--snr: the 'edm_heun' sampler has no 'snr' option"):
        sampler_settings(cfg.sample, sampler="edm_heun", snr=0.1)
