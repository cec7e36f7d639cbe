"""``sgm lab <experiment|all> [--quick] [--out DIR] [--seed S] [--device ...]``: the theory lab."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    from ..lab import EXPERIMENTS

    p = subparsers.add_parser(
        "lab",
        help="reproduce the convergence theory's predictions with exact scores",
        description="Run a theory-lab experiment (or all of them). Each writes DIR/<name>.json, "
        "DIR/<name>.png and prints a table.",
    )
    p.add_argument("experiment", choices=[*EXPERIMENTS, "all"], help="which experiment to run")
    p.add_argument("--quick", action="store_true", help="small version (seconds; used by the tests)")
    p.add_argument("--out", default="lab_out", help="output folder (default: lab_out)")
    p.add_argument("--seed", type=int, default=0, help="base seed of every random stream")
    p.add_argument("--device", default="cpu", help="auto | cpu | cuda | cuda:K (default: cpu)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..lab import EXPERIMENTS, LabContext, run_experiment
    from ..lab.common import resolve_device

    if args.seed < 0:
        raise ValueError(f"--seed: must be >= 0, got {args.seed}")
    ctx = LabContext(quick=bool(args.quick), seed=int(args.seed), device=resolve_device(args.device))
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out: {out} exists and is not a folder; pass a folder path")
    names = list(EXPERIMENTS) if args.experiment == "all" else [args.experiment]
    for name in names:
        run_experiment(name, ctx, out)
    return 0
