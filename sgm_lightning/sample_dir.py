"""The layout of an ``sgm sample`` output folder, shared by the command and the predict module.

``DIR/png/NNNNNN.png`` (one per sample index), ``DIR/grid.png``, ``DIR/samples.npz`` and
``DIR/sample_config.yaml``. A PNG counts as written only when it is a non-empty file (files are
written atomically; an empty one is left by something else and is drawn again).
"""

from __future__ import annotations

from pathlib import Path

PNG_DIR, GRID, NPZ, SETTINGS = "png", "grid.png", "samples.npz", "sample_config.yaml"


def png_path(out: Path, k: int) -> Path:
    return Path(out) / PNG_DIR / f"{k:06d}.png"


def pending_indices(out: Path, n: int) -> list[int]:
    """Indices in [0, n) whose PNG is not written yet (resume); an empty file counts as not written."""
    return [k for k in range(n) if not _nonempty(png_path(out, k))]


def _nonempty(p: Path) -> bool:
    try:
        return p.stat().st_size > 0
    except OSError:
        return False
