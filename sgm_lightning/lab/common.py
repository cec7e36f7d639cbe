"""Plumbing shared by the theory-lab experiments: run context, JSON/PNG/table output, fits.

Every experiment is a module in :mod:`sgm_lightning.lab` with ``NAME`` and
``run(ctx) -> LabResult``; :func:`write_outputs` turns the result into ``DIR/<name>.json``
(every number), ``DIR/<name>.png`` (prediction beside measurement) and a printed table.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..rng import stream_seed

#: PNG resolution of the committed figures (keeps each file ~100 KB)
DPI = 100


@dataclass(frozen=True)
class LabContext:
    """Settings every experiment receives.

    ``quick``: the small version used by the tests (seconds on a CPU); ``seed``: the base seed
    of every random stream; ``device``: where tensors live (CPU or a GPU, unchanged code).
    """

    quick: bool = True
    seed: int = 0
    device: torch.device = torch.device("cpu")
    dtype: torch.dtype = torch.float64

    def generator(self, stream: int = 0, device: torch.device | str | None = None) -> torch.Generator:
        """An independent, reproducible generator for sub-experiment ``stream``, on :attr:`device`
        (samplers draw their noise there) or on ``device`` (e.g. "cpu" for exact reference samples,
        which :class:`~sgm_lightning.analytic.GaussianMixture` draws on the CPU)."""
        g = torch.Generator(device=self.device if device is None else device)
        g.manual_seed(stream_seed(self.seed, stream))
        return g

    def tensor(self, data, dtype: torch.dtype | None = None) -> torch.Tensor:
        return torch.as_tensor(data, dtype=dtype or self.dtype, device=self.device)


@dataclass
class LabResult:
    """What an experiment produced.

    ``data``: every number (JSON-serialisable after :func:`to_jsonable`); ``figure``: a
    matplotlib figure; ``headers``/``rows``: the short printed table; ``claims``: one line per
    prediction, each saying what was predicted and what was measured.
    """

    name: str
    data: dict[str, Any]
    figure: Any
    headers: Sequence[str]
    rows: Sequence[Sequence[Any]]
    claims: list[str] = field(default_factory=list)


def resolve_device(device: str) -> torch.device:
    """``auto`` (GPU if available), ``cpu``, ``cuda`` or ``cuda:K``; ValueError when unusable."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"--device: cannot parse {device!r}; use auto, cpu, cuda or cuda:K") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device: {device!r} requested but no CUDA GPU is visible; use --device cpu")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"--device: {device!r} is not supported; use auto, cpu, cuda or cuda:K")
    return dev


def to_jsonable(obj: Any) -> Any:
    """Tensors/arrays -> lists, NaN/inf -> None, paths -> str, recursively."""
    if isinstance(obj, torch.Tensor):
        obj = obj.detach().cpu().numpy()
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def format_cell(v: Any) -> str:
    if isinstance(v, float):
        if v != v:
            return "nan"
        if v == 0 or 1e-3 <= abs(v) < 1e4:
            return f"{v:.4g}"
        return f"{v:.3e}"
    return str(v)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain fixed-width text table."""
    cells = [[str(h) for h in headers]] + [[format_cell(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_outputs(result: LabResult, ctx: LabContext, out: Path, wall_s: float) -> dict[str, Path]:
    """Write ``out/<name>.json`` and ``out/<name>.png``; print the table and the claims."""
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "experiment": result.name,
        "quick": ctx.quick,
        "seed": ctx.seed,
        "device": str(ctx.device),
        "torch": torch.__version__,
        "wall_seconds": round(wall_s, 2),
    }
    payload = {"meta": meta, "claims": result.claims, "table": {"headers": list(result.headers),
               "rows": [list(r) for r in result.rows]}, **result.data}
    json_path = out / f"{result.name}.json"
    png_path = out / f"{result.name}.png"
    json_path.write_text(json.dumps(to_jsonable(payload), indent=1) + "\n")
    result.figure.savefig(png_path, dpi=DPI, bbox_inches="tight")
    plt.close(result.figure)
    shrink_png(png_path)
    print(f"== {result.name} ({'quick' if ctx.quick else 'full'}, seed {ctx.seed}, {wall_s:.1f} s)")
    print(format_table(result.headers, result.rows))
    for claim in result.claims:
        print(f"  * {claim}")
    print(f"  -> {json_path}, {png_path}")
    return {"json": json_path, "png": png_path}


def shrink_png(path: Path, colors: int = 64) -> None:
    """Re-save a line-plot PNG with an adaptive palette (about 4x smaller, visually the same)."""
    from PIL import Image

    with Image.open(path) as im:
        q = im.convert("RGB").quantize(colors=colors, method=Image.Quantize.MEDIANCUT)
    q.save(path, optimize=True)


def timed(fn: Callable[[], LabResult]) -> tuple[LabResult, float]:
    t0 = time.perf_counter()
    res = fn()
    return res, time.perf_counter() - t0


def new_figure(ncols: int, width: float = 4.6, height: float = 3.6, nrows: int = 1):
    """A grid of ``nrows x ncols`` axes (returned flat, row by row) drawn with the Agg backend."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False)
    fig.subplots_adjust(wspace=0.3, hspace=0.35, top=0.84 if nrows == 1 else 0.91)
    return fig, [ax for row in axes for ax in row]


def loglog_slope(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Least-squares fit log y = a log x + b; returns ``(a, b)`` (natural logs)."""
    lx, ly = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    a, b = np.polyfit(lx, ly, 1)
    return float(a), float(b)


def crossing(x: Sequence[float], y: Sequence[float], level: float, log: bool = True,
             first_below: bool = False) -> float:
    """The x where the curve y(x) crosses ``level`` (interpolated, in log-log if ``log``).

    ``x`` ascending. Default: the first crossing. ``first_below``: the crossing into the first
    point with y <= level (for noisy decreasing curves: the smallest budget that reaches it).
    Returns NaN when y never crosses.
    """
    xs, ys = np.asarray(x, float), np.asarray(y, float)
    tx = np.log if log else (lambda v: v)
    if first_below:
        hits = np.nonzero(ys <= level)[0]
        if len(hits) == 0:
            return float("nan")
        j = int(hits[0])
        if j == 0:
            return float(xs[0])
        xs, ys = xs[j - 1 : j + 1], ys[j - 1 : j + 1]
    for i in range(len(xs) - 1):
        y0, y1 = ys[i], ys[i + 1]
        if (y0 - level) * (y1 - level) <= 0 and y0 != y1 and np.isfinite(y0) and np.isfinite(y1):
            a, b, lv = tx(y0), tx(y1), tx(level)
            f = (lv - a) / (b - a)
            u = tx(xs[i]) + f * (tx(xs[i + 1]) - tx(xs[i]))
            return float(np.exp(u) if log else u)
    return float("nan")


def call_sampler(fn: Callable, *args, ctx: LabContext, **kwargs):
    """Call a :mod:`sgm_lightning.sampling` function, passing ``device``/``dtype`` from ``ctx``
    when it takes them; returns ``(x, nfe)`` of its :class:`~sgm_lightning.sampling.SampleResult`."""
    import inspect

    params = inspect.signature(fn).parameters
    for key, value in (("device", ctx.device), ("dtype", ctx.dtype)):
        if key in params and key not in kwargs:
            kwargs[key] = value
    res = fn(*args, **kwargs)
    return res.x, int(res.nfe)


def binomial_se(p: float, n: int) -> float:
    """Standard error sqrt(p (1 - p) / n) of a fraction measured on n samples."""
    return math.sqrt(max(p * (1 - p), 1e-12) / n)
