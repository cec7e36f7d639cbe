"""Image tensors <-> uint8 pixels and PNG files (for sample grids, exports and evaluation).

Model-space images are float ``(B, C, H, W)``: in [-1, 1] when the data are centred, in
[0, 1] otherwise. Pixel-space images are ``uint8`` channel-last ``(B, H, W, C)``.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .paths import FILE_MODE


class NonFiniteImageError(ValueError):
    """Images holding NaN or inf: a diverged model or sampler, never written as pixels."""


def to_uint8(x: torch.Tensor, centered: bool) -> torch.Tensor:
    """Float images ``(B, C, H, W)`` -> uint8 ``(B, H, W, C)`` on the CPU.

    ``centered``: the data live in [-1, 1] (else [0, 1]). Values outside the range are clipped;
    rounding is to the nearest of the 256 levels. Non-finite values (a diverged model or sampler)
    raise ``ValueError``: NaN would otherwise become black pixels silently.
    """
    if x.ndim != 4:
        raise ValueError(f"x: expected images of shape (B, C, H, W), got shape {tuple(x.shape)}")
    x = x.detach().to("cpu", torch.float32)
    finite = torch.isfinite(x).flatten(1).all(1)
    if not bool(finite.all()):
        bad = (~finite).nonzero().flatten().tolist()
        raise NonFiniteImageError(f"x: {len(bad)} of {x.shape[0]} images hold NaN or inf values (e.g. image {bad[0]}); "
                         "the model or sampler diverged, refusing to write them as pixels")
    if centered:
        x = (x + 1.0) / 2.0
    x = (x.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous()


def make_grid(images: torch.Tensor, nrow: int | None = None, padding: int = 2, pad_value: int = 0) -> torch.Tensor:
    """Tile uint8 images ``(B, H, W, C)`` into one ``(H', W', C)`` uint8 image.

    ``nrow``: images per row (default: ceil(sqrt(B)), a near-square grid). Missing cells of the
    last row and the ``padding``-pixel gutters are filled with ``pad_value``.
    """
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(
            f"images: expected uint8 (B, H, W, C), got {images.dtype} {tuple(images.shape)}; "
            "convert with to_uint8 first"
        )
    b, h, w, c = images.shape
    if b == 0:
        raise ValueError("images: the batch is empty")
    nrow = math.ceil(math.sqrt(b)) if nrow is None else int(nrow)
    if nrow < 1:
        raise ValueError(f"nrow: must be >= 1, got {nrow}")
    ncol_rows = math.ceil(b / nrow)
    H = ncol_rows * h + (ncol_rows + 1) * padding
    W = nrow * w + (nrow + 1) * padding
    grid = torch.full((H, W, c), pad_value, dtype=torch.uint8)
    for k in range(b):
        r, q = divmod(k, nrow)
        top, left = padding + r * (h + padding), padding + q * (w + padding)
        grid[top : top + h, left : left + w] = images[k]
    return grid


def save_png(path: str | os.PathLike, image: torch.Tensor | np.ndarray) -> Path:
    """Write a uint8 ``(H, W, C)`` image (C = 1, 3 or 4) as PNG, atomically.

    The file is written to a temporary name in the same folder and moved into place with
    ``os.replace``, so readers never see a half-written PNG. Returns the path.
    """
    arr = image.cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise ValueError(f"image: expected uint8 (H, W, C) with C in 1, 3, 4; got {arr.dtype} {arr.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pil = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, FILE_MODE)  # mkstemp makes 0600 files; outputs get the user's umask
        with os.fdopen(fd, "wb") as f:
            pil.save(f, format="PNG")
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(err, OSError) and err.filename is None:  # a full disk: say which file
            raise OSError(f"could not write {path}: {err.strerror or err}") from None
        raise
    return path
