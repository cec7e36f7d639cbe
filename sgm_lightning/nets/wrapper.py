"""Turn a noise-conditional network ``net(x, labels)`` into the ``score_fn(x, t)`` of docs/design.md.

The labels and output scaling follow score_sde's ``get_score_fn`` so official checkpoints work:

* VE, continuous: label = sigma(t); the network divides by sigma itself (``scale_by_sigma``).
* VE, discrete (NCSN levels): label = round((T - t)(N - 1)), the index into the *descending*
  sigma ladder the network stores (0 = largest noise).
* VP / sub-VP / OU, continuous: label = 999 t and score = -output / std(t) (epsilon prediction).
* VP, discrete (DDPM): label = round(t (N - 1)), score = -output / sqrt(1 - alphabar_label).

With a :class:`~sgm_lightning.nets.precond.Precond` the network is EDM's F inside the denoiser
D(x; sigma) of the noise level sigma(t) = std(t) / s(t), and for x_t = s(t) (x_0 + sigma n)

    score(x_t, t) = (D(x_t / s; sigma) - x_t / s) / (s sigma^2)

(the chain rule through x_t / s of Tweedie's (D - x) / sigma^2).
"""

from __future__ import annotations

import torch
from torch import nn

from ..sde import SDE, ScoreFn, bcast
from .precond import Precond


def noise_labels(sde: SDE, t: torch.Tensor, continuous: bool = True) -> torch.Tensor:
    """The conditioning the network receives at times ``t`` (:meth:`sgm_lightning.sde.SDE.noise_labels`)."""
    return sde.noise_labels(t, continuous)


def output_to_score(sde: SDE, out: torch.Tensor, t: torch.Tensor, continuous: bool = True) -> torch.Tensor:
    """The network output at ``t`` as grad_x log p_t(x) (:meth:`sgm_lightning.sde.SDE.output_to_score`)."""
    return sde.output_to_score(out, t, continuous)


def score_fn_from_net(net: nn.Module, sde: SDE, *, continuous: bool = True,
                      precond: Precond | None = None) -> ScoreFn:
    """``score_fn(x, t)`` for samplers: runs ``net`` in whatever mode (train/eval) it is in."""
    if precond is not None:
        if not continuous:
            raise ValueError("precond: preconditioning needs continuous noise levels (loss.continuous=true)")
        return _preconditioned_score_fn(net, sde, precond)

    def score_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = net(x, noise_labels(sde, t, continuous))
        return output_to_score(sde, out, t, continuous)

    return score_fn


def _preconditioned_score_fn(net: nn.Module, sde: SDE, precond: Precond) -> ScoreFn:
    def score_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        scale, std = sde.marginal_coeffs(t)
        sigma = std / scale
        x_sigma = x / bcast(scale, x)
        denoised = precond.denoise(net, x_sigma, sigma)
        return (denoised - x_sigma) / bcast(std * sigma, x)

    return score_fn
