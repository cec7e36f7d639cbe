"""Exponential moving average of network weights, with warm-up schedules.

After optimiser step n (1-based) the shadow weights move as

    ema <- beta_n ema + (1 - beta_n) theta        (one ``torch._foreach_lerp_`` over all tensors)

with beta_n from one of the schedules below. The shadow is one list of tensors (no second copy
of the module); :meth:`EMA.swap` exchanges it with the live weights in place, which is how
validation, sampling and export see the averaged weights.

Why not Lightning's ``WeightAveraging`` callback: it keeps a deep copy of the whole
LightningModule inside a callback (so samplers and exporters need the Trainer to reach it),
swaps by ``.data`` copies parameter by parameter, and has no warm-up schedule for the decay.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch


def ema_decay(
    n: int,
    *,
    decay: float = 0.999,
    warmup: str = "score_sde",
    inv_gamma: float = 1.0,
    power: float = 0.75,
    halflife_steps: float = 1000.0,
    ramp: float | None = 0.05,
) -> float:
    """beta_n, the decay used at update n >= 1.

    * ``none``:      beta = decay.
    * ``score_sde``: beta = min(decay, (1 + n) / (10 + n))  (score_sde ``models/ema.py``).
    * ``power``:     beta = min(decay, 1 - (1 + n / inv_gamma)^-power)  (k-diffusion / diffusers
      inverse-gamma warm-up; power 2/3 to 3/4 suits long runs).
    * ``halflife``:  beta = 0.5^(1 / h) with h = min(halflife_steps, ramp * n) (EDM, Karras et al.
      2022, Sec. C: the average forgets half its weight every h steps; ``ramp=None``: h fixed).
      ``decay`` is ignored.
    """
    if n < 1:
        raise ValueError(f"n: EMA updates are counted from 1, got {n}")
    if warmup == "none":
        return float(decay)
    if warmup == "score_sde":
        return min(float(decay), (1.0 + n) / (10.0 + n))
    if warmup == "power":
        return max(0.0, min(float(decay), 1.0 - (1.0 + n / inv_gamma) ** (-power)))
    if warmup == "halflife":
        h = halflife_steps if ramp is None else min(halflife_steps, ramp * n)
        return 0.5 ** (1.0 / max(h, 1e-8))
    raise ValueError(f"warmup: choose none, score_sde, power or halflife, got {warmup!r}")


class EMA:
    """Shadow copies of ``params`` (a list of tensors, e.g. a network's parameters in order).

    ``schedule`` holds the keyword arguments of :func:`ema_decay`. ``num_updates`` and the
    shadow are the whole state (:meth:`state_dict`), so resuming continues the same average.
    """

    def __init__(self, params: Iterable[torch.Tensor], **schedule):
        self.shadow = [p.detach().clone() for p in params]
        self.schedule = schedule
        self.num_updates = 0
        self.last_decay = float("nan")

    def _follow(self, params: list[torch.Tensor]) -> None:
        if len(params) != len(self.shadow):
            raise ValueError(f"params: the EMA tracks {len(self.shadow)} tensors, got {len(params)}")
        if self.shadow and self.shadow[0].device != params[0].device:
            self.shadow = [s.to(p.device) for s, p in zip(self.shadow, params)]

    @torch.no_grad()
    def update(self, params: Iterable[torch.Tensor]) -> float:
        """One EMA step towards ``params``; returns the decay used."""
        params = [p.detach() for p in params]
        self._follow(params)
        self.num_updates += 1
        beta = ema_decay(self.num_updates, **self.schedule)
        if self.shadow:
            torch._foreach_lerp_(self.shadow, params, 1.0 - beta)  # ema + (1 - beta) (theta - ema)
        self.last_decay = beta
        return beta

    @torch.no_grad()
    def swap(self, params: Iterable[torch.Tensor]) -> None:
        """Exchange the shadow and ``params`` in place (calling it twice restores both)."""
        params = list(params)
        self._follow(params)
        for s, p in zip(self.shadow, params):
            tmp = p.detach().clone()
            p.data.copy_(s)
            s.copy_(tmp)

    @contextmanager
    def averaged(self, params: Iterable[torch.Tensor]) -> Iterator[None]:
        """``with ema.averaged(net.parameters()):`` the net holds the EMA weights inside the block."""
        params = list(params)
        self.swap(params)
        try:
            yield
        finally:
            self.swap(params)

    @torch.no_grad()
    def copy_to(self, params: Iterable[torch.Tensor]) -> None:
        params = list(params)
        self._follow(params)
        for s, p in zip(self.shadow, params):
            p.data.copy_(s)

    def state_dict(self) -> dict:
        return {"shadow": [s.detach().clone() for s in self.shadow], "num_updates": self.num_updates}

    def load_state_dict(self, state: dict) -> None:
        shadow = state["shadow"]
        if len(shadow) != len(self.shadow):
            raise ValueError(f"ema: the checkpoint holds {len(shadow)} tensors, the network has {len(self.shadow)}")
        for k, (a, b) in enumerate(zip(shadow, self.shadow)):
            if a.shape != b.shape:
                raise ValueError(f"ema: tensor {k} has shape {tuple(a.shape)} in the checkpoint, {tuple(b.shape)} here")
        device = self.shadow[0].device if self.shadow else "cpu"
        self.shadow = [a.to(device=device, dtype=b.dtype).clone() for a, b in zip(shadow, self.shadow)]
        self.num_updates = int(state["num_updates"])
