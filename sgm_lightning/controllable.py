"""Controllable generation with an unconditional score model: PC inpainting and colourisation
(Song et al. 2021, Sec. 5 and App. I.2).

Both are one algorithm. In coordinates x' = T x, with T an orthonormal per-pixel channel mix
(identity for inpainting; a basis whose first axis is the grey direction (1, 1, 1)/sqrt(3) for
colourisation), part of x' is known: x'_known = y'. Because T is orthonormal, the forward
process acts on x' exactly as on x, so at every time t the known part is redrawn from the
forward marginal,

    x'_known(t) = s(t) y' + std(t) z,                     (Song et al. 2021, eq. 50 / App. I.2)

after every predictor and corrector step, starting at t = T (score_sde starts the known part at
the wrong level, score_sde_pytorch#39), and the unknown part follows the reverse process of
the unconditional model. The last step is Tweedie's denoiser on the unknown part, and the known
part is set to y' exactly, so the output keeps the known pixels (inpainting) or the grey level
(colourisation) bit for bit up to the T round trip.

Noise is drawn per sample from ``generator`` (:mod:`sgm_lightning.rng`), in a fixed order
(predictor noise, re-noise, corrector noise, re-noise), so sample k depends only on its seed.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import torch

from .rng import GeneratorLike
from .sde import SDE, ScoreFn, bcast

MODES = ("inpaint", "colorize")


def grey_basis(channels: int = 3, dtype=torch.float64) -> torch.Tensor:
    """Orthonormal ``(C, C)`` matrix whose first row is (1, ..., 1)/sqrt(C) (the grey axis)."""
    a = torch.eye(channels, dtype=torch.float64)
    a[:, 0] = 1.0
    q, _ = torch.linalg.qr(a)  # first column of q is +-(1, ..., 1)/sqrt(C)
    q = q * torch.sign(q[0, 0])
    return q.T.contiguous().to(dtype)


def to_decoupled(x: torch.Tensor, T: torch.Tensor | None) -> torch.Tensor:
    """x' = T x per pixel: ``(B, C, H, W)`` -> ``(B, C, H, W)`` (``T=None``: identity)."""
    return x if T is None else torch.einsum("dc,bchw->bdhw", T.to(x.dtype), x)


def from_decoupled(x: torch.Tensor, T: torch.Tensor | None) -> torch.Tensor:
    """x = T^t x' (T orthonormal)."""
    return x if T is None else torch.einsum("dc,bdhw->bchw", T.to(x.dtype), x)


@dataclass
class Condition:
    """Known data for conditional sampling, in decoupled coordinates.

    ``known``: ``(M, C, H, W)`` values y' (model space); sample with global index k uses item
    k mod M. ``mask``: ``(M or 1, C, H, W)``, 1 where x' is known. ``transform``: ``(C, C)``
    orthonormal T, or None (inpainting).
    """

    mode: str
    known: torch.Tensor
    mask: torch.Tensor
    transform: torch.Tensor | None = None

    def take(self, indices, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """``(y', mask)`` for global sample ``indices``, each ``(B, C, H, W)``."""
        idx = torch.tensor([int(k) % self.known.shape[0] for k in indices])
        y = self.known[idx].to(device=device, dtype=dtype)
        m = self.mask[idx % self.mask.shape[0]].to(device=device, dtype=dtype)
        return y, m

    def sample(self, indices, sde: SDE, score_fn: ScoreFn, sampler: str, options: dict, **kw):
        """Conditional samples for global ``indices`` (:func:`sample_conditional`)."""
        return sample_conditional(self, indices, sde, score_fn, sampler, options, **kw)


def inpaint_condition(images: torch.Tensor, mask: torch.Tensor) -> Condition:
    """``images`` ``(M, C, H, W)`` in model space; ``mask`` ``(H, W)``, ``(C, H, W)`` or
    ``(M, C, H, W)`` with 1 = known pixel."""
    if images.ndim != 4:
        raise ValueError(f"inpaint: images must be (M, C, H, W), got {tuple(images.shape)}")
    m = mask.to(images.dtype)
    while m.ndim < 4:
        m = m.unsqueeze(0)
    try:
        m = torch.broadcast_to(m, (m.shape[0], *images.shape[1:])).clone()
    except RuntimeError:
        raise ValueError(f"mask: shape {tuple(mask.shape)} does not fit images {tuple(images.shape[1:])}") from None
    if not torch.all((m == 0) | (m == 1)):
        raise ValueError("mask: values must be 0 (unknown) or 1 (known)")
    return Condition("inpaint", images * m, m)


def colorize_condition(grey: torch.Tensor, channels: int = 3) -> Condition:
    """``grey`` ``(M, 1, H, W)`` (or ``(M, C, H, W)``, averaged) in model space: the known part
    is the grey axis x'_0 = sqrt(C) * grey of the decoupled coordinates."""
    if grey.ndim != 4:
        raise ValueError(f"colorize: images must be (M, C, H, W), got {tuple(grey.shape)}")
    if channels < 2:
        raise ValueError("colorize: the model must have more than one channel")
    g = grey.mean(1, keepdim=True)
    known = torch.zeros((g.shape[0], channels, *g.shape[2:]), dtype=g.dtype)
    known[:, :1] = math.sqrt(channels) * g
    mask = torch.zeros((1, channels, *g.shape[2:]), dtype=g.dtype)
    mask[:, 0] = 1.0
    return Condition("colorize", known, mask, grey_basis(channels))


# --- the sampler --------------------------------------------------------------------------------
def pc_conditional(sde: SDE, score_fn: ScoreFn, y: torch.Tensor, mask: torch.Tensor, *,
                   transform: torch.Tensor | None = None, norms: str = "sample", generator: GeneratorLike = None,
                   callback=None, **options):
    """PC sampling of the unknown part given y' (module docstring). ``y``, ``mask``:
    ``(B, C, H, W)`` in decoupled coordinates; returns ``SampleResult`` in data coordinates.

    :func:`sgm_lightning.sampling.pc_sample` with a projection that redraws the known part from
    the forward marginal after every step; ``options`` are pc_sample's (predictor, corrector,
    snr, corrector_steps, steps, denoise, eps, grid, ...).
    """
    from .sampling import SampleResult, pc_sample

    def impose(x, t, z):  # x in data coordinates; known part of x' <- s(t) y' + std(t) z
        scale, std = sde.marginal_coeffs(t)
        xd = to_decoupled(x, transform)
        xd = mask * (bcast(scale, y) * y + bcast(std, y) * z) + (1 - mask) * xd
        return from_decoupled(xd, transform)

    res = pc_sample(sde, score_fn, tuple(y.shape), norms=norms, generator=generator, callback=callback,
                    project=impose, device=y.device, dtype=y.dtype, **options)
    xd = mask * y + (1 - mask) * to_decoupled(res.x, transform)  # known part exactly
    return SampleResult(from_decoupled(xd, transform), res.nfe)


def sample_conditional(condition: Condition, indices, sde: SDE, score_fn: ScoreFn, sampler: str,
                       options: dict, *, generator=None, device=None, callback=None, dtype=torch.float32):
    """Conditional samples for global ``indices`` with the PC settings in ``options``."""
    if sampler != "pc":
        raise ValueError(f"--sampler: inpainting/colourisation run the PC sampler; got {sampler!r}, pass --sampler pc")
    y, m = condition.take(indices, device or "cpu", dtype)
    return pc_conditional(sde, score_fn, y, m, transform=condition.transform, generator=generator,
                          callback=callback, **options)


# --- files --------------------------------------------------------------------------------------
def _read_images(path: str | os.PathLike, what: str) -> np.ndarray:
    """uint8 ``(M, H, W, C)`` from a .png or an .npz holding ``x`` (as ``sgm sample`` writes)."""
    from .images import read_images

    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what}: no such file {path!s}")
    return read_images(path, what)


def load_condition(mode: str, image_path, mask_path, shape: tuple[int, int, int], centered: bool) -> Condition:
    """A :class:`Condition` from files: ``shape`` is the model's ``(C, H, W)``."""
    C, H, W = shape
    imgs = _read_images(image_path, f"--{mode}")
    if imgs.shape[1:3] != (H, W):
        raise ValueError(f"--{mode}: images are {imgs.shape[1]}x{imgs.shape[2]}, the model makes {H}x{W}")
    x = torch.from_numpy(imgs[..., :C] if imgs.shape[-1] >= C else imgs).permute(0, 3, 1, 2).double() / 255
    x = 2 * x - 1 if centered else x
    if mode == "colorize":
        return colorize_condition(x, C)
    if x.shape[1] != C:
        raise ValueError(f"--inpaint: images have {x.shape[1]} channels, the model {C}")
    m = torch.from_numpy(_read_images(mask_path, "--mask")[0]).permute(2, 0, 1)
    if m.shape[1:] != (H, W):
        raise ValueError(f"--mask: mask is {m.shape[1]}x{m.shape[2]}, the model makes {H}x{W}")
    m = (m[:1] if m.shape[0] != C else m) > 127
    return inpaint_condition(x, m.double())
