"""``sgm export --ckpt PATH --out DIR``: write a checkpoint's EMA weights as safetensors + config.yaml."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export",
        help="export EMA weights (model.safetensors + config.yaml) for inference",
        description="Write the EMA weights of a training checkpoint as DIR/model.safetensors and the "
        "resolved config as DIR/config.yaml; `sgm sample --ckpt DIR` and load_model(DIR) read them.",
    )
    p.add_argument("--ckpt", required=True, help="a .ckpt written by sgm train")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..checkpoint import export
    from ..paths import check_output_dir

    check_output_dir(args.out, "--out")
    out = export(args.ckpt, args.out)  # files get the user's umask
    print(f"exported {args.ckpt} -> {out}/model.safetensors, {out}/config.yaml")
    return 0
