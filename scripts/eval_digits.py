#!/usr/bin/env python
"""Evaluate a digits model: are the samples recognisable digits, and are all ten classes there?

A classifier trained on real 16x16 digits (scikit-learn MLP, one hidden layer of 64 ReLUs) labels
generated samples. Reported for generated samples and, as the reference, for real digits the
classifier never saw:

* accuracy of the classifier on the real held-out digits (sanity of the yardstick);
* class histogram, coverage (classes holding >= 2% of the samples) and the largest class share;
* confidence: mean top-class probability, and the share of samples classified with p > 0.9;
* Frechet distance (FID's formula) between the classifier's hidden features of the samples and
  of the 180 held-out validation digits (the generative model never trained on them).

The real data split three ways with the training run's split: the held-out validation digits
(the reference), and the training split halved into A (trains the classifier) and B (the "real"
row, unseen by the classifier). Equal sample counts keep the Frechet bias comparable.

    .venv/bin/python scripts/eval_digits.py --ckpt checkpoints/<run>/last.ckpt --n 500
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import linalg


def real_splits(cfg):
    """(classifier-train A, real-compare B, held-out) as (images (n, 256) in [0,1], labels) pairs."""
    from sgm_lightning.data import digits_images, split_indices

    x, y = digits_images(cfg.data.image_size)
    x = x.flatten(1).numpy().astype(np.float64)
    y = y.numpy()
    tr, va = split_indices(len(x), cfg.data.val_fraction, cfg.data.max_val, cfg.data.split_seed)
    perm = np.random.default_rng(0).permutation(tr)
    a, b = perm[: len(perm) // 2], perm[len(perm) // 2 :]
    return (x[a], y[a]), (x[b], y[b]), (x[va], y[va])


def fit_classifier(x, y):
    """300 Adam epochs (about 2 s on one core; 97.8% held-out accuracy; more epochs do not help)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    from threadpoolctl import threadpool_limits

    clf = MLPClassifier(hidden_layer_sizes=(64,), alpha=1e-3, max_iter=300, random_state=0)
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return clf.fit(x, y)


def features(clf, x: np.ndarray) -> np.ndarray:
    """The classifier's hidden ReLU activations ``(n, 64)``."""
    return np.maximum(x @ clf.coefs_[0] + clf.intercepts_[0], 0.0)


def frechet(f1: np.ndarray, f2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)) (Heusel et al. 2017)."""
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    covmean, _ = linalg.sqrtm(s1 @ s2, disp=False)
    covmean = covmean.real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def report(clf, x: np.ndarray, ref_feats: np.ndarray) -> dict:
    p = clf.predict_proba(x)
    pred, conf = p.argmax(1), p.max(1)
    hist = np.bincount(pred, minlength=10)
    return {
        "n": len(x),
        "histogram": hist.tolist(),
        "coverage": int((hist >= 0.02 * len(x)).sum()),
        "largest_class_share": float(hist.max() / len(x)),
        "mean_confidence": float(conf.mean()),
        "share_confident": float((conf > 0.9).mean()),
        "frechet": frechet(features(clf, x), ref_feats),
    }


def generate(model, n: int, batch_size: int, seed: int, sampler: str | None, steps: int | None):
    """``n`` samples in [0, 1], ``(n, 256)``, from the EMA network with the run's sample settings."""
    from sgm_lightning.callbacks import draw_samples, sampler_settings

    name, options = sampler_settings(model.cfg.sample, sampler=sampler, steps=steps, per_sample=False)
    xs = []
    with torch.no_grad():
        for start in range(0, n, batch_size):
            idx = list(range(start, min(n, start + batch_size)))
            x, _ = draw_samples(model.score_fn(), model.sde, model.shape, idx, seed=seed, sampler=name,
                                options=options, exact=False)
            xs.append(x)
    x = torch.cat(xs)
    x = (x + 1) / 2 if model.centered else x
    return x.clamp(0, 1).flatten(1).double().numpy(), name, options


def print_table(rows: dict[str, dict], accuracy: float) -> None:
    print(f"classifier accuracy on the {rows['real']['n_ref']} held-out real digits: {accuracy:.3f}")
    print(f"{'':16s} {'n':>5s} {'coverage':>8s} {'top share':>9s} {'mean conf':>9s} {'p>0.9':>6s} {'Frechet':>8s}  histogram")
    for name, r in rows.items():
        print(f"{name:16s} {r['n']:5d} {r['coverage']:6d}/10 {r['largest_class_share']:9.3f} "
              f"{r['mean_confidence']:9.3f} {r['share_confident']:6.3f} {r['frechet']:8.2f}  {r['histogram']}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ckpt", required=True, help="a .ckpt or export folder of a digits model")
    ap.add_argument("--n", type=int, default=500, help="generated samples (and real comparison digits, at most 808)")
    ap.add_argument("--batch-size", type=int, default=250)
    ap.add_argument("--seed", type=int, default=1, help="sampling seed (1: not the seed of the training grid)")
    ap.add_argument("--sampler", default=None, help="override sample.sampler of the run")
    ap.add_argument("--steps", type=int, default=None, help="override sample.steps")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads for sampling")
    ap.add_argument("--json", default=None, help="also write the numbers here")
    ap.add_argument("--grid", default=None, help="also write the first 100 samples as a PNG grid")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from sgm_lightning.checkpoint import load_model

    model = load_model(args.ckpt)
    if model.cfg.data.dataset != "digits":
        raise SystemExit(f"--ckpt: a digits model is needed, this one trained on {model.cfg.data.dataset!r}")
    (xa, ya), (xb, _), (xv, yv) = real_splits(model.cfg)
    clf = fit_classifier(xa, ya)
    accuracy = float((clf.predict(xv) == yv).mean())
    ref = features(clf, xv)
    t0 = time.perf_counter()
    gen, name, options = generate(model, args.n, args.batch_size, args.seed, args.sampler, args.steps)
    seconds = time.perf_counter() - t0
    m = min(args.n, len(xb))
    rows = {"real": report(clf, xb[:m], ref), "generated": report(clf, gen, ref)}
    rows["real"]["n_ref"] = rows["generated"]["n_ref"] = len(xv)
    print(f"model {args.ckpt} (step {model.step}); sampler {name} {options}; {args.n} samples in {seconds:.0f} s")
    print_table(rows, accuracy)
    if args.grid:
        from sgm_lightning.images import make_grid, save_png

        side = model.shape[-1]
        imgs = torch.from_numpy(gen[:100]).float().view(-1, 1, side, side)
        save_png(args.grid, make_grid((imgs * 255).round().to(torch.uint8).permute(0, 2, 3, 1), nrow=10))
    if args.json:
        out = {"ckpt": str(args.ckpt), "step": model.step, "sampler": name, "options": options,
               "sampling_seconds": seconds, "classifier_accuracy": accuracy, **rows}
        Path(args.json).write_text(json.dumps(out, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
