"""The theory lab: Lee, Lu & Tan (2022)'s predictions measured with exact scores.

One module per experiment (see ``EXPERIMENTS``); each exposes ``NAME`` and
``run(ctx: LabContext) -> LabResult``. :func:`run_experiment` runs one and writes
``DIR/<name>.json``, ``DIR/<name>.png`` and a printed table.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import torch

from .common import LabContext, LabResult, timed, write_outputs

#: experiment name (as typed on the command line) -> module in sgm_lightning.lab
EXPERIMENTS: dict[str, str] = {
    "annealing": "annealing",
    "pc": "pc",
    "dimension": "dimension",
    "score-error": "score_error",
    "spacing": "spacing",
    "noise-design": "noise_design",
    "score-meter": "score_meter",
}


def run_experiment(name: str, ctx: LabContext, out: Path | str) -> LabResult:
    """Run experiment ``name`` under ``ctx`` and write its outputs to ``out``."""
    if name not in EXPERIMENTS:
        raise ValueError(f"experiment: unknown {name!r}; choose one of {', '.join(EXPERIMENTS)} or all")
    module = importlib.import_module(f"sgm_lightning.lab.{EXPERIMENTS[name]}")
    threads = torch.get_num_threads()
    if ctx.device.type == "cpu":  # small batched ops: intra-op threads cost more than they give
        torch.set_num_threads(1)
    try:
        result, wall = timed(lambda: module.run(ctx))
    finally:
        torch.set_num_threads(threads)
    write_outputs(result, ctx, Path(out), wall)
    return result


__all__ = ["EXPERIMENTS", "LabContext", "LabResult", "run_experiment"]
