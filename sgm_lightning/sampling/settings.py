"""A config's ``sample`` section as a sampler call: ``{sampler: <name>, options: {...}}``.

``options`` are keyword options of that one sampler, checked against its own signature
(:func:`check_options`: an unknown option is an error naming it, as on the command line) and,
for the options several samplers share, their values. :func:`sampler_settings` turns the section
into ``(name, options)`` for :func:`~sgm_lightning.sampling.run_sampler`.

Configs written before ``options`` existed had one flat list for every sampler
(``sample: {sampler: pc, predictor: ..., snr: ..., steps: ..., step_lr: ...}``);
:func:`migrate_flat` turns such a section into the new form with the values the old code used,
so old YAML files and the configs saved in old checkpoints load and sample exactly as before.
"""

from __future__ import annotations

from .registry import SAMPLERS, sampler_options

#: arguments a caller supplies at run time, never part of a config
RUNTIME = ("x_init", "generator", "callback", "device", "dtype")

#: the flat ``sample`` keys of old configs, with the defaults the old config gave them
FLAT_DEFAULTS = {"predictor": "reverse_diffusion", "corrector": "langevin", "snr": 0.16, "steps": None,
                 "corrector_steps": 1, "n_steps_each": 5, "step_lr": 6.2e-6, "method": "rk45", "denoise": True,
                 "norms": "batch"}


def config_options(name: str) -> list[str]:
    """The options of sampler ``name`` a config may set (its keyword options less :data:`RUNTIME`)."""
    return [k for k in sampler_options(name) if k not in RUNTIME]


def check_sampler(name, key: str = "sample.sampler") -> None:
    if name not in SAMPLERS:
        raise ValueError(f"{key}: unknown sampler {name!r}; choose one of {sorted(SAMPLERS)}")


def check_options(name: str, options: dict, where: str = "sample.options") -> None:
    """Raise ValueError naming ``<where>.<key>`` for an option sampler ``name`` does not take or
    an impossible value of an option samplers share (checked before any work)."""
    check_sampler(name)
    allowed = config_options(name)
    for k, v in options.items():
        if k not in allowed:
            raise ValueError(f"{where}.{k}: not an option of sampler {name!r}; its options: {allowed}")
        check_value(f"{where}.{k}", k, v)
    if name == "pc":
        opts = {"predictor": "reverse_diffusion", "corrector": "langevin", "corrector_steps": 1, **options}
        if opts["predictor"] == "none" and (opts["corrector"] == "none" or opts["corrector_steps"] < 1):
            raise ValueError(f"{where}.predictor: with predictor none the corrector must run "
                             f"(a corrector and {where}.corrector_steps >= 1)")


def check_value(key: str, option: str, v) -> None:
    """The value rules of the options several samplers share (each sampler checks the rest)."""
    from . import CORRECTORS, ODE_METHODS, PREDICTORS

    def need(ok, msg):
        if not ok:
            raise ValueError(f"{key}: {msg}, got {v!r}")

    is_int = isinstance(v, int) and not isinstance(v, bool)
    is_num = isinstance(v, (int, float)) and not isinstance(v, bool)
    if option == "steps":
        need(v is None or (is_int and v >= 1), "must be >= 1 or null")
    elif option in ("corrector_steps", "n_steps_each"):
        need(is_int and v >= 0, "must be an integer >= 0")
    elif option in ("snr", "step_lr"):
        need(is_num and v > 0, "must be > 0")
    elif option == "norms":
        need(v in ("batch", "sample"), "choose one of ['batch', 'sample']")
    elif option in ("predictor", "corrector", "method"):
        names = {"predictor": PREDICTORS, "corrector": CORRECTORS, "method": ODE_METHODS}[option]
        need(v in names, f"choose one of {sorted(names)}")


def migrate_flat(section: dict, sampler: str | None = None, *, strict: bool = False) -> dict:
    """An old flat ``sample`` section (a plain dict) in the new form, for sampler ``sampler``
    (default: the section's own, else pc).

    Without ``strict`` (an old YAML file, an old checkpoint's config) the old behaviour exactly:
    the flat keys the sampler takes, with the old defaults for those not written, become its
    options; the others are dropped; an adaptive ODE solver gets no step count. With ``strict``
    (flat ``sample.<key>=value`` overrides) each flat key must be an option of the sampler and
    becomes one, nothing else is added. Values are checked under their flat names.
    """
    flat = {k: section.pop(k) for k in list(section) if k in FLAT_DEFAULTS}
    if not flat:
        return section
    name = sampler or section.get("sampler") or "pc"
    check_sampler(name)
    allowed = config_options(name)
    for k, v in flat.items():
        check_value(f"sample.{k}", k, v)
        if strict and k not in allowed:
            raise ValueError(f"sample.{k}: not an option of sampler {name!r}; its options: {allowed}")
    if not strict:
        flat = {k: v for k, v in {**FLAT_DEFAULTS, **flat}.items() if k in allowed}
        if name == "ode" and _adaptive(flat):
            flat.pop("steps", None)
    section["options"] = {**dict(section.get("options") or {}), **flat}
    return section


def _adaptive(options: dict) -> bool:
    from .ode import FIXED_METHODS

    return options.get("method", "rk45") not in FIXED_METHODS


def sampler_settings(sample_cfg, *, sampler=None, per_sample: bool = True, **overrides) -> tuple[str, dict]:
    """``(name, options)`` for :func:`~sgm_lightning.sampling.run_sampler` from a ``sample`` section.

    ``sampler``: another sampler than the section's; it keeps the section's options it takes
    (an adaptive ODE solver takes no step count). ``overrides`` that are ``None`` are ignored;
    the others must be options of the sampler. ``per_sample``: Langevin norms per sample
    (``norms="sample"``), because batch norms couple the samples of a batch and sample k would
    depend on its batch.
    """
    name = sampler or sample_cfg["sampler"]
    if name not in SAMPLERS:
        raise ValueError(f"sampler: unknown {name!r}; choose one of {sorted(SAMPLERS)}")
    accepted = set(sampler_options(name))
    options = {k: v for k, v in dict(sample_cfg.get("options") or {}).items() if k in accepted}
    if name == "ode" and _adaptive(options):  # a step count written for a fixed-step method or another sampler
        options.pop("steps", None)
    for k, v in overrides.items():
        if v is None:
            continue
        if k not in accepted:
            raise ValueError(f"--{k}: the {name!r} sampler has no {k!r} option")
        options[k] = v
    if per_sample and "norms" in accepted:
        options["norms"] = "sample"
    options = {k: (v.item() if hasattr(v, "item") else v) for k, v in options.items()}
    return name, options
