"""Image tensors <-> uint8 pixels and PNG files (for sample grids, exports and evaluation).

Model-space images are float ``(B, C, H, W)``: in [-1, 1] when the data are centred, in
[0, 1] otherwise. Pixel-space images are ``uint8`` channel-last ``(B, H, W, C)``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .paths import atomic_file


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

    Not ``torchvision.utils.make_grid``: checked against it, it turns one channel into three,
    returns a single image without its border and narrows the grid to B columns when nrow > B,
    so the grids (and every grid.png written so far) would change.
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
    """Write a uint8 ``(H, W, C)`` image (C = 1, 3 or 4) as PNG, atomically (not
    ``torchvision.utils.save_image``: it takes floats and requantises, and writes in place).

    Written through :func:`sgm_lightning.paths.atomic_file`, so readers never see a
    half-written PNG. Returns the path.
    """
    arr = image.cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise ValueError(f"image: expected uint8 (H, W, C) with C in 1, 3, 4; got {arr.dtype} {arr.shape}")
    path = Path(path)
    pil = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)
    try:
        with atomic_file(path, "wb") as f:
            pil.save(f, format="PNG")
    except OSError as err:
        if err.filename is None:  # a full disk: say which file
            raise OSError(f"could not write {path}: {err.strerror or err}") from None
        raise
    return path


# --- reading ------------------------------------------------------------------------------------
def read_png(path: str | os.PathLike) -> np.ndarray:
    """One image file as uint8 ``(H, W, C)``; a truncated or foreign file raises OSError,
    SyntaxError or ValueError (PIL's own)."""
    with Image.open(path) as img:
        a = np.array(img)
    return a[..., None] if a.ndim == 2 else a


def read_images(path: str | os.PathLike, what: str) -> np.ndarray:
    """uint8 ``(N, H, W, C)`` from an .npz holding ``x`` (as ``sgm sample`` writes), one PNG, an
    ``sgm sample`` folder (its samples.npz) or a folder of PNGs (sorted by path). Errors name
    ``what`` (the option that gave the path) and the file."""
    p = Path(path)
    if p.is_dir() and (p / "samples.npz").is_file():
        p = p / "samples.npz"
    if p.is_file() and p.suffix == ".npz":
        try:
            with np.load(p, allow_pickle=False) as f:
                if "x" not in f.files:
                    raise ValueError(f"{what}: {p} has no 'x' array (uint8 N x H x W x C)")
                x = np.array(f["x"])
        except (OSError, EOFError) as err:
            raise ValueError(f"{what}: cannot read {p} as .npz ({err})") from None
    elif p.is_file():
        x = _read_pngs([p], what)
    elif p.is_dir():
        files = sorted(p.rglob("*.png"))
        if not files:
            raise ValueError(f"{what}: {p} holds no samples.npz and no PNG files")
        x = _read_pngs(files, what)
    else:
        raise FileNotFoundError(f"{what}: no such file or folder {p}")
    if x.dtype != np.uint8:
        raise ValueError(f"{what}: images must be uint8, got {x.dtype}")
    return x[..., None] if x.ndim == 3 else x


def _read_pngs(files: list[Path], what: str) -> np.ndarray:
    """The PNGs as one uint8 array; a truncated file or one of another size is named."""
    arrays = []
    for f in files:
        try:
            a = read_png(f)
        except (OSError, SyntaxError, ValueError) as err:
            raise ValueError(f"{what}: {f} is not a readable PNG ({err})") from None
        if arrays and a.shape != arrays[0].shape:
            raise ValueError(f"{what}: {f} is {a.shape[1]}x{a.shape[0]}x{a.shape[2]} but {files[0]} is "
                             f"{arrays[0].shape[1]}x{arrays[0].shape[0]}x{arrays[0].shape[2]}; "
                             "all images must have one size")
        arrays.append(a)
    return np.stack(arrays)
