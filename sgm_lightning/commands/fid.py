"""``sgm fid``: FID / KID / IS of generated images against a reference, offline.

    sgm fid --samples DIR --ref REF (--inception-weights PTH | --feature-net TS.pt) [--json OUT]
    sgm fid --ref-config digits --save-ref stats.npz --inception-weights PTH   # reference stats only

``--samples``: an ``sgm sample`` output folder (its ``samples.npz``), an ``.npz`` holding ``x``
(uint8 N x H x W x C) or a folder of PNGs. ``--ref``: reference statistics (``.npz`` with
``mu``, ``sigma``) or an image set in the same forms as ``--samples``; ``--ref-config`` builds
the reference from a training config's dataset (``key=value`` overrides after it).
``--save-ref`` stores the reference statistics for reuse (``--keep-features`` adds the features,
which KID needs). Every score carries its sample count: ``fid_n2000`` is FID over 2,000 images.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def register(subparsers) -> None:
    p = subparsers.add_parser("fid", help="FID/KID/IS of samples (local Inception weights or a feature net)",
                              description="FID, KID and IS of generated images against a reference image set "
                              "or saved statistics; every score is named with its sample count (fid_n2000).")
    p.add_argument("--samples", default=None, help="sgm sample folder, .npz with x, or a folder of PNGs")
    p.add_argument("--ref", default=None, help="reference stats .npz (mu, sigma) or an image set")
    p.add_argument("--ref-config", default=None, help="build the reference from this training config's dataset")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="overrides for --ref-config")
    p.add_argument("--save-ref", default=None, help="write the reference statistics to this .npz")
    p.add_argument("--keep-features", action="store_true", help="store reference features too (for KID)")
    p.add_argument("--inception-weights", default=None, help="torch-fidelity FID Inception weights (.pth)")
    p.add_argument("--feature-net", default=None,
                   help="a feature network instead of Inception: torch.export .pt2, or TorchScript")
    p.add_argument("--batch-size", type=int, default=200)
    p.add_argument("--kid-subset-size", type=int, default=1000)
    p.add_argument("--json", default=None, help="also write the scores to this JSON file")
    p.set_defaults(func=run)


def _batches(x: np.ndarray, batch_size: int):
    import torch

    for i in range(0, len(x), batch_size):
        yield torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size])).permute(0, 3, 1, 2)


def _config_images(config: str, overrides: list[str]) -> np.ndarray:
    import torch

    from ..config import load_config
    from ..datasets import image_dataset

    cfg = load_config(config, overrides)
    ds = image_dataset(cfg.data, train=False)
    items = [ds[i] for i in range(len(ds))]
    x = torch.stack([it[0] if isinstance(it, (tuple, list)) else it for it in items])
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def _size(x: np.ndarray) -> str:
    return f"{x.shape[2]}x{x.shape[1]}x{x.shape[3]}"


def feature_net(inception_weights: str | None, feature_net_path: str | None):
    """The feature network the flags name (Inception weights or a TorchScript file)."""
    from ..metrics.images import load_feature_net, load_inception

    if feature_net_path is not None:
        return load_feature_net(feature_net_path)
    return load_inception(inception_weights)


def run(args: argparse.Namespace) -> int:
    from ..metrics.images import ImageMetrics, load_reference_stats, reference_stats, save_reference_stats
    from ..images import read_images

    if args.batch_size <= 0 or args.kid_subset_size <= 0:
        raise ValueError("--batch-size/--kid-subset-size: must be >= 1")
    if (args.ref is None) == (args.ref_config is None):
        raise ValueError("--ref/--ref-config: pass exactly one reference")
    if args.samples is None and args.save_ref is None:
        raise ValueError("--samples: nothing to score; pass --samples, or --save-ref to only build reference stats")
    from ..paths import check_output_file

    for flag, path in (("--json", args.json), ("--save-ref", args.save_ref)):
        if path is not None:  # checked before hours of feature extraction
            check_output_file(path, flag)
    fake = read_images(args.samples, "--samples") if args.samples else None
    stats, real = None, None
    if args.ref is not None and Path(args.ref).is_file() and Path(args.ref).suffix == ".npz":
        with np.load(args.ref, allow_pickle=False) as f:
            is_stats = "mu" in f.files
        stats = load_reference_stats(args.ref) if is_stats else None
        real = None if is_stats else read_images(args.ref, "--ref")
    elif args.ref is not None:
        real = read_images(args.ref, "--ref")
    else:
        real = _config_images(args.ref_config, args.overrides)
    if fake is not None and real is not None and fake.shape[1:] != real.shape[1:]:
        raise ValueError(f"--samples/--ref: the samples are {_size(fake)} images and the reference {_size(real)}; "
                         "FID compares images of one size (resize one set, or sample at the reference's size)")
    if fake is not None and stats is not None and "image_shape" in stats:
        if tuple(int(v) for v in stats["image_shape"]) != tuple(fake.shape[1:]):
            raise ValueError(f"--samples/--ref: the samples are {_size(fake)} images but {args.ref} was computed "
                             f"from {_size(np.zeros((1, *stats['image_shape'])))} images")
    net = feature_net(args.inception_weights, args.feature_net)
    shape_src = fake if fake is not None else real
    image_shape = (shape_src.shape[3], shape_src.shape[1], shape_src.shape[2])
    if stats is None:  # features kept for KID in this run; saved only with --keep-features
        stats = reference_stats(net, _batches(real, args.batch_size), keep_features=True)
        stats["image_shape"] = np.array(real.shape[1:])
    if args.save_ref:
        keep = {k: v for k, v in stats.items() if k != "features" or args.keep_features}
        save_reference_stats(args.save_ref, keep)
        print(f"sgm fid: reference statistics of {int(stats['n'])} images -> {args.save_ref}")
    if fake is None:
        return 0
    metrics = ImageMetrics(net, image_shape=image_shape, kid=True, kid_subset_size=args.kid_subset_size)
    metrics.load_reference(stats)
    for batch in _batches(fake, args.batch_size):
        metrics.update_fake(batch)
    scores = {**metrics.compute(), "n": int(len(fake)), "n_ref": int(stats["n"])}
    print(json.dumps(scores))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(scores, indent=1))
    return 0
