"""Forward noising processes dx = f(x, t) dt + g(t) dW on [0, T] (Song et al. 2021, Sec. 3).

Every process here is affine in x, so its marginal is x_t = s(t) x_0 + std(t) z with z ~ N(0, I):
:meth:`SDE.marginal_coeffs` returns ``(s(t), std(t))`` and everything else (the marginal, the
EDM noise level sigma(t) = std/s, the reverse SDE, the probability-flow ODE) follows from it.

Shapes: ``x`` is ``(B, ...)``, ``t`` is a float tensor ``(B,)`` of continuous times; per-sample
coefficients come back as ``(B,)`` and are broadcast with :func:`bcast`. Every method works on
the device and dtype of its inputs (no CPU tables indexed by CUDA indices).
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Sequence

import torch

from .rng import GeneratorLike, randn

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def bcast(c: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """View a per-sample ``(B,)`` coefficient so it broadcasts against ``x`` of shape ``(B, ...)``."""
    return c.reshape(c.shape + (1,) * (x.ndim - c.ndim))


class SDE(abc.ABC):
    """An affine forward SDE with Gaussian prior N(0, prior_std^2 I) at time T."""

    T: float = 1.0
    #: default end time of sampling (score_sde: 1e-5 for VE, 1e-3 for VP and sub-VP)
    eps: float = 1e-5

    def __init__(self, N: int):
        if int(N) < 1:
            raise ValueError(f"N: the number of discretisation steps must be >= 1, got {N}")
        self.N = int(N)

    # --- the forward process -------------------------------------------------------------
    @abc.abstractmethod
    def sde(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Drift f(x, t) (shape of x) and diffusion g(t) (shape ``(B,)``)."""

    @abc.abstractmethod
    def marginal_coeffs(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(s(t), std(t))`` with x_t = s(t) x_0 + std(t) z."""

    @property
    @abc.abstractmethod
    def prior_std(self) -> float:
        """Standard deviation of the prior N(0, prior_std^2 I) the reverse process starts from."""

    def marginal_prob(self, x0: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean ``s(t) x0`` (shape of x0) and std ``(B,)`` of p_t(x_t | x_0)."""
        scale, std = self.marginal_coeffs(t)
        return bcast(scale, x0) * x0, std

    def perturb(self, x0: torch.Tensor, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """x_t = s(t) x_0 + std(t) z for given standard normal noise z."""
        scale, std = self.marginal_coeffs(t)
        return bcast(scale, x0) * x0 + bcast(std, x0) * z

    def prior_sampling(
        self,
        shape: Sequence[int],
        generator: GeneratorLike = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """A batch from the prior N(0, prior_std^2 I); see :mod:`sgm_lightning.rng` for ``generator``."""
        return self.prior_std * randn(shape, generator, device=device, dtype=dtype)

    def prior_logp(self, z: torch.Tensor) -> torch.Tensor:
        """log N(z; 0, prior_std^2 I), summed over all but the batch dimension -> ``(B,)``."""
        d = z[0].numel()
        s2 = self.prior_std**2
        return -0.5 * d * math.log(2 * math.pi * s2) - z.flatten(1).pow(2).sum(1) / (2 * s2)

    # --- noise-level view (EDM): x_t / s(t) = x_0 + sigma(t) z --------------------------
    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """EDM noise level sigma(t) = std(t) / s(t)."""
        scale, std = self.marginal_coeffs(t)
        return std / scale

    @abc.abstractmethod
    def t_from_sigma(self, sigma: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`sigma`: the time at which the EDM noise level equals ``sigma``."""

    def sigma_range(self, eps: float | None = None) -> tuple[float, float]:
        """EDM noise levels ``(sigma(eps), sigma(T))`` spanned by sampling (default eps: :attr:`eps`)."""
        t = torch.tensor([self.eps if eps is None else eps, self.T], dtype=torch.float64)
        lo, hi = self.sigma(t).tolist()
        return lo, hi

    # --- discretisation ------------------------------------------------------------------
    def discrete_index(self, t: torch.Tensor, N: int | None = None) -> torch.Tensor:
        """The level index i = round(t (N-1) / T) of time t (score_sde truncates; we round)."""
        N = self.N if N is None else N
        return torch.round(t * (N - 1) / self.T).long().clamp_(0, N - 1)

    def discretize(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One forward step x_{i+1} = x_i + f_i + G_i z. Default: Euler-Maruyama with dt = T/N."""
        dt = self.T / self.N
        drift, diffusion = self.sde(x, t)
        return drift * dt, diffusion * math.sqrt(dt)

    # --- time reversal -------------------------------------------------------------------
    def reverse_sde(
        self, score_fn: ScoreFn, x: torch.Tensor, t: torch.Tensor, probability_flow: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reverse-time drift f - g^2 s (or f - g^2 s / 2 for the ODE), diffusion, and the score used.

        The reverse SDE runs backwards in time: dx = [f - g^2 s] dt + g dW_bar with dt < 0.
        """
        drift, diffusion = self.sde(x, t)
        score = score_fn(x, t)
        w = 0.5 if probability_flow else 1.0
        rev_drift = drift - w * bcast(diffusion**2, x) * score
        rev_diffusion = torch.zeros_like(diffusion) if probability_flow else diffusion
        return rev_drift, rev_diffusion, score

    def probability_flow_drift(self, score_fn: ScoreFn, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """dx/dt of the probability-flow ODE: f(x, t) - g(t)^2 s(x, t) / 2."""
        return self.reverse_sde(score_fn, x, t, probability_flow=True)[0]

    # --- per-process formulas of the networks, the losses and the samplers --------------------
    def noise_labels(self, t: torch.Tensor, continuous: bool = True) -> torch.Tensor:
        """What a score network is conditioned on at times ``t`` (score_sde's convention):
        999 t (continuous), or the level index round(t (N-1) / T) (DDPM)."""
        if continuous:
            return t * 999
        return torch.round(t * (self.N - 1) / self.T).long()

    def output_to_score(self, out: torch.Tensor, t: torch.Tensor, continuous: bool = True) -> torch.Tensor:
        """A network output at ``t`` as grad log p_t: score_sde's networks predict -z, so -out / std(t)."""
        return -out / bcast(self.marginal_coeffs(t)[1], out)

    def discrete_coeffs(self, i: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(a_i, std_i)`` of discrete level i (NCSN / DDPM training on levels)."""
        raise ValueError(f"sde: discrete levels exist for VESDE (NCSN) and VPSDE (DDPM), not {type(self).__name__}")

    def corrector_alpha(self, t: torch.Tensor) -> torch.Tensor:
        """score_sde's Langevin-corrector alpha at t's level: 1 (DDPM's 1 - beta_i for VP / sub-VP)."""
        return torch.ones_like(t)

    def exponential_drift_coeff(self, a, an, sd, sdn):
        """int_{t_next}^{t} s_next / s_tau g(tau)^2 dtau of the frozen-score exponential integrator,
        from ``(s(t), s(t_next), std(t), std(t_next))``."""
        raise ValueError(f"predictor: 'exponential' supports VE, VP, sub-VP and OU, not {type(self).__name__}")

    def ald_ladder(self) -> torch.Tensor | None:
        """Times (float64, descending noise) of the process's own annealed-Langevin ladder, or
        None (then ALD uses N levels geometric in sigma)."""
        return None

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self._repr_fields().items())
        return f"{type(self).__name__}({fields})"

    def _repr_fields(self) -> dict:
        return {"N": self.N}


class VESDE(SDE):
    """Variance exploding (SMLD / NCSN): dx = sqrt(d sigma^2/dt) dW, sigma(t) = smin (smax/smin)^t."""

    eps = 1e-5

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, N: int = 1000):
        super().__init__(N)
        if not 0 < sigma_min < sigma_max:
            raise ValueError(
                f"sigma_min, sigma_max: need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}"
            )
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self._log_ratio = math.log(self.sigma_max / self.sigma_min)
        # the N geometric levels sigma_min ... sigma_max (NCSN's ladder, ascending)
        self.discrete_sigmas = torch.exp(
            torch.linspace(math.log(sigma_min), math.log(sigma_max), self.N, dtype=torch.float64)
        ).float()

    def _std(self, t: torch.Tensor) -> torch.Tensor:
        return self.sigma_min * torch.exp(t * self._log_ratio)

    def sde(self, x, t):
        diffusion = self._std(t) * math.sqrt(2 * self._log_ratio)
        return torch.zeros_like(x), diffusion

    def marginal_coeffs(self, t):
        return torch.ones_like(t), self._std(t)

    @property
    def prior_std(self) -> float:
        return self.sigma_max

    def t_from_sigma(self, sigma):
        return torch.log(sigma / self.sigma_min) / self._log_ratio

    def noise_labels(self, t, continuous=True):
        """NCSN conditions on sigma(t) (continuous) or the descending level index (N-1) (T - t)."""
        if continuous:
            return self.marginal_coeffs(t)[1]
        return torch.round((self.T - t) * (self.N - 1)).long()

    def output_to_score(self, out, t, continuous=True):
        return out  # NCSN's networks output the score itself (divided by sigma inside the network)

    def discrete_coeffs(self, i):
        std = self.discrete_sigmas.to(i.device)[i]
        return torch.ones_like(std), std

    def exponential_drift_coeff(self, a, an, sd, sdn):
        return sd**2 - sdn**2

    def ald_ladder(self):
        """NCSN's ladder ``discrete_sigmas``, largest first, at their times."""
        return self.t_from_sigma(self.discrete_sigmas.double().flip(0)).clamp(0, self.T)

    def discretize(self, x, t):
        """SMLD: x_{i+1} = x_i + sqrt(sigma_{i+1}^2 - sigma_i^2) z, with sigma_{-1} = 0."""
        sigmas = self.discrete_sigmas.to(device=t.device, dtype=t.dtype)
        i = self.discrete_index(t)
        sigma = sigmas[i]
        prev = torch.where(i == 0, torch.zeros_like(sigma), sigmas[(i - 1).clamp(min=0)])
        return torch.zeros_like(x), torch.sqrt(sigma**2 - prev**2)

    def _repr_fields(self):
        return {"sigma_min": self.sigma_min, "sigma_max": self.sigma_max, "N": self.N}


class _LinearBetaSDE(SDE):
    """Shared algebra of VP and sub-VP: beta(t) = bmin + t (bmax - bmin), B(t) = int_0^t beta."""

    eps = 1e-3

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, N: int = 1000):
        super().__init__(N)
        if not 0 <= beta_min < beta_max:
            raise ValueError(f"beta_min, beta_max: need 0 <= beta_min < beta_max, got {beta_min}, {beta_max}")
        self.beta_0, self.beta_1 = float(beta_min), float(beta_max)
        # DDPM's discrete chain: beta_i = linspace(bmin/N, bmax/N, N)
        self.discrete_betas = torch.linspace(beta_min / N, beta_max / N, N)
        self.alphas = 1.0 - self.discrete_betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)

    def beta(self, t):
        return self.beta_0 + t * (self.beta_1 - self.beta_0)

    def integrated_beta(self, t):
        return self.beta_0 * t + 0.5 * (self.beta_1 - self.beta_0) * t**2

    def _t_from_integrated_beta(self, B):
        # solve 0.5 (b1 - b0) t^2 + b0 t - B = 0 for t >= 0
        db = self.beta_1 - self.beta_0
        return (torch.sqrt(self.beta_0**2 + 2 * db * B) - self.beta_0) / db

    @property
    def prior_std(self) -> float:
        return 1.0

    def corrector_alpha(self, t):
        return self.alphas.to(device=t.device, dtype=t.dtype)[self.discrete_index(t)]

    def _repr_fields(self):
        return {"beta_min": self.beta_0, "beta_max": self.beta_1, "N": self.N}


class VPSDE(_LinearBetaSDE):
    """Variance preserving (DDPM): dx = -beta(t) x / 2 dt + sqrt(beta(t)) dW."""

    def sde(self, x, t):
        beta = self.beta(t)
        return -0.5 * bcast(beta, x) * x, torch.sqrt(beta)

    def marginal_coeffs(self, t):
        log_scale = -0.5 * self.integrated_beta(t)
        return torch.exp(log_scale), torch.sqrt(-torch.expm1(2 * log_scale))

    def t_from_sigma(self, sigma):
        return self._t_from_integrated_beta(torch.log1p(sigma**2))

    def output_to_score(self, out, t, continuous=True):
        if continuous:
            return super().output_to_score(out, t)
        std = torch.sqrt(1.0 - self.alphas_cumprod.to(device=t.device, dtype=t.dtype)[self.discrete_index(t)])
        return -out / bcast(std, out)

    def discrete_coeffs(self, i):
        abar = self.alphas_cumprod.to(i.device)[i]
        return abar.sqrt(), (1 - abar).sqrt()

    def exponential_drift_coeff(self, a, an, sd, sdn):
        return 2 * (an / a - 1)  # g^2 = beta, d(1/s)/dt = beta / (2 s)

    def discretize(self, x, t):
        """DDPM: x_{i+1} = sqrt(1 - beta_i) x_i + sqrt(beta_i) z."""
        i = self.discrete_index(t)
        beta = self.discrete_betas.to(device=t.device, dtype=t.dtype)[i]
        f = bcast(torch.sqrt(1.0 - beta), x) * x - x
        return f, torch.sqrt(beta)


class SubVPSDE(_LinearBetaSDE):
    """sub-VP: dx = -beta x / 2 dt + sqrt(beta (1 - exp(-2 B(t)))) dW; variance below VP's."""

    def sde(self, x, t):
        beta = self.beta(t)
        discount = -torch.expm1(-2 * self.integrated_beta(t))
        return -0.5 * bcast(beta, x) * x, torch.sqrt(beta * discount)

    def marginal_coeffs(self, t):
        B = self.integrated_beta(t)
        return torch.exp(-0.5 * B), -torch.expm1(-B)

    def t_from_sigma(self, sigma):
        # sigma = (1 - u^2) / u with u = exp(-B/2)  =>  u = (sqrt(sigma^2 + 4) - sigma) / 2
        u = 0.5 * (torch.sqrt(sigma**2 + 4) - sigma)
        return self._t_from_integrated_beta(-2 * torch.log(u))

    def exponential_drift_coeff(self, a, an, sd, sdn):
        return 2 * (an / a - 1) - (2.0 / 3.0) * an * (an**3 - a**3)  # g^2 = beta (1 - s^4)


class OUSDE(SDE):
    """Ornstein-Uhlenbeck dx = -x dt + sqrt(2) dW on [0, T] (Lee, Lu & Tan 2022's forward process).

    Its stationary law is N(0, I); p_t = Law(e^{-t} x_0 + sqrt(1 - e^{-2t}) z).
    """

    eps = 1e-3

    def __init__(self, T: float = 5.0, N: int = 1000):
        super().__init__(N)
        if not T > 0:
            raise ValueError(f"T: the horizon must be > 0, got {T}")
        self.T = float(T)

    def sde(self, x, t):
        return -x, torch.full_like(t, math.sqrt(2.0))

    def marginal_coeffs(self, t):
        return torch.exp(-t), torch.sqrt(-torch.expm1(-2 * t))

    @property
    def prior_std(self) -> float:
        return 1.0

    def t_from_sigma(self, sigma):
        return 0.5 * torch.log1p(sigma**2)

    def exponential_drift_coeff(self, a, an, sd, sdn):
        return 2 * (an / a - 1)  # g^2 = 2, d(1/s)/dt = 1 / s

    def discretize(self, x, t):
        """Exact one-step transition over dt = T/N: x' = e^{-dt} x + sqrt(1 - e^{-2dt}) z."""
        dt = self.T / self.N
        G = torch.full_like(t, math.sqrt(-math.expm1(-2 * dt)))
        return math.expm1(-dt) * x, G

    def _repr_fields(self):
        return {"T": self.T, "N": self.N}


SDES = {"ve": VESDE, "vp": VPSDE, "subvp": SubVPSDE, "ou": OUSDE}


def get_sde(name: str, **kwargs) -> SDE:
    """Build a process by name (``ve | vp | subvp | ou``)."""
    try:
        cls = SDES[name.lower()]
    except KeyError:
        raise ValueError(f"sde: unknown process {name!r}; choose one of {sorted(SDES)}") from None
    return cls(**kwargs)
