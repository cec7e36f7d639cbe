#!/usr/bin/env python
"""Evaluate a digits model: recognisable digits, all ten classes, no copies, no noise-like samples.

The yardstick is :mod:`sgm_lightning.digits_quality` (a classifier trained on real digits, its
Frechet distance, the nearest-training-digit ratio, the noise-like count); this script draws
``--n`` samples from a checkpoint with its own sampler settings (or ``--sampler``/``--steps``/
``--option key=value``) and prints them beside 500 real digits the classifier never saw, with
the targets of a good model (``meets``).

    .venv/bin/python scripts/eval_digits.py --ckpt checkpoints/<run>/last.ckpt --n 500
    .venv/bin/python scripts/eval_digits.py --ckpt ... --sampler ode --steps 50 --option method=heun
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch


def generate(model, n: int, batch_size: int, seed: int, sampler: str | None, steps: int | None,
             options: dict | None = None):
    """``n`` raw samples ``(n, C, S, S)`` from the EMA network, with the run's sample settings."""
    from sgm_lightning.sampling import draw_samples, sampler_settings

    name, opts = sampler_settings(model.cfg.sample, sampler=sampler, steps=steps, per_sample=False,
                                  **(options or {}))
    xs = []
    with torch.no_grad():
        for start in range(0, n, batch_size):
            idx = list(range(start, min(n, start + batch_size)))
            x, _ = draw_samples(model.score_fn(), model.sde, model.shape, idx, seed=seed, sampler=name,
                                options=opts, exact=False)
            xs.append(x)
    return torch.cat(xs), name, opts


def to_unit(raw: torch.Tensor, centered: bool) -> np.ndarray:
    """Raw samples -> ``(n, S*S)`` float64 in [0, 1] for the classifier (non-finite -> 0)."""
    x = (raw + 1) / 2 if centered else raw
    return torch.nan_to_num(x, nan=0.0).clamp(0, 1).flatten(1).double().numpy()


def parse_options(items: list[str]) -> dict:
    import yaml

    out = {}
    for item in items:
        if "=" not in item:
            raise SystemExit(f"--option {item!r}: write key=value, e.g. --option method=heun")
        k, v = item.split("=", 1)
        out[k] = yaml.safe_load(v)
    return out


def print_table(rows: dict[str, dict], accuracy: float, n_ref: int) -> None:
    print(f"classifier accuracy on the {n_ref} held-out real digits: {accuracy:.3f}")
    print(f"{'':10s} {'n':>5s} {'coverage':>8s} {'classes':>11s} {'mean conf':>9s} {'p>0.9':>6s} "
          f"{'Frechet':>8s} {'NN ratio':>8s}  histogram")
    for name, r in rows.items():
        print(f"{name:10s} {r['n']:5d} {r['coverage']:6d}/10 {r['smallest_class_share']:5.3f}-"
              f"{r['largest_class_share']:5.3f} {r['mean_confidence']:9.3f} {r['share_confident']:6.3f} "
              f"{r['frechet']:8.2f} {r['memorisation_ratio']:8.2f}  {r['histogram']}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ckpt", required=True, help="a .ckpt or export folder of a digits model")
    ap.add_argument("--n", type=int, default=500, help="generated samples (and real comparison digits, at most 808)")
    ap.add_argument("--batch-size", type=int, default=250)
    ap.add_argument("--seed", type=int, default=1, help="sampling seed (1: not the seed of the training grid)")
    ap.add_argument("--sampler", default=None, help="override sample.sampler of the run")
    ap.add_argument("--steps", type=int, default=None, help="override sample.steps")
    ap.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                    help="a sampler option, e.g. method=heun (repeatable)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads for sampling")
    ap.add_argument("--json", default=None, help="also write the numbers here")
    ap.add_argument("--grid", default=None, help="also write the first 100 samples as a PNG grid")
    args = ap.parse_args(argv)
    options = parse_options(args.option)
    torch.set_num_threads(args.threads)

    from sgm_lightning.checkpoint import load_model
    from sgm_lightning.digits_quality import Yardstick, meets_targets

    model = load_model(args.ckpt)
    if model.cfg.data.dataset != "digits":
        raise SystemExit(f"--ckpt: a digits model is needed, this one trained on {model.cfg.data.dataset!r}")
    ys = Yardstick(model.cfg)
    t0 = time.perf_counter()
    raw, name, options = generate(model, args.n, args.batch_size, args.seed, args.sampler, args.steps, options)
    seconds = time.perf_counter() - t0
    gen = to_unit(raw, model.centered)
    m = min(args.n, len(ys.real))
    rows = {"real": ys.report(ys.real[:m], in_train=True), "generated": ys.report(gen)}
    fails = ys.failures(raw, model.centered)
    meets = meets_targets(rows["generated"], rows["real"])
    print(f"model {args.ckpt} (step {model.step}); sampler {name} {options}; {args.n} samples in {seconds:.0f} s")
    print_table(rows, ys.accuracy, len(ys.ref_feats))
    verdicts = ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in meets.items())
    print(f"noise-like: {fails['noise_like']}  outside [-1.5, 1.5]: {fails['out_of_range']}  meets: {verdicts}")
    if args.grid:
        from sgm_lightning.images import make_grid, save_png

        side = model.shape[-1]
        imgs = torch.from_numpy(gen[:100]).float().view(-1, 1, side, side)
        save_png(args.grid, make_grid((imgs * 255).round().to(torch.uint8).permute(0, 2, 3, 1), nrow=10))
    if args.json:
        out = {"ckpt": str(args.ckpt), "step": model.step, "sampler": name, "options": options,
               "sampling_seconds": seconds, "classifier_accuracy": ys.accuracy, **rows, **fails, "meets": meets}
        Path(args.json).write_text(json.dumps(out, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
