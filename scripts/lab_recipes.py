#!/usr/bin/env python
"""Which recipe, which sampler, how many steps: measured on real trained digits models.

1. Quality against training time for three recipes, each trained with the default run's network,
   batch and step budget (``configs/digits.yaml``), checkpointed ``--checkpoints`` times:

   * ``ve``:  score_sde's VE recipe (no preconditioning, t ~ U(eps, 1), sigma^2 weighting);
   * ``edm``: EDM's recipe on the same VE process (c_in/c_skip/c_out/c_noise, ln sigma ~ N(-1.2, 1.2^2),
     lambda = 1 / c_out^2), the default run's recipe;
   * ``vp``:  score_sde's VP recipe (DDPM++-style positional embedding, epsilon prediction).

   Every checkpoint is scored with one sampler (PC, reverse diffusion + Langevin, 100 steps) so the
   recipes are compared on equal terms. Training time is the training process's CPU time (one
   thread), which does not depend on what else the machine runs.
2. Quality against NFE for every sampler on the last checkpoint of ``--best`` (default ``edm``).

Writes ``recipes.json``, ``recipes.md`` (tables) and ``recipes.png`` (figure) into ``--out``.

    .venv/bin/python scripts/lab_recipes.py --out docs/recipes             # about 45 min CPU
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_digits import generate, to_unit  # noqa: E402

RECIPES = {
    "ve": ["model.precond=none", "loss.sigma_dist=uniform_t", "loss.weighting=sigma2", "model.sigma_data=0.5"],
    "edm": ["model.precond=edm", "loss.sigma_dist=lognormal", "loss.weighting=edm", "model.sigma_data=auto"],
    "vp": ["sde.name=vp", "model.precond=none", "loss.sigma_dist=uniform_t", "loss.weighting=sigma2",
           "model.sigma_data=0.5",
           "loss.eps=1e-3", "model.kwargs.embedding_type=positional", "model.kwargs.scale_by_sigma=false"],
}
SCORE_SAMPLER = ("pc", {}, 100)
SWEEP = [  # (sampler, options, step counts): each sampler at a common step count, some at two
    ("pc", {}, [50, 100]),
    ("pc", {"corrector": "none"}, [100]),
    ("ald", {"n_steps_each": 2}, [None]),  # on 100 of the VE levels, NCSNv2's step size (technique 4)
    ("ode", {"method": "euler"}, [50]),
    ("ode", {"method": "euler_t"}, [50]),
    ("ode", {"method": "heun"}, [25]),
    ("ode", {"method": "rk45", "rtol": 1e-3, "atol": 1e-3}, [None]),
    ("edm_heun", {}, [18, 35]),
    ("edm_stochastic", {}, [40]),
    ("dpm_solver_2m", {}, [20])]


def train(name: str, recipe: str, steps: int, every: int, ckpt_dir: Path, extra=()) -> dict:
    """Run ``sgm train`` for one recipe; returns its CPU seconds and the checkpoint paths by step."""
    args = [str(Path(sys.executable).parent / "sgm"), "train", f"name={name}", f"checkpoint.dir={ckpt_dir}",
            f"trainer.max_steps={steps}", f"checkpoint.every_n_train_steps={every}", "checkpoint.save_top_k=-1",
            "logging.logger=none", "sample.at_end=false", "num_threads=1", *RECIPES[recipe], *extra]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"cpu_seconds": cpu, "wall_seconds": time.perf_counter() - t0, "steps": steps,
            "ckpts": checkpoints(ckpt_dir / name)}


def checkpoints(folder: Path) -> dict[int, str]:
    """The checkpoints of a run folder by training step."""
    ckpts: dict[int, str] = {}
    for p in sorted(folder.glob("*.ckpt")):
        step = torch.load(p, map_location="cpu", weights_only=True).get("global_step")
        ckpts.setdefault(int(step), str(p))
    return ckpts


def score(ckpt: str, ys, n: int, sampler: str, options: dict, steps) -> dict:
    from sgm_lightning.checkpoint import load_model
    from sgm_lightning.digits_quality import meets_targets

    model = load_model(ckpt)
    t0 = time.perf_counter()
    raw, _, opts = generate(model, n, n, 1, sampler, steps, options)
    seconds = time.perf_counter() - t0
    real = ys.report(ys.real[:n], in_train=True)
    row = ys.report(to_unit(raw, model.centered))
    row.update(ys.failures(raw, model.centered), seconds=seconds, options=opts,
               frechet_ratio=row["frechet"] / real["frechet"], meets=meets_targets(row, real))
    return row


def ald_ladder(ckpt: str, n_levels: int, n_steps_each: int) -> dict:
    """``levels`` (times of ``n_levels`` geometric sigmas of the VE process) and NCSNv2's step_lr."""
    from sgm_lightning.checkpoint import load_model
    from sgm_lightning.noise_design import ald_step_size

    sde = load_model(ckpt).sde
    ts = torch.linspace(sde.T, sde.eps, n_levels, dtype=torch.float64)
    return {"levels": ts.tolist(), "step_lr": float(ald_step_size(sde.sigma(ts), n_steps_each))}


def nfe_of(sampler: str, options: dict, steps, ckpt: str) -> int:
    """The sampler's exact NFE, counted on a batch of one."""
    from sgm_lightning.checkpoint import load_model

    from sgm_lightning.sampling import draw_samples, sampler_settings

    model = load_model(ckpt)
    name, opts = sampler_settings(model.cfg.sample, sampler=sampler, steps=steps, per_sample=False, **options)
    with torch.no_grad():
        return draw_samples(model.score_fn(), model.sde, model.shape, [0], seed=1, sampler=name, options=opts)[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="docs/recipes")
    ap.add_argument("--recipes", default="ve,edm,vp", help="comma-separated; empty: none")
    ap.add_argument("--best", default="edm", help="the recipe whose last checkpoint the sampler sweep uses")
    ap.add_argument("--no-sweep", action="store_true", help="skip the sampler sweep (e.g. to train in parallel)")
    ap.add_argument("--only-last", action="store_true", help="score only each recipe's last checkpoint")
    ap.add_argument("--no-train", action="store_true",
                    help="score the checkpoints already in --ckpt-dir (a run stopped early); no CPU time")
    ap.add_argument("--sweep-ckpt", default=None, help="sweep this checkpoint instead of --best's last one")
    ap.add_argument("--steps", type=int, default=None, help="training steps (default: the default run's)")
    ap.add_argument("--checkpoints", type=int, default=3)
    ap.add_argument("--cpu-per-step", type=float, default=None,
                    help="with --no-train: training CPU seconds per step, measured apart (the recipes share the "
                         "network and batch, so one number serves all three); the table then gives steps x it")
    ap.add_argument("--n", type=int, default=250, help="samples per checkpoint evaluation of a recipe")
    ap.add_argument("--sweep-n", type=int, default=500, help="samples per sampler setting")
    ap.add_argument("--ckpt-dir", default="checkpoints/recipes")
    ap.add_argument("--extra", action="append", default=[], metavar="KEY=VALUE", help="more training overrides")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    from sgm_lightning.config import load_config
    from sgm_lightning.digits_quality import Yardstick

    cfg = load_config("digits")
    steps = args.steps or int(cfg.trainer["max_steps"])
    out, ckpt_dir = Path(args.out), Path(args.ckpt_dir)
    out.mkdir(parents=True, exist_ok=True)
    ys = Yardstick(cfg)
    for recipe in filter(None, args.recipes.split(",")):
        if args.no_train:
            per = args.cpu_per_step
            run = {"cpu_seconds": None if per is None else per * steps, "cpu_per_step_measured_apart": per,
                   "steps": steps, "ckpts": checkpoints(ckpt_dir / f"recipe-{recipe}")}
        else:
            run = train(f"recipe-{recipe}", recipe, steps, max(1, steps // args.checkpoints), ckpt_dir, args.extra)
        rows = {}
        if args.only_last:
            run["ckpts"] = {max(run["ckpts"]): run["ckpts"][max(run["ckpts"])]}
        for step, ckpt in sorted(run["ckpts"].items()):
            rows[step] = score(ckpt, ys, args.n, *SCORE_SAMPLER)
            print(f"{recipe} step {step}: Frechet {rows[step]['frechet']:.2f} conf {rows[step]['mean_confidence']:.3f}",
                  flush=True)
        real = ys.report(ys.real[: args.n], in_train=True)
        _write(out / f"recipe_{recipe}.json", {"run": run, "rows": rows, "n": args.n, "real": real})
    if not args.no_sweep:
        if args.sweep_ckpt:
            last = args.sweep_ckpt
        else:
            best = json.loads((out / f"recipe_{args.best}.json").read_text())["run"]
            last = best["ckpts"][str(max(int(k) for k in best["ckpts"]))]
        rows = []
        for sampler, options, counts in SWEEP:
            if sampler == "ald":
                options = dict(options, **ald_ladder(last, 100, options["n_steps_each"]))
            for steps_ in counts:
                row = score(last, ys, args.sweep_n, sampler, options, steps_)
                row.update(sampler=sampler, steps=steps_, nfe=nfe_of(sampler, options, steps_, last))
                rows.append(row)
                print(f"{sampler} {_label(row)} steps {steps_}: nfe {row['nfe']} Frechet {row['frechet']:.2f} "
                      f"conf {row['mean_confidence']:.3f} noise-like {row['noise_like']}", flush=True)
        real = ys.report(ys.real[: args.sweep_n], in_train=True)
        _write(out / "sweep.json", {"best": args.best, "ckpt": last, "n": args.sweep_n, "real": real, "rows": rows})
    report = collect(out)
    (out / "recipes.md").write_text(tables(report))
    figure(report, out / "recipes.png")
    print(tables(report))
    return 0


def _write(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=1, default=str))


def collect(out: Path) -> dict:
    """Every ``recipe_*.json`` and ``sweep.json`` in ``out``, in the order ve, edm, vp."""
    order = {"ve": 0, "edm": 1, "vp": 2}
    files = sorted(out.glob("recipe_*.json"), key=lambda p: order.get(p.stem[7:], 9))
    r: dict = {"recipes": {p.stem[7:]: json.loads(p.read_text()) for p in files}}
    if (out / "sweep.json").exists():
        r["sweep"] = json.loads((out / "sweep.json").read_text())
    return r


def _label(row: dict) -> str:
    o = {k: v for k, v in row["options"].items() if k in ("method", "corrector", "predictor")}
    return row["sampler"] + ("" if not o else " " + " ".join(str(v) for v in o.values()))


def _steps(row: dict) -> str:
    if row["steps"] is not None:
        return str(row["steps"])
    if row["sampler"] == "ald":
        return f"{len(row['options']['levels'])} levels x {row['options']['n_steps_each']}"
    return "adaptive"


def tables(r: dict) -> str:
    lines = []
    if r["recipes"]:
        real = next(iter(r["recipes"].values()))["real"]
        lines += [f"Recipes, each checkpoint scored with PC (100 steps), n={next(iter(r['recipes'].values()))['n']} "
                  f"(real digits: Frechet {real['frechet']:.2f}, confidence {real['mean_confidence']:.3f}, "
                  f"p>0.9 {real['share_confident']:.3f}).", "",
                  *([f"Training CPU s = step x {apart} s (the CPU per training step, measured apart on one "
                     "thread at batch 64).", ""] if (apart := next(iter(r["recipes"].values()))["run"]
                                                   .get("cpu_per_step_measured_apart")) else []),
                  "| recipe | step | training CPU s | Frechet | mean conf | p > 0.9 | NN ratio | noise-like |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, rec in r["recipes"].items():
        run = rec["run"]
        for step, row in rec["rows"].items():
            cpu = "-" if run["cpu_seconds"] is None else f"{run['cpu_seconds'] * int(step) / run['steps']:.0f}"
            lines.append(f"| {name} | {step} | {cpu} | {row['frechet']:.2f} | {row['mean_confidence']:.3f} | "
                         f"{row['share_confident']:.3f} | {row['memorisation_ratio']:.2f} | {row['noise_like']} |")
    if "sweep" in r:
        sw, real = r["sweep"], r["sweep"]["real"]
        lines += ["", f"Samplers on the last {sw['best']} checkpoint, n={sw['n']} (real digits: Frechet "
                  f"{real['frechet']:.2f}, confidence {real['mean_confidence']:.3f}, "
                  f"p>0.9 {real['share_confident']:.3f}).",
                  "", "| sampler | steps | NFE | Frechet | mean conf | p > 0.9 | noise-like | outside [-1.5, 1.5] | "
                  "meets all |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for row in sw["rows"]:
            lines.append(f"| {_label(row)} | {_steps(row)} | {row['nfe']} | {row['frechet']:.2f} | "
                         f"{row['mean_confidence']:.3f} | {row['share_confident']:.3f} | {row['noise_like']} | "
                         f"{row['out_of_range']} | {'yes' if all(row['meets'].values()) else 'no'} |")
    return "\n".join(lines) + "\n"


def figure(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, c, b) = plt.subplots(1, 3, figsize=(15, 4))
    for name, rec in r["recipes"].items():
        steps = sorted(rec["rows"], key=int)
        run = rec["run"]
        per = None if run["cpu_seconds"] is None else run["cpu_seconds"] / run["steps"]
        x = [int(s) * (per or 1) for s in steps]
        a.plot(x, [rec["rows"][s]["frechet"] for s in steps], "o-", label=name)
        c.plot(x, [rec["rows"][s]["mean_confidence"] for s in steps], "o-", label=name)
    if r["recipes"]:
        real = next(iter(r["recipes"].values()))["real"]
        a.axhline(real["frechet"], color="k", ls=":", label="real digits")
        c.axhline(real["mean_confidence"], color="k", ls=":", label="real digits")
        timed = next(iter(r["recipes"].values()))["run"]["cpu_seconds"] is not None
        xlabel = "training CPU seconds (one thread, batch 64)" if timed else "training steps (batch 64)"
        a.set(xlabel=xlabel, ylabel="Frechet (classifier features)", title="recipes (PC, 100 steps)", yscale="log")
        c.set(xlabel=xlabel, ylabel="mean classifier confidence", title="recipes (PC, 100 steps)")
        a.legend()
        c.legend()
    groups: dict[str, list] = {}
    for row in r.get("sweep", {}).get("rows", []):
        groups.setdefault(_label(row), []).append(row)
    for label, rows in groups.items():
        rows = sorted(rows, key=lambda x: x["nfe"])
        b.plot([x["nfe"] for x in rows], [x["frechet"] for x in rows], "o-", label=label)
    if "sweep" in r:
        b.axhline(r["sweep"]["real"]["frechet"], color="k", ls=":")
    b.set(xlabel="NFE", ylabel="Frechet", xscale="log", yscale="log", title="samplers on the default model")
    b.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
