"""``sgm train [--config FILE] [--print-config] [key=value ...]``: train a score model from a config.

Options and overrides mix in any order. ``--print-config`` prints the resolved, validated
config as YAML and exits without training or writing anything.

Parses the command line and prints where the run went; the run itself is
:func:`sgm_lightning.training.train`.
"""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a score model (default: configs/digits.yaml)",
        description="Train a score model. Overrides are key=value pairs, e.g. "
        "trainer.max_steps=2000 optim.lr=1e-3 trainer.devices=2 logging.logger=csv resume=last",
    )
    p.add_argument("--config", default=None, help="a YAML file or a bundled name (e.g. cifar10_ncsnpp)")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved, validated config as YAML and exit (nothing is trained or written)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides (before or after options)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..config import resolve_config_path
    from ..training import train
    from ..training.config import load_config

    cfg = load_config(args.config, args.overrides)
    if args.print_config:
        from ..config import to_yaml

        print(to_yaml(cfg), end="")
        return 0
    keys = [o.split("=", 1)[0].lstrip("+~") for o in args.overrides]
    res = train(cfg, config_name=resolve_config_path(args.config).stem, resume_overrides=keys)
    if res.trainer.is_global_zero:
        print(f"run folder: {res.run_dir}  (last.ckpt, config.yaml, best checkpoints)")
        if res.grid is not None:
            print(f"samples:    {res.grid}")
    return 0
